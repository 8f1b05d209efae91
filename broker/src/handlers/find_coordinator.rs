//! FindCoordinator: on a single broker every group's coordinator is this broker (the shard
//! behind it is found per request: see groups/mod.rs). In cluster mode it is the leader of the
//! group's `__consumer_offsets` partition, from the cluster snapshot. Transaction
//! coordinators are not offered yet. (librdkafka also takes this API's presence as the sign that
//! a broker accepts LZ4 batches, so it must be advertised for lz4 producers to compress.)

use std::rc::Rc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::shard_context::Shard;

const KEY_TYPE_GROUP: i8 = 0;

pub async fn handle(shard: &Rc<Shard>, request: FindCoordinatorRequest, version: i16) -> FindCoordinatorResponse {
    if request.key_type == KEY_TYPE_GROUP {
        // As Kafka: the offsets topic is made when the first group looks for its coordinator.
        crate::topic_admin::ensure_offsets_topic(shard).await;
    }
    let config = &shard.broker.config;
    let answer = |key: StrBytes| -> Coordinator {
        if request.key_type != KEY_TYPE_GROUP {
            return Coordinator::default()
                .with_key(key)
                .with_node_id(BrokerId(-1))
                .with_error_code(ResponseError::CoordinatorNotAvailable.code())
                .with_error_message(Some(str_bytes("transactions are not supported")));
        }
        if shard.broker.cluster.is_some() {
            return match crate::groups::coordinator_broker(&shard.broker, &key) {
                Some(broker) => Coordinator::default()
                    .with_key(key)
                    .with_node_id(BrokerId(broker.id))
                    .with_host(str_bytes(&broker.host))
                    .with_port(broker.port as i32)
                    .with_error_message(None),
                None => Coordinator::default()
                    .with_key(key)
                    .with_node_id(BrokerId(-1))
                    .with_error_code(ResponseError::CoordinatorNotAvailable.code())
                    .with_error_message(Some(str_bytes("the group's __consumer_offsets partition has no leader yet"))),
            };
        }
        Coordinator::default()
            .with_key(key)
            .with_node_id(BrokerId(config.broker_id))
            .with_host(str_bytes(&config.advertised_host))
            .with_port(config.advertised_port as i32)
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
