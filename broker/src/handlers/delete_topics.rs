//! DeleteTopics: remove the topic from the table, then every shard closes and deletes the
//! partitions of it that it owns. In cluster mode the controller deletes the topic in ZooKeeper
//! and every broker deletes its replicas when the topic leaves its snapshot
//! (`topic_admin::delete_topics_gone_from_cluster`); the answer waits for the topic to be gone.

use std::rc::Rc;

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::shard_context::Shard;
use crate::security::acl::model::{Operation, ResourceType};
use crate::security::session::Session;
use crate::topic_admin::{delete_topic_here, delete_topic_in_cluster};

pub async fn handle(shard: &Rc<Shard>, request: DeleteTopicsRequest, version: i16, session: &Session) -> DeleteTopicsResponse {
    // v6 names topics in `topics` (by name or id); earlier versions in `topic_names`.
    let mut targets: Vec<(Option<String>, uuid::Uuid)> = request.topic_names.iter().map(|n| (Some(n.0.to_string()), uuid::Uuid::nil())).collect();
    targets.extend(request.topics.iter().map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id)));
    let mut responses = Vec::new();
    for (name, topic_id) in targets {
        let resolved = match &shard.broker.cluster {
            Some(cluster) => {
                let snapshot = cluster.view.snapshot();
                match &name {
                    Some(n) => snapshot.topics.get(n).map(|t| (n.clone(), t.topic_id)),
                    None => snapshot.topics.iter().find(|(_, t)| t.topic_id == *topic_id.as_bytes()).map(|(n, t)| (n.clone(), t.topic_id)),
                }
            }
            None => {
                let topics = shard.broker.topics.read().unwrap();
                match &name {
                    Some(n) => topics.get(n).map(|t| (t.name.clone(), t.topic_id)),
                    None => topics.all().find(|t| t.topic_id == *topic_id.as_bytes()).map(|t| (t.name.clone(), t.topic_id)),
                }
            }
        };
        let mut result = DeletableTopicResult::default().with_name(name.as_deref().map(|n| TopicName(str_bytes(n))));
        if version >= 6 {
            result = result.with_topic_id(topic_id);
        }
        match resolved {
            // Kafka: DELETE on the topic.
            Some((name, _)) if !session.authorize(Operation::Delete, ResourceType::Topic, &name) => {
                result = result.with_error_code(ResponseError::TopicAuthorizationFailed.code());
            }
            None => {
                let code = if name.is_some() { ResponseError::UnknownTopicOrPartition } else { ResponseError::UnknownTopicId };
                result = result.with_error_code(code.code());
            }
            Some(_) if !shard.broker.config.delete_topic_enable => {
                result = result.with_error_code(ResponseError::TopicDeletionDisabled.code());
            }
            Some((name, id)) => {
                let deleted = match shard.broker.cluster.is_some() {
                    true => delete_topic_in_cluster(shard, &name, request.timeout_ms).await,
                    false => delete_topic_here(shard, &name).await.map_err(|e| (ResponseError::KafkaStorageError.code(), e)),
                };
                if let Err((code, e)) = deleted {
                    result = result.with_error_code(code);
                    if version >= 5 {
                        result = result.with_error_message(Some(str_bytes(&e)));
                    }
                } else {
                    result = result.with_name(Some(TopicName(str_bytes(&name))));
                    if version >= 6 {
                        result = result.with_topic_id(uuid::Uuid::from_bytes(id));
                    }
                }
            }
        }
        responses.push(result);
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

