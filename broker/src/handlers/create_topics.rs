//! CreateTopics: validate the name, partition count, replication factor and configs; add the
//! topic to the table; open its partitions on their owning shards.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::shard_context::Shard;
use crate::topics::{log_config_for, topic_config_defaults, validate_topic_name, TopicInfo};

/// Most partitions one topic may have: a bound on what one request can make us open.
pub const MAX_PARTITIONS_PER_TOPIC: i32 = 10_000;

pub async fn handle(shard: &Rc<Shard>, request: CreateTopicsRequest, version: i16) -> CreateTopicsResponse {
    let mut results = Vec::new();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let mut result = CreatableTopicResult::default().with_name(topic.name.clone());
        let partitions = if topic.num_partitions == -1 { shard.broker.config.num_partitions } else { topic.num_partitions };
        let overrides: BTreeMap<String, String> =
            topic.configs.iter().filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string()))).collect();
        let checked = check(shard, &name, partitions, topic.replication_factor, !topic.assignments.is_empty(), &overrides);
        let replication_factor = match (&shard.broker.cluster, topic.replication_factor) {
            (Some(_), -1) => shard.broker.config.default_replication_factor,
            (Some(_), factor) => factor,
            (None, _) => 1,
        };
        let outcome = match checked {
            Err(error) => Err(error),
            Ok(()) if request.validate_only => Ok(None),
            Ok(()) if shard.broker.cluster.is_some() => {
                let wait_ms = request.timeout_ms.clamp(0, MAX_LEADER_WAIT_MS) as u64;
                create_topic_in_cluster(shard, &name, partitions, replication_factor, overrides.clone(), wait_ms).await.map(|_| None)
            }
            Ok(()) => create_topic(shard, &name, partitions, overrides.clone()).await.map(Some),
        };
        match outcome {
            Ok(_) => {
                result = result.with_error_message(None);
                if version >= 5 {
                    result = result.with_num_partitions(partitions).with_replication_factor(replication_factor).with_configs(Some(
                        topic_config_defaults(&shard.broker.config)
                            .into_iter()
                            .map(|(key, default)| {
                                let (value, source) = match overrides.get(key) {
                                    Some(v) => (v.clone(), 1), // TOPIC_CONFIG
                                    None => (default, 5),       // DEFAULT_CONFIG
                                };
                                CreatableTopicConfigs::default()
                                    .with_name(str_bytes(key))
                                    .with_value(Some(str_bytes(&value)))
                                    .with_config_source(source)
                            })
                            .collect(),
                    ));
                }
            }
            Err((code, message)) => {
                result = result.with_error_code(code).with_error_message(Some(str_bytes(&message)));
            }
        }
        results.push(result);
    }
    CreateTopicsResponse::default().with_topics(results)
}

fn check(
    shard: &Shard,
    name: &str,
    partitions: i32,
    replication_factor: i16,
    has_assignments: bool,
    overrides: &BTreeMap<String, String>,
) -> Result<(), (i16, String)> {
    validate_topic_name(name).map_err(|e| (ResponseError::InvalidTopicException.code(), e))?;
    let exists = match &shard.broker.cluster {
        Some(cluster) => cluster.view.snapshot().topics.contains_key(name),
        None => shard.broker.topics.read().unwrap().get(name).is_some(),
    };
    if exists {
        return Err((ResponseError::TopicAlreadyExists.code(), format!("Topic '{name}' already exists.")));
    }
    if !(1..=MAX_PARTITIONS_PER_TOPIC).contains(&partitions) && !has_assignments {
        return Err((ResponseError::InvalidPartitions.code(), format!("Number of partitions must be between 1 and {MAX_PARTITIONS_PER_TOPIC}.")));
    }
    // In cluster mode the coordinator checks the factor against the live brokers.
    if shard.broker.cluster.is_none() && replication_factor != -1 && replication_factor != 1 {
        return Err((
            ResponseError::InvalidReplicationFactor.code(),
            format!("Replication factor: {replication_factor} larger than available brokers: 1."),
        ));
    }
    if has_assignments {
        return Err((ResponseError::InvalidRequest.code(), "manual replica assignment is not supported on a single broker".into()));
    }
    log_config_for(&shard.broker.config, overrides).map_err(|e| (ResponseError::InvalidConfig.code(), e))?;
    Ok(())
}

/// How long CreateTopics waits at most for the controller to elect the new partitions' leaders.
const MAX_LEADER_WAIT_MS: i32 = 10_000;

/// Cluster mode (`replication_factor` already resolved from -1 to the default): writes the
/// topic to ZooKeeper through the coordinator (which assigns replicas
/// over the live brokers), then waits up to `wait_ms` until every partition has a leader, so a
/// client's next Metadata finds them (Kafka's CreateTopics waits the same way).
pub async fn create_topic_in_cluster(
    shard: &Rc<Shard>,
    name: &str,
    partitions: i32,
    replication_factor: i16,
    overrides: BTreeMap<String, String>,
    wait_ms: u64,
) -> Result<(), (i16, String)> {
    let cluster = shard.broker.cluster.as_ref().expect("cluster mode");
    let topic_id = crate::topics::new_topic_id(name);
    cluster.create_topic(name, partitions, replication_factor, overrides, topic_id).await.map_err(|e| match e {
        zk::CreateTopicError::AlreadyExists => (ResponseError::TopicAlreadyExists.code(), format!("Topic '{name}' already exists.")),
        zk::CreateTopicError::InvalidReplicationFactor(message) => (ResponseError::InvalidReplicationFactor.code(), message),
        zk::CreateTopicError::ZooKeeper(message) => (ResponseError::UnknownServerError.code(), message),
    })?;
    // Not having every leader within `wait_ms` is no error: the topic exists.
    super::wait_for_snapshot(cluster, wait_ms, |snapshot| (0..partitions).all(|p| snapshot.leader(name, p).is_some())).await;
    tracing::info!(topic = name, partitions, replication_factor, "created topic in the cluster");
    Ok(())
}

/// Adds the topic and opens its partitions on their owners. Errors are (code, message).
pub async fn create_topic(
    shard: &Rc<Shard>,
    name: &str,
    partitions: i32,
    overrides: BTreeMap<String, String>,
) -> Result<TopicInfo, (i16, String)> {
    let info = {
        let mut topics = shard.broker.topics.write().unwrap();
        if topics.get(name).is_some() {
            return Err((ResponseError::TopicAlreadyExists.code(), format!("Topic '{name}' already exists.")));
        }
        topics.create(name, partitions, overrides).map_err(|e| (ResponseError::KafkaStorageError.code(), e))?
    };
    open_partitions(shard, name, 0..partitions).await;
    tracing::info!(topic = name, partitions, "created topic");
    Ok(info)
}

/// Opens the given partitions of `topic` on their owning shards (creating their directories).
pub async fn open_partitions(shard: &Rc<Shard>, topic: &str, partitions: std::ops::Range<i32>) {
    for partition in partitions {
        let owner = shard.owner_of(topic, partition);
        let topic = topic.to_string();
        let opened = shard
            .router
            .call(owner, move |owner| async move { owner.partition(&topic, partition).await.map(|_| ()).map_err(|e| format!("{e:?}")) })
            .await;
        if let Err(e) = opened {
            tracing::error!(partition, error = e, "opening a new partition");
        }
    }
}
