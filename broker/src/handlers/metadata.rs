//! Metadata: this broker, and for each topic its partitions, all led by this broker. Unknown
//! topics are created when `auto.create.topics.enable` and the request allow it, as Kafka does.

use std::rc::Rc;

use kafka_protocol::messages::metadata_response::{MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::ResponseError;

use super::create_topics::create_topic;
use super::str_bytes;
use crate::shard_context::Shard;
use crate::topics::{validate_topic_name, TopicInfo};

pub async fn handle(shard: &Rc<Shard>, request: MetadataRequest, version: i16) -> MetadataResponse {
    let config = &shard.broker.config;
    let broker_id = BrokerId(config.broker_id);
    // v0: an empty list means every topic; v1+: null means every topic.
    let requested: Option<Vec<String>> = match request.topics {
        None => None,
        Some(topics) if version == 0 && topics.is_empty() => None,
        Some(topics) => Some(topics.into_iter().filter_map(|t| t.name.map(|n| n.0.to_string())).collect()),
    };
    let allow_auto_create = config.auto_create_topics_enable && (version < 4 || request.allow_auto_topic_creation);
    let mut topics = Vec::new();
    match requested {
        None => {
            let all: Vec<TopicInfo> = shard.broker.topics.read().unwrap().all().cloned().collect();
            topics.extend(all.iter().map(|info| topic_metadata(info, broker_id)));
        }
        Some(names) => {
            for name in names {
                let existing = shard.broker.topics.read().unwrap().get(&name).cloned();
                let found = match existing {
                    Some(info) => Ok(info),
                    None if validate_topic_name(&name).is_err() => Err(ResponseError::InvalidTopicException),
                    None if allow_auto_create => {
                        match create_topic(shard, &name, config.num_partitions, Default::default()).await {
                            Ok(info) => Ok(info),
                            Err((error, message)) => {
                                tracing::warn!(topic = name, %message, "auto-creating a topic failed");
                                Err(if error == ResponseError::TopicAlreadyExists.code() {
                                    ResponseError::LeaderNotAvailable
                                } else {
                                    ResponseError::UnknownTopicOrPartition
                                })
                            }
                        }
                    }
                    None => Err(ResponseError::UnknownTopicOrPartition),
                };
                topics.push(match found {
                    Ok(info) => topic_metadata(&info, broker_id),
                    Err(error) => MetadataResponseTopic::default()
                        .with_name(Some(TopicName(str_bytes(&name))))
                        .with_error_code(error.code()),
                });
            }
        }
    }
    MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(broker_id)
            .with_host(str_bytes(&config.advertised_host))
            .with_port(config.advertised_port as i32)])
        .with_cluster_id(Some(str_bytes(&shard.broker.cluster_id)))
        .with_controller_id(broker_id)
        .with_topics(topics)
}

fn topic_metadata(info: &TopicInfo, broker_id: BrokerId) -> MetadataResponseTopic {
    let partitions = (0..info.partitions)
        .map(|index| {
            MetadataResponsePartition::default()
                .with_partition_index(index)
                .with_leader_id(broker_id)
                .with_leader_epoch(0)
                .with_replica_nodes(vec![broker_id])
                .with_isr_nodes(vec![broker_id])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(&info.name))))
        .with_topic_id(uuid::Uuid::from_bytes(info.topic_id))
        .with_is_internal(info.is_internal())
        .with_partitions(partitions)
}
