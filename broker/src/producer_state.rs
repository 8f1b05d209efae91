//! Idempotent producer state of one partition: per producer id, its epoch and the last batches'
//! sequence numbers, so a retried batch is recognised (DUPLICATE_SEQUENCE_NUMBER, answered with
//! the original offset) and a gap is refused (OUT_OF_ORDER_SEQUENCE_NUMBER), as Kafka does.
//!
//! The state is rebuilt at start from the latest snapshot (partition/producer_snapshot.rs) and
//! the batch headers after it (see Partition::open), so it survives restarts, crashes and
//! retention deleting the segments that held a producer's batches.
//!
//! Transactions (KIP-98): per producer also the first offset of its open transaction (set by its
//! first transactional batch, cleared by the COMMIT/ABORT marker) and the coordinator epoch of
//! the last marker. Markers carry the producer's epoch: a marker with a newer one (a fence)
//! makes the producer's older epoch fenced here too. `first_unstable_offset` is what the last
//! stable offset will be computed from (phase 2: `Partition::first_unstable_offset`).

use std::collections::{HashMap, VecDeque};

use storage::batch::BatchHeader;

/// Kafka keeps the last five batches per producer: the most a client has in flight.
const RETAINED_BATCHES: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMetadata {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub base_offset: i64,
    pub last_offset: i64,
}

/// One producer in a snapshot (partition/producer_snapshot.rs writes and reads them): its last batch only (Kafka keeps one batch per producer here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotEntry {
    pub producer_id: i64,
    pub epoch: i16,
    /// -1 with `last_offset` -1: no batch known (a producer known from markers only).
    pub last_sequence: i32,
    pub last_offset: i64,
    /// last sequence - first sequence of the last batch (= last offset - base offset).
    pub offset_delta: i32,
    pub timestamp_ms: i64,
    pub coordinator_epoch: i32,
    /// -1 outside a transaction.
    pub current_txn_first_offset: i64,
}

#[derive(Debug, Default)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchMetadata>,
    /// The first offset of the producer's open transaction on this partition.
    current_txn_first_offset: Option<i64>,
    /// The coordinator epoch of the last marker written for this producer (-1: none yet).
    coordinator_epoch: i32,
    /// The max timestamp of the producer's last batch.
    last_timestamp_ms: i64,
}

/// One producer as DescribeProducers reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerSummary {
    pub producer_id: i64,
    pub epoch: i16,
    pub last_sequence: i32,
    pub last_timestamp_ms: i64,
    pub coordinator_epoch: i32,
    /// -1 outside a transaction.
    pub current_txn_start_offset: i64,
}

/// Why a transaction marker is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum MarkerCheck {
    Accept,
    /// The marker's producer epoch is older than the producer's (Kafka: INVALID_PRODUCER_EPOCH).
    FencedEpoch,
    /// An older coordinator (a deposed one) writes it: TRANSACTION_COORDINATOR_FENCED.
    FencedCoordinator,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Append it.
    Accept,
    /// Already in the log at this base offset: answer success without appending.
    Duplicate { base_offset: i64 },
    OutOfOrder { expected: i32, got: i32 },
    /// An epoch older than the producer's current one: a zombie producer.
    FencedEpoch,
}

#[derive(Debug, Default)]
pub struct ProducerStateTable {
    producers: HashMap<i64, ProducerEntry>,
}

impl ProducerStateTable {
    pub fn check(&self, header: &BatchHeader) -> SequenceCheck {
        if !header.has_producer_id() || header.base_sequence < 0 {
            return SequenceCheck::Accept;
        }
        let Some(entry) = self.producers.get(&header.producer_id) else {
            // First batch we see from this producer on this partition. Kafka accepts any
            // sequence here when the producer's state is unknown (expired or new).
            return SequenceCheck::Accept;
        };
        if header.producer_epoch < entry.epoch {
            return SequenceCheck::FencedEpoch;
        }
        if header.producer_epoch > entry.epoch {
            return if header.base_sequence == 0 {
                SequenceCheck::Accept
            } else {
                SequenceCheck::OutOfOrder { expected: 0, got: header.base_sequence }
            };
        }
        if let Some(batch) = entry
            .batches
            .iter()
            .find(|b| b.first_sequence == header.base_sequence && b.last_sequence == header.last_sequence())
        {
            return SequenceCheck::Duplicate { base_offset: batch.base_offset };
        }
        let last = entry.batches.back().map(|b| b.last_sequence).unwrap_or(-1);
        let expected = if last == i32::MAX { 0 } else { last + 1 };
        if header.base_sequence != expected {
            return SequenceCheck::OutOfOrder { expected, got: header.base_sequence };
        }
        SequenceCheck::Accept
    }

