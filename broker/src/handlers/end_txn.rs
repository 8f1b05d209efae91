//! EndTxn: commit or abort. The coordinator answers once PrepareCommit / PrepareAbort is durable
//! in `__transaction_state`; the markers and the Complete state follow (txn_router.rs), and the
//! producer's next transaction waits for them (CONCURRENT_TRANSACTIONS meanwhile), as in Kafka.

use std::rc::Rc;

use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse, ProducerId};
use kafka_protocol::ResponseError;

use crate::shard_context::Shard;
use crate::security::acl::model::{Operation, ResourceType};
use crate::security::session::Session;
use crate::txn_router::shard_for_transactional_id;

pub async fn handle(shard: &Rc<Shard>, request: EndTxnRequest, session: &Session) -> EndTxnResponse {
    let transactional_id = request.transactional_id.0.to_string();
    if transactional_id.is_empty() {
        return EndTxnResponse::default().with_error_code(ResponseError::InvalidRequest.code());
    }
    if !session.authorize(Operation::Write, ResourceType::TransactionalId, &transactional_id) {
        return EndTxnResponse::default().with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code());
    }
    let (producer_id, epoch, commit) = (request.producer_id.0, request.producer_epoch, request.committed);
    let owner = shard_for_transactional_id(shard, &transactional_id);
    let answer = shard
        .router
        .call(owner, move |owner| async move { owner.txns.end_transaction(&transactional_id, producer_id, epoch, commit).await })
        .await;
    match answer {
        // v5's producer id and epoch (transaction version 2) are the unchanged ones here.
        Ok(()) => EndTxnResponse::default().with_producer_id(ProducerId(producer_id)).with_producer_epoch(epoch),
        Err(code) => EndTxnResponse::default().with_error_code(code).with_producer_id(ProducerId(-1)).with_producer_epoch(-1),
    }
}
