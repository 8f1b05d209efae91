//! TxnOffsetCommit: a transactional producer commits a consumer group's offsets as part of its
//! transaction. Routed to the group's coordinator shard (as OffsetCommit), which writes them as a
//! transactional batch and holds them pending until the transaction's marker (groups/txn_offsets.rs).

use std::rc::Rc;

use kafka_protocol::messages::txn_offset_commit_response::{TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};

use crate::group_router::shard_for_group;
use crate::groups::txn_offsets::{self, TxnCommitRequest};
use crate::shard_context::Shard;

pub async fn handle(shard: &Rc<Shard>, request: TxnOffsetCommitRequest) -> TxnOffsetCommitResponse {
    let group_id = request.group_id.0.to_string();
    let offsets: Vec<(String, i32, i64, i32, Option<String>)> = request
        .topics
        .iter()
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
            let partitions = t
                .partitions
                .iter()
                .map(|p| TxnOffsetCommitResponsePartition::default().with_partition_index(p.partition_index).with_error_code(errors.next().unwrap_or(0)))
                .collect();
            TxnOffsetCommitResponseTopic::default().with_name(t.name.clone()).with_partitions(partitions)
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}
