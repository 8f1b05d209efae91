//! One transactional id's state and the transitions between states, as Kafka's
//! TransactionMetadata (KIP-98, KIP-360; transaction version 0: the epoch is bumped by
//! InitProducerId and by fencing, never by EndTxn).
//!
//! Contract: a transition is *prepared* (checked against Kafka's graph, recorded as `pending`),
//! then written to `__transaction_state`, then *completed* (applied) or *cancelled* (the write
//! failed). While a transition is pending, every other request for the id is answered
//! CONCURRENT_TRANSACTIONS, so one id has at most one write in flight and its records reach the
//! log in order. Pure logic, no I/O: every decision of the coordinator is here and unit-tested.
//!
//! Invariants (asserted): transitions only along Kafka's graph; a producer id's epoch only grows
//! (a new producer id starts again at 0); nothing is prepared while another transition is pending.

use std::collections::BTreeSet;

use kafka_protocol::ResponseError;

pub const NO_PRODUCER_ID: i64 = -1;
pub const NO_PRODUCER_EPOCH: i16 = -1;

/// The states, with the ids Kafka stores in TransactionLogValue.TransactionStatus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    /// Expired (`transactional.id.expiration.ms`): about to be removed (tombstone).
    Dead,
    /// Bumping the epoch to fence a producer; never written to the log.
    PrepareEpochFence,
}

impl TxnState {
    pub fn id(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
            TxnState::Dead => 6,
            TxnState::PrepareEpochFence => 7,
        }
    }

    pub fn from_id(id: i8) -> Option<TxnState> {
        Some(match id {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            6 => TxnState::Dead,
            7 => TxnState::PrepareEpochFence,
            _ => return None,
        })
    }

    /// Kafka's names (DescribeTransactions, ListTransactions' state filters).
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    /// Kafka's graph: the states a transition into `self` may start from.
    fn valid_previous(self) -> &'static [TxnState] {
        use TxnState::*;
        match self {
            Empty => &[Empty, CompleteCommit, CompleteAbort],
            Ongoing => &[Ongoing, Empty, CompleteCommit, CompleteAbort],
            PrepareCommit => &[Ongoing],
            PrepareAbort => &[Ongoing, PrepareEpochFence],
            CompleteCommit => &[PrepareCommit],
            CompleteAbort => &[PrepareAbort],
            Dead => &[Empty, CompleteAbort, CompleteCommit],
            PrepareEpochFence => &[Ongoing],
        }
    }

    /// States whose transactional id may expire (no transaction open).
    pub fn expiration_allowed(self) -> bool {
        matches!(self, TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort)
    }
}

/// Kafka never hands out the last two epochs, so a producer can always be fenced by one more.
pub fn is_epoch_exhausted(epoch: i16) -> bool {
    epoch >= i16::MAX - 1
}

/// One transactional id as its coordinator holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct TxnMetadata {
    pub transactional_id: String,
    pub producer_id: i64,
    /// The producer id before the last rotation (KIP-360: a retry of that rotation is recognised).
    pub previous_producer_id: i64,
    pub producer_epoch: i16,
    /// The epoch before the last bump of this producer id (KIP-360: a retried bump is answered
    /// with the current epoch, not fenced). Not stored by value v0, as in Kafka.
    pub last_producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<(String, i32)>,
    /// -1 outside a transaction.
    pub start_timestamp_ms: i64,
    pub last_update_timestamp_ms: i64,
    /// The transition being written to the log.
    pub pending: Option<TxnState>,
    /// An epoch fence whose write failed: the next fence does not bump again (the bumped epoch
    /// was never handed out).
    pub has_failed_epoch_fence: bool,
}

/// What a prepared transition makes the metadata once its record is written (Kafka's
/// TxnTransitMetadata); also what the record stores.
#[derive(Debug, Clone, PartialEq)]
pub struct Transit {
    pub producer_id: i64,
    pub previous_producer_id: i64,
    pub producer_epoch: i16,
    pub last_producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<(String, i32)>,
    pub start_timestamp_ms: i64,
    pub last_update_timestamp_ms: i64,
}

/// What InitProducerId must do once decided.
#[derive(Debug, PartialEq)]
pub enum InitPlan {
    /// Write this transition (to Empty, with the new epoch or producer id) and answer with it.
    Write(Transit),
    /// A transaction is open: abort it with a bumped epoch (fencing its producer), and answer
    /// CONCURRENT_TRANSACTIONS; the client retries and gets the next epoch once aborted.
    FenceAndAbort(Transit),
}

