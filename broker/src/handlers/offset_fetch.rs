//! OffsetFetch: committed offsets of one group (v1-7) or several (v8+); -1 where none is
//! committed. With `require_stable` (v7+, KIP-447) a partition whose offset a transaction has
//! committed but not yet ended answers UNSTABLE_OFFSET_COMMIT (the consumer retries), so a
//! consumer never starts from an offset its predecessor's transaction may yet abort.

use std::rc::Rc;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};

use super::str_bytes;
use kafka_protocol::ResponseError;

use crate::groups::offsets::{self, FetchedOffset};
use crate::groups::txn_offsets;
use crate::group_router::shard_for_group;
use crate::shard_context::Shard;
use crate::security::acl::model::{Operation, ResourceType};
use crate::security::session::Session;

type Wanted = Option<Vec<(String, Vec<i32>)>>;

/// Err: the group's error (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS).
/// Kafka: DESCRIBE on the group, and on each topic (a listing leaves the others out, a topic
/// asked for by name answers TOPIC_AUTHORIZATION_FAILED).
async fn fetch(shard: &Rc<Shard>, group_id: String, topics: Wanted, require_stable: bool, session: &Session) -> Result<Vec<(String, Vec<FetchedOffset>)>, i16> {
    if !session.authorize(Operation::Describe, ResourceType::Group, &group_id) {
        return Err(ResponseError::GroupAuthorizationFailed.code());
    }
    let listing_all = topics.is_none();
    let owner = shard_for_group(shard, &group_id);
    let mut fetched = shard
        .router
        .call(owner, move |owner| async move {
            let mut fetched = offsets::fetch_offsets(&owner.groups, &group_id, topics)?;
            if require_stable {
                for (topic, partitions) in &mut fetched {
                    for offset in partitions.iter_mut().filter(|f| txn_offsets::has_pending(&owner.groups, &group_id, topic, f.partition)) {
                        offset.error_code = ResponseError::UnstableOffsetCommit.code();
                        offset.offset = -1;
                    }
                }
            }
            Ok::<_, i16>(fetched)
        })
        .await?;
    if listing_all {
        fetched.retain(|(topic, _)| session.authorize(Operation::Describe, ResourceType::Topic, topic));
    }
    for (topic, partitions) in &mut fetched {
        if !session.authorize(Operation::Describe, ResourceType::Topic, topic) {
            for offset in partitions.iter_mut() {
                offset.error_code = ResponseError::TopicAuthorizationFailed.code();
                offset.offset = -1;
            }
        }
    }
    Ok(fetched)
}

pub async fn handle(shard: &Rc<Shard>, request: OffsetFetchRequest, version: i16, session: &Session) -> OffsetFetchResponse {
    if version >= 8 {
        let mut groups = Vec::new();
        for group in request.groups {
            let wanted: Wanted = group
                .topics
                .map(|topics| topics.into_iter().map(|t| (t.name.0.to_string(), t.partition_indexes)).collect());
            let (fetched, error_code) = match fetch(shard, group.group_id.0.to_string(), wanted, request.require_stable, session).await {
                Ok(fetched) => (fetched, 0),
                Err(error_code) => (Vec::new(), error_code),
            };
            let topics = fetched
                .into_iter()
                .map(|(name, partitions)| {
                    OffsetFetchResponseTopics::default().with_name(TopicName(str_bytes(&name))).with_partitions(
                        partitions
                            .into_iter()
                            .map(|f| {
                                OffsetFetchResponsePartitions::default()
                                    .with_partition_index(f.partition)
                                    .with_committed_offset(f.offset)
                                    .with_committed_leader_epoch(f.leader_epoch)
                                    .with_metadata(Some(str_bytes(&f.metadata)))
                                    .with_error_code(f.error_code)
                            })
                            .collect(),
                    )
                })
                .collect();
            groups.push(
                OffsetFetchResponseGroup::default().with_group_id(group.group_id).with_topics(topics).with_error_code(error_code),
            );
        }
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let wanted: Wanted = request.topics.map(|topics| topics.into_iter().map(|t| (t.name.0.to_string(), t.partition_indexes)).collect());
    let (fetched, error_code) = match fetch(shard, request.group_id.0.to_string(), wanted, version >= 7 && request.require_stable, session).await {
        Ok(fetched) => (fetched, 0),
        Err(error_code) => (Vec::new(), error_code),
    };
    let topics = fetched
        .into_iter()
        .map(|(name, partitions)| {
            OffsetFetchResponseTopic::default().with_name(TopicName(str_bytes(&name))).with_partitions(
                partitions
                    .into_iter()
                    .map(|f| {
                        let mut partition = OffsetFetchResponsePartition::default()
                            .with_partition_index(f.partition)
                            .with_committed_offset(f.offset)
                            .with_metadata(Some(str_bytes(&f.metadata)))
                            .with_error_code(f.error_code);
                        if version >= 5 {
                            partition = partition.with_committed_leader_epoch(f.leader_epoch);
                        }
                        partition
                    })
                    .collect(),
            )
        })
        .collect();
    // v0-v1 have no group error field: the client sees no offsets and asks again later.
    let response = OffsetFetchResponse::default().with_topics(topics);
    if version >= 2 {
        response.with_error_code(error_code)
    } else {
        response
    }
}
