//! ListOffsets: earliest (-2), latest (-1), max timestamp (-3), earliest local (-4, v8+), latest
//! tiered (-5, v9+), or the first offset at or after a timestamp, answered by the owning shard.
//! Without tiered storage (KIP-405) the earliest local offset is the earliest, and there is no
//! tiered offset: -1, as Kafka 3.9's `UnifiedLog.fetchOffsetByTimestamp` answers. As Kafka's `fetchOffsetForTimestamp`, what a
//! consumer can read bounds the answers: the high watermark, or the last stable offset for a
//! read_committed one (isolation_level 1, v2+).

use std::rc::Rc;

use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::{partition_error_code, storage_error_code};
use crate::partition::Partition;
use crate::shard_context::Shard;
use crate::security::acl::model::{Operation, ResourceType};
use crate::security::session::Session;
use storage::log::Log;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;
const READ_COMMITTED: i8 = 1;

pub async fn handle(shard: &Rc<Shard>, request: ListOffsetsRequest, version: i16, session: &Session) -> ListOffsetsResponse {
    let read_committed = version >= 2 && request.isolation_level == READ_COMMITTED;
    let mut topics = Vec::new();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let allowed = session.authorize(Operation::Describe, ResourceType::Topic, &name);
        let mut partitions = Vec::new();
        for p in topic.partitions {
            let owner = shard.owner_of(&name, p.partition_index);
            let (topic_name, index, timestamp) = (name.clone(), p.partition_index, p.timestamp);
            let (error_code, offset, found_timestamp, leader_epoch) = if !allowed {
                (kafka_protocol::ResponseError::TopicAuthorizationFailed.code(), -1, -1, -1)
            } else {
                shard.router.call(owner, move |owner| async move { lookup(&owner, &topic_name, index, timestamp, read_committed).await }).await
            };
            let mut response = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_error_code(error_code)
                .with_offset(offset)
                .with_timestamp(found_timestamp);
            if version >= 4 && error_code == 0 {
                response = response.with_leader_epoch(leader_epoch);
            }
            partitions.push(response);
        }
        topics.push(ListOffsetsTopicResponse::default().with_name(topic.name).with_partitions(partitions));
    }
    ListOffsetsResponse::default().with_topics(topics)
}

/// Runs on the owning shard: (error code, offset, timestamp, leader epoch). The epoch is the one
/// that wrote the offset (the latest for LATEST), as Kafka: consumers validate their position
/// against it after a leader change. A single broker has no epochs and answers 0.
async fn lookup(shard: &Shard, topic: &str, partition: i32, timestamp: i64, read_committed: bool) -> (i16, i64, i64, i32) {
    let handle = match shard.partition(topic, partition).await {
        Ok(p) => p,
        Err(e) => return (partition_error_code(&e), -1, -1, -1),
    };
    if timestamp == LATEST_TIERED {
        return (0, -1, -1, -1);
    }
    let log = handle.log.read().await.expect("partition lock");
    let (error_code, offset, found_timestamp) = find(&handle, &log, timestamp, read_committed).await;
    let leader_epoch = match shard.broker.cluster {
        None => 0,
        Some(_) if timestamp == LATEST => log.latest_epoch().unwrap_or(-1),
        Some(_) => log.epoch_of_offset(offset).unwrap_or(-1),
    };
    (error_code, offset, found_timestamp, leader_epoch)
}

async fn find(handle: &Partition, log: &Log, timestamp: i64, read_committed: bool) -> (i16, i64, i64) {
    // What the consumer can read: the high watermark (the log end when standalone), or the last
    // stable offset.
    let readable_end = if read_committed { handle.last_stable_offset(log.log_end_offset()) } else { handle.high_watermark(log.log_end_offset()) };
    let target = match timestamp {
        LATEST => return (0, readable_end, -1),
        EARLIEST | EARLIEST_LOCAL => return (0, log.log_start_offset(), -1),
        // The offset of the record with the largest timestamp: the first one reaching it.
        MAX_TIMESTAMP => match log.max_timestamp() {
            Some(max) => max,
            None => return (0, -1, -1),
        },
        target => target,
    };
    match log.offset_for_timestamp(target).await {
        Ok(Some((offset, found))) if offset < readable_end => (0, offset, found),
        Ok(_) => (0, -1, -1),
        Err(e) => (storage_error_code(&e), -1, -1),
    }
}
