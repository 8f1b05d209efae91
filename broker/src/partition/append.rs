//! The one door for writes to a partition. Whoever writes (a producer, the group coordinator, a
//! follower copying its leader) calls `Partition::append`, which in this order, under the log's
//! write lock:
//! 1. refuses a closed partition (the final checkpoint has run) and a writer in the wrong role
//!    (cluster mode: only the leader takes producers' and coordinators' records, only a follower
//!    takes replicated ones), and keeps the epoch the log stamps in line with the leadership;
//! 2. recompresses a producer's batches into the topic's `compression.type` when it names a
//!    codec (recompress.rs), then checks the batches once (framing, CRC, sizes;
//!    `storage::Log::check_from_*`);
//! 3. checks idempotent producers' sequences (a retry answers its original offset), and a
//!    transaction marker's producer and coordinator epochs (txn_marker.rs);
//! 4. appends, and records the batches' producer state (open transactions included), writing
//!    a producer state snapshot when the append rolled a segment (producer_snapshot.rs);
//! then, with the lock released, wakes the shard's waiting fetches and applies the flush policy
//! (group commit for `flush.messages`).
//! Waiting for the ISR (acks=all) is the caller's: `Partition::wait_for_high_watermark`.

use storage::StorageError;

use super::recompress::recompress;
use super::{check_leader, Partition, PartitionError};
use crate::clock::now_ms;
use crate::producer_state::{MarkerCheck, SequenceCheck};

/// How often a partition's failing appends are logged at most (see `log_storage_error`).
const STORAGE_ERROR_LOG_INTERVAL_MS: i64 = 10_000;

/// Kafka 3.9's message for a keyless record sent to a compacted topic (LogValidator).
pub const KEYLESS_REFUSAL: &str = "Compacted topic cannot accept message without key in topic partition";

/// Whether an append failed because a compacted topic refused a keyless record: INVALID_RECORD.
pub fn is_keyless_refusal(error: &AppendError) -> bool {
    matches!(error, AppendError::Partition(PartitionError::Storage(StorageError::CorruptBatch(m))) if m.starts_with(KEYLESS_REFUSAL))
}

/// Who writes, as Kafka's AppendOrigin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOrigin {
    /// A producer's batches: offsets assigned here, producer sequences checked.
    Client,
    /// The broker's own records (the group coordinator's `__consumer_offsets`).
    Coordinator,
    /// A transaction coordinator's COMMIT/ABORT control batch (Kafka writes these with origin
    /// COORDINATOR; the coordinator epoch rides along for the fencing check).
    TxnMarker { coordinator_epoch: i32 },
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
    /// A marker from a transaction coordinator older than one already seen.
    CoordinatorFenced { producer_id: i64, coordinator_epoch: i32 },
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
            AppendError::CoordinatorFenced { producer_id, coordinator_epoch } => {
                write!(f, "marker for producer {producer_id} from coordinator epoch {coordinator_epoch}, older than the last seen")
            }
        }
    }
}

impl Partition {
    /// KIP-890 part 1: whether a transactional append of the producer at `epoch` needs the
    /// coordinator's word first (the produce handler asks, `txn_router`). Not when the producer
    /// already has an open transaction here in that epoch: its first append was verified, and
    /// only a marker (which ends it) can make the partition leave the transaction.
    pub fn needs_transaction_verification(&self, producer_id: i64, epoch: i16) -> bool {
        !self.producers.borrow().in_transaction(producer_id, epoch)
    }

