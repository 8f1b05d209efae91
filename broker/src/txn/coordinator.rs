//! The transaction coordinator of one shard: the transactional ids whose `__transaction_state`
//! partition this shard owns, the operations on them, their writes to the log and the marker
//! jobs handed to the delivery task.
//!
//! Contract: one `TxnCoordinator` per shard, on that shard's thread only; the id map is borrowed
//! only between awaits. Every change follows `state.rs`: plan (checked, marked pending), write
//! the record through `Partition::append` (origin Coordinator; cluster mode: until the ISR has
//! it, Kafka's acks=-1 for the transaction log), then complete or cancel. A pending id answers
//! CONCURRENT_TRANSACTIONS, so its records reach the log in order without a queue.
//!
//! Marker jobs: at most one per transactional id at a time (its Prepare* state refuses every
//! other change until the job completes), so the unbounded channel holds at most as many jobs
//! as this shard coordinates ids.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use futures_channel::mpsc;
use crate::partition::own_batch::{encode_own_batch, BatchOwner};
use kafka_protocol::ResponseError;

use super::log_format;
use super::state::{is_epoch_exhausted, EndPlan, InitPlan, Transit, TxnMetadata, TxnState};
use super::{partition_for_transactional_id, transaction_state_partition_count, TRANSACTION_STATE_TOPIC};
use crate::clock::now_ms;
use crate::partition::{AppendError, AppendOrigin, HighWatermarkWaitError, PartitionError, PartitionTable};
use crate::state::BrokerState;

/// Cluster mode: how long a write to `__transaction_state` waits for the ISR (Kafka's
/// `request.timeout.ms` default, which its transaction state manager uses).
const TXN_LOG_WRITE_TIMEOUT_MS: i32 = 30_000;

fn code(error: ResponseError) -> i16 {
    error.code()
}

/// Where this shard stands with one `__transaction_state` partition it leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PartitionLoad {
    Loading,
    Loaded,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Held {
    pub(super) load: PartitionLoad,
    /// The partition's leader epoch when this broker took it (standalone: 0): markers carry it,
    /// and partitions refuse markers of an older coordinator.
    pub(super) coordinator_epoch: i32,
}

/// The markers of one ended transaction, for the delivery task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerJob {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub commit: bool,
    pub partitions: BTreeSet<(String, i32)>,
    /// The `__transaction_state` partition of the id, and the coordinator epoch the job was
    /// made under: once this shard no longer holds that partition at that epoch, the job stops
    /// (the new coordinator resends the markers after loading).
    pub txn_partition: i32,
    pub coordinator_epoch: i32,
}

/// One transaction as DescribeTransactions and ListTransactions report it.
pub type TxnDescription = TxnMetadata;

pub struct TxnCoordinator {
    pub(super) broker: Arc<BrokerState>,
    pub(super) partitions: Rc<PartitionTable>,
    pub(super) shard_id: usize,
    pub(super) txns: RefCell<HashMap<String, TxnMetadata>>,
    /// Cluster mode: the `__transaction_state` partitions this shard coordinates.
    pub(super) held: RefCell<HashMap<i32, Held>>,
    /// Standalone: the start-up load is done (COORDINATOR_LOAD_IN_PROGRESS before).
    pub(super) loaded: Cell<bool>,
    marker_sender: mpsc::UnboundedSender<MarkerJob>,
    marker_receiver: RefCell<Option<mpsc::UnboundedReceiver<MarkerJob>>>,
}

impl TxnCoordinator {
    pub fn new(broker: Arc<BrokerState>, partitions: Rc<PartitionTable>, shard_id: usize) -> TxnCoordinator {
        let (marker_sender, marker_receiver) = mpsc::unbounded();
        TxnCoordinator {
            broker,
            partitions,
            shard_id,
            txns: RefCell::new(HashMap::new()),
            held: RefCell::new(HashMap::new()),
            loaded: Cell::new(false),
            marker_sender,
            marker_receiver: RefCell::new(Some(marker_receiver)),
        }
    }

