//! The one door for writes to a partition. Whoever writes (a producer, the group coordinator, a
//! follower copying its leader) calls `Partition::append`, which in this order, under the log's
//! write lock:
//! 1. refuses a closed partition (the final checkpoint has run) and a writer in the wrong role
//!    (cluster mode: only the leader takes producers' and coordinators' records, only a follower
//!    takes replicated ones), and keeps the epoch the log stamps in line with the leadership;
//! 2. recompresses a producer's batches into the topic's `compression.type` when it names a
//!    codec (recompress.rs), then checks the batches once (framing, CRC, sizes;
//!    `storage::Log::check_from_*`);
//! 3. checks idempotent producers' sequences (a retry answers its original offset);
//! 4. appends, and records the batches' producer state;
//! then, with the lock released, wakes the shard's waiting fetches and applies the flush policy
//! (group commit for `flush.messages`).
//! Waiting for the ISR (acks=all) is the caller's: `Partition::wait_for_high_watermark`.

use storage::StorageError;

use super::recompress::recompress;
use super::{check_leader, Partition, PartitionError};
use crate::clock::now_ms;
use crate::producer_state::SequenceCheck;

/// How often a partition's failing appends are logged at most (see `log_storage_error`).
const STORAGE_ERROR_LOG_INTERVAL_MS: i64 = 10_000;

/// Who writes, as Kafka's AppendOrigin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOrigin {
    /// A producer's batches: offsets assigned here, producer sequences checked.
    Client,
    /// The broker's own records (the group coordinator's `__consumer_offsets`).
    Coordinator,
    /// A follower's copy of its leader's batches: offsets and epochs as the leader wrote them.
    Replication,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: i64,
    /// The offset after the last appended record (what acks=all waits for).
    pub end_offset: i64,
    /// The broker's timestamp for LogAppendTime topics, else -1.
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
    /// A producer's retry of batches already in the log: nothing was appended.
    pub duplicate: bool,
}

#[derive(Debug)]
pub enum AppendError {
    Partition(PartitionError),
    OutOfOrderSequence { producer_id: i64, expected: i32, got: i32 },
    ProducerFenced { producer_id: i64, epoch: i16 },
}

impl From<StorageError> for AppendError {
    fn from(e: StorageError) -> Self {
        AppendError::Partition(PartitionError::Storage(e))
    }
}

impl std::fmt::Display for AppendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppendError::Partition(PartitionError::Storage(e)) => write!(f, "{e}"),
            AppendError::Partition(e) => write!(f, "{e:?}"),
            AppendError::OutOfOrderSequence { producer_id, expected, got } => {
                write!(f, "producer {producer_id} expected sequence {expected}, got {got}")
            }
            AppendError::ProducerFenced { producer_id, epoch } => write!(f, "producer {producer_id} epoch {epoch} is fenced"),
        }
    }
}

impl Partition {
    /// The one door: see the module doc.
    pub async fn append(&self, records: &[u8], origin: AppendOrigin) -> Result<Appended, AppendError> {
        let appended = self.append_unlogged(records, origin).await;
        if let Err(AppendError::Partition(PartitionError::Storage(error @ (StorageError::Io { .. } | StorageError::Offline { .. })))) = &appended {
            self.log_storage_error(error);
        }
        appended
    }

    /// The log cannot be written (a full disk, an I/O error): the writer is answered
    /// KAFKA_STORAGE_ERROR, and the operator reads why here. At most one line per partition every
    /// `STORAGE_ERROR_LOG_INTERVAL_MS`, with the count of those not logged, so a full disk under
    /// load does not flood the log.
    fn log_storage_error(&self, error: &StorageError) {
        let now = now_ms();
        let (last_logged_ms, suppressed) = self.storage_errors.get();
        if now - last_logged_ms < STORAGE_ERROR_LOG_INTERVAL_MS {
            self.storage_errors.set((last_logged_ms, suppressed + 1));
            return;
        }
        self.storage_errors.set((now, 0));
        tracing::error!(
            topic = self.topic,
            partition = self.index,
            %error,
            not_logged_since_last = suppressed,
            "append failed, answered KAFKA_STORAGE_ERROR: the log cannot be written (disk full?)"
        );
    }

    async fn append_unlogged(&self, records: &[u8], origin: AppendOrigin) -> Result<Appended, AppendError> {
        let now = now_ms();
        let mut log = self.log.write().await.expect("partition lock");
        if self.closed.get() {
            return Err(AppendError::Partition(PartitionError::ShuttingDown));
        }
        let leads = check_leader(&self.broker, &self.topic, self.index);
        match origin {
            AppendOrigin::Client | AppendOrigin::Coordinator => leads.map_err(AppendError::Partition)?,
            AppendOrigin::Replication if leads.is_ok() => {
                return Err(AppendError::Partition(PartitionError::NotLeaderOrFollower));
            }
            AppendOrigin::Replication => {}
        }
        self.sync_leader_epoch(&mut log).await;
        let recompressed = match (origin, log.config().compression_codec) {
            (AppendOrigin::Client, Some(codec)) => recompress(records, codec)?,
            _ => None,
        };
        let records = recompressed.as_deref().unwrap_or(records);
        let checked = match origin {
            AppendOrigin::Replication => log.check_from_leader(records)?,
            AppendOrigin::Client | AppendOrigin::Coordinator => log.check_from_producer(records)?,
        };
        if origin == AppendOrigin::Client {
            let producers = self.producers.borrow();
            for header in checked.headers() {
                match producers.check(header) {
                    SequenceCheck::Accept => {}
                    SequenceCheck::Duplicate { base_offset } => {
                        // Already appended: a retry. Kafka answers success with the original offset.
                        return Ok(Appended {
                            base_offset,
                            end_offset: base_offset,
                            log_append_time_ms: -1,
                            log_start_offset: log.log_start_offset(),
                            duplicate: true,
                        });
                    }
                    SequenceCheck::OutOfOrder { expected, got } => {
                        return Err(AppendError::OutOfOrderSequence { producer_id: header.producer_id, expected, got });
                    }
                    SequenceCheck::FencedEpoch => {
                        return Err(AppendError::ProducerFenced { producer_id: header.producer_id, epoch: header.producer_epoch });
                    }
                }
            }
        }
        let info = log.append_checked(checked, now).await?;
        {
            // Idempotent producers' state follows the log on every replica, so a new leader
            // still recognises retries.
            let mut producers = self.producers.borrow_mut();
            for header in &info.headers {
                producers.record(header);
            }
        }
        let appended = Appended {
            base_offset: info.base_offset,
            end_offset: info.last_offset + 1,
            log_append_time_ms: info.log_append_time_ms,
            log_start_offset: log.log_start_offset(),
            duplicate: false,
        };
        drop(log);
        self.wake_waiters();
        if info.flush_due {
            self.flush_through(appended.end_offset).await?;
        }
        Ok(appended)
    }

    /// Group commit for `flush.messages`: makes the log durable at least up to `end_offset`. The
    /// flush takes the write lock, so appends that arrive while an fdatasync runs queue behind
    /// it, append together when it ends, and the first of them to flush covers them all; the
    /// others find the recovery point already past their batches and return without another
    /// fdatasync.
    async fn flush_through(&self, end_offset: i64) -> Result<(), StorageError> {
        let mut log = self.log.write().await.expect("partition lock");
        if log.recovery_point() < end_offset {
            log.flush().await?;
        }
        Ok(())
    }
}
