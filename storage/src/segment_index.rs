//! The two sparse indexes of a segment, in Kafka's file formats so operators' tools read them:
//! `.index` holds (relative offset u32, position u32) pairs, `.timeindex` holds
//! (timestamp i64, relative offset u32) pairs, all big-endian.
//!
//! Both live in memory while the segment is open and are written to disk whole when the segment
//! is flushed, rolled or closed. Between flushes the file may lag; recovery rebuilds the index of
//! every segment it scans, so a lagging index is never trusted after a crash.

pub const OFFSET_ENTRY_SIZE_BYTES: usize = 8;
pub const TIME_ENTRY_SIZE_BYTES: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp_ms: i64,
    pub relative_offset: u32,
}

#[derive(Debug, Default, Clone)]
pub struct OffsetIndex {
    entries: Vec<OffsetEntry>,
}

impl OffsetIndex {
    pub fn push(&mut self, entry: OffsetEntry) {
        if let Some(last) = self.entries.last() {
            assert!(
                entry.relative_offset > last.relative_offset && entry.position > last.position,
                "offset index entries must grow: {last:?} then {entry:?}"
            );
        }
        self.entries.push(entry);
    }

    /// The last entry at or below `relative_offset`: where a scan for that offset starts.
    pub fn lookup(&self, relative_offset: u32) -> Option<OffsetEntry> {
        let after = self.entries.partition_point(|e| e.relative_offset <= relative_offset);
        after.checked_sub(1).map(|i| self.entries[i])
    }

    /// Drops entries that point at or past `position` (after a truncation).
    pub fn truncate_to_position(&mut self, position: u32) {
        let keep = self.entries.partition_point(|e| e.position < position);
        self.entries.truncate(keep);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * OFFSET_ENTRY_SIZE_BYTES);
        for e in &self.entries {
            out.extend_from_slice(&e.relative_offset.to_be_bytes());
            out.extend_from_slice(&e.position.to_be_bytes());
        }
        out
    }

    /// Decodes an index file; `None` if it is not a valid index for a segment of `segment_size_bytes`
    /// (wrong length, entries that do not grow, a position past the end), so the caller rebuilds it.
    pub fn decode(bytes: &[u8], segment_size_bytes: u64) -> Option<OffsetIndex> {
        if bytes.len() % OFFSET_ENTRY_SIZE_BYTES != 0 {
            return None;
        }
        let mut index = OffsetIndex::default();
        for chunk in bytes.chunks_exact(OFFSET_ENTRY_SIZE_BYTES) {
            let entry = OffsetEntry {
                relative_offset: u32::from_be_bytes(chunk[0..4].try_into().unwrap()),
                position: u32::from_be_bytes(chunk[4..8].try_into().unwrap()),
            };
            if entry.position as u64 >= segment_size_bytes {
                return None;
            }
            if let Some(last) = index.entries.last() {
                if entry.relative_offset <= last.relative_offset || entry.position <= last.position {
                    return None;
                }
            }
            index.entries.push(entry);
        }
        Some(index)
    }
}

#[derive(Debug, Default, Clone)]
pub struct TimeIndex {
    entries: Vec<TimeEntry>,
}

impl TimeIndex {
    /// Adds an entry only when the timestamp grew: the index maps "max timestamp so far" to offset.
    pub fn maybe_push(&mut self, entry: TimeEntry) {
        match self.entries.last() {
            Some(last) if entry.timestamp_ms <= last.timestamp_ms => {}
            Some(last) => {
                assert!(entry.relative_offset > last.relative_offset, "time index offsets must grow");
                self.entries.push(entry);
            }
            None => self.entries.push(entry),
        }
    }

    /// The relative offset to start scanning from for the first record with timestamp >= target:
    /// the entry before the first entry whose timestamp reaches the target.
    pub fn lookup(&self, timestamp_ms: i64) -> Option<u32> {
        let first_reaching = self.entries.partition_point(|e| e.timestamp_ms < timestamp_ms);
        first_reaching.checked_sub(1).map(|i| self.entries[i].relative_offset)
    }