    /// A COMMIT/ABORT marker for `header`'s producer, written by the coordinator of
    /// `coordinator_epoch` (Kafka's ProducerAppendInfo.checkProducerEpoch and the coordinator
    /// epoch check of appendEndTxnMarker).
    pub fn check_marker(&self, header: &BatchHeader, coordinator_epoch: i32) -> MarkerCheck {
        let Some(entry) = self.producers.get(&header.producer_id) else { return MarkerCheck::Accept };
        if header.producer_epoch < entry.epoch {
            return MarkerCheck::FencedEpoch;
        }
        if coordinator_epoch < entry.coordinator_epoch {
            return MarkerCheck::FencedCoordinator;
        }
        MarkerCheck::Accept
    }

    /// Records a marker that is now in the log: the transaction is over, the marker's epoch is
    /// the producer's (a fence bumps it), and its coordinator epoch the latest seen (None when
    /// replayed from headers: the epoch is in the record, not the header; phase 2 snapshots keep it).
    pub fn record_marker(&mut self, header: &BatchHeader, coordinator_epoch: Option<i32>) {
        let entry = self.producers.entry(header.producer_id).or_insert_with(|| ProducerEntry { coordinator_epoch: -1, ..Default::default() });
        if header.producer_epoch > entry.epoch {
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
        }
        entry.current_txn_first_offset = None;
        if let Some(coordinator_epoch) = coordinator_epoch {
            entry.coordinator_epoch = entry.coordinator_epoch.max(coordinator_epoch);
        }
        entry.last_timestamp_ms = header.max_timestamp;
    }

