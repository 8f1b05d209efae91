//! CreateTopics: validate the name, partition count, replication factor and configs; add the
//! the change itself is `topic_admin`'s.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::shard_context::Shard;
use crate::security::acl::model::{Operation, ResourceType};
use crate::security::session::Session;
use crate::topic_admin::{
    check_brokers_here, check_replica_lists, create_topic_here, create_topic_in_cluster, MAX_LEADER_WAIT_MS, MAX_PARTITIONS_PER_TOPIC,
};
use crate::topics::{log_config_for, topic_config_defaults, validate_topic_name};

pub async fn handle(shard: &Rc<Shard>, request: CreateTopicsRequest, version: i16, session: &Session) -> CreateTopicsResponse {
    // Kafka: CREATE on the cluster, or else on each topic.
    let may_create_any = session.authorize_cluster(Operation::Create);
    let mut results = Vec::new();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let mut result = CreatableTopicResult::default().with_name(topic.name.clone());
        if !may_create_any && !session.authorize(Operation::Create, ResourceType::Topic, &name) {
            let message = "Authorization failed.";
            results.push(result.with_error_code(ResponseError::TopicAuthorizationFailed.code()).with_error_message(Some(str_bytes(message))));
            continue;
        }
        let overrides: BTreeMap<String, String> =
            topic.configs.iter().filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string()))).collect();
        let assignment = match manual_assignment(&topic) {
            Ok(assignment) => assignment,
            Err((code, message)) => {
                results.push(result.with_error_code(code).with_error_message(Some(str_bytes(&message))));
                continue;
            }
        };
        let partitions = match (&assignment, topic.num_partitions) {
            (Some(assignment), _) => assignment.len() as i32,
            (None, -1) => shard.broker.config.num_partitions,
            (None, count) => count,
        };
        let replication_factor = match (&assignment, &shard.broker.cluster, topic.replication_factor) {
            (Some(assignment), _, _) => assignment[0].len() as i16,
            (None, Some(_), -1) => shard.broker.config.default_replication_factor,
            (None, Some(_), factor) => factor,
            (None, None, _) => 1,
        };
        let checked = check(shard, &name, partitions, replication_factor, assignment.as_deref(), &overrides);
        let outcome = match checked {
            Err(error) => Err(error),
            Ok(()) if request.validate_only => Ok(None),
            Ok(()) if shard.broker.cluster.is_some() => {
                let wait_ms = request.timeout_ms.clamp(0, MAX_LEADER_WAIT_MS) as u64;
                create_topic_in_cluster(shard, &name, partitions, replication_factor, assignment, overrides.clone(), wait_ms).await.map(Some)
            }
            Ok(()) => create_topic_here(shard, &name, partitions, overrides.clone()).await.map(|info| Some(info.topic_id)),
        };
        match outcome {
            Ok(topic_id) => {
                result = result.with_error_message(None);
                if version >= 7 {
                    // Zero for validate_only, as Kafka.
                    result = result.with_topic_id(uuid::Uuid::from_bytes(topic_id.unwrap_or_default()));
                }
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

/// CreateTopics' `assignments`, in partition order (None when the client left placement to us),
/// checked as Kafka's `validateReplicaAssignment`.
fn manual_assignment(topic: &CreatableTopic) -> Result<Option<Vec<Vec<i32>>>, (i16, String)> {
    if topic.assignments.is_empty() {
        return Ok(None);
    }
    if topic.num_partitions != -1 || topic.replication_factor != -1 {
        return Err((
            ResponseError::InvalidRequest.code(),
            "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.".into(),
        ));
    }
    let mut by_partition: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for assignment in &topic.assignments {
        by_partition.insert(assignment.partition_index, assignment.broker_ids.iter().map(|b| b.0).collect());
    }
    if by_partition.keys().copied().ne(0..by_partition.len() as i32) {
        return Err((
            ResponseError::InvalidReplicaAssignment.code(),
            format!("Partitions should be a consecutive 0-based integer sequence: {:?}", by_partition.keys().collect::<Vec<_>>()),
        ));
    }
    let assignment: Vec<Vec<i32>> = by_partition.into_values().collect();
    check_replica_lists(&assignment).map_err(|(error, message)| (error.code(), message))?;
    Ok(Some(assignment))
}

fn check(
    shard: &Shard,
    name: &str,
    partitions: i32,
    replication_factor: i16,
    assignment: Option<&[Vec<i32>]>,
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
    if !(1..=MAX_PARTITIONS_PER_TOPIC).contains(&partitions) {
        return Err((ResponseError::InvalidPartitions.code(), format!("Number of partitions must be between 1 and {MAX_PARTITIONS_PER_TOPIC}.")));
    }
    // In cluster mode the coordinator checks the factor against the live brokers.
    if shard.broker.cluster.is_none() && replication_factor != -1 && replication_factor != 1 {
        return Err((
            ResponseError::InvalidReplicationFactor.code(),
            format!("Replication factor: {replication_factor} larger than available brokers: 1."),
        ));
    }
    if let (Some(assignment), None) = (assignment, &shard.broker.cluster) {
        // A single broker: the only broker an assignment can name is this one.
        check_brokers_here(shard, assignment).map_err(|(error, message)| (error.code(), message))?;
    }
    log_config_for(&shard.broker.config, overrides).map_err(|e| (ResponseError::InvalidConfig.code(), e))?;
    Ok(())
}