    /// The newest entry: (max timestamp so far, its relative offset).
    pub fn last(&self) -> Option<(i64, u32)> {
        self.entries.last().map(|e| (e.timestamp_ms, e.relative_offset))
    }

    pub fn truncate_to_relative_offset(&mut self, relative_offset: u32) {
        let keep = self.entries.partition_point(|e| e.relative_offset < relative_offset);
        self.entries.truncate(keep);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * TIME_ENTRY_SIZE_BYTES);
        for e in &self.entries {
            out.extend_from_slice(&e.timestamp_ms.to_be_bytes());
            out.extend_from_slice(&e.relative_offset.to_be_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<TimeIndex> {
        if bytes.len() % TIME_ENTRY_SIZE_BYTES != 0 {
            return None;
        }
        let mut index = TimeIndex::default();
        for chunk in bytes.chunks_exact(TIME_ENTRY_SIZE_BYTES) {
            let entry = TimeEntry {
                timestamp_ms: i64::from_be_bytes(chunk[0..8].try_into().unwrap()),
                relative_offset: u32::from_be_bytes(chunk[8..12].try_into().unwrap()),
            };
            if let Some(last) = index.entries.last() {
                if entry.timestamp_ms <= last.timestamp_ms || entry.relative_offset <= last.relative_offset {
                    return None;
                }
            }
            index.entries.push(entry);
        }
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_of(pairs: &[(u32, u32)]) -> OffsetIndex {
        let mut index = OffsetIndex::default();
        for &(relative_offset, position) in pairs {
            index.push(OffsetEntry { relative_offset, position });
        }
        index
    }

    #[test]
    fn lookup_at_every_boundary() {
        let index = index_of(&[(0, 0), (10, 4096), (20, 8192)]);
        assert_eq!(index.lookup(0).unwrap().position, 0);
        assert_eq!(index.lookup(9).unwrap().position, 0);
        assert_eq!(index.lookup(10).unwrap().position, 4096);
        assert_eq!(index.lookup(11).unwrap().position, 4096);
        assert_eq!(index.lookup(19).unwrap().position, 4096);
        assert_eq!(index.lookup(20).unwrap().position, 8192);
        assert_eq!(index.lookup(u32::MAX).unwrap().position, 8192);
        let starts_late = index_of(&[(5, 100)]);
        assert_eq!(starts_late.lookup(4), None);
        assert!(OffsetIndex::default().lookup(0).is_none());
    }

    #[test]
    fn encode_decode_round_trip_and_rejects_bad_files() {
        let index = index_of(&[(0, 0), (10, 4096), (20, 8192)]);
        let bytes = index.encode();
        assert_eq!(OffsetIndex::decode(&bytes, 9000).unwrap().len(), 3);
        assert!(OffsetIndex::decode(&bytes[..bytes.len() - 1], 9000).is_none(), "torn entry");
        assert!(OffsetIndex::decode(&bytes, 8192).is_none(), "entry past the segment end");
        let mut swapped = bytes.clone();
        swapped[8..16].copy_from_slice(&bytes[16..24]);
        assert!(OffsetIndex::decode(&swapped, 9000).is_none(), "entries out of order");
    }

    #[test]
    fn truncation_drops_entries_at_or_past_the_cut() {
        let mut index = index_of(&[(0, 0), (10, 4096), (20, 8192)]);
        index.truncate_to_position(8192);
        assert_eq!(index.len(), 2);
        index.truncate_to_position(1);
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn time_index_lookup_and_monotonicity() {
        let mut index = TimeIndex::default();
        index.maybe_push(TimeEntry { timestamp_ms: 100, relative_offset: 0 });
        index.maybe_push(TimeEntry { timestamp_ms: 90, relative_offset: 5 }); // not a new max
        index.maybe_push(TimeEntry { timestamp_ms: 200, relative_offset: 10 });
        assert_eq!(index.len(), 2);
        assert_eq!(index.lookup(50), None);
        assert_eq!(index.lookup(100), None);
        assert_eq!(index.lookup(101), Some(0));
        assert_eq!(index.lookup(200), Some(0));
        assert_eq!(index.lookup(201), Some(10));
        assert_eq!(TimeIndex::decode(&index.encode()).unwrap().len(), 2);
    }
}
