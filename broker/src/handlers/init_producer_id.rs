//! InitProducerId: without a transactional id, a fresh producer id (epoch 0) for an idempotent
//! producer; with one, the transaction coordinator of that id (on the shard owning its
//! `__transaction_state` partition) bumps its epoch, fencing earlier producers, or recovers a
//! producer by KIP-360 (v3+: the producer id and epoch it had).

use std::rc::Rc;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use crate::shard_context::Shard;
use crate::security::acl::model::{Operation, ResourceType};
use crate::security::session::Session;
use crate::txn_router::shard_for_transactional_id;

pub async fn handle(shard: &Rc<Shard>, request: InitProducerIdRequest, session: &Session) -> InitProducerIdResponse {
    let denied = |error: ResponseError| InitProducerIdResponse::default().with_error_code(error.code()).with_producer_id(ProducerId(-1)).with_producer_epoch(-1);
    if let Some(transactional_id) = &request.transactional_id {
        // Kafka: WRITE on the transactional id.
        if !transactional_id.is_empty() && !session.authorize(Operation::Write, ResourceType::TransactionalId, transactional_id) {
            return denied(ResponseError::TransactionalIdAuthorizationFailed);
        }
        return transactional(shard, transactional_id.0.to_string(), &request).await;
    }
    // Kafka 3 (KIP-679): an idempotent producer needs IDEMPOTENT_WRITE on the cluster or WRITE on some topic.
    if !session.authorize_cluster(Operation::IdempotentWrite) && !session.authorize_any(Operation::Write, ResourceType::Topic) {
        return denied(ResponseError::ClusterAuthorizationFailed);
    }
    let allocated = match &shard.broker.cluster {
        // Ids must be unique across the cluster: a new leader keeps the old one's producer state.
        Some(_) => shard.broker.allocate_producer_id_in_cluster().await,
        None => shard.broker.allocate_producer_id().await,
    };
    match allocated {
        Ok(id) => InitProducerIdResponse::default().with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Err(e) => {
            tracing::error!(error = e, "allocating a producer id");
            InitProducerIdResponse::default().with_error_code(ResponseError::KafkaStorageError.code())
        }
    }
}

async fn transactional(shard: &Rc<Shard>, transactional_id: String, request: &InitProducerIdRequest) -> InitProducerIdResponse {
    let failed = |code: i16| InitProducerIdResponse::default().with_error_code(code).with_producer_id(ProducerId(-1)).with_producer_epoch(-1);
    if transactional_id.is_empty() {
        // As Kafka: an empty transactional id is a malformed request, not "none".
        return failed(ResponseError::InvalidRequest.code());
    }
    let expected = (request.producer_id.0 >= 0).then_some((request.producer_id.0, request.producer_epoch));
    let timeout_ms = request.transaction_timeout_ms;
    let owner = shard_for_transactional_id(shard, &transactional_id);
    let answer = shard
        .router
        .call(owner, move |owner| async move { owner.txns.init_producer_id(&transactional_id, timeout_ms, expected).await })
        .await;
    match answer {
        Ok((producer_id, epoch)) => InitProducerIdResponse::default().with_producer_id(ProducerId(producer_id)).with_producer_epoch(epoch),
        Err(code) => failed(code),
    }
}
