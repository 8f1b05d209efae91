//! A partition as this broker holds it: its log, and everything known beside the log (idempotent
//! producers, the leader epoch it stamps, replication's view of followers and the high
//! watermark, the waiters its appends wake).
//!
//! One door in: every write (a producer's batches, the group coordinator's records, a follower's
//! copy of its leader) goes through `Partition::append` (append.rs), which checks the batches
//! once, checks producer sequences, appends, records producer state, wakes waiting fetches and
//! applies the flush policy. Nothing else in the broker calls `Log::append_checked`.
//! One door out for clients: `Partition::read`, bounded by the high watermark (read_uncommitted)
//! or the last stable offset (read_committed: min(high watermark, the first offset of the oldest
//! open transaction); LSO <= HW <= LEO, asserted in `last_stable_offset`).
//!
//! Contract: a `Partition` lives on its owning shard's thread only (Rc, RefCell, glommio locks);
//! `table.rs` asserts that only the owner opens it. Offsets only grow (storage asserts it); the
//! high watermark never exceeds the log end and never moves back while this broker leads.
//!
//! Never: this module does not import `handlers`, `groups` or `replication` (they call it).

mod append;
mod log_start;
pub mod producer_snapshot;
pub mod own_batch;
mod recompress;
pub mod replay;
pub mod record_codec;
pub mod table;
pub mod txn_marker;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::sync::RwLock;
use shard::notify::Notify;
use storage::{FileSlice, Log, StorageError};

use crate::producer_state::ProducerStateTable;
use crate::state::BrokerState;
use crate::topics::log_config_for;

pub use append::{is_keyless_refusal, AppendError, AppendOrigin};
pub use log_start::DeleteRecordsError;
pub use table::PartitionTable;
pub use txn_marker::TxnMarker;

pub type TopicPartition = (String, i32);

pub struct Partition {
    pub topic: String,
    pub index: i32,
    broker: Arc<BrokerState>,
    /// The shard's wake-up for long-polling fetches and acks=all waits (shared by its partitions:
    /// one fetch may wait on many partitions of a shard).
    appended: Rc<Notify>,
    /// Read it for offsets, reads and maintenance; appends go through `append` only.
    pub log: RwLock<Log>,
    producers: RefCell<ProducerStateTable>,
    /// Producer id -> the last offset of its last batch here: the cleaner keeps those batches
    /// (emptied if need be) so a producer's sequence survives compaction and restarts.
    producer_last_offsets: RefCell<std::collections::HashMap<i64, i64>>,
    /// The offsets of the producer state snapshots in the directory (producer_snapshot.rs).
    snapshots: RefCell<std::collections::BTreeSet<i64>>,
    /// Cluster mode: what replication knows about this partition.
    pub replication: RefCell<ReplicaState>,
    /// Set under the write lock when the partition is closed (shutdown, deletion): the final
    /// checkpoint has seen every append, so nothing may append after it.
    closed: Cell<bool>,
    /// Storage errors of appends: (when one was last logged, how many since were not).
    storage_errors: Cell<(i64, u64)>,
}

/// A partition's replication state on this broker (cluster mode).
#[derive(Debug, Default)]
pub struct ReplicaState {
    /// Leader: each follower's log end offset, as its last fetch said (the fetch offset).
    pub follower_log_end_offsets: std::collections::BTreeMap<i32, i64>,
    /// Leader: each follower's log start offset, as its last fetch said (DeleteRecords).
    pub follower_log_start_offsets: std::collections::BTreeMap<i32, i64>,
    /// Leader: when each follower last fetched from the log end (Kafka's lastCaughtUpTime).
    pub follower_caught_up_ms: std::collections::BTreeMap<i32, i64>,
    /// Leader: an ISR change is being written; no second one until it shows in the snapshot.
    pub isr_change_pending: bool,
    /// The leader epoch the follower maps belong to: a new leadership starts them afresh, so
    /// offsets followers reported to an earlier leadership of ours never count.
    pub leader_epoch: Option<i32>,
    /// Leader: the high watermark computed last (it never moves back). Follower: the leader's,
    /// from the last fetch response.
    pub high_watermark: i64,
}

/// Why a partition cannot be served.
#[derive(Debug)]
pub enum PartitionError {
    UnknownTopicOrPartition,
    /// Cluster mode: another broker leads this partition (or none does yet).
    NotLeaderOrFollower,
    /// The broker is stopping (or the partition is being deleted): no append, no new open.
    ShuttingDown,
    Storage(StorageError),
}

