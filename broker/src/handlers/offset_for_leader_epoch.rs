//! OffsetForLeaderEpoch: where a leader epoch ends in the leader's log. A follower that comes
//! back asks it for its own latest epoch and cuts its log to the answer, so the logs never
//! diverge while keeping what both sides share; consumers use it (KIP-320) to detect that a
//! leader change truncated the log under their position. Advertised in cluster mode only: a
//! single broker has no leader changes and stamps no epochs.

use std::rc::Rc;

use kafka_protocol::messages::offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use kafka_protocol::ResponseError;

use super::partition_error_code;
use crate::shard_context::Shard;
use crate::security::acl::model::{Operation, ResourceType};
use crate::security::session::Session;

pub async fn handle(shard: &Rc<Shard>, request: OffsetForLeaderEpochRequest, session: &Session) -> OffsetForLeaderEpochResponse {
    // Kafka: a follower's (replica id >= 0) needs CLUSTER_ACTION, a consumer's DESCRIBE on each topic.
    let follower_denied = request.replica_id.0 >= 0 && !session.authorize_cluster(Operation::ClusterAction);
    let mut topics = Vec::new();
    for topic in request.topics {
        let name = topic.topic.0.to_string();
        let denied = if follower_denied {
            Some(kafka_protocol::ResponseError::ClusterAuthorizationFailed.code())
        } else {
            (!session.authorize(Operation::Describe, ResourceType::Topic, &name)).then_some(kafka_protocol::ResponseError::TopicAuthorizationFailed.code())
        };
        let mut partitions = Vec::new();
        for p in topic.partitions {
            let owner = shard.owner_of(&name, p.partition);
            let (topic_name, index) = (name.clone(), p.partition);
            let (current, requested) = (p.current_leader_epoch, p.leader_epoch);
            let (error, epoch, end_offset) = match denied {
                Some(code) => (code, storage::leader_epoch_cache::UNDEFINED_EPOCH, storage::leader_epoch_cache::UNDEFINED_OFFSET),
                None => shard.router.call(owner, move |owner| async move { end_offset(&owner, &topic_name, index, current, requested).await }).await,
            };
            partitions.push(
                EpochEndOffset::default().with_partition(p.partition).with_error_code(error).with_leader_epoch(epoch).with_end_offset(end_offset),
            );
        }
        topics.push(OffsetForLeaderTopicResult::default().with_topic(topic.topic).with_partitions(partitions));
    }
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

/// Runs on the owning shard: (error code, epoch, end offset).
async fn end_offset(shard: &Shard, topic: &str, partition: i32, current_leader_epoch: i32, requested: i32) -> (i16, i32, i64) {
    const UNDEFINED: (i32, i64) = (storage::leader_epoch_cache::UNDEFINED_EPOCH, storage::leader_epoch_cache::UNDEFINED_OFFSET);
    let handle = match shard.partition(topic, partition).await {
        Ok(handle) => handle,
        Err(e) => return (partition_error_code(&e), UNDEFINED.0, UNDEFINED.1),
    };
    // The asker's view of the leadership must be ours (v2+; -1 skips the check), as Kafka.
    if current_leader_epoch >= 0 {
        let ours = shard.broker.cluster.as_ref().and_then(|c| c.view.snapshot().state(topic, partition).map(|s| s.leader_epoch));
        match ours {
            Some(ours) if current_leader_epoch < ours => return (ResponseError::FencedLeaderEpoch.code(), UNDEFINED.0, UNDEFINED.1),
            Some(ours) if current_leader_epoch > ours => return (ResponseError::UnknownLeaderEpoch.code(), UNDEFINED.0, UNDEFINED.1),
            _ => {}
        }
    }
    // A leader that has not appended since it was elected starts its epoch now.
    let mut log = handle.log.write().await.expect("partition lock");
    handle.sync_leader_epoch(&mut log).await;
    let (epoch, end_offset) = log.end_offset_for_epoch(requested);
    (0, epoch, end_offset)
}