/// What EndTxn must do once decided.
#[derive(Debug, PartialEq)]
pub enum EndPlan {
    /// Write PrepareCommit / PrepareAbort, then the markers, then Complete*.
    Write(Transit),
    /// A retry of an end already completed: answer success.
    AlreadyDone,
}

fn code(error: ResponseError) -> i16 {
    error.code()
}

impl TxnMetadata {
    /// A transactional id seen for the first time: no epoch yet (the first InitProducerId bumps
    /// it to 0).
    pub fn new(transactional_id: &str, producer_id: i64, timeout_ms: i32, now_ms: i64) -> TxnMetadata {
        TxnMetadata {
            transactional_id: transactional_id.to_string(),
            producer_id,
            previous_producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            last_producer_epoch: NO_PRODUCER_EPOCH,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            start_timestamp_ms: -1,
            last_update_timestamp_ms: now_ms,
            pending: None,
            has_failed_epoch_fence: false,
        }
    }

    /// Rebuilt from a stored record (loading `__transaction_state`).
    pub fn from_transit(transactional_id: &str, stored: Transit) -> TxnMetadata {
        TxnMetadata {
            transactional_id: transactional_id.to_string(),
            producer_id: stored.producer_id,
            previous_producer_id: stored.previous_producer_id,
            producer_epoch: stored.producer_epoch,
            last_producer_epoch: stored.last_producer_epoch,
            timeout_ms: stored.timeout_ms,
            state: stored.state,
            partitions: stored.partitions,
            start_timestamp_ms: stored.start_timestamp_ms,
            last_update_timestamp_ms: stored.last_update_timestamp_ms,
            pending: None,
            has_failed_epoch_fence: false,
        }
    }

    /// The metadata as it is now, as a record would store it.
    pub fn snapshot(&self) -> Transit {
        Transit {
            producer_id: self.producer_id,
            previous_producer_id: self.previous_producer_id,
            producer_epoch: self.producer_epoch,
            last_producer_epoch: self.last_producer_epoch,
            timeout_ms: self.timeout_ms,
            state: self.state,
            partitions: self.partitions.clone(),
            start_timestamp_ms: self.start_timestamp_ms,
            last_update_timestamp_ms: self.last_update_timestamp_ms,
        }
    }

    /// Checks the transition against the graph and marks it pending.
    #[allow(clippy::too_many_arguments)]
    fn prepare(
        &mut self,
        state: TxnState,
        producer_id: i64,
        producer_epoch: i16,
        last_producer_epoch: i16,
        timeout_ms: i32,
        partitions: BTreeSet<(String, i32)>,
        start_timestamp_ms: i64,
        now_ms: i64,
    ) -> Transit {
        assert!(self.pending.is_none(), "{}: preparing {state:?} while {:?} is pending", self.transactional_id, self.pending);
        assert!(producer_id >= 0, "{}: illegal producer id {producer_id}", self.transactional_id);
        assert!(state == TxnState::Dead || producer_epoch >= 0, "{}: illegal epoch {producer_epoch}", self.transactional_id);
        assert!(
            state.valid_previous().contains(&self.state),
            "{}: {:?} -> {state:?} is not a transition of Kafka's graph",
            self.transactional_id,
            self.state
        );
        self.pending = Some(state);
        Transit {
            producer_id,
            previous_producer_id: self.producer_id,
            producer_epoch,
            last_producer_epoch,
            timeout_ms,
            state,
            partitions,
            start_timestamp_ms,
            last_update_timestamp_ms: now_ms.max(self.last_update_timestamp_ms),
        }
    }

    /// The transition's record is in the log: apply it.
    pub fn complete(&mut self, transit: &Transit) {
        assert_eq!(self.pending, Some(transit.state), "{}: completing a transition that is not pending", self.transactional_id);
        if transit.producer_id == self.producer_id {
            assert!(transit.producer_epoch >= self.producer_epoch, "{}: epochs only grow", self.transactional_id);
        } else {
            assert_eq!(transit.producer_epoch, 0, "{}: a new producer id starts at epoch 0", self.transactional_id);
        }
        if transit.state == TxnState::Ongoing {
            assert!(self.partitions.is_subset(&transit.partitions), "{}: a transaction's partitions only grow", self.transactional_id);
        }
        if transit.producer_id != self.producer_id {
            self.previous_producer_id = self.producer_id;
        }
        self.producer_id = transit.producer_id;
        self.producer_epoch = transit.producer_epoch;
        self.last_producer_epoch = transit.last_producer_epoch;
        self.timeout_ms = transit.timeout_ms;
        self.state = transit.state;
        self.partitions = transit.partitions.clone();
        self.start_timestamp_ms = transit.start_timestamp_ms;
        self.last_update_timestamp_ms = transit.last_update_timestamp_ms;
        self.pending = None;
        self.has_failed_epoch_fence = false;
    }