    /// The smallest first offset of an open transaction: nothing at or after it is stable yet.
    /// Phase 2 computes the last stable offset from it.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.producers.values().filter_map(|entry| entry.current_txn_first_offset).min()
    }

    /// The first offset of `producer_id`'s open transaction here (the `.txnindex` entry of its abort).
    pub fn open_txn_first_offset(&self, producer_id: i64) -> Option<i64> {
        self.producers.get(&producer_id).and_then(|entry| entry.current_txn_first_offset)
    }

    /// Whether the producer has an open transaction here in `epoch`: its first transactional
    /// append was verified with the coordinator (KIP-890), so the following ones need not be.
    pub fn in_transaction(&self, producer_id: i64, epoch: i16) -> bool {
        self.producers.get(&producer_id).is_some_and(|e| e.epoch == epoch && e.current_txn_first_offset.is_some())
    }

    /// The producers known on this partition (DescribeProducers).
    pub fn summaries(&self) -> Vec<ProducerSummary> {
        self.producers
            .iter()
            .map(|(&producer_id, entry)| ProducerSummary {
                producer_id,
                epoch: entry.epoch,
                last_sequence: entry.batches.back().map(|b| b.last_sequence).unwrap_or(-1),
                last_timestamp_ms: entry.last_timestamp_ms,
                coordinator_epoch: entry.coordinator_epoch,
                current_txn_start_offset: entry.current_txn_first_offset.unwrap_or(-1),
            })
            .collect()
    }

    /// The state as a snapshot holds it: per producer its last batch only, as Kafka keeps it.
    pub fn to_snapshot(&self) -> Vec<SnapshotEntry> {
        let mut entries: Vec<SnapshotEntry> = self
            .producers
            .iter()
            .map(|(&producer_id, entry)| {
                let last = entry.batches.back();
                SnapshotEntry {
                    producer_id,
                    epoch: entry.epoch,
                    last_sequence: last.map_or(-1, |b| b.last_sequence),
                    last_offset: last.map_or(-1, |b| b.last_offset),
                    offset_delta: last.map_or(0, |b| (b.last_offset - b.base_offset) as i32),
                    timestamp_ms: entry.last_timestamp_ms,
                    coordinator_epoch: entry.coordinator_epoch,
                    current_txn_first_offset: entry.current_txn_first_offset.unwrap_or(-1),
                }
            })
            .collect();
        entries.sort_by_key(|e| e.producer_id);
        entries
    }

    /// The state a snapshot holds (Kafka's ProducerStateManager.loadFromSnapshot).
    pub fn from_snapshot(entries: &[SnapshotEntry]) -> ProducerStateTable {
        let producers = entries
            .iter()
            .map(|e| {
                let mut batches = VecDeque::new();
                if e.last_offset >= 0 && e.last_sequence >= 0 {
                    batches.push_back(BatchMetadata {
                        first_sequence: e.last_sequence - e.offset_delta,
                        last_sequence: e.last_sequence,
                        base_offset: e.last_offset - e.offset_delta as i64,
                        last_offset: e.last_offset,
                    });
                }
                let entry = ProducerEntry {
                    epoch: e.epoch,
                    batches,
                    current_txn_first_offset: (e.current_txn_first_offset >= 0).then_some(e.current_txn_first_offset),
                    coordinator_epoch: e.coordinator_epoch,
                    last_timestamp_ms: e.timestamp_ms,
                };
                (e.producer_id, entry)
            })
            .collect();
        ProducerStateTable { producers }
    }

    /// Records a batch that is now in the log (appended, or replayed at start).
    pub fn record(&mut self, header: &BatchHeader) {
        if !header.has_producer_id() {
            return;
        }
        if header.is_control() {
            self.record_marker(header, None);
            return;
        }
        if header.is_transactional() {
            // Also the coordinators' transactional offset commits, which carry no sequence.
            let entry = self.producers.entry(header.producer_id).or_insert_with(|| ProducerEntry { coordinator_epoch: -1, ..Default::default() });
            if header.producer_epoch > entry.epoch {
                entry.epoch = header.producer_epoch;
                entry.batches.clear();
            }
            entry.current_txn_first_offset.get_or_insert(header.base_offset);
            entry.last_timestamp_ms = header.max_timestamp;
        }
        if header.base_sequence < 0 {
            return;
        }
        let entry = self.producers.entry(header.producer_id).or_insert_with(|| ProducerEntry { coordinator_epoch: -1, ..Default::default() });
        entry.last_timestamp_ms = header.max_timestamp;
        if header.producer_epoch != entry.epoch {
            entry.epoch = header.producer_epoch;
            entry.batches.clear();
        }
        entry.batches.push_back(BatchMetadata {
            first_sequence: header.base_sequence,
            last_sequence: header.last_sequence(),
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
        });
        while entry.batches.len() > RETAINED_BATCHES {
            entry.batches.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(producer_id: i64, epoch: i16, base_sequence: i32, count: i32, base_offset: i64) -> BatchHeader {
        BatchHeader {
            base_offset,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id,
            producer_epoch: epoch,
            base_sequence,
            record_count: count,
        }
    }

    const TRANSACTIONAL: i16 = 0x10;
    const CONTROL: i16 = 0x20;

    fn with_attributes(mut header: BatchHeader, attributes: i16) -> BatchHeader {
        header.attributes = attributes;
        header
    }

    #[test]
    fn transactions_open_and_close_with_markers() {
        let mut table = ProducerStateTable::default();
        assert_eq!(table.first_unstable_offset(), None);
        table.record(&with_attributes(header(7, 0, 0, 2, 10), TRANSACTIONAL));
        table.record(&with_attributes(header(7, 0, 2, 1, 12), TRANSACTIONAL));
        table.record(&with_attributes(header(8, 0, 0, 1, 13), TRANSACTIONAL));
        assert_eq!(table.first_unstable_offset(), Some(10), "the first offset of the oldest open transaction");
        let marker = with_attributes(header(7, 0, -1, 1, 14), TRANSACTIONAL | CONTROL);
        assert_eq!(table.check_marker(&marker, 0), MarkerCheck::Accept);
        table.record_marker(&marker, Some(0));
        assert_eq!(table.first_unstable_offset(), Some(13));
        // The producer's sequences carry on after the commit in the same epoch.
        assert_eq!(table.check(&with_attributes(header(7, 0, 3, 1, 99), TRANSACTIONAL)), SequenceCheck::Accept);
        let summary = table.summaries().into_iter().find(|s| s.producer_id == 8).unwrap();
        assert_eq!((summary.current_txn_start_offset, summary.last_sequence), (13, 0));
    }

    #[test]
    fn a_fencing_marker_fences_the_old_epoch_and_old_coordinators() {
        let mut table = ProducerStateTable::default();
        table.record(&with_attributes(header(7, 0, 0, 1, 0), TRANSACTIONAL));
        // The coordinator aborts with a bumped epoch (a second producer, or a timeout).
        let fence = with_attributes(header(7, 1, -1, 1, 1), TRANSACTIONAL | CONTROL);
        table.record_marker(&fence, Some(3));
        assert_eq!(table.check(&with_attributes(header(7, 0, 1, 1, 99), TRANSACTIONAL)), SequenceCheck::FencedEpoch);
        assert_eq!(table.check_marker(&with_attributes(header(7, 0, -1, 1, 99), TRANSACTIONAL | CONTROL), 3), MarkerCheck::FencedEpoch);
        assert_eq!(table.check_marker(&with_attributes(header(7, 1, -1, 1, 99), TRANSACTIONAL | CONTROL), 2), MarkerCheck::FencedCoordinator);
        // The new producer (next epoch) starts at sequence 0.
        assert_eq!(table.check(&with_attributes(header(7, 2, 0, 1, 99), TRANSACTIONAL)), SequenceCheck::Accept);
        assert_eq!(table.first_unstable_offset(), None);
    }

    #[test]
    fn a_snapshot_keeps_the_last_batch_and_the_open_transaction() {
        let mut table = ProducerStateTable::default();
        table.record(&header(7, 2, 0, 3, 0));
        table.record(&header(7, 2, 3, 2, 3));
        table.record(&with_attributes(header(8, 0, 0, 1, 5), TRANSACTIONAL));
        table.record_marker(&with_attributes(header(9, 4, -1, 1, 6), TRANSACTIONAL | CONTROL), Some(5));
        let restored = ProducerStateTable::from_snapshot(&table.to_snapshot());
        assert_eq!(restored.check(&header(7, 2, 3, 2, 99)), SequenceCheck::Duplicate { base_offset: 3 });
        assert_eq!(restored.check(&header(7, 2, 5, 1, 99)), SequenceCheck::Accept);
        assert_eq!(restored.check(&header(7, 1, 5, 1, 99)), SequenceCheck::FencedEpoch);
        assert_eq!(restored.first_unstable_offset(), Some(5));
        assert_eq!(restored.check_marker(&with_attributes(header(9, 4, -1, 1, 99), TRANSACTIONAL | CONTROL), 4), MarkerCheck::FencedCoordinator);
        let mut summaries = restored.summaries();
        summaries.sort_by_key(|s| s.producer_id);
        let mut expected = table.summaries();
        expected.sort_by_key(|s| s.producer_id);
        assert_eq!(summaries, expected);
    }

    #[test]
    fn in_order_duplicate_and_gap() {
        let mut table = ProducerStateTable::default();
        assert_eq!(table.check(&header(7, 0, 0, 3, 0)), SequenceCheck::Accept);
        table.record(&header(7, 0, 0, 3, 0));
        assert_eq!(table.check(&header(7, 0, 3, 2, 3)), SequenceCheck::Accept);
        table.record(&header(7, 0, 3, 2, 3));
        assert_eq!(table.check(&header(7, 0, 0, 3, 99)), SequenceCheck::Duplicate { base_offset: 0 });
        assert_eq!(table.check(&header(7, 0, 6, 1, 99)), SequenceCheck::OutOfOrder { expected: 5, got: 6 });
        assert_eq!(table.check(&header(7, 1, 0, 1, 99)), SequenceCheck::Accept, "a new epoch starts at 0");
        assert_eq!(table.check(&header(7, 1, 4, 1, 99)), SequenceCheck::OutOfOrder { expected: 0, got: 4 });
        table.record(&header(7, 1, 0, 1, 5));
        assert_eq!(table.check(&header(7, 0, 5, 1, 99)), SequenceCheck::FencedEpoch);
    }
}
