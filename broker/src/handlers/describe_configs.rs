//! DescribeConfigs for topics (every topic config with its value and source) and for this broker.

use std::rc::Rc;

use kafka_protocol::messages::describe_configs_response::{DescribeConfigsResourceResult, DescribeConfigsResult};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::shard_context::Shard;
use crate::security::acl::model::{Operation, ResourceType};
use crate::security::session::Session;
use crate::topics::topic_config_defaults;

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

/// Kafka: a topic's configs need `operation` (DESCRIBE_CONFIGS, ALTER_CONFIGS) on the topic, the
/// broker's on the cluster. The error to answer when the principal lacks it.
pub fn config_access_denied(session: &Session, operation: Operation, resource_type: i8, name: &str) -> Option<(ResponseError, String)> {
    let (allowed, error) = match resource_type {
        RESOURCE_TOPIC => (session.authorize(operation, ResourceType::Topic, name), ResponseError::TopicAuthorizationFailed),
        RESOURCE_BROKER => (session.authorize_cluster(operation), ResponseError::ClusterAuthorizationFailed),
        _ => return None,
    };
    (!allowed).then(|| (error, format!("{operation:?} on {name} is not authorized")))
}

pub fn handle(shard: &Rc<Shard>, request: DescribeConfigsRequest, version: i16, session: &Session) -> DescribeConfigsResponse {
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let wanted = |key: &str| resource.configuration_keys.as_ref().map_or(true, |keys| keys.iter().any(|k| k.as_str() == key));
            let denied = config_access_denied(session, Operation::DescribeConfigs, resource.resource_type, &resource.resource_name);
            let entries: Result<Vec<(String, String, i8)>, (ResponseError, String)> = match resource.resource_type {
                _ if denied.is_some() => Err(denied.expect("checked")),
                RESOURCE_TOPIC => {
                    let topics = shard.broker.topics.read().unwrap();
                    match topics.get(resource.resource_name.as_str()) {
                        None => Err((ResponseError::UnknownTopicOrPartition, format!("Topic {} does not exist", resource.resource_name))),
                        Some(info) => Ok(topic_config_defaults(&shard.broker.config)
                            .into_iter()
                            .map(|(key, default)| match info.overrides.get(key) {
                                Some(value) => (key.to_string(), value.clone(), SOURCE_TOPIC),
                                None => (key.to_string(), default, SOURCE_DEFAULT),
                            })
                            .collect()),
                    }
                }
                RESOURCE_BROKER => Ok(broker_entries(shard)),
                other => Err((ResponseError::InvalidRequest, format!("resource type {other} is not supported"))),
            };
            let mut result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            match entries {
                Ok(entries) => {
                    result = result.with_error_message(None).with_configs(
                        entries
                            .into_iter()
                            .filter(|(key, _, _)| wanted(key))
                            .map(|(key, value, source)| {
                                let mut entry = DescribeConfigsResourceResult::default()
                                    .with_name(str_bytes(&key))
                                    .with_value(Some(str_bytes(&value)))
                                    .with_config_source(source)
                                    .with_read_only(resource.resource_type == RESOURCE_BROKER);
                                if version >= 3 {
                                    entry = entry.with_documentation(None);
                                }
                                entry
                            })
                            .collect(),
                    );
                }
                Err((error, message)) => {
                    result = result.with_error_code(error.code()).with_error_message(Some(str_bytes(&message)));
                }
            }
            result
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn broker_entries(shard: &Shard) -> Vec<(String, String, i8)> {
    let c = &shard.broker.config;
    let dirs: Vec<String> = c.log_dirs.iter().map(|d| d.display().to_string()).collect();
    [
        ("broker.id", c.broker_id.to_string()),
        ("listeners", c.listeners.iter().map(|l| format!("{}://{}", l.name, l.bind)).collect::<Vec<_>>().join(",")),
        (
            "advertised.listeners",
            c.listeners.iter().map(|l| format!("{}://{}:{}", l.name, l.advertised_host, l.advertised_port)).collect::<Vec<_>>().join(","),
        ),
        ("log.dirs", dirs.join(",")),
        ("num.partitions", c.num_partitions.to_string()),
        ("auto.create.topics.enable", c.auto_create_topics_enable.to_string()),
        ("message.max.bytes", c.message_max_bytes.to_string()),
        ("log.segment.bytes", c.log_defaults.segment_bytes.to_string()),
        ("log.retention.ms", c.log_defaults.retention_ms.to_string()),
        ("log.retention.bytes", c.log_defaults.retention_bytes.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v, SOURCE_STATIC_BROKER))
    .collect()
}