/// Why an acks=all wait for the ISR ended without the records replicated.
#[derive(Debug)]
pub enum HighWatermarkWaitError {
    /// This broker no longer leads the partition (the new leader may lack the records).
    LeadershipMoved(PartitionError),
    TimedOut,
}

/// How far a read may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadBound {
    /// Consumers: up to the high watermark.
    HighWatermark,
    /// read_committed consumers: up to the last stable offset, with the aborted transactions.
    LastStable,
    /// A follower replicating: up to the log end.
    LogEnd,
}

/// What `Partition::read` found.
pub struct PartitionRead {
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// `ReadBound::LastStable`: the aborted transactions overlapping the batches read.
    pub aborted_txns: Option<Vec<storage::txn_index::AbortedTxn>>,
    /// Whole batches in offset order (file locations, kept alive against segment deletion).
    pub slices: Vec<FileSlice>,
}

/// Cluster mode: only the partition's leader serves it (`__consumer_offsets` included: its
/// leader is the coordinator of the partition's groups). Standalone: always.
pub fn check_leader(broker: &BrokerState, topic: &str, partition: i32) -> Result<(), PartitionError> {
    let Some(cluster) = &broker.cluster else { return Ok(()) };
    let snapshot = cluster.view.snapshot();
    if !snapshot.topics.contains_key(topic) {
        return Err(PartitionError::UnknownTopicOrPartition);
    }
    match snapshot.leader(topic, partition) {
        Some(leader) if leader == broker.config.broker_id => Ok(()),
        _ => Err(PartitionError::NotLeaderOrFollower),
    }
}

impl Partition {
    /// Opens (and recovers) the log in `dir` and rebuilds the producers' state from the latest
    /// snapshot and the batch headers after it (producer_snapshot.rs).
    async fn open(
        broker: Arc<BrokerState>,
        appended: Rc<Notify>,
        topic: &str,
        index: i32,
        overrides: &std::collections::BTreeMap<String, String>,
    ) -> Result<Partition, PartitionError> {
        let config = log_config_for(&broker.config, overrides)
            .map_err(|e| PartitionError::Storage(StorageError::CorruptBatch(format!("topic config: {e}"))))?;
        // Lists the log dirs: off the shard thread.
        let (log_dirs, owned_topic) = (broker.log_dirs.clone(), topic.to_string());
        let dir = storage::file_deletion::on_blocking_thread(move || log_dirs.place_partition(&owned_topic, index))
            .await
            .map_err(PartitionError::Storage)?;
        let log = Log::open(&dir, config, broker.clean_shutdown).await.map_err(|e| {
            tracing::error!(topic, partition = index, error = %e, "partition cannot be opened");
            PartitionError::Storage(e)
        })?;
        let recovered = producer_snapshot::recover(&log).await.map_err(PartitionError::Storage)?;
        Ok(Partition {
            topic: topic.to_string(),
            index,
            broker,
            appended,
            log: RwLock::new(log),
            producers: RefCell::new(recovered.producers),
            producer_last_offsets: RefCell::new(recovered.last_offsets),
            snapshots: RefCell::new(recovered.snapshots),
            replication: RefCell::new(ReplicaState::default()),
            closed: Cell::new(false),
            storage_errors: Cell::new((i64::MIN / 2, 0)),
        })
    }

    /// What the cleaner must respect beside the log: nothing past the last stable offset,
    /// producers' last batches kept.
    pub fn clean_limits(&self, log_end_offset: i64) -> storage::cleaner::CleanLimits {
        storage::cleaner::CleanLimits {
            last_stable_offset: self.last_stable_offset(log_end_offset),
            producer_last_offsets: self.producer_last_offsets.borrow().values().copied().collect(),
        }
    }

