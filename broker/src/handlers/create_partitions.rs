//! CreatePartitions: a topic's partition count only grows. In cluster mode the new
//! partitions' replicas are written to ZooKeeper and the answer waits for their leaders.

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
        let current = shard.broker.partition_count(&name);
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
                Err((ResponseError::InvalidReplicaAssignment, "manual replica assignment is not supported".into()))
            }
            Some(_) if request.validate_only => Ok(()),
            Some(current) if shard.broker.cluster.is_some() => {
                add_partitions_in_cluster(shard, &name, current, topic.count, request.timeout_ms).await
            }
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
                if !request.validate_only && shard.broker.cluster.is_none() {
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

/// Cluster mode: the coordinator extends the assignment in ZooKeeper; the controller elects the
/// new partitions' leaders, and the answer waits for them (at most the request's timeout), so
/// the client's next Metadata finds them. Each broker opens its new replicas when it sees them.
async fn add_partitions_in_cluster(shard: &Rc<Shard>, name: &str, current: i32, total: i32, timeout_ms: i32) -> Result<(), (ResponseError, String)> {
    let cluster = shard.broker.cluster.as_ref().expect("cluster mode");
    cluster.add_partitions(name, total).await.map_err(|e| match e {
        zk::TopicChangeError::UnknownTopic => (ResponseError::UnknownTopicOrPartition, format!("The topic '{name}' does not exist.")),
        zk::TopicChangeError::InvalidPartitions(message) => (ResponseError::InvalidPartitions, message),
        zk::TopicChangeError::InvalidReplicationFactor(message) => (ResponseError::InvalidReplicationFactor, message),
        zk::TopicChangeError::ZooKeeper(message) => (ResponseError::UnknownServerError, message),
    })?;
    let timeout_ms = timeout_ms.clamp(0, 60_000) as u64;
    if !super::wait_for_snapshot(cluster, timeout_ms, |snapshot| (current..total).all(|p| snapshot.leader(name, p).is_some())).await {
        return Err((ResponseError::RequestTimedOut, "the new partitions have no leader yet".into()));
    }
    tracing::info!(topic = name, partitions = total, "added partitions in the cluster");
    Ok(())
}