    /// The transition's record could not be written: nothing changes.
    pub fn cancel(&mut self) {
        self.pending = None;
    }

    /// InitProducerId with a transactional id (Kafka's prepareInitProducerIdTransit).
    /// `expected` is the KIP-360 (producer id, epoch) a producer sends to recover; `new_producer_id`
    /// is an id allocated beforehand, used only when the epoch is exhausted.
    pub fn plan_init_producer_id(&mut self, timeout_ms: i32, expected: Option<(i64, i16)>, new_producer_id: Option<i64>, now_ms: i64) -> Result<InitPlan, i16> {
        if self.pending.is_some() {
            return Err(code(ResponseError::ConcurrentTransactions));
        }
        let valid_expectation = |(producer_id, epoch): (i64, i16)| {
            self.producer_epoch == NO_PRODUCER_EPOCH
                || producer_id == self.producer_id
                || (producer_id == self.previous_producer_id && is_epoch_exhausted(epoch))
        };
        if !expected.map_or(true, valid_expectation) {
            return Err(code(ResponseError::ProducerFenced));
        }
        match self.state {
            TxnState::PrepareAbort | TxnState::PrepareCommit => Err(code(ResponseError::ConcurrentTransactions)),
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                if is_epoch_exhausted(self.producer_epoch) && expected.map_or(true, |(_, epoch)| epoch == self.producer_epoch) {
                    // A new producer id, epoch 0 (Kafka's prepareProducerIdRotation).
                    let Some(new_producer_id) = new_producer_id else { return Err(code(ResponseError::CoordinatorNotAvailable)) };
                    let last = if expected.is_some() { self.producer_epoch } else { NO_PRODUCER_EPOCH };
                    let transit = self.prepare(TxnState::Empty, new_producer_id, 0, last, timeout_ms, BTreeSet::new(), -1, now_ms);
                    return Ok(InitPlan::Write(transit));
                }
                // Kafka's prepareIncrementProducerEpoch.
                let bumped = self.producer_epoch + 1;
                let (epoch, last) = match expected {
                    None => (bumped, NO_PRODUCER_EPOCH),
                    Some((_, expected_epoch)) if self.producer_epoch == NO_PRODUCER_EPOCH || expected_epoch == self.producer_epoch => {
                        (bumped, self.producer_epoch)
                    }
                    // A retry of a bump that succeeded: the same epoch again.
                    Some((_, expected_epoch)) if expected_epoch == self.last_producer_epoch => (self.producer_epoch, self.last_producer_epoch),
                    Some(_) => return Err(code(ResponseError::ProducerFenced)),
                };
                let transit = self.prepare(TxnState::Empty, self.producer_id, epoch, last, timeout_ms, BTreeSet::new(), -1, now_ms);
                Ok(InitPlan::Write(transit))
            }
            TxnState::Ongoing => Ok(InitPlan::FenceAndAbort(self.prepare_fence_and_abort(now_ms))),
            TxnState::Dead | TxnState::PrepareEpochFence => {
                panic!("{}: found in state {:?}, which is never held", self.transactional_id, self.state)
            }
        }
    }

    /// Fences the open transaction's producer and aborts it: the epoch is bumped (unless an
    /// earlier fence's write failed: that epoch was never handed out) and PrepareAbort is
    /// prepared with it (Kafka's prepareFenceProducerEpoch then endTransaction(ABORT) not from a
    /// client, folded into one step: PrepareEpochFence is never written).
    pub fn prepare_fence_and_abort(&mut self, now_ms: i64) -> Transit {
        assert_eq!(self.state, TxnState::Ongoing, "{}: only an open transaction is fenced", self.transactional_id);
        assert!(self.producer_epoch < i16::MAX, "{}: fencing would overflow the epoch", self.transactional_id);
        let epoch = if self.has_failed_epoch_fence { self.producer_epoch } else { self.producer_epoch + 1 };
        // The bumped epoch is the metadata's from now on, written or not (as Kafka): requests
        // with the old one are fenced.
        self.producer_epoch = epoch;
        self.last_producer_epoch = NO_PRODUCER_EPOCH;
        let (partitions, start) = (self.partitions.clone(), self.start_timestamp_ms);
        self.prepare(TxnState::PrepareAbort, self.producer_id, epoch, NO_PRODUCER_EPOCH, self.timeout_ms, partitions, start, now_ms)
    }

    /// The write of a fence failed: the next fence reuses its epoch.
    pub fn fence_failed(&mut self) {
        self.pending = None;
        self.has_failed_epoch_fence = true;
    }

    /// AddPartitionsToTxn (and AddOffsetsToTxn, for the group's `__consumer_offsets` partition).
    /// Ok(None): every partition is in the transaction already; nothing to write.
    pub fn plan_add_partitions(&mut self, producer_id: i64, epoch: i16, added: &BTreeSet<(String, i32)>, now_ms: i64) -> Result<Option<Transit>, i16> {
        if producer_id != self.producer_id {
            return Err(code(ResponseError::InvalidProducerIdMapping));
        }
        if epoch != self.producer_epoch {
            return Err(code(ResponseError::ProducerFenced));
        }
        if self.pending.is_some() || matches!(self.state, TxnState::PrepareCommit | TxnState::PrepareAbort) {
            return Err(code(ResponseError::ConcurrentTransactions));
        }
        if self.state == TxnState::Ongoing && added.is_subset(&self.partitions) {
            return Ok(None);
        }
        let start = match self.state {
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => now_ms,
            _ => self.start_timestamp_ms,
        };
        let partitions = self.partitions.union(added).cloned().collect();
        Ok(Some(self.prepare(TxnState::Ongoing, self.producer_id, self.producer_epoch, self.last_producer_epoch, self.timeout_ms, partitions, start, now_ms)))
    }

    /// EndTxn from a client (transaction version 0: strict epoch equality).
    pub fn plan_end(&mut self, producer_id: i64, epoch: i16, commit: bool, now_ms: i64) -> Result<EndPlan, i16> {
        if producer_id != self.producer_id {
            return Err(code(ResponseError::InvalidProducerIdMapping));
        }
        if epoch != self.producer_epoch {
            return Err(code(ResponseError::ProducerFenced));
        }
        if self.pending.is_some() {
            return Err(code(ResponseError::ConcurrentTransactions));
        }
        let invalid = code(ResponseError::InvalidTxnState);
        match (self.state, commit) {
            (TxnState::Ongoing, _) => {
                let state = if commit { TxnState::PrepareCommit } else { TxnState::PrepareAbort };
                let (partitions, start) = (self.partitions.clone(), self.start_timestamp_ms);
                Ok(EndPlan::Write(self.prepare(state, self.producer_id, self.producer_epoch, self.last_producer_epoch, self.timeout_ms, partitions, start, now_ms)))
            }
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => Ok(EndPlan::AlreadyDone),
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => Err(code(ResponseError::ConcurrentTransactions)),
            (TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort | TxnState::PrepareCommit | TxnState::PrepareAbort, _) => {
                Err(invalid)
            }
            (TxnState::Dead | TxnState::PrepareEpochFence, _) => {
                panic!("{}: found in state {:?}, which is never held", self.transactional_id, self.state)
            }
        }
    }

    /// Every marker is written: PrepareCommit -> CompleteCommit, PrepareAbort -> CompleteAbort.
    pub fn prepare_complete(&mut self, now_ms: i64) -> Transit {
        let state = match self.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            TxnState::PrepareAbort => TxnState::CompleteAbort,
            other => panic!("{}: completing markers in state {other:?}", self.transactional_id),
        };
        let start = self.start_timestamp_ms;
        self.prepare(state, self.producer_id, self.producer_epoch, self.producer_epoch, self.timeout_ms, BTreeSet::new(), start, now_ms)
    }

    /// `transactional.id.expiration.ms` passed without a transaction: the id is removed.
    pub fn prepare_dead(&mut self) -> Transit {
        let start = self.start_timestamp_ms;
        let last_update = self.last_update_timestamp_ms;
        self.prepare(TxnState::Dead, self.producer_id, self.producer_epoch, self.last_producer_epoch, self.timeout_ms, BTreeSet::new(), start, last_update)
    }

    /// An open transaction past its timeout (not already being ended).
    pub fn is_timed_out(&self, now_ms: i64) -> bool {
        self.state == TxnState::Ongoing && self.pending.is_none() && self.start_timestamp_ms + self.timeout_ms as i64 <= now_ms
    }

    /// An id without a transaction, idle for `expiration_ms`.
    pub fn is_expired(&self, now_ms: i64, expiration_ms: i64) -> bool {
        self.state.expiration_allowed() && self.pending.is_none() && self.last_update_timestamp_ms + expiration_ms <= now_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(list: &[(&str, i32)]) -> BTreeSet<(String, i32)> {
        list.iter().map(|(t, p)| (t.to_string(), *p)).collect()
    }

    /// A fresh id after its first InitProducerId: epoch 0, Empty.
    fn initialised() -> TxnMetadata {
        let mut meta = TxnMetadata::new("t", 7, 60_000, 1);
        let InitPlan::Write(transit) = meta.plan_init_producer_id(60_000, None, None, 2).unwrap() else { panic!() };
        assert_eq!((transit.producer_id, transit.producer_epoch, transit.state), (7, 0, TxnState::Empty));
        meta.complete(&transit);
        meta
    }

    fn apply(meta: &mut TxnMetadata, transit: Transit) {
        meta.complete(&transit);
    }

    fn begin(meta: &mut TxnMetadata, now: i64) {
        let transit = meta.plan_add_partitions(meta.producer_id, meta.producer_epoch, &parts(&[("a", 0)]), now).unwrap().unwrap();
        apply(meta, transit);
    }

    #[test]
    fn commit_path_empty_ongoing_prepare_complete() {
        let mut meta = initialised();
        let transit = meta.plan_add_partitions(7, 0, &parts(&[("a", 0), ("b", 1)]), 10).unwrap().unwrap();
        assert_eq!(transit.state, TxnState::Ongoing);
        assert_eq!(transit.start_timestamp_ms, 10);
        // While the write is pending everything else waits.
        assert_eq!(meta.plan_end(7, 0, true, 11), Err(ResponseError::ConcurrentTransactions.code()));
        apply(&mut meta, transit);
        // Adding what is there already writes nothing; adding more keeps the start time.
        assert_eq!(meta.plan_add_partitions(7, 0, &parts(&[("a", 0)]), 12), Ok(None));
        let more = meta.plan_add_partitions(7, 0, &parts(&[("c", 2)]), 13).unwrap().unwrap();
        assert_eq!(more.start_timestamp_ms, 10);
        assert_eq!(more.partitions.len(), 3);
        apply(&mut meta, more);
        let EndPlan::Write(prepare) = meta.plan_end(7, 0, true, 14).unwrap() else { panic!() };
        assert_eq!(prepare.state, TxnState::PrepareCommit);
        apply(&mut meta, prepare);
        // Retried EndTxn while markers are written; AddPartitions waits too.
        assert_eq!(meta.plan_end(7, 0, true, 15), Err(ResponseError::ConcurrentTransactions.code()));
        assert_eq!(meta.plan_end(7, 0, false, 15), Err(ResponseError::InvalidTxnState.code()));
        assert_eq!(meta.plan_add_partitions(7, 0, &parts(&[("a", 0)]), 15), Err(ResponseError::ConcurrentTransactions.code()));
        let complete = meta.prepare_complete(16);
        assert_eq!(complete.state, TxnState::CompleteCommit);
        assert!(complete.partitions.is_empty());
        apply(&mut meta, complete);
        // A retry after completion succeeds; the other outcome is invalid.
        assert_eq!(meta.plan_end(7, 0, true, 17), Ok(EndPlan::AlreadyDone));
        assert_eq!(meta.plan_end(7, 0, false, 17), Err(ResponseError::InvalidTxnState.code()));
        // The next transaction starts from CompleteCommit.
        begin(&mut meta, 20);
        assert_eq!(meta.start_timestamp_ms, 20);
    }

    #[test]
    fn abort_path_and_empty_end_is_invalid() {
        let mut meta = initialised();
        assert_eq!(meta.plan_end(7, 0, false, 5), Err(ResponseError::InvalidTxnState.code()));
        begin(&mut meta, 5);
        let EndPlan::Write(prepare) = meta.plan_end(7, 0, false, 6).unwrap() else { panic!() };
        assert_eq!(prepare.state, TxnState::PrepareAbort);
        apply(&mut meta, prepare);
        assert_eq!(meta.plan_end(7, 0, false, 7), Err(ResponseError::ConcurrentTransactions.code()));
        let complete = meta.prepare_complete(8);
        assert_eq!(complete.state, TxnState::CompleteAbort);
        apply(&mut meta, complete);
        assert_eq!(meta.plan_end(7, 0, false, 9), Ok(EndPlan::AlreadyDone));
    }

    #[test]
    fn a_failed_write_changes_nothing() {
        let mut meta = initialised();
        let before = meta.clone();
        let _ = meta.plan_add_partitions(7, 0, &parts(&[("a", 0)]), 5).unwrap().unwrap();
        meta.cancel();
        assert_eq!(meta, before);
    }

    #[test]
    fn wrong_producer_or_epoch() {
        let mut meta = initialised();
        assert_eq!(meta.plan_add_partitions(8, 0, &parts(&[("a", 0)]), 5), Err(ResponseError::InvalidProducerIdMapping.code()));
        assert_eq!(meta.plan_add_partitions(7, 1, &parts(&[("a", 0)]), 5), Err(ResponseError::ProducerFenced.code()));
        begin(&mut meta, 5);
        assert_eq!(meta.plan_end(8, 0, true, 6), Err(ResponseError::InvalidProducerIdMapping.code()));
        assert_eq!(meta.plan_end(7, 1, true, 6), Err(ResponseError::ProducerFenced.code()));
    }

    #[test]
    fn init_bumps_the_epoch_and_a_second_producer_fences_an_open_transaction() {
        let mut meta = initialised();
        // A second InitProducerId without a transaction: the next epoch.
        let InitPlan::Write(bump) = meta.plan_init_producer_id(30_000, None, None, 5).unwrap() else { panic!() };
        assert_eq!((bump.producer_epoch, bump.timeout_ms), (1, 30_000));
        apply(&mut meta, bump);
        begin(&mut meta, 6);
        // A new producer with the same id while a transaction is open: fence and abort.
        let InitPlan::FenceAndAbort(abort) = meta.plan_init_producer_id(30_000, None, None, 7).unwrap() else { panic!() };
        assert_eq!((abort.state, abort.producer_epoch), (TxnState::PrepareAbort, 2));
        assert!(!abort.partitions.is_empty(), "the markers go to the transaction's partitions");
        // The fenced producer's requests fail from now on, even before the write completes.
        assert_eq!(meta.plan_end(7, 1, true, 8), Err(ResponseError::ProducerFenced.code()));
        apply(&mut meta, abort);
        // The new producer retries while the abort completes.
        assert_eq!(meta.plan_init_producer_id(30_000, None, None, 9), Err(ResponseError::ConcurrentTransactions.code()));
        let complete = meta.prepare_complete(10);
        apply(&mut meta, complete);
        let InitPlan::Write(next) = meta.plan_init_producer_id(30_000, None, None, 11).unwrap() else { panic!() };
        assert_eq!((next.producer_id, next.producer_epoch, next.state), (7, 3, TxnState::Empty));
        apply(&mut meta, next);
        assert_eq!(meta.plan_add_partitions(7, 1, &parts(&[("a", 0)]), 12), Err(ResponseError::ProducerFenced.code()));
    }

    #[test]
    fn a_failed_fence_does_not_bump_twice() {
        let mut meta = initialised();
        begin(&mut meta, 5);
        let first = meta.prepare_fence_and_abort(6);
        assert_eq!(first.producer_epoch, 1);
        meta.fence_failed();
        let second = meta.prepare_fence_and_abort(7);
        assert_eq!(second.producer_epoch, 1);
        apply(&mut meta, second);
        assert_eq!(meta.state, TxnState::PrepareAbort);
    }

    #[test]
    fn timeout_aborts_an_open_transaction_only() {
        let mut meta = initialised();
        assert!(!meta.is_timed_out(i64::MAX / 2), "no transaction, nothing to time out");
        begin(&mut meta, 100);
        assert!(!meta.is_timed_out(100 + 59_999));
        assert!(meta.is_timed_out(100 + 60_000));
        let abort = meta.prepare_fence_and_abort(100 + 60_000);
        assert_eq!((abort.state, abort.producer_epoch), (TxnState::PrepareAbort, 1));
        assert!(!meta.is_timed_out(i64::MAX / 2), "being ended already");
        apply(&mut meta, abort);
        let complete = meta.prepare_complete(100 + 60_001);
        apply(&mut meta, complete);
        assert_eq!(meta.state, TxnState::CompleteAbort);
        // The fenced producer's EndTxn with its old epoch.
        assert_eq!(meta.plan_end(7, 0, true, 100 + 60_002), Err(ResponseError::ProducerFenced.code()));
    }

    #[test]
    fn kip_360_recovery() {
        let mut meta = initialised();
        // The producer recovers with its current id and epoch: bumped, last epoch kept.
        let InitPlan::Write(bump) = meta.plan_init_producer_id(60_000, Some((7, 0)), None, 5).unwrap() else { panic!() };
        assert_eq!((bump.producer_epoch, bump.last_producer_epoch), (1, 0));
        apply(&mut meta, bump);
        // The same request retried (the response was lost): the same epoch, not fenced.
        let InitPlan::Write(retry) = meta.plan_init_producer_id(60_000, Some((7, 0)), None, 6).unwrap() else { panic!() };
        assert_eq!(retry.producer_epoch, 1);
        apply(&mut meta, retry);
        // An unknown producer id, or a stale epoch: fenced.
        assert_eq!(meta.plan_init_producer_id(60_000, Some((99, 0)), None, 7), Err(ResponseError::ProducerFenced.code()));
        assert_eq!(meta.plan_init_producer_id(60_000, Some((7, 5)), None, 7), Err(ResponseError::ProducerFenced.code()));
        // A brand-new id (no epoch yet) accepts any expectation: the producer's state was lost.
        let mut fresh = TxnMetadata::new("u", 9, 60_000, 1);
        let InitPlan::Write(first) = fresh.plan_init_producer_id(60_000, Some((3, 4)), None, 2).unwrap() else { panic!() };
        assert_eq!((first.producer_id, first.producer_epoch), (9, 0));
    }

    #[test]
    fn exhausted_epoch_rotates_the_producer_id() {
        let mut meta = initialised();
        meta.producer_epoch = i16::MAX - 1;
        let exhausted = Some((7, i16::MAX - 1));
        assert_eq!(meta.plan_init_producer_id(60_000, exhausted, None, 5), Err(ResponseError::CoordinatorNotAvailable.code()));
        let InitPlan::Write(rotate) = meta.plan_init_producer_id(60_000, exhausted, Some(42), 5).unwrap() else { panic!() };
        assert_eq!(rotate.last_producer_epoch, i16::MAX - 1);
        assert_eq!((rotate.producer_id, rotate.producer_epoch), (42, 0));
        apply(&mut meta, rotate);
        assert_eq!(meta.previous_producer_id, 7);
        // KIP-360: a retry of that rotation names the previous id with the exhausted epoch.
        let InitPlan::Write(again) = meta.plan_init_producer_id(60_000, exhausted, None, 6).unwrap() else { panic!() };
        assert_eq!((again.producer_id, again.producer_epoch), (42, 0));
    }

    #[test]
    fn expiration_only_without_a_transaction() {
        let mut meta = initialised();
        assert!(meta.is_expired(2 + 1000, 1000));
        assert!(!meta.is_expired(2 + 999, 1000));
        begin(&mut meta, 5);
        assert!(!meta.is_expired(i64::MAX / 2, 1000));
    }

    #[test]
    #[should_panic(expected = "not a transition of Kafka's graph")]
    fn transitions_off_the_graph_panic() {
        let mut meta = initialised();
        begin(&mut meta, 5);
        let _ = meta.prepare_dead();
    }

    /// Kafka's TransactionState graph (3.9, `validPreviousStates`), written out here as edges
    /// rather than read from `valid_previous`, so a slip in either shows.
    const KAFKA_EDGES: &[(TxnState, TxnState)] = {
        use TxnState::*;
        &[
            (Empty, Empty),
            (CompleteCommit, Empty),
            (CompleteAbort, Empty),
            (Empty, Ongoing),
            (Ongoing, Ongoing),
            (CompleteCommit, Ongoing),
            (CompleteAbort, Ongoing),
            (Ongoing, PrepareCommit),
            (Ongoing, PrepareAbort),
            (PrepareEpochFence, PrepareAbort),
            (PrepareCommit, CompleteCommit),
            (PrepareAbort, CompleteAbort),
            (Empty, Dead),
            (CompleteCommit, Dead),
            (CompleteAbort, Dead),
            (Ongoing, PrepareEpochFence),
        ]
    };

    const ALL_STATES: [TxnState; 8] = [
        TxnState::Empty,
        TxnState::Ongoing,
        TxnState::PrepareCommit,
        TxnState::PrepareAbort,
        TxnState::CompleteCommit,
        TxnState::CompleteAbort,
        TxnState::Dead,
        TxnState::PrepareEpochFence,
    ];

    /// Every one of the 64 (from, to) pairs: `prepare` accepts exactly Kafka's 16 edges and
    /// refuses (panics on) the 48 others, and refuses nothing for a reason other than the graph.
    #[test]
    fn every_pair_of_states_against_kafkas_graph() {
        for from in ALL_STATES {
            for to in ALL_STATES {
                let mut meta = initialised();
                meta.state = from;
                let prepared = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    meta.prepare(to, 7, 1, 0, 60_000, BTreeSet::new(), 5, 6);
                }));
                let valid = KAFKA_EDGES.contains(&(from, to));
                assert_eq!(prepared.is_ok(), valid, "{from:?} -> {to:?}: Kafka says {}", if valid { "valid" } else { "invalid" });
            }
        }
        assert_eq!(KAFKA_EDGES.len(), ALL_STATES.iter().map(|s| s.valid_previous().len()).sum::<usize>());
    }

    /// A whole transaction of producer 7 epoch 0 at times 5..=7, ended with `commit`.
    fn run_transaction(meta: &mut TxnMetadata, commit: bool) {
        begin(meta, 5);
        let EndPlan::Write(prepare) = meta.plan_end(7, 0, commit, 6).unwrap() else { panic!() };
        apply(meta, prepare);
        let complete = meta.prepare_complete(7);
        apply(meta, complete);
    }

    #[test]
    fn init_after_a_commit_is_complete_commit_to_empty() {
        let mut meta = initialised();
        run_transaction(&mut meta, true);
        let InitPlan::Write(init) = meta.plan_init_producer_id(60_000, None, None, 8).unwrap() else { panic!() };
        assert_eq!((init.state, init.producer_epoch, init.partitions.len()), (TxnState::Empty, 1, 0));
        apply(&mut meta, init);
        assert_eq!(meta.state, TxnState::Empty);
    }

    #[test]
    fn a_transaction_after_an_abort_is_complete_abort_to_ongoing() {
        let mut meta = initialised();
        run_transaction(&mut meta, false);
        assert_eq!(meta.state, TxnState::CompleteAbort);
        let next = meta.plan_add_partitions(7, 0, &parts(&[("b", 3)]), 8).unwrap().unwrap();
        assert_eq!((next.state, next.start_timestamp_ms), (TxnState::Ongoing, 8));
        assert_eq!(next.partitions, parts(&[("b", 3)]), "the aborted transaction's partitions are gone");
        apply(&mut meta, next);
    }

    /// Expiration removes an idle id from each of the three states without a transaction.
    #[test]
    fn an_idle_id_expires_to_dead_from_empty_and_complete_states() {
        for end in [None, Some(true), Some(false)] {
            let mut meta = initialised();
            if let Some(commit) = end {
                run_transaction(&mut meta, commit);
            }
            let from = meta.state;
            assert!(meta.is_expired(1_000_000, 1000));
            let dead = meta.prepare_dead();
            assert_eq!(dead.state, TxnState::Dead, "from {from:?}");
            // The tombstone keeps the last update time: expiry is not a use of the id.
            assert_eq!(dead.last_update_timestamp_ms, meta.last_update_timestamp_ms);
            apply(&mut meta, dead);
            assert_eq!(meta.state, TxnState::Dead);
        }
    }

    /// Kafka fences with Ongoing -> PrepareEpochFence -> PrepareAbort; here the two are one
    /// write (PrepareEpochFence is never held), so the only state a fence leaves is PrepareAbort
    /// with the bumped epoch, and PrepareCommit/PrepareAbort keep a new InitProducerId waiting.
    #[test]
    fn fencing_goes_from_ongoing_to_prepare_abort_in_one_step() {
        let mut meta = initialised();
        begin(&mut meta, 5);
        let EndPlan::Write(prepare) = meta.plan_end(7, 0, true, 6).unwrap() else { panic!() };
        apply(&mut meta, prepare);
        assert_eq!(meta.plan_init_producer_id(60_000, None, None, 7), Err(ResponseError::ConcurrentTransactions.code()));
        let complete = meta.prepare_complete(8);
        apply(&mut meta, complete);
        begin(&mut meta, 9);
        let InitPlan::FenceAndAbort(fence) = meta.plan_init_producer_id(60_000, None, None, 10).unwrap() else { panic!() };
        assert_eq!((fence.state, fence.producer_epoch), (TxnState::PrepareAbort, 1));
        apply(&mut meta, fence);
        assert_eq!(meta.state, TxnState::PrepareAbort);
        assert_eq!(meta.plan_add_partitions(7, 1, &parts(&[("a", 0)]), 11), Err(ResponseError::ConcurrentTransactions.code()));
    }

    #[test]
    #[should_panic(expected = "completing markers in state Ongoing")]
    fn completing_without_prepare_panics() {
        let mut meta = initialised();
        begin(&mut meta, 5);
        let _ = meta.prepare_complete(6);
    }

    #[test]
    #[should_panic(expected = "only an open transaction is fenced")]
    fn fencing_without_a_transaction_panics() {
        let mut meta = initialised();
        let _ = meta.prepare_fence_and_abort(5);
    }

    #[test]
    fn state_ids_round_trip() {
        for id in 0..8 {
            assert_eq!(TxnState::from_id(id).unwrap().id(), id);
        }
        assert_eq!(TxnState::from_id(8), None);
    }
}
