//! Transaction markers on the partition side (KIP-98): the COMMIT or ABORT control batch the
//! transaction coordinator writes to every partition of a transaction (WriteTxnMarkers), in
//! Kafka's EndTransactionMarker format: a batch with the control and transactional attribute
//! bits, the producer's id and epoch, no sequence, and one record whose key is (version 0,
//! type: 0 ABORT, 1 COMMIT) and whose value is (version 0, coordinator epoch).
//!
//! It goes through the one door, `Partition::append`, with origin `TxnMarker`: checked there
//! against the producer's epoch and the last coordinator epoch, then recorded in the producer
//! state (the producer's open transaction on this partition ends).
//!
//! The last stable offset moves here (a marker closes a transaction: `first_unstable_offset`
//! grows), and an ABORT marker adds an entry to its segment's aborted-transaction index
//! (`.txnindex`): `aborted_txns_of` before the producer state records the marker (it knows where
//! the transaction began), `index_aborted_txns` after (the last stable offset it leaves). On every
//! replica: a follower's copies of markers go through the same door.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::own_batch::{encode_own_batch, BatchOwner};
use super::append::{AppendError, AppendOrigin, Appended};
use super::{Partition, PartitionError};
use crate::clock::now_ms;

const MARKER_VERSION: i16 = 0;
const ABORT: i16 = 0;
const COMMIT: i16 = 1;

/// One control batch: the end of `producer_id`'s transaction on a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnMarker {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub coordinator_epoch: i32,
    pub commit: bool,
}

/// The control batch of `marker`, offsets from 0 (the log assigns them).
pub fn encode_marker_batch(marker: &TxnMarker, now_ms: i64) -> Vec<u8> {
    let mut key = BytesMut::with_capacity(4);
    key.put_i16(MARKER_VERSION);
    key.put_i16(if marker.commit { COMMIT } else { ABORT });
    let mut value = BytesMut::with_capacity(6);
    value.put_i16(MARKER_VERSION);
    value.put_i32(marker.coordinator_epoch);
    let owner = BatchOwner { producer_id: marker.producer_id, producer_epoch: marker.producer_epoch, transactional: true, control: true };
    encode_own_batch(&[(key.freeze(), Some(value.freeze()))], now_ms, owner).expect("a control batch of one small record always encodes")
}

/// (commit, coordinator epoch) of a control record's key and value; None for another control
/// type or a malformed record. Phase 2 reads markers with it (aborted-transaction index).
#[allow(dead_code)]
pub fn decode_marker(key: &[u8], value: &[u8]) -> Option<(bool, i32)> {
    let (mut key, mut value) = (Bytes::copy_from_slice(key), Bytes::copy_from_slice(value));
    if key.remaining() < 4 || value.remaining() < 6 {
        return None;
    }
    let _version = key.get_i16();
    let commit = match key.get_i16() {
        COMMIT => true,
        ABORT => false,
        _ => return None,
    };
    let _version = value.get_i16();
    Some((commit, value.get_i32()))
}

impl Partition {
    /// Writes `marker` through the one door (the clearly named entry for the coordinator's
    /// markers: the standalone coordinator calls it on the owning shard, the WriteTxnMarkers
    /// handler on a partition leader).
    pub async fn append_txn_marker(&self, marker: &TxnMarker) -> Result<Appended, AppendError> {
        let batch = encode_marker_batch(marker, now_ms());
        self.append(&batch, AppendOrigin::TxnMarker { coordinator_epoch: marker.coordinator_epoch }).await
    }

    /// The smallest first offset of a transaction still open on this partition: the last stable
    /// offset is the smaller of it and the high watermark.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.producers.borrow().first_unstable_offset()
    }

    /// Before the producer state records an append: (producer id, first offset, marker offset)
    /// of each ABORT marker in it (`abort_indexes`: which of `headers` are ABORT markers).
    pub(super) fn aborted_txns_of(&self, headers: &[storage::batch::BatchHeader], abort_indexes: &[usize]) -> Vec<(i64, i64, i64)> {
        let producers = self.producers.borrow();
        abort_indexes
            .iter()
            .map(|&i| {
                let marker = &headers[i];
                // A marker for a transaction with no batch here (a partition added, then nothing
                // sent) covers nothing but itself.
                let first_offset = producers.open_txn_first_offset(marker.producer_id).unwrap_or(marker.base_offset);
                (marker.producer_id, first_offset, marker.base_offset)
            })
            .collect()
    }

    /// After the producer state recorded the append: the entries go to the `.txnindex`, each with
    /// the last stable offset the partition has past its marker (as Kafka's completed transaction).
    pub(super) fn index_aborted_txns(&self, log: &mut storage::Log, aborted: Vec<(i64, i64, i64)>) {
        for (producer_id, first_offset, last_offset) in aborted {
            let last_stable_offset = self.first_unstable_offset().map_or(last_offset + 1, |first| first.min(last_offset + 1));
            log.append_aborted_txn(storage::txn_index::AbortedTxn { producer_id, first_offset, last_offset, last_stable_offset });
        }
    }

    /// The producers this partition knows (DescribeProducers).
    pub fn producer_summaries(&self) -> Vec<crate::producer_state::ProducerSummary> {
        self.producers.borrow().summaries()
    }
}

/// Refused: a client's Produce carrying a control batch (only coordinators write them).
pub(super) fn control_batch_from_client() -> AppendError {
    AppendError::Partition(PartitionError::Storage(storage::StorageError::CorruptBatch(
        "control batches are written by the transaction coordinator only".into(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_batch_is_kafkas_end_transaction_marker() {
        let marker = TxnMarker { producer_id: 42, producer_epoch: 3, coordinator_epoch: 7, commit: true };
        let batch = encode_marker_batch(&marker, 1000);
        let header = storage::batch::validate(&batch, storage::batch::Validation::FromProducer).unwrap();
        assert!(header.is_control() && header.is_transactional());
        assert_eq!((header.producer_id, header.producer_epoch, header.base_sequence, header.record_count), (42, 3, -1, 1));
        let mut bytes = Bytes::from(batch);
        let decoded = kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes).unwrap();
        let record = &decoded.records[0];
        assert_eq!(&record.key.as_ref().unwrap()[..], &[0, 0, 0, 1]);
        assert_eq!(&record.value.as_ref().unwrap()[..], &[0, 0, 0, 0, 0, 7]);
        assert_eq!(decode_marker(record.key.as_ref().unwrap(), record.value.as_ref().unwrap()), Some((true, 7)));
        let abort = encode_marker_batch(&TxnMarker { commit: false, ..marker }, 1000);
        let decoded = kafka_protocol::records::RecordBatchDecoder::decode(&mut Bytes::from(abort)).unwrap();
        assert_eq!(&decoded.records[0].key.as_ref().unwrap()[..], &[0, 0, 0, 0]);
    }
}
