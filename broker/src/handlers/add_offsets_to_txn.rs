//! AddOffsetsToTxn: a transactional producer will commit a group's offsets in its transaction
//! (TxnOffsetCommit). As Kafka, the coordinator adds the group's `__consumer_offsets` partition to
//! the transaction, so the transaction's marker lands there and makes the offsets visible.

use std::collections::BTreeSet;
use std::rc::Rc;

use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};
use kafka_protocol::ResponseError;

use crate::groups::{offsets_partition_count, partition_for_group};
use crate::shard_context::Shard;
use crate::security::acl::model::{Operation, ResourceType};
use crate::security::session::Session;
use crate::topics::CONSUMER_OFFSETS_TOPIC;
use crate::txn_router::shard_for_transactional_id;

pub async fn handle(shard: &Rc<Shard>, request: AddOffsetsToTxnRequest, session: &Session) -> AddOffsetsToTxnResponse {
    let transactional_id = request.transactional_id.0.to_string();
    if transactional_id.is_empty() {
        return AddOffsetsToTxnResponse::default().with_error_code(ResponseError::InvalidRequest.code());
    }
    // Kafka: WRITE on the transactional id, READ on the group.
    if !session.authorize(Operation::Write, ResourceType::TransactionalId, &transactional_id) {
        return AddOffsetsToTxnResponse::default().with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code());
    }
    if !session.authorize(Operation::Read, ResourceType::Group, &request.group_id) {
        return AddOffsetsToTxnResponse::default().with_error_code(ResponseError::GroupAuthorizationFailed.code());
    }
    // The group's offsets partition must exist for its marker (as FindCoordinator would make it).
    crate::topic_admin::ensure_offsets_topic(shard).await;
    let offsets_partition = partition_for_group(&request.group_id.0, offsets_partition_count(&shard.broker));
    let partitions = BTreeSet::from([(CONSUMER_OFFSETS_TOPIC.to_string(), offsets_partition)]);
    let (producer_id, epoch) = (request.producer_id.0, request.producer_epoch);
    let owner = shard_for_transactional_id(shard, &transactional_id);
    let answer = shard
        .router
        .call(owner, move |owner| async move { owner.txns.add_partitions(&transactional_id, producer_id, epoch, partitions).await })
        .await;
    AddOffsetsToTxnResponse::default().with_error_code(answer.err().unwrap_or(0))
}
