//! CreatePartitions: a topic's partition count only grows. In cluster mode the new
//! partitions' replicas are written to ZooKeeper and the answer waits for their leaders.

use std::rc::Rc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::shard_context::Shard;
use crate::security::acl::model::{Operation, ResourceType};
use crate::security::session::Session;
use crate::topic_admin::{add_partitions_here, add_partitions_in_cluster, check_brokers_here, check_replica_lists, MAX_PARTITIONS_PER_TOPIC};

pub async fn handle(shard: &Rc<Shard>, request: CreatePartitionsRequest, session: &Session) -> CreatePartitionsResponse {
    let mut results = Vec::new();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let current = shard.broker.partition_count(&name);
        let assignment: Option<Vec<Vec<i32>>> = topic
            .assignments
            .as_ref()
            .filter(|a| !a.is_empty())
            .map(|a| a.iter().map(|replicas| replicas.broker_ids.iter().map(|b| b.0).collect()).collect());
        let outcome: Result<(), (ResponseError, String)> = match current {
            _ if !session.authorize(Operation::Alter, ResourceType::Topic, &name) => {
                Err((ResponseError::TopicAuthorizationFailed, "Topic authorization failed.".to_string()))
            }
            None => Err((ResponseError::UnknownTopicOrPartition, format!("The topic '{name}' does not exist."))),
            Some(current) if topic.count <= current => Err((
                ResponseError::InvalidPartitions,
                format!("Topic currently has {current} partitions, which is higher than or equal to the requested {}.", topic.count),
            )),
            Some(_) if topic.count > MAX_PARTITIONS_PER_TOPIC => {
                Err((ResponseError::InvalidPartitions, format!("At most {MAX_PARTITIONS_PER_TOPIC} partitions per topic.")))
            }
            Some(current) => match check_assignment(shard, topic.count - current, assignment.as_deref()) {
                Err(error) => Err(error),
                Ok(()) if request.validate_only => Ok(()),
                Ok(()) if shard.broker.cluster.is_some() => {
                    add_partitions_in_cluster(shard, &name, current, topic.count, assignment, request.timeout_ms).await
                }
                Ok(()) => add_partitions_here(shard, &name, current, topic.count).await,
            },
        };
        let mut result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
        if let Err((error, message)) = outcome {
            result = result.with_error_code(error.code()).with_error_message(Some(str_bytes(&message)));
        }
        results.push(result);
    }
    CreatePartitionsResponse::default().with_results(results)
}


/// The new partitions' replicas as the client chose them, checked as Kafka does: one list per
/// new partition, each of the proper shape; standalone, naming this broker only (in cluster mode
/// the ZooKeeper thread checks them against the live brokers and the topic's factor).
fn check_assignment(shard: &Shard, added: i32, assignment: Option<&[Vec<i32>]>) -> Result<(), (ResponseError, String)> {
    let Some(assignment) = assignment else { return Ok(()) };
    if assignment.len() as i32 != added {
        return Err((
            ResponseError::InvalidReplicaAssignment,
            format!("Increasing the number of partitions by {added} but {} assignments provided.", assignment.len()),
        ));
    }
    check_replica_lists(assignment)?;
    if shard.broker.cluster.is_none() {
        check_brokers_here(shard, assignment)?;
    }
    Ok(())
}
