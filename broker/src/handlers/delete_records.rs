//! DeleteRecords (API 21): moves each partition's log start offset on its leader and answers the
//! low watermark once every live replica has followed (Kafka's DelayedDeleteRecords), or
//! REQUEST_TIMED_OUT at the request's timeout.

use std::rc::Rc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use kafka_protocol::ResponseError;

use super::{partition_error_code, storage_error_code};
use crate::partition::DeleteRecordsError;
use crate::shard_context::Shard;
use crate::security::acl::model::{Operation, ResourceType};
use crate::security::session::Session;

/// How often a request waiting for followers looks at their log start offsets again.
const FOLLOWERS_POLL_MS: u64 = 20;
/// Kafka's "no low watermark" in a failed partition's answer.
const INVALID_LOW_WATERMARK: i64 = -1;

pub async fn handle(shard: &Rc<Shard>, request: DeleteRecordsRequest, session: &Session) -> DeleteRecordsResponse {
    let timeout_ms = request.timeout_ms.clamp(0, 300_000) as u64;
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let allowed = session.authorize(Operation::Delete, ResourceType::Topic, &name);
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            let owner = shard.owner_of(&name, p.partition_index);
            let (topic_name, index, offset) = (name.clone(), p.partition_index, p.offset);
            let (error_code, low_watermark) = if !allowed {
                (kafka_protocol::ResponseError::TopicAuthorizationFailed.code(), INVALID_LOW_WATERMARK)
            } else {
                shard.router.call(owner, move |owner| async move { delete(&owner, &topic_name, index, offset, timeout_ms).await }).await
            };
            partitions.push(
                DeleteRecordsPartitionResult::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(error_code)
                    .with_low_watermark(low_watermark),
            );
        }
        topics.push(DeleteRecordsTopicResult::default().with_name(topic.name).with_partitions(partitions));
    }
    DeleteRecordsResponse::default().with_topics(topics)
}

/// Runs on the owning shard: (error code, low watermark).
async fn delete(shard: &Shard, topic: &str, partition: i32, offset: i64, timeout_ms: u64) -> (i16, i64) {
    let handle = match shard.partition(topic, partition).await {
        Ok(handle) => handle,
        Err(e) => return (partition_error_code(&e), INVALID_LOW_WATERMARK),
    };
    let requested = match handle.delete_records_before(offset).await {
        Ok(requested) => requested,
        Err(DeleteRecordsError::OffsetOutOfRange) => return (ResponseError::OffsetOutOfRange.code(), INVALID_LOW_WATERMARK),
        Err(DeleteRecordsError::Partition(e)) => return (partition_error_code(&e), INVALID_LOW_WATERMARK),
        Err(DeleteRecordsError::Storage(e)) => {
            tracing::error!(topic, partition, error = %e, "DeleteRecords could not move the log start offset");
            return (storage_error_code(&e), INVALID_LOW_WATERMARK);
        }
    };
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    loop {
        let low_watermark = handle.low_watermark().await;
        if low_watermark >= requested {
            return (0, low_watermark);
        }
        if Instant::now() >= deadline || shard.broker.is_shutting_down() {
            return (ResponseError::RequestTimedOut.code(), INVALID_LOW_WATERMARK);
        }
        glommio::timer::sleep(Duration::from_millis(FOLLOWERS_POLL_MS)).await;
    }
}
