//! FindCoordinator: on a single broker every group's and transactional id's coordinator is this
//! broker (the shard behind it is found per request: see groups/mod.rs, txn/mod.rs). In cluster
//! mode it is the leader of the group's `__consumer_offsets` partition, or of the transactional
//! id's `__transaction_state` partition, from the cluster snapshot. (librdkafka also takes this API's presence as the sign that
//! a broker accepts LZ4 batches, so it must be advertised for lz4 producers to compress.)

use std::rc::Rc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::security::Listener;
use crate::security::acl::model::{Operation, ResourceType};
use crate::security::session::Session;
use crate::shard_context::Shard;

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

/// `listener`: the one the client connected to (standalone, this broker's answer is its address).
pub async fn handle(shard: &Rc<Shard>, request: FindCoordinatorRequest, version: i16, listener: &Listener, session: &Session) -> FindCoordinatorResponse {
    if request.key_type == KEY_TYPE_GROUP {
        // As Kafka: the offsets topic is made when the first group looks for its coordinator.
        crate::topic_admin::ensure_offsets_topic(shard).await;
    } else if request.key_type == KEY_TYPE_TRANSACTION {
        crate::topic_admin::ensure_transaction_state_topic(shard).await;
    }
    let config = &shard.broker.config;
    let answer = |key: StrBytes| -> Coordinator {
        if request.key_type != KEY_TYPE_GROUP && request.key_type != KEY_TYPE_TRANSACTION {
            return Coordinator::default()
                .with_key(key)
                .with_node_id(BrokerId(-1))
                .with_error_code(ResponseError::InvalidRequest.code())
                .with_error_message(Some(str_bytes("unknown coordinator key type")));
        }
        // Kafka: DESCRIBE on the group or the transactional id.
        let (resource_type, denied) = match request.key_type {
            KEY_TYPE_GROUP => (ResourceType::Group, ResponseError::GroupAuthorizationFailed),
            _ => (ResourceType::TransactionalId, ResponseError::TransactionalIdAuthorizationFailed),
        };
        if !session.authorize(Operation::Describe, resource_type, &key) {
            return Coordinator::default().with_key(key).with_node_id(BrokerId(-1)).with_error_code(denied.code());
        }
        if shard.broker.cluster.is_some() {
            let broker = match request.key_type {
                KEY_TYPE_GROUP => crate::groups::coordinator_broker(&shard.broker, &key),
                _ => crate::txn::coordinator_broker(&shard.broker, &key),
            };
            // The coordinator's address on the client's listener; a coordinator without that
            // listener is not available to this client (Kafka's getAliveBrokerNode).
            return match broker.as_ref().and_then(|b| Some((b.id, b.endpoint(&listener.name)?))) {
                Some((id, endpoint)) => Coordinator::default()
                    .with_key(key)
                    .with_node_id(BrokerId(id))
                    .with_host(str_bytes(&endpoint.host))
                    .with_port(endpoint.port as i32)
                    .with_error_message(None),
                None => Coordinator::default()
                    .with_key(key)
                    .with_node_id(BrokerId(-1))
                    .with_error_code(ResponseError::CoordinatorNotAvailable.code())
                    .with_error_message(Some(str_bytes("the coordinator's partition has no leader yet"))),
            };
        }
        Coordinator::default()
            .with_key(key)
            .with_node_id(BrokerId(config.broker_id))
            .with_host(str_bytes(&listener.advertised_host))
            .with_port(listener.advertised_port as i32)
            .with_error_message(None)
    };
    if version >= 4 {
        let coordinators = request.coordinator_keys.iter().cloned().map(answer).collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let single = answer(request.key.clone());
    let mut response = FindCoordinatorResponse::default()
        .with_error_code(single.error_code)
        .with_node_id(single.node_id)
        .with_host(single.host)
        .with_port(single.port);
    if version >= 1 {
        response = response.with_error_message(single.error_message);
    }
    response
}
