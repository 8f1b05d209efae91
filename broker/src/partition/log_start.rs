//! The log start offset beyond retention: DeleteRecords moves it on the leader (records below it
//! are gone for readers, whole segments below it are deleted), followers follow the leader's
//! (from fetch responses), and DeleteRecords answers the low watermark: the smallest log start
//! offset over the leader and its live followers, Kafka's `lowWatermarkIfLeader`.
//!
//! Contract: the log start offset only grows and never passes the high watermark on a leader
//! (storage asserts it never passes the log end).

use storage::StorageError;

use super::{check_leader, Partition, PartitionError, ReadBound};

/// Why DeleteRecords could not move the log start.
#[derive(Debug)]
pub enum DeleteRecordsError {
    /// Negative (other than -1) or past the high watermark (Kafka: OFFSET_OUT_OF_RANGE).
    OffsetOutOfRange,
    Partition(PartitionError),
    Storage(StorageError),
}

/// DeleteRecords' "up to the high watermark".
const HIGH_WATERMARK: i64 = -1;

impl Partition {
    /// Leader: records below `offset` (or below the high watermark for `HIGH_WATERMARK`) are
    /// deleted. Returns the requested offset, durable in the log start offset checkpoint; the low
    /// watermark (`low_watermark`) reaches it once the followers have followed.
    pub async fn delete_records_before(&self, offset: i64) -> Result<i64, DeleteRecordsError> {
        check_leader(&self.broker, &self.topic, self.index).map_err(DeleteRecordsError::Partition)?;
        if self.is_closed() {
            return Err(DeleteRecordsError::Partition(PartitionError::ShuttingDown));
        }
        let high_watermark = self.readable_end(ReadBound::HighWatermark).await;
        let offset = if offset == HIGH_WATERMARK { high_watermark } else { offset };
        if offset < 0 || offset > high_watermark {
            return Err(DeleteRecordsError::OffsetOutOfRange);
        }
        let mut log = self.log.write().await.expect("partition lock");
        if self.is_closed() {
            return Err(DeleteRecordsError::Partition(PartitionError::ShuttingDown));
        }
        let log_start_offset = log.advance_log_start_offset(offset).await.map_err(DeleteRecordsError::Storage)?;
        drop(log);
        // Waiting follower fetches return, so followers learn the new log start soon.
        self.wake_waiters();
        Ok(log_start_offset)
    }

    /// The smallest log start offset over this replica and, in cluster mode on the leader, the
    /// followers on live brokers (as their last fetch said; one not heard from counts as 0).
    pub async fn low_watermark(&self) -> i64 {
        let own = self.log.read().await.expect("partition lock").log_start_offset();
        let Some(cluster) = &self.broker.cluster else { return own };
        let snapshot = cluster.view.snapshot();
        let me = self.broker.config.broker_id;
        let Some(replicas) = snapshot.topics.get(&self.topic).and_then(|t| t.replicas.get(self.index as usize)) else { return own };
        let replication = self.replication.borrow();
        replicas
            .iter()
            .filter(|&&replica| replica != me && snapshot.brokers.contains_key(&replica))
            .map(|replica| replication.follower_log_start_offsets.get(replica).copied().unwrap_or(0))
            .fold(own, i64::min)
    }

    /// Follower: the leader's log start offset from a fetch response. Ours follows it, never past
    /// our own log end (the rest follows once we have fetched that far).
    pub async fn follow_log_start_offset(&self, leader_log_start_offset: i64) -> Result<(), StorageError> {
        if leader_log_start_offset <= self.log.read().await.expect("partition lock").log_start_offset() {
            return Ok(());
        }
        let mut log = self.log.write().await.expect("partition lock");
        if self.is_closed() {
            return Ok(());
        }
        let target = leader_log_start_offset.min(log.log_end_offset());
        log.advance_log_start_offset(target).await?;
        Ok(())
    }
}
