//! DescribeTransactions: each transactional id's state from its coordinator shard.

use std::rc::Rc;

use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId, TopicName};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::shard_context::Shard;
use crate::security::acl::model::{Operation, ResourceType};
use crate::security::session::Session;
use crate::txn_router::shard_for_transactional_id;

pub async fn handle(shard: &Rc<Shard>, request: DescribeTransactionsRequest, session: &Session) -> DescribeTransactionsResponse {
    let mut states = Vec::with_capacity(request.transactional_ids.len());
    for id in request.transactional_ids {
        let transactional_id = id.0.to_string();
        let base = TransactionState::default().with_transactional_id(id).with_producer_id(ProducerId(-1)).with_producer_epoch(-1);
        if transactional_id.is_empty() {
            states.push(base.with_error_code(ResponseError::InvalidRequest.code()));
            continue;
        }
        if !session.authorize(Operation::Describe, ResourceType::TransactionalId, &transactional_id) {
            states.push(base.with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code()));
            continue;
        }
        let owner = shard_for_transactional_id(shard, &transactional_id);
        let described = shard.router.call(owner, move |owner| async move { owner.txns.describe(&transactional_id) }).await;
        states.push(match described {
            Err(code) => base.with_error_code(code),
            Ok(meta) => {
                let mut topics: Vec<TopicData> = Vec::new();
                for (topic, partition) in &meta.partitions {
                    match topics.last_mut() {
                        Some(last) if last.topic.0.as_str() == topic => last.partitions.push(*partition),
                        _ => topics.push(TopicData::default().with_topic(TopicName(str_bytes(topic))).with_partitions(vec![*partition])),
                    }
                }
                base.with_producer_id(ProducerId(meta.producer_id))
                    .with_producer_epoch(meta.producer_epoch)
                    .with_transaction_state(str_bytes(meta.state.name()))
                    .with_transaction_timeout_ms(meta.timeout_ms)
                    .with_transaction_start_time_ms(meta.start_timestamp_ms)
                    .with_topics(topics)
            }
        });
    }
    DescribeTransactionsResponse::default().with_transaction_states(states)
}