    /// Closed (shutdown or deletion, under the write lock): nothing appends, flushes or
    /// checkpoints it any more; its directory may be gone.
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Wakes every fetch and acks=all wait of this shard that looks at its partitions (an append,
    /// or a high watermark that moved).
    pub fn wake_waiters(&self) {
        self.appended.notify_all();
    }

    /// A ticket for the next wake-up (take it before checking what you wait for).
    pub fn waiter_ticket(&self) -> Rc<glommio::sync::Semaphore> {
        self.appended.ticket()
    }

    /// What consumers may read up to. Standalone: the log end. Cluster mode, on the leader: the
    /// smallest log end offset over the ISR, never moving back; on a follower: the leader's as
    /// last fetched. Never past `log_end_offset`.
    pub fn high_watermark(&self, log_end_offset: i64) -> i64 {
        let Some(cluster) = &self.broker.cluster else { return log_end_offset };
        let me = self.broker.config.broker_id;
        let snapshot = cluster.view.snapshot();
        let mut replication = self.replication.borrow_mut();
        let high_watermark = match snapshot.state(&self.topic, self.index) {
            Some(state) if state.leader == me => {
                if replication.leader_epoch != Some(state.leader_epoch) {
                    replication.leader_epoch = Some(state.leader_epoch);
                    replication.follower_log_end_offsets.clear();
                    replication.follower_log_start_offsets.clear();
                    replication.follower_caught_up_ms.clear();
                }
                let lowest_in_sync = state
                    .isr
                    .iter()
                    .filter(|&&member| member != me)
                    .map(|member| replication.follower_log_end_offsets.get(member).copied().unwrap_or(0))
                    .fold(log_end_offset, i64::min);
                let previous = replication.high_watermark;
                replication.high_watermark = previous.max(lowest_in_sync).min(log_end_offset);
                if replication.high_watermark > previous {
                    // acks=all producers and consumers wait for the high watermark.
                    self.wake_waiters();
                }
                replication.high_watermark
            }
            _ => replication.high_watermark.min(log_end_offset),
        };
        assert!(high_watermark <= log_end_offset, "HW <= LEO");
        high_watermark
    }

    /// What read_committed consumers may read up to: min(high watermark, the first offset of the
    /// oldest transaction still open here), as Kafka's `UnifiedLog.lastStableOffset`. It moves
    /// when a marker lands (the append wakes waiting fetches) and when the high watermark moves.
    pub fn last_stable_offset(&self, log_end_offset: i64) -> i64 {
        let high_watermark = self.high_watermark(log_end_offset);
        let last_stable_offset = self.first_unstable_offset().map_or(high_watermark, |first| first.min(high_watermark));
        assert!(last_stable_offset <= high_watermark && high_watermark <= log_end_offset, "LSO <= HW <= LEO");
        last_stable_offset
    }

    /// Follower: the leader's high watermark from a fetch response. It never moves back here;
    /// when it moves, fetches waiting on this replica (consumers' Fetch v11+) re-check.
    pub fn follow_high_watermark(&self, leader_high_watermark: i64) {
        let mut replication = self.replication.borrow_mut();
        if leader_high_watermark > replication.high_watermark {
            replication.high_watermark = leader_high_watermark;
            self.wake_waiters();
        }
    }

    /// Cluster mode, under the log's write lock: keeps the epoch the log stamps into batches in
    /// line with the partition state (this broker's leadership and its epoch).
    pub async fn sync_leader_epoch(&self, log: &mut Log) {
        let Some(cluster) = &self.broker.cluster else { return };
        let snapshot = cluster.view.snapshot();
        match snapshot.state(&self.topic, self.index) {
            Some(state) if state.leader == self.broker.config.broker_id => {
                assert!(!state.isr.is_empty(), "a leader serves with a non-empty ISR");
                if log.leader_epoch() != Some(state.leader_epoch) {
                    log.become_leader(state.leader_epoch).await;
                }
            }
            _ => {
                if log.leader_epoch().is_some() {
                    log.become_follower();
                }
            }
        }
    }

    /// Whole batches from `offset`, at most `max_bytes` (the first batch whatever its size with
    /// `min_one_batch`), never past `bound`.
    /// A read_committed answer also lists the aborted transactions overlapping the batches read
    /// (from the `.txnindex`, as Kafka's `collectAbortedTransactions`), so the client drops them.
    pub async fn read(&self, offset: i64, max_bytes: u64, min_one_batch: bool, bound: ReadBound) -> Result<PartitionRead, (StorageError, i64, i64)> {
        let log = self.log.read().await.expect("partition lock");
        let log_end_offset = log.log_end_offset();
        let high_watermark = self.high_watermark(log_end_offset);
        let last_stable_offset = self.last_stable_offset(log_end_offset);
        let log_start_offset = log.log_start_offset();
        if storage::log_manager::is_offline(log.dir()) {
            return Err((storage::log_manager::offline_error(log.dir()), high_watermark, log_start_offset));
        }
        match log.read(offset, max_bytes, Self::bound_offset(bound, log_end_offset, high_watermark, last_stable_offset), min_one_batch).await {
            Ok(result) => {
                let aborted_txns = (bound == ReadBound::LastStable).then(|| match result.slices.last() {
                    Some(last) => log.collect_aborted_txns(offset, last.last_offset + 1),
                    None => Vec::new(),
                });
                Ok(PartitionRead { high_watermark, last_stable_offset, log_start_offset, aborted_txns, slices: result.slices })
            }
            Err(e) => {
                storage::log_manager::note_failure(log.dir(), &e);
                Err((e, high_watermark, log_start_offset))
            }
        }
    }

    /// An I/O error that means this partition's log dir failed takes the dir offline
    /// (`storage::log_manager`); true if the error is of that kind or the dir already is offline.
    pub async fn note_storage_failure(&self, error: &StorageError) -> bool {
        match error {
            StorageError::Offline { path, .. } if storage::log_manager::is_offline(path) => true,
            error if storage::log_manager::is_dir_failure(error) => {
                let dir = self.log.read().await.expect("partition lock").dir().to_path_buf();
                storage::log_manager::note_failure(&dir, error);
                true
            }
            _ => false,
        }
    }

    fn bound_offset(bound: ReadBound, log_end_offset: i64, high_watermark: i64, last_stable_offset: i64) -> i64 {
        match bound {
            ReadBound::HighWatermark => high_watermark,
            ReadBound::LastStable => last_stable_offset,
            ReadBound::LogEnd => log_end_offset,
        }
    }

    /// How far a reader can read now: the high watermark for consumers (the last stable offset
    /// for read_committed ones), the log end for followers.
    pub async fn readable_end(&self, bound: ReadBound) -> i64 {
        let log_end_offset = self.log.read().await.expect("partition lock").log_end_offset();
        let high_watermark = self.high_watermark(log_end_offset);
        Self::bound_offset(bound, log_end_offset, high_watermark, self.last_stable_offset(log_end_offset))
    }

    /// acks=all in cluster mode (produce, and offset commits): returns once the high watermark
    /// covers `end_offset`, that is once every replica in the ISR has the records. Fails when
    /// leadership moves first, or at `timeout_ms` (the caller's request timeout).
    pub async fn wait_for_high_watermark(&self, end_offset: i64, timeout_ms: i32) -> Result<(), HighWatermarkWaitError> {
        /// The ISR can shrink without an append: look again at least this often.
        const RECHECK_MS: u64 = 100;
        let deadline = Instant::now() + Duration::from_millis(timeout_ms.clamp(1, 300_000) as u64);
        loop {
            let ticket = self.waiter_ticket();
            if self.readable_end(ReadBound::HighWatermark).await >= end_offset {
                return Ok(());
            }
            if let Err(e) = check_leader(&self.broker, &self.topic, self.index) {
                return Err(HighWatermarkWaitError::LeadershipMoved(e));
            }
            let now = Instant::now();
            if now >= deadline || self.broker.is_shutting_down() {
                return Err(HighWatermarkWaitError::TimedOut);
            }
            Notify::wait(ticket, (deadline - now).min(Duration::from_millis(RECHECK_MS))).await;
        }
    }

    /// Closes the partition to appends (shutdown, deletion); with `checkpoint`, flushes the
    /// log and writes what a clean start trusts first. Returns the log's directory.
    async fn close(&self, checkpoint: bool) -> Result<std::path::PathBuf, StorageError> {
        let mut log = self.log.write().await.expect("partition lock");
        self.closed.set(true);
        if checkpoint {
            log.checkpoint().await?;
            // A clean start replays nothing.
            self.take_snapshot(&log, log.log_end_offset()).await;
        }
        Ok(log.dir().to_path_buf())
    }

    /// Closes the partition and deletes its files (topic deletion) without blocking the shard:
    /// see `storage::file_deletion`.
    async fn close_and_delete(&self) -> Result<(), StorageError> {
        let mut log = self.log.write().await.expect("partition lock");
        self.closed.set(true);
        log.delete_files().await
    }
}