    /// The delivery task takes the job queue once.
    pub fn take_marker_jobs(&self) -> Option<mpsc::UnboundedReceiver<MarkerJob>> {
        self.marker_receiver.borrow_mut().take()
    }

    pub fn txn_partition(&self, transactional_id: &str) -> i32 {
        partition_for_transactional_id(transactional_id, transaction_state_partition_count(&self.broker))
    }

    /// None when this shard coordinates `transactional_id` now; else the error to answer.
    pub fn coordinator_error(&self, transactional_id: &str) -> Option<i16> {
        if self.broker.cluster.is_none() {
            return (!self.loaded.get()).then(|| code(ResponseError::CoordinatorLoadInProgress));
        }
        match self.held.borrow().get(&self.txn_partition(transactional_id)).map(|h| h.load) {
            Some(PartitionLoad::Loaded) => None,
            Some(PartitionLoad::Loading) => Some(code(ResponseError::CoordinatorLoadInProgress)),
            None => Some(code(ResponseError::NotCoordinator)),
        }
    }

    /// The coordinator epoch of a held partition (standalone: 0); None when not held.
    pub fn coordinator_epoch(&self, txn_partition: i32) -> Option<i32> {
        if self.broker.cluster.is_none() {
            return Some(0);
        }
        self.held.borrow().get(&txn_partition).map(|h| h.coordinator_epoch)
    }

    /// Whether a marker job made under `coordinator_epoch` is still this shard's to finish.
    pub fn still_coordinates(&self, job: &MarkerJob) -> bool {
        self.coordinator_epoch(job.txn_partition) == Some(job.coordinator_epoch) && !self.broker.is_shutting_down()
    }

    async fn allocate_producer_id(&self) -> Result<i64, i16> {
        let allocated = match &self.broker.cluster {
            Some(_) => self.broker.allocate_producer_id_in_cluster().await,
            None => self.broker.allocate_producer_id().await,
        };
        allocated.map_err(|e| {
            tracing::error!(error = e, "allocating a producer id");
            code(ResponseError::CoordinatorNotAvailable)
        })
    }

    /// InitProducerId with a transactional id: Ok is the (producer id, epoch) to answer.
    pub async fn init_producer_id(&self, transactional_id: &str, timeout_ms: i32, expected: Option<(i64, i16)>) -> Result<(i64, i16), i16> {
        if let Some(error) = self.coordinator_error(transactional_id) {
            return Err(error);
        }
        if timeout_ms <= 0 || timeout_ms as i64 > self.broker.config.transaction_max_timeout_ms {
            return Err(code(ResponseError::InvalidTransactionTimeout));
        }
        if !self.txns.borrow().contains_key(transactional_id) {
            let producer_id = self.allocate_producer_id().await?;
            if let Some(error) = self.coordinator_error(transactional_id) {
                return Err(error);
            }
            self.txns
                .borrow_mut()
                .entry(transactional_id.to_string())
                .or_insert_with(|| TxnMetadata::new(transactional_id, producer_id, timeout_ms, now_ms()));
        }
        // A fresh producer id is needed only when the epoch is exhausted: allocated before the
        // decision, which then runs without an await.
        let exhausted = self.txns.borrow().get(transactional_id).is_some_and(|m| is_epoch_exhausted(m.producer_epoch));
        let new_producer_id = if exhausted { Some(self.allocate_producer_id().await?) } else { None };
        let plan = {
            let mut txns = self.txns.borrow_mut();
            let Some(meta) = txns.get_mut(transactional_id) else { return Err(code(ResponseError::NotCoordinator)) };
            meta.plan_init_producer_id(timeout_ms, expected, new_producer_id, now_ms())?
        };
        match plan {
            InitPlan::Write(transit) => {
                self.write_transit(transactional_id, &transit, false).await?;
                tracing::info!(transactional_id, producer_id = transit.producer_id, epoch = transit.producer_epoch, "initialised a transactional producer");
                Ok((transit.producer_id, transit.producer_epoch))
            }
            InitPlan::FenceAndAbort(transit) => {
                // The open transaction is aborted with the bumped epoch (its producer is fenced
                // by the markers); the client retries and gets the next epoch once it completes.
                self.write_transit(transactional_id, &transit, true).await?;
                tracing::info!(transactional_id, epoch = transit.producer_epoch, "fencing the previous producer: aborting its transaction");
                self.queue_markers(transactional_id, &transit);
                Err(code(ResponseError::ConcurrentTransactions))
            }
        }
    }

