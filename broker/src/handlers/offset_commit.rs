//! OffsetCommit: the group's shard checks generation and member, appends the offsets to
//! `__consumer_offsets` and answers once they are in the log.

use std::rc::Rc;

use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use crate::groups::offsets::{self, CommitRequest};
use crate::group_router::shard_for_group;
use crate::topic_admin::ensure_offsets_topic;
use crate::shard_context::Shard;
use crate::security::acl::model::{Operation, ResourceType};
use crate::security::session::Session;

pub async fn handle(shard: &Rc<Shard>, request: OffsetCommitRequest, session: &Session) -> OffsetCommitResponse {
    // Kafka: READ on the group (every partition GROUP_AUTHORIZATION_FAILED), then READ on each
    // topic (its partitions TOPIC_AUTHORIZATION_FAILED, the others committed).
    let group_denied = !session.authorize(Operation::Read, ResourceType::Group, &request.group_id);
    let topic_denied = |topic: &str| group_denied || !session.authorize(Operation::Read, ResourceType::Topic, topic);
    ensure_offsets_topic(shard).await;
    let offsets: Vec<(String, i32, i64, i32, Option<String>)> = request
        .topics
        .iter()
        .filter(|t| !topic_denied(&t.name))
        .flat_map(|t| {
            t.partitions.iter().map(move |p| {
                (
                    t.name.0.to_string(),
                    p.partition_index,
                    p.committed_offset,
                    p.committed_leader_epoch,
                    p.committed_metadata.as_ref().map(|m| m.to_string()),
                )
            })
        })
        .collect();
    let commit = CommitRequest {
        group_id: request.group_id.0.to_string(),
        generation_id: request.generation_id_or_member_epoch,
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
        offsets,
    };
    let owner = shard_for_group(shard, &commit.group_id);
    let errors = shard.router.call(owner, move |owner| async move { offsets::commit(&owner.groups, commit).await }).await;
    let mut errors = errors.into_iter();
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let denied = match (group_denied, topic_denied(&t.name)) {
                (true, _) => Some(kafka_protocol::ResponseError::GroupAuthorizationFailed.code()),
                (false, true) => Some(kafka_protocol::ResponseError::TopicAuthorizationFailed.code()),
                _ => None,
            };
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let error_code = denied.unwrap_or_else(|| errors.next().unwrap_or(0));
                    OffsetCommitResponsePartition::default().with_partition_index(p.partition_index).with_error_code(error_code)
                })
                .collect();
            OffsetCommitResponseTopic::default().with_name(t.name).with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}
