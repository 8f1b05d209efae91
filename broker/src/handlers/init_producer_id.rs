//! InitProducerId: a fresh producer id (epoch 0) for an idempotent producer. Transactions are not
//! offered yet, so a transactional id is refused.

use std::rc::Rc;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use crate::shard_context::Shard;

pub async fn handle(shard: &Rc<Shard>, request: InitProducerIdRequest) -> InitProducerIdResponse {
    if request.transactional_id.is_some() {
        return InitProducerIdResponse::default().with_error_code(ResponseError::CoordinatorNotAvailable.code());
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
