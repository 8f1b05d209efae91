//! The aborted-transaction index of a segment (`.txnindex`, KIP-98), in Kafka's format: one
//! 34-byte entry per transaction aborted by a marker in this segment,
//! ```text
//! version i16 (0) | producer_id i64 | first_offset i64 | last_offset i64 | last_stable_offset i64
//! ```
//! `first_offset` is the transaction's first offset on the partition, `last_offset` the ABORT
//! marker's, `last_stable_offset` the partition's last stable offset once the marker landed (it
//! lets a search stop early, as Kafka's `collectAbortedTxns`). A read_committed fetch gets, from
//! the index of the segment it starts in and those after, every aborted transaction overlapping
//! the records it returns, so the client drops their records.
//!
//! Storage keeps the entries in memory (a few per segment) and writes the file whole with the
//! segment's other indexes (`Segment::write_indexes_if_dirty`): a trusted segment's file is as
//! current as its offset index, and a segment recovery scans gets its entries rebuilt from the
//! log (`rebuild_entries`). Entries come from the partition, which knows where each producer's
//! transaction began (`Log::append_aborted_txn`); storage knows only batches and control records.

use std::collections::HashMap;

use crate::batch::{BatchHeader, BATCH_HEADER_SIZE_BYTES};

pub const ENTRY_SIZE_BYTES: usize = 34;
const VERSION: i16 = 0;

/// One aborted transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
    pub last_stable_offset: i64,
}

impl AbortedTxn {
    pub fn encode(&self) -> [u8; ENTRY_SIZE_BYTES] {
        let mut out = [0u8; ENTRY_SIZE_BYTES];
        out[0..2].copy_from_slice(&VERSION.to_be_bytes());
        out[2..10].copy_from_slice(&self.producer_id.to_be_bytes());
        out[10..18].copy_from_slice(&self.first_offset.to_be_bytes());
        out[18..26].copy_from_slice(&self.last_offset.to_be_bytes());
        out[26..34].copy_from_slice(&self.last_stable_offset.to_be_bytes());
        out
    }

    /// None for another version (Kafka refuses it too).
    pub fn decode(bytes: &[u8]) -> Option<AbortedTxn> {
        let i64_at = |at: usize| i64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        if bytes.len() < ENTRY_SIZE_BYTES || i16::from_be_bytes([bytes[0], bytes[1]]) != VERSION {
            return None;
        }
        Some(AbortedTxn { producer_id: i64_at(2), first_offset: i64_at(10), last_offset: i64_at(18), last_stable_offset: i64_at(26) })
    }
}

/// A segment's aborted transactions, in marker order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TxnIndex {
    entries: Vec<AbortedTxn>,
}

impl TxnIndex {
    /// The file's entries; None when it is not a whole number of valid entries (rebuild it).
    pub fn decode(bytes: &[u8]) -> Option<TxnIndex> {
        if bytes.len() % ENTRY_SIZE_BYTES != 0 {
            return None;
        }
        let entries = bytes.chunks_exact(ENTRY_SIZE_BYTES).map(AbortedTxn::decode).collect::<Option<Vec<_>>>()?;
        let mut index = TxnIndex::default();
        for entry in entries {
            if !index.fits(&entry) {
                return None;
            }
            index.entries.push(entry);
        }
        Some(index)
    }

    pub fn encode(&self) -> Vec<u8> {
        self.entries.iter().flat_map(|e| e.encode()).collect()
    }

    fn fits(&self, entry: &AbortedTxn) -> bool {
        entry.first_offset <= entry.last_offset && self.entries.last().map_or(true, |last| entry.last_offset > last.last_offset)
    }

    /// Adds the entry of an ABORT marker appended after every marker already here.
    pub fn push(&mut self, entry: AbortedTxn) {
        assert!(self.fits(&entry), "aborted transactions are indexed in marker order: {entry:?} after {:?}", self.entries.last());
        self.entries.push(entry);
    }

    pub fn entries(&self) -> &[AbortedTxn] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The log was cut back to `offset`: markers at or past it are gone (Kafka's truncateTo).
    /// Returns whether anything went.
    pub fn truncate_from(&mut self, offset: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.last_offset < offset);
        self.entries.len() != before
    }

