//! TxnOffsetCommit: a transactional producer commits a consumer group's offsets as part of its
//! transaction. Routed to the group's coordinator shard (as OffsetCommit), which writes them as a
//! transactional batch and holds them pending until the transaction's marker (groups/txn_offsets.rs).

use std::rc::Rc;

use kafka_protocol::messages::txn_offset_commit_response::{TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};

use crate::group_router::shard_for_group;
use crate::groups::txn_offsets::{self, TxnCommitRequest};
use crate::shard_context::Shard;
use crate::security::acl::model::{Operation, ResourceType};
use crate::security::session::Session;

pub async fn handle(shard: &Rc<Shard>, request: TxnOffsetCommitRequest, session: &Session) -> TxnOffsetCommitResponse {
    let group_id = request.group_id.0.to_string();
    // Kafka: WRITE on the transactional id, READ on the group, READ on each topic.
    let whole_denied = if !session.authorize(Operation::Write, ResourceType::TransactionalId, &request.transactional_id) {
        Some(kafka_protocol::ResponseError::TransactionalIdAuthorizationFailed.code())
    } else if !session.authorize(Operation::Read, ResourceType::Group, &group_id) {
        Some(kafka_protocol::ResponseError::GroupAuthorizationFailed.code())
    } else {
        None
    };
    let denied = |topic: &str| {
        whole_denied.or_else(|| (!session.authorize(Operation::Read, ResourceType::Topic, topic)).then_some(kafka_protocol::ResponseError::TopicAuthorizationFailed.code()))
    };
    let offsets: Vec<(String, i32, i64, i32, Option<String>)> = request
        .topics
        .iter()
        .filter(|t| denied(&t.name).is_none())
        .flat_map(|t| {
            t.partitions.iter().map(move |p| {
                (t.name.0.to_string(), p.partition_index, p.committed_offset, p.committed_leader_epoch, p.committed_metadata.as_ref().map(|m| m.to_string()))
            })
        })
        .collect();
    let commit = TxnCommitRequest {
        group_id: group_id.clone(),
        producer_id: request.producer_id.0,
        producer_epoch: request.producer_epoch,
        generation_id: request.generation_id,
        member_id: request.member_id.to_string(),
        offsets,
    };
    let owner = shard_for_group(shard, &group_id);
    let mut errors = shard.router.call(owner, move |owner| async move { txn_offsets::commit(&owner.groups, commit).await }).await.into_iter();
    let topics = request
        .topics
        .iter()
        .map(|t| {
            let denied = denied(&t.name);
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let error_code = denied.unwrap_or_else(|| errors.next().unwrap_or(0));
                    TxnOffsetCommitResponsePartition::default().with_partition_index(p.partition_index).with_error_code(error_code)
                })
                .collect();
            TxnOffsetCommitResponseTopic::default().with_name(t.name.clone()).with_partitions(partitions)
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}