    /// AddPartitionsToTxn (and AddOffsetsToTxn with the group's `__consumer_offsets` partition).
    pub async fn add_partitions(&self, transactional_id: &str, producer_id: i64, epoch: i16, partitions: BTreeSet<(String, i32)>) -> Result<(), i16> {
        if let Some(error) = self.coordinator_error(transactional_id) {
            return Err(error);
        }
        let transit = {
            let mut txns = self.txns.borrow_mut();
            let Some(meta) = txns.get_mut(transactional_id) else { return Err(code(ResponseError::InvalidProducerIdMapping)) };
            meta.plan_add_partitions(producer_id, epoch, &partitions, now_ms())?
        };
        match transit {
            None => Ok(()),
            Some(transit) => self.write_transit(transactional_id, &transit, false).await,
        }
    }

    /// AddPartitionsToTxn v4 `verify_only` (KIP-890, asked by partition leaders): whether each
    /// partition is in the producer's open transaction; nothing is written.
    pub fn verify_partitions(&self, transactional_id: &str, producer_id: i64, epoch: i16, partitions: &[(String, i32)]) -> Result<Vec<bool>, i16> {
        if let Some(error) = self.coordinator_error(transactional_id) {
            return Err(error);
        }
        let txns = self.txns.borrow();
        let Some(meta) = txns.get(transactional_id) else { return Err(code(ResponseError::InvalidProducerIdMapping)) };
        if meta.producer_id != producer_id {
            return Err(code(ResponseError::InvalidProducerIdMapping));
        }
        if meta.producer_epoch != epoch {
            return Err(code(ResponseError::ProducerFenced));
        }
        if matches!(meta.state, TxnState::PrepareCommit | TxnState::PrepareAbort) {
            return Err(code(ResponseError::ConcurrentTransactions));
        }
        Ok(partitions.iter().map(|p| meta.partitions.contains(p)).collect())
    }

    /// EndTxn: Ok once PrepareCommit / PrepareAbort is durable; the markers follow.
    pub async fn end_transaction(&self, transactional_id: &str, producer_id: i64, epoch: i16, commit: bool) -> Result<(), i16> {
        if let Some(error) = self.coordinator_error(transactional_id) {
            return Err(error);
        }
        let plan = {
            let mut txns = self.txns.borrow_mut();
            let Some(meta) = txns.get_mut(transactional_id) else { return Err(code(ResponseError::InvalidProducerIdMapping)) };
            meta.plan_end(producer_id, epoch, commit, now_ms())?
        };
        match plan {
            EndPlan::AlreadyDone => Ok(()),
            EndPlan::Write(transit) => {
                self.write_transit(transactional_id, &transit, false).await?;
                self.queue_markers(transactional_id, &transit);
                Ok(())
            }
        }
    }

    /// Hands the markers of a Prepare* transition to the delivery task.
    pub(super) fn queue_markers(&self, transactional_id: &str, transit: &Transit) {
        assert!(matches!(transit.state, TxnState::PrepareCommit | TxnState::PrepareAbort), "markers follow a Prepare state");
        let txn_partition = self.txn_partition(transactional_id);
        let Some(coordinator_epoch) = self.coordinator_epoch(txn_partition) else { return };
        let job = MarkerJob {
            transactional_id: transactional_id.to_string(),
            producer_id: transit.producer_id,
            producer_epoch: transit.producer_epoch,
            commit: transit.state == TxnState::PrepareCommit,
            partitions: transit.partitions.clone(),
            txn_partition,
            coordinator_epoch,
        };
        // Fails only once the delivery task is gone (shutdown): the next coordinator resends.
        let _ = self.marker_sender.unbounded_send(job);
    }