    /// The aborted transactions overlapping [fetch_offset, upper_bound_offset), and whether the
    /// search is complete (an entry whose last stable offset reaches the bound: no transaction
    /// starting below the bound can end in a later segment), as Kafka's `collectAbortedTxns`.
    pub fn collect(&self, fetch_offset: i64, upper_bound_offset: i64, into: &mut Vec<AbortedTxn>) -> bool {
        for entry in &self.entries {
            if entry.last_offset >= fetch_offset && entry.first_offset < upper_bound_offset {
                into.push(*entry);
            }
            if entry.last_stable_offset >= upper_bound_offset {
                return true;
            }
        }
        false
    }
}

/// The type of a control batch's record (Kafka's ControlRecordType): from the key of its one
/// record, `version i16 | type i16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlType {
    Abort,
    Commit,
    /// Another control record (KRaft's leader change, snapshots): not a transaction marker.
    Other,
}

/// The control type of a whole control batch (never compressed: markers are written
/// uncompressed by Kafka and by us). None for a batch that is not one, or malformed.
pub fn control_type(batch: &[u8]) -> Option<ControlType> {
    let header = BatchHeader::parse(batch).ok()?;
    if !header.is_control() || header.compression_codec() != 0 || header.record_count < 1 {
        return None;
    }
    let mut key = None;
    let mut first = true;
    crate::record::walk(&header, &batch[BATCH_HEADER_SIZE_BYTES..], |record, _| {
        if first {
            key = record.key;
            first = false;
        }
    })
    .ok()?;
    let key = key?;
    if key.len() < 4 {
        return None;
    }
    Some(match i16::from_be_bytes([key[2], key[3]]) {
        0 => ControlType::Abort,
        1 => ControlType::Commit,
        _ => ControlType::Other,
    })
}

/// Follows which transactions are open, from batch headers in log order: the reference for
/// rebuilding entries after a crash (the live path asks the partition's producer state).
#[derive(Debug, Default)]
pub struct OpenTxns {
    first_offsets: HashMap<i64, i64>,
}

impl OpenTxns {
    /// A batch in log order. For a control batch, returns the entry it would make as an ABORT
    /// marker: (producer id, first offset, last offset, last stable offset after it).
    pub fn record(&mut self, header: &BatchHeader) -> Option<AbortedTxn> {
        if !header.has_producer_id() || !header.is_transactional() {
            return None;
        }
        if !header.is_control() {
            self.first_offsets.entry(header.producer_id).or_insert(header.base_offset);
            return None;
        }
        let first_offset = self.first_offsets.remove(&header.producer_id).unwrap_or(header.base_offset);
        let last_offset = header.base_offset;
        Some(AbortedTxn {
            producer_id: header.producer_id,
            first_offset,
            last_offset,
            last_stable_offset: self.first_unstable_offset().unwrap_or(last_offset + 1),
        })
    }

    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.first_offsets.values().copied().min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_is_kafkas_34_bytes() {
        let entry = AbortedTxn { producer_id: 7, first_offset: 10, last_offset: 20, last_stable_offset: 21 };
        let bytes = entry.encode();
        assert_eq!(&bytes[0..2], &[0, 0]);
        assert_eq!(&bytes[2..10], &7i64.to_be_bytes());
        assert_eq!(&bytes[26..34], &21i64.to_be_bytes());
        assert_eq!(AbortedTxn::decode(&bytes), Some(entry));
        let mut index = TxnIndex::default();
        index.push(entry);
        index.push(AbortedTxn { producer_id: 8, first_offset: 15, last_offset: 30, last_stable_offset: 31 });
        assert_eq!(TxnIndex::decode(&index.encode()), Some(index.clone()));
        assert_eq!(TxnIndex::decode(&index.encode()[..40]), None, "a torn entry");
        let mut wrong_version = index.encode();
        wrong_version[1] = 1;
        assert_eq!(TxnIndex::decode(&wrong_version), None);
    }

    #[test]
    fn collect_and_truncate() {
        let mut index = TxnIndex::default();
        index.push(AbortedTxn { producer_id: 1, first_offset: 0, last_offset: 5, last_stable_offset: 3 });
        index.push(AbortedTxn { producer_id: 2, first_offset: 3, last_offset: 9, last_stable_offset: 10 });
        let mut found = Vec::new();
        assert!(!index.collect(6, 20, &mut found), "no entry reaches 20: later segments may hold more");
        assert_eq!(found.iter().map(|e| e.producer_id).collect::<Vec<_>>(), vec![2]);
        found.clear();
        assert!(index.collect(0, 4, &mut found));
        assert_eq!(found.len(), 2);
        assert!(index.truncate_from(9));
        assert_eq!(index.entries().len(), 1);
        assert!(!index.truncate_from(9));
    }
}
