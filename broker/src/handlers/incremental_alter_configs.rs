//! IncrementalAlterConfigs: SET, DELETE, APPEND, SUBTRACT on single topic config keys.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};
use kafka_protocol::ResponseError;

use super::describe_configs::RESOURCE_TOPIC;
use super::str_bytes;
use crate::shard_context::Shard;
use crate::security::acl::model::Operation;
use crate::security::session::Session;
use crate::topics::log_config_for;

const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;

pub async fn handle(shard: &Rc<Shard>, request: IncrementalAlterConfigsRequest, session: &Session) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::new();
    for resource in request.resources {
        let operations: Vec<(String, i8, Option<String>)> =
            resource.configs.iter().map(|c| (c.name.to_string(), c.config_operation, c.value.as_ref().map(|v| v.to_string()))).collect();
        let outcome = apply_topic_overrides(
            shard,
            session,
            resource.resource_type,
            resource.resource_name.as_str(),
            |current| {
                let mut next = current.clone();
                for (key, operation, value) in &operations {
                    let list = |v: &Option<String>| -> Vec<String> {
                        v.as_deref().unwrap_or("").split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
                    };
                    match *operation {
                        SET => {
                            next.insert(key.clone(), value.clone().unwrap_or_default());
                        }
                        DELETE => {
                            next.remove(key);
                        }
                        APPEND | SUBTRACT => {
                            let mut items = list(&next.get(key).cloned());
                            for item in list(value) {
                                if *operation == APPEND && !items.contains(&item) {
                                    items.push(item);
                                } else if *operation == SUBTRACT {
                                    items.retain(|i| *i != item);
                                }
                            }
                            next.insert(key.clone(), items.join(","));
                        }
                        other => return Err((ResponseError::InvalidRequest, format!("unknown config operation {other}"))),
                    }
                }
                Ok(next)
            },
            request.validate_only,
        )
        .await;
        let mut response = AlterConfigsResourceResponse::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone())
            .with_error_message(None);
        if let Err((error, message)) = outcome {
            response = response.with_error_code(error.code()).with_error_message(Some(str_bytes(&message)));
        }
        responses.push(response);
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

/// Computes a topic's new overrides with `change`, validates them, stores them and applies them
/// to the open partitions on every shard.
pub async fn apply_topic_overrides(
    shard: &Rc<Shard>,
    session: &Session,
    resource_type: i8,
    topic: &str,
    change: impl FnOnce(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, (ResponseError, String)>,
    validate_only: bool,
) -> Result<(), (ResponseError, String)> {
    if let Some(denied) = super::describe_configs::config_access_denied(session, Operation::AlterConfigs, resource_type, topic) {
        return Err(denied);
    }
    if resource_type != RESOURCE_TOPIC {
        return Err((ResponseError::InvalidRequest, "only topic configs can be altered".into()));
    }
    let current = match shard.broker.topics.read().unwrap().get(topic) {
        Some(info) => info.overrides.clone(),
        None => return Err((ResponseError::UnknownTopicOrPartition, format!("Topic {topic} does not exist"))),
    };
    let next = change(&current)?;
    log_config_for(&shard.broker.config, &next).map_err(|e| (ResponseError::InvalidConfig, e))?;
    if validate_only {
        return Ok(());
    }
    shard.broker.topics.write().unwrap().set_overrides(topic, next).map_err(|e| (ResponseError::KafkaStorageError, e))?;
    shard.broker.save_topics().await.map_err(|e| (ResponseError::KafkaStorageError, e))?;
    crate::topic_admin::reconfigure_topic_everywhere(shard, topic).await;
    Ok(())
}