    /// Every marker of `job` is written: CompleteCommit / CompleteAbort. Err(None) means the
    /// job is no longer this coordinator's (nothing to retry), Err(Some(code)) a failed write.
    pub async fn complete_markers(&self, job: &MarkerJob) -> Result<(), Option<i16>> {
        if !self.still_coordinates(job) {
            return Err(None);
        }
        let transit = {
            let mut txns = self.txns.borrow_mut();
            let Some(meta) = txns.get_mut(&job.transactional_id) else { return Err(None) };
            let expected = if job.commit { TxnState::PrepareCommit } else { TxnState::PrepareAbort };
            if meta.producer_id != job.producer_id || meta.state != expected || meta.pending.is_some() {
                tracing::warn!(transactional_id = job.transactional_id, state = ?meta.state, "markers written, but the transaction moved on");
                return Err(None);
            }
            meta.prepare_complete(now_ms())
        };
        self.write_transit(&job.transactional_id, &transit, false).await.map_err(Some)
    }

    /// Aborts every open transaction past its `transaction.timeout.ms`, fencing its producer
    /// with a bumped epoch (Kafka's abortTimedOutTransactions). Returns how many.
    pub async fn abort_timed_out(&self, now_ms: i64) -> usize {
        let timed_out: Vec<String> = self.txns.borrow().values().filter(|m| m.is_timed_out(now_ms)).map(|m| m.transactional_id.clone()).collect();
        let mut aborted = 0;
        for transactional_id in timed_out {
            if self.coordinator_error(&transactional_id).is_some() {
                continue;
            }
            let transit = {
                let mut txns = self.txns.borrow_mut();
                match txns.get_mut(&transactional_id) {
                    Some(meta) if meta.is_timed_out(now_ms) => meta.prepare_fence_and_abort(now_ms),
                    _ => continue,
                }
            };
            match self.write_transit(&transactional_id, &transit, true).await {
                Ok(()) => {
                    tracing::info!(transactional_id, epoch = transit.producer_epoch, "aborting a transaction past its timeout");
                    self.queue_markers(&transactional_id, &transit);
                    aborted += 1;
                }
                Err(error) => tracing::warn!(transactional_id, error, "aborting a timed-out transaction failed; retried next round"),
            }
        }
        aborted
    }

