//! Idempotent producer state of one partition: per producer id, its epoch and the last batches'
//! sequence numbers, so a retried batch is recognised (DUPLICATE_SEQUENCE_NUMBER, answered with
//! the original offset) and a gap is refused (OUT_OF_ORDER_SEQUENCE_NUMBER), as Kafka does.
//!
//! The state is rebuilt at start by replaying batch headers from the log (see Partition::open),
//! so it survives restarts and crashes with the log itself.

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

#[derive(Debug, Default)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchMetadata>,
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

    /// Records a batch that is now in the log (appended, or replayed at start).
    pub fn record(&mut self, header: &BatchHeader) {
        if !header.has_producer_id() || header.base_sequence < 0 {
            return;
        }
        let entry = self.producers.entry(header.producer_id).or_default();
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
