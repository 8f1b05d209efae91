//! DescribeCluster (API 60, KIP-700; AdminClient.describeCluster): the cluster id, the controller
//! and the live brokers, as Kafka 3.9's ZooKeeper-mode broker answers (KafkaApis
//! .handleDescribeCluster, AuthHelper.computeDescribeClusterResponse). v0-v1 as Kafka 3.9
//! (v1: EndpointType, KIP-919; a broker describes brokers only).

use std::rc::Rc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::security::Listener;
use crate::shard_context::Shard;
use crate::security::acl::model::ResourceType;
use crate::security::session::Session;

/// KIP-919 endpoint types: 1 brokers, 2 controllers.
const ENDPOINT_TYPE_BROKER: i8 = 1;
const ENDPOINT_TYPE_CONTROLLER: i8 = 2;
/// The schema's default: operations not asked for.
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

/// `listener`: the one the client connected on: brokers are described by their address on it.
pub fn handle(shard: &Rc<Shard>, request: DescribeClusterRequest, version: i16, listener: &Listener, session: &Session) -> DescribeClusterResponse {
    let response = DescribeClusterResponse::default().with_endpoint_type(ENDPOINT_TYPE_BROKER);
    if request.endpoint_type != ENDPOINT_TYPE_BROKER {
        // v0 has no endpoint type field (it decodes as the default, brokers), so this is v1+.
        let (error, message) = if request.endpoint_type == ENDPOINT_TYPE_CONTROLLER {
            (ResponseError::MismatchedEndpointType, "The request was sent to an endpoint of type BROKER, but we wanted an endpoint of type CONTROLLER".to_string())
        } else {
            (ResponseError::UnsupportedEndpointType, format!("Unsupported endpoint type {}", request.endpoint_type))
        };
        let error = if version == 0 { ResponseError::InvalidRequest } else { error };
        return response.with_error_code(error.code()).with_error_message(Some(str_bytes(&message)));
    }
    let config = &shard.broker.config;
    let (brokers, controller_id) = match &shard.broker.cluster {
        None => (
            vec![DescribeClusterBroker::default()
                .with_broker_id(BrokerId(config.broker_id))
                .with_host(str_bytes(&listener.advertised_host))
                .with_port(listener.advertised_port as i32)
                .with_rack(config.broker_rack.as_deref().map(str_bytes))],
            config.broker_id,
        ),
        Some(cluster) => {
            let snapshot = cluster.view.snapshot();
            let brokers: Vec<DescribeClusterBroker> = snapshot
                .brokers
                .values()
                .filter_map(|b| {
                    let endpoint = b.endpoint(&listener.name)?;
                    Some(
                        DescribeClusterBroker::default()
                            .with_broker_id(BrokerId(b.id))
                            .with_host(str_bytes(&endpoint.host))
                            .with_port(endpoint.port as i32)
                            .with_rack(b.rack.as_deref().map(str_bytes)),
                    )
                })
                .collect();
            // As Kafka: a controller not among the live brokers is reported as none.
            let controller = cluster.view.controller_id();
            let controller = if brokers.iter().any(|b| b.broker_id.0 == controller) { controller } else { -1 };
            (brokers, controller)
        }
    };
    // KIP-430: what this principal holds on the cluster (every cluster operation without an authorizer).
    let operations = if request.include_cluster_authorized_operations {
        session.authorized_operations(ResourceType::Cluster, crate::security::acl::model::CLUSTER_NAME)
    } else {
        AUTHORIZED_OPERATIONS_OMITTED
    };
    response
        .with_cluster_id(str_bytes(&shard.broker.cluster_id))
        .with_controller_id(BrokerId(controller_id))
        .with_brokers(brokers)
        .with_cluster_authorized_operations(operations)
}
