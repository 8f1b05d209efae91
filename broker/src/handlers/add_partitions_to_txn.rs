//! AddPartitionsToTxn: a transactional producer names the partitions it is about to write; the
//! coordinator of its transactional id records them (Ongoing) before the producer sends. v0-v3
//! carry one transaction (clients); v4 batches transactions and may only verify (brokers, KIP-890).
//! Partitions of unknown topics fail with UNKNOWN_TOPIC_OR_PARTITION and the others of that
//! transaction with OPERATION_NOT_ATTEMPTED, as Kafka answers.

use std::collections::BTreeSet;
use std::rc::Rc;

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, TopicName};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::shard_context::Shard;
use crate::security::acl::model::{Operation, ResourceType};
use crate::security::session::Session;
use crate::txn_router::shard_for_transactional_id;

pub async fn handle(shard: &Rc<Shard>, request: AddPartitionsToTxnRequest, version: i16, session: &Session) -> AddPartitionsToTxnResponse {
    // v4 (KIP-890) comes from brokers verifying a transaction: CLUSTER_ACTION, as Kafka.
    if version >= 4 && !session.authorize_cluster(Operation::ClusterAction) {
        return AddPartitionsToTxnResponse::default().with_error_code(ResponseError::ClusterAuthorizationFailed.code());
    }
    if version <= 3 {
        let topics = add(
            shard,
            request.v3_and_below_transactional_id.0.to_string(),
            request.v3_and_below_producer_id.0,
            request.v3_and_below_producer_epoch,
            false,
            &request.v3_and_below_topics,
            session,
        )
        .await;
        return AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(topics);
    }
    let mut results = Vec::with_capacity(request.transactions.len());
    for transaction in &request.transactions {
        let id = transaction.transactional_id.0.to_string();
        let topics = add(shard, id, transaction.producer_id.0, transaction.producer_epoch, transaction.verify_only, &transaction.topics, session).await;
        results.push(AddPartitionsToTxnResult::default().with_transactional_id(transaction.transactional_id.clone()).with_topic_results(topics));
    }
    AddPartitionsToTxnResponse::default().with_results_by_transaction(results)
}

/// One transaction's partitions: an error code each, by topic as asked.
async fn add(
    shard: &Rc<Shard>,
    transactional_id: String,
    producer_id: i64,
    epoch: i16,
    verify_only: bool,
    topics: &[AddPartitionsToTxnTopic],
    session: &Session,
) -> Vec<AddPartitionsToTxnTopicResult> {
    let asked: Vec<(String, i32)> = topics.iter().flat_map(|t| t.partitions.iter().map(move |&p| (t.name.0.to_string(), p))).collect();
    let unknown: BTreeSet<(String, i32)> = asked
        .iter()
        .filter(|(topic, partition)| !shard.broker.partition_count(topic).is_some_and(|count| *partition >= 0 && *partition < count))
        .cloned()
        .collect();
    // Kafka: WRITE on the transactional id, then on each topic (the others not attempted).
    let denied_topics: BTreeSet<&str> =
        asked.iter().map(|(t, _)| t.as_str()).filter(|t| !session.authorize(Operation::Write, ResourceType::Topic, t)).collect();
    let codes: Vec<i16> = if transactional_id.is_empty() {
        vec![ResponseError::InvalidRequest.code(); asked.len()]
    } else if !session.authorize(Operation::Write, ResourceType::TransactionalId, &transactional_id) {
        vec![ResponseError::TransactionalIdAuthorizationFailed.code(); asked.len()]
    } else if !denied_topics.is_empty() {
        asked
            .iter()
            .map(|(t, _)| if denied_topics.contains(t.as_str()) { ResponseError::TopicAuthorizationFailed.code() } else { ResponseError::OperationNotAttempted.code() })
            .collect()
    } else if !unknown.is_empty() {
        asked
            .iter()
            .map(|p| if unknown.contains(p) { ResponseError::UnknownTopicOrPartition.code() } else { ResponseError::OperationNotAttempted.code() })
            .collect()
    } else {
        let owner = shard_for_transactional_id(shard, &transactional_id);
        let partitions = asked.clone();
        let answer = shard
            .router
            .call(owner, move |owner| async move {
                if verify_only {
                    owner.txns.verify_partitions(&transactional_id, producer_id, epoch, &partitions).map(|found| {
                        found.into_iter().map(|yes| if yes { 0 } else { ResponseError::TransactionAbortable.code() }).collect::<Vec<_>>()
                    })
                } else {
                    let count = partitions.len();
                    owner.txns.add_partitions(&transactional_id, producer_id, epoch, partitions.into_iter().collect()).await.map(|()| vec![0; count])
                }
            })
            .await;
        match answer {
            Ok(codes) => codes,
            Err(code) => vec![code; asked.len()],
        }
    };
    let mut results: Vec<AddPartitionsToTxnTopicResult> = Vec::new();
    for ((topic, partition), code) in asked.into_iter().zip(codes) {
        let result = AddPartitionsToTxnPartitionResult::default().with_partition_index(partition).with_partition_error_code(code);
        match results.last_mut() {
            Some(last) if last.name.0.as_str() == topic => last.results_by_partition.push(result),
            _ => results.push(AddPartitionsToTxnTopicResult::default().with_name(TopicName(str_bytes(&topic))).with_results_by_partition(vec![result])),
        }
    }
    results
}