    /// Removes ids idle without a transaction for `transactional.id.expiration.ms` (a
    /// tombstone each). Returns how many.
    pub async fn expire_transactional_ids(&self, now_ms: i64) -> usize {
        let expiration_ms = self.broker.config.transactional_id_expiration_ms;
        let expired: Vec<String> =
            self.txns.borrow().values().filter(|m| m.is_expired(now_ms, expiration_ms)).map(|m| m.transactional_id.clone()).collect();
        let mut removed = 0;
        for transactional_id in expired {
            if self.coordinator_error(&transactional_id).is_some() {
                continue;
            }
            let transit = {
                let mut txns = self.txns.borrow_mut();
                match txns.get_mut(&transactional_id) {
                    Some(meta) if meta.is_expired(now_ms, expiration_ms) => meta.prepare_dead(),
                    _ => continue,
                }
            };
            if self.write_transit(&transactional_id, &transit, false).await.is_ok() {
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(shard = self.shard_id, removed, "expired transactional ids");
        }
        removed
    }

    /// DescribeTransactions: the id's metadata, or its error.
    pub fn describe(&self, transactional_id: &str) -> Result<TxnDescription, i16> {
        if let Some(error) = self.coordinator_error(transactional_id) {
            return Err(error);
        }
        match self.txns.borrow().get(transactional_id) {
            Some(meta) if meta.state != TxnState::Dead => Ok(meta.clone()),
            _ => Err(code(ResponseError::TransactionalIdNotFound)),
        }
    }

    /// ListTransactions over the ids this shard coordinates now, filtered as Kafka does (by
    /// state names, producer ids, and v1's minimum running time).
    pub fn list(&self, states: &[String], producer_ids: &[i64], min_duration_ms: i64, now_ms: i64) -> Vec<(String, i64, TxnState)> {
        self.txns
            .borrow()
            .values()
            .filter(|m| self.coordinator_error(&m.transactional_id).is_none())
            .filter(|m| states.is_empty() || states.iter().any(|s| s == m.state.name()))
            .filter(|m| producer_ids.is_empty() || producer_ids.contains(&m.producer_id))
            .filter(|m| min_duration_ms < 0 || (m.state == TxnState::Ongoing && now_ms - m.start_timestamp_ms >= min_duration_ms))
            .map(|m| (m.transactional_id.clone(), m.producer_id, m.state))
            .collect()
    }

    /// Writes `transit` for `transactional_id`, then completes it (or, failed, cancels it; a
    /// failed fence keeps its epoch for the next one). Dead writes a tombstone and forgets the id.
    async fn write_transit(&self, transactional_id: &str, transit: &Transit, fence: bool) -> Result<(), i16> {
        let txn_partition = self.txn_partition(transactional_id);
        let epoch_before = self.coordinator_epoch(txn_partition);
        let value = (transit.state != TxnState::Dead).then(|| log_format::value(transit));
        let mut written = self.append(txn_partition, log_format::key(transactional_id), value).await;
        if written.is_ok() && self.coordinator_epoch(txn_partition) != epoch_before {
            // Leadership moved while the record was written: the new coordinator decides.
            written = Err(code(ResponseError::NotCoordinator));
        }
        let mut txns = self.txns.borrow_mut();
        let Some(meta) = txns.get_mut(transactional_id) else { return Err(code(ResponseError::NotCoordinator)) };
        match written {
            Ok(()) if transit.state == TxnState::Dead => {
                txns.remove(transactional_id);
                Ok(())
            }
            Ok(()) => {
                meta.complete(transit);
                Ok(())
            }
            Err(error) => {
                if fence {
                    meta.fence_failed();
                } else {
                    meta.cancel();
                }
                tracing::warn!(transactional_id, state = ?transit.state, error, "writing to __transaction_state failed");
                Err(error)
            }
        }
    }

    /// Appends one record to `__transaction_state` (cluster mode: until the ISR has it), with
    /// Kafka's error mapping for transaction log appends.
    async fn append(&self, txn_partition: i32, key: Bytes, value: Option<Bytes>) -> Result<(), i16> {
        if let Some(reason) = self.broker.not_enough_replicas(TRANSACTION_STATE_TOPIC, txn_partition, -1) {
            tracing::warn!(partition = txn_partition, reason, "transaction log write refused");
            return Err(code(ResponseError::CoordinatorNotAvailable));
        }
        let batch = encode_record(key, value, now_ms());
        let handle = self.partitions.serving(TRANSACTION_STATE_TOPIC, txn_partition).await.map_err(|e| match e {
            PartitionError::NotLeaderOrFollower | PartitionError::ShuttingDown => code(ResponseError::NotCoordinator),
            PartitionError::UnknownTopicOrPartition => code(ResponseError::CoordinatorNotAvailable),
            PartitionError::Storage(_) => code(ResponseError::NotCoordinator),
        })?;
        let appended = handle.append(&batch, AppendOrigin::Coordinator).await.map_err(|e| match e {
            AppendError::Partition(PartitionError::UnknownTopicOrPartition) => code(ResponseError::CoordinatorNotAvailable),
            AppendError::Partition(_) => code(ResponseError::NotCoordinator),
            _ => code(ResponseError::UnknownServerError),
        })?;
        if self.broker.cluster.is_some() {
            handle.wait_for_high_watermark(appended.end_offset, TXN_LOG_WRITE_TIMEOUT_MS).await.map_err(|e| match e {
                HighWatermarkWaitError::LeadershipMoved(_) => code(ResponseError::NotCoordinator),
                HighWatermarkWaitError::TimedOut => code(ResponseError::CoordinatorNotAvailable),
            })?;
        }
        Ok(())
    }
}

/// One uncompressed v2 batch with one record (offsets from 0: the log assigns them). Kafka
/// writes the transaction log uncompressed.
pub(super) fn encode_record(key: Bytes, value: Option<Bytes>, now_ms: i64) -> Vec<u8> {
    encode_own_batch(&[(key, value)], now_ms, BatchOwner::BROKER).expect("one small uncompressed record always encodes")
}
