//! ListTransactions: the transactions this broker coordinates (every shard's), filtered by state
//! names, producer ids and (v1) minimum running time, as Kafka's coordinator lists them.

use std::rc::Rc;

use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId};

use super::str_bytes;
use crate::clock::now_ms;
use crate::shard_context::Shard;
use crate::security::acl::model::{Operation, ResourceType};
use crate::security::session::Session;

const STATE_NAMES: &[&str] = &["Empty", "Ongoing", "PrepareCommit", "PrepareAbort", "CompleteCommit", "CompleteAbort", "Dead", "PrepareEpochFence"];

pub async fn handle(shard: &Rc<Shard>, request: ListTransactionsRequest, session: &Session) -> ListTransactionsResponse {
    let states: Vec<String> = request.state_filters.iter().map(|s| s.to_string()).collect();
    let unknown_states = states.iter().filter(|s| !STATE_NAMES.contains(&s.as_str())).map(|s| str_bytes(s)).collect();
    let producer_ids: Vec<i64> = request.producer_id_filters.iter().map(|p| p.0).collect();
    let min_duration_ms = request.duration_filter;
    let now = now_ms();
    let mut listed = Vec::new();
    for owner in 0..shard.router.shard_count() {
        let (states, producer_ids) = (states.clone(), producer_ids.clone());
        let found = shard
            .router
            .call(owner, move |owner| async move {
                owner.txns.list(&states, &producer_ids, min_duration_ms, now).into_iter().map(|(id, pid, state)| (id, pid, state.name())).collect::<Vec<_>>()
            })
            .await;
        listed.extend(found);
    }
    // Kafka lists only the transactional ids the principal may describe.
    let transaction_states = listed
        .into_iter()
        .filter(|(id, _, _)| session.authorize(Operation::Describe, ResourceType::TransactionalId, id))
        .map(|(id, producer_id, state)| {
            TransactionState::default()
                .with_transactional_id(TransactionalId(str_bytes(&id)))
                .with_producer_id(ProducerId(producer_id))
                .with_transaction_state(str_bytes(state))
        })
        .collect();
    ListTransactionsResponse::default().with_unknown_state_filters(unknown_states).with_transaction_states(transaction_states)
}