    /// The one door: see the module doc.
    pub async fn append(&self, records: &[u8], origin: AppendOrigin) -> Result<Appended, AppendError> {
        let appended = self.append_unlogged(records, origin).await;
        if let Err(AppendError::Partition(PartitionError::Storage(error @ (StorageError::Io { .. } | StorageError::Offline { .. })))) = &appended {
            // A failed log dir is logged once for the whole dir (`log_manager::note_failure`).
            if !self.note_storage_failure(error).await {
                self.log_storage_error(error);
            }
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
        if storage::log_manager::is_offline(log.dir()) {
            return Err(AppendError::Partition(PartitionError::Storage(storage::log_manager::offline_error(log.dir()))));
        }
        let leads = check_leader(&self.broker, &self.topic, self.index);
        match origin {
            AppendOrigin::Client | AppendOrigin::Coordinator | AppendOrigin::TxnMarker { .. } => leads.map_err(AppendError::Partition)?,
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
            AppendOrigin::Client | AppendOrigin::Coordinator | AppendOrigin::TxnMarker { .. } => log.check_from_producer(records)?,
        };
        if origin == AppendOrigin::Client && checked.headers().iter().any(|h| h.is_control()) {
            return Err(super::txn_marker::control_batch_from_client());
        }
        if let AppendOrigin::TxnMarker { coordinator_epoch } = origin {
            let producers = self.producers.borrow();
            for header in checked.headers() {
                assert!(header.is_control(), "a marker append carries control batches only");
                match producers.check_marker(header, coordinator_epoch) {
                    MarkerCheck::Accept => {}
                    MarkerCheck::FencedEpoch => {
                        return Err(AppendError::ProducerFenced { producer_id: header.producer_id, epoch: header.producer_epoch });
                    }
                    MarkerCheck::FencedCoordinator => {
                        return Err(AppendError::CoordinatorFenced { producer_id: header.producer_id, coordinator_epoch });
                    }
                }
            }
        }
        if origin == AppendOrigin::Client && log.config().compact {
            // Kafka 3.9's LogValidator: a compacted topic keeps the last record per key, so a
            // record without one is refused (decompressing the batch to see its records).
            let keyless = super::record_codec::keyless_records(records)?;
            if let Some(first) = keyless.first() {
                // Answered INVALID_RECORD by the produce handler (`is_keyless_refusal`).
                return Err(StorageError::CorruptBatch(format!(
                    "{KEYLESS_REFUSAL} {}-{} (record {first} of its batch has no key)",
                    self.topic, self.index
                ))
                .into());
            }
        }
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
        let abort_indexes = checked.abort_marker_indexes();
        let active_before = log.active_segment_base_offset();
        let info = log.append_checked(checked, now).await?;
        let rolled_at = log.active_segment_base_offset();
        if rolled_at != active_before {
            // A roll happens before the first batch of an append: the state not yet recording
            // these batches is the state at the new segment's base offset.
            assert_eq!(rolled_at, info.headers[0].base_offset, "a segment rolls at an append's first batch");
            self.take_snapshot(&log, rolled_at).await;
        }
        let aborted = self.aborted_txns_of(&info.headers, &abort_indexes);
        {
            // Idempotent producers' state follows the log on every replica, so a new leader
            // still recognises retries.
            let mut producers = self.producers.borrow_mut();
            for header in &info.headers {
                match origin {
                    AppendOrigin::TxnMarker { coordinator_epoch } => producers.record_marker(header, Some(coordinator_epoch)),
                    _ => producers.record(header),
                }
            }
            // The cleaner keeps each producer's last batch (emptied if need be), as Kafka's
            // lastRecordsOfActiveProducers: as many entries as the producer state has producers.
            let mut last_offsets = self.producer_last_offsets.borrow_mut();
            for header in info.headers.iter().filter(|h| h.has_producer_id()) {
                last_offsets.insert(header.producer_id, header.last_offset());
            }
        }
        self.index_aborted_txns(&mut log, aborted);
        let appended = Appended {
            base_offset: info.base_offset,
            end_offset: info.last_offset + 1,
            log_append_time_ms: info.log_append_time_ms,
            log_start_offset: log.log_start_offset(),
            duplicate: false,
        };
        drop(log);
        if origin != AppendOrigin::Replication { crate::metrics::appended(&self.topic, records.len(), info.record_count) }
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
            let started = std::time::Instant::now();
            log.flush().await?;
            crate::metrics::log_flushed(started);
        }
        Ok(())
    }
}
