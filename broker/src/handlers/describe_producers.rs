//! DescribeProducers: the producers a partition leader knows (its producer state table: epoch,
//! last sequence and timestamp, coordinator epoch, the open transaction's first offset).

use std::rc::Rc;

use kafka_protocol::messages::describe_producers_response::{PartitionResponse, ProducerState, TopicResponse};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};

use super::{partition_error_code, str_bytes};
use crate::shard_context::Shard;
use crate::security::acl::model::{Operation, ResourceType};
use crate::security::session::Session;

pub async fn handle(shard: &Rc<Shard>, request: DescribeProducersRequest, session: &Session) -> DescribeProducersResponse {
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let mut partitions = Vec::with_capacity(topic.partition_indexes.len());
        // Kafka: READ on the topic.
        let allowed = session.authorize(Operation::Read, ResourceType::Topic, &topic.name);
        for index in topic.partition_indexes {
            let name = topic.name.0.to_string();
            let owner = shard.owner_of(&name, index);
            let denied = (kafka_protocol::ResponseError::TopicAuthorizationFailed.code(), "Topic authorization failed.".to_string());
            let found = if !allowed { Err(denied) } else { shard
                .router
                .call(owner, move |owner| async move {
                    owner.partition(&name, index).await.map(|p| p.producer_summaries()).map_err(|e| (partition_error_code(&e), format!("{e:?}")))
                })
                .await };
            partitions.push(match found {
                Ok(producers) => PartitionResponse::default().with_partition_index(index).with_active_producers(
                    producers
                        .into_iter()
                        .map(|p| {
                            ProducerState::default()
                                .with_producer_id(ProducerId(p.producer_id))
                                .with_producer_epoch(p.epoch as i32)
                                .with_last_sequence(p.last_sequence)
                                .with_last_timestamp(p.last_timestamp_ms)
                                .with_coordinator_epoch(p.coordinator_epoch)
                                .with_current_txn_start_offset(p.current_txn_start_offset)
                        })
                        .collect(),
                ),
                Err((code, message)) => PartitionResponse::default().with_partition_index(index).with_error_code(code).with_error_message(Some(str_bytes(&message))),
            });
        }
        topics.push(TopicResponse::default().with_name(topic.name).with_partitions(partitions));
    }
    DescribeProducersResponse::default().with_topics(topics)
}
