//! CreatePartitions: a topic's partition count only grows.

use std::rc::Rc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::ResponseError;

use super::create_topics::{open_partitions, MAX_PARTITIONS_PER_TOPIC};
use super::str_bytes;
use crate::shard_context::Shard;

pub async fn handle(shard: &Rc<Shard>, request: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let mut results = Vec::new();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let current = shard.broker.topics.read().unwrap().get(&name).map(|t| t.partitions);
        let outcome: Result<(), (ResponseError, String)> = match current {
            None => Err((ResponseError::UnknownTopicOrPartition, format!("The topic '{name}' does not exist."))),
            Some(current) if topic.count <= current => Err((
                ResponseError::InvalidPartitions,
                format!("Topic currently has {current} partitions, which is higher than or equal to the requested {}.", topic.count),
            )),
            Some(_) if topic.count > MAX_PARTITIONS_PER_TOPIC => {
                Err((ResponseError::InvalidPartitions, format!("At most {MAX_PARTITIONS_PER_TOPIC} partitions per topic.")))
            }
            Some(_) if topic.assignments.as_ref().is_some_and(|a| !a.is_empty()) => {
                Err((ResponseError::InvalidReplicaAssignment, "manual replica assignment is not supported on a single broker".into()))
            }
            // Adding partitions on one broker only would leave the cluster inconsistent.
            Some(_) if shard.broker.cluster.is_some() => {
                Err((ResponseError::InvalidRequest, "adding partitions is not built for cluster mode yet".into()))
            }
            Some(_) if request.validate_only => Ok(()),
            Some(_) => shard
                .broker
                .topics
                .write()
                .unwrap()
                .set_partitions(&name, topic.count)
                .map_err(|e| (ResponseError::KafkaStorageError, e)),
        };
        let mut result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
        match outcome {
            Ok(()) => {
                if !request.validate_only {
                    open_partitions(shard, &name, current.unwrap_or(0)..topic.count).await;
                    tracing::info!(topic = name, partitions = topic.count, "added partitions");
                }
            }
            Err((error, message)) => {
                result = result.with_error_code(error.code()).with_error_message(Some(str_bytes(&message)));
            }
        }
        results.push(result);
    }
    CreatePartitionsResponse::default().with_results(results)
}
