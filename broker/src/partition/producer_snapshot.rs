//! Producer state snapshots: `<offset>.snapshot` files in a partition's directory, Kafka 3.9's
//! format (ProducerStateManager.writeSnapshot, version 1), each the whole producer state as it
//! was at `<offset>` (the batches before it applied, none after). Taken when a segment rolls
//! (at the new segment's base offset) and at a clean shutdown (at the log end); at open the
//! partition loads the latest one at or below the log end and replays only the batch headers
//! after it, so idempotence and open transactions survive retention deleting the segments that
//! held a producer's batches. The last `RETAINED_SNAPSHOTS` are kept; a truncation below a
//! snapshot deletes it.
//!
//! Layout (big endian): version i16, crc u32 (crc32c of everything after it), then an i32 count
//! of entries: producer id i64, epoch i16, last sequence i32, last offset i64, offset delta i32,
//! timestamp i64, coordinator epoch i32, current transaction first offset i64 (-1: none).
//!
//! Files are written through `file_deletion::replace_file` (a `.tmp` written and synced, then
//! renamed on the blocking thread): a kill -9 mid-write leaves the previous snapshots and a
//! `.tmp` that the next open removes; a damaged file fails its CRC and is skipped and deleted.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use storage::{file_deletion, Log, StorageError};

use super::Partition;
use crate::producer_state::{ProducerStateTable, SnapshotEntry};

pub const SNAPSHOT_SUFFIX: &str = ".snapshot";
const VERSION: i16 = 1;
const HEADER_BYTES: usize = 2 + 4 + 4;
const ENTRY_BYTES: usize = 8 + 2 + 4 + 8 + 4 + 8 + 4 + 8;
/// Kafka keeps the snapshots of the last two segments (and the recovery point's).
pub const RETAINED_SNAPSHOTS: usize = 2;

pub fn encode(entries: &[SnapshotEntry]) -> Vec<u8> {
    let mut body = Vec::with_capacity(4 + entries.len() * ENTRY_BYTES);
    body.extend_from_slice(&(entries.len() as i32).to_be_bytes());
    for e in entries {
        body.extend_from_slice(&e.producer_id.to_be_bytes());
        body.extend_from_slice(&e.epoch.to_be_bytes());
        body.extend_from_slice(&e.last_sequence.to_be_bytes());
        body.extend_from_slice(&e.last_offset.to_be_bytes());
        body.extend_from_slice(&e.offset_delta.to_be_bytes());
        body.extend_from_slice(&e.timestamp_ms.to_be_bytes());
        body.extend_from_slice(&e.coordinator_epoch.to_be_bytes());
        body.extend_from_slice(&e.current_txn_first_offset.to_be_bytes());
    }
    let mut bytes = Vec::with_capacity(6 + body.len());
    bytes.extend_from_slice(&VERSION.to_be_bytes());
    bytes.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    bytes.extend_from_slice(&body);
    bytes
}

pub fn decode(bytes: &[u8]) -> Result<Vec<SnapshotEntry>, String> {
    if bytes.len() < HEADER_BYTES {
        return Err(format!("{} bytes, shorter than a header", bytes.len()));
    }
    let version = i16::from_be_bytes([bytes[0], bytes[1]]);
    if version != VERSION {
        return Err(format!("version {version}, expected {VERSION}"));
    }
    let crc = u32::from_be_bytes(bytes[2..6].try_into().expect("4 bytes"));
    let body = &bytes[6..];
    if crc32c::crc32c(body) != crc {
        return Err("CRC mismatch".into());
    }
    let count = i32::from_be_bytes(body[..4].try_into().expect("4 bytes"));
    let entries = &body[4..];
    if count < 0 || entries.len() != count as usize * ENTRY_BYTES {
        return Err(format!("{count} entries in {} bytes", entries.len()));
    }
    Ok(entries
        .chunks_exact(ENTRY_BYTES)
        .map(|c| {
            let i64_at = |at: usize| i64::from_be_bytes(c[at..at + 8].try_into().expect("8 bytes"));
            let i32_at = |at: usize| i32::from_be_bytes(c[at..at + 4].try_into().expect("4 bytes"));
            SnapshotEntry {
                producer_id: i64_at(0),
                epoch: i16::from_be_bytes([c[8], c[9]]),
                last_sequence: i32_at(10),
                last_offset: i64_at(14),
                offset_delta: i32_at(22),
                timestamp_ms: i64_at(26),
                coordinator_epoch: i32_at(34),
                current_txn_first_offset: i64_at(38),
            }
        })
        .collect())
}

/// `00000000000000000042.snapshot`, as Kafka names them (like segments).
pub fn path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(format!("{offset:020}{SNAPSHOT_SUFFIX}"))
}

/// The snapshot offsets in `dir` (read on the blocking thread).
pub async fn list(dir: &Path) -> Result<BTreeSet<i64>, StorageError> {
    let dir = dir.to_path_buf();
    file_deletion::on_blocking_thread(move || {
        let entries = std::fs::read_dir(&dir).map_err(|e| StorageError::io(format!("listing {}", dir.display()), e))?;
        let mut offsets = BTreeSet::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            if let Some(offset) = name.to_str().and_then(|n| n.strip_suffix(SNAPSHOT_SUFFIX)).and_then(|n| n.parse::<i64>().ok()) {
                offsets.insert(offset);
            }
        }
        Ok(offsets)
    })
    .await
}

/// The snapshot at `offset`, or why it cannot be used (read on the blocking thread).
pub async fn read(dir: &Path, offset: i64) -> Result<Vec<SnapshotEntry>, String> {
    let path = path(dir, offset);
    let bytes = file_deletion::on_blocking_thread(move || std::fs::read(&path)).await.map_err(|e| e.to_string())?;
    decode(&bytes)
}

pub async fn write(dir: &Path, offset: i64, entries: &[SnapshotEntry]) -> Result<(), StorageError> {
    file_deletion::replace_file(&path(dir, offset), encode(entries)).await
}

/// Removes the snapshots at `offsets` (on the blocking thread).
pub async fn remove(dir: &Path, offsets: impl IntoIterator<Item = i64>) {
    file_deletion::remove_files(offsets.into_iter().map(|offset| path(dir, offset)).collect()).await
}

/// What a partition knows of its producers, rebuilt from the log: the state, each producer's
/// last offset (the cleaner keeps those batches), and the snapshot files present.
pub struct Recovered {
    pub producers: ProducerStateTable,
    pub last_offsets: HashMap<i64, i64>,
    pub snapshots: BTreeSet<i64>,
}

/// Loads the latest usable snapshot at or below the log end and replays the batch headers after
/// it (from the log start if that is later). Snapshots past the log end (a log cut back by
/// recovery or truncation) and unreadable ones are deleted. Without a snapshot (a log written
/// before snapshots existed), replays the last two segments as before.
pub async fn recover(log: &Log) -> Result<Recovered, StorageError> {
    let dir = log.dir();
    let mut snapshots = list(dir).await?;
    let log_end_offset = log.log_end_offset();
    let stale: Vec<i64> = snapshots.range(log_end_offset + 1..).copied().collect();
    let mut loaded = None;
    for &offset in snapshots.range(..=log_end_offset).rev() {
        match read(dir, offset).await {
            Ok(entries) => {
                loaded = Some((offset, entries));
                break;
            }
            Err(reason) => {
                tracing::warn!(path = %path(dir, offset).display(), reason, "producer state snapshot unreadable: deleted, an older one or the log is used");
                remove(dir, [offset]).await;
            }
        }
    }
    snapshots.retain(|&offset| offset <= log_end_offset && loaded.as_ref().is_none_or(|(at, _)| offset <= *at));
    remove(dir, stale).await;
    let (mut producers, replay_from) = match &loaded {
        Some((offset, entries)) => (ProducerStateTable::from_snapshot(entries), (*offset).max(log.log_start_offset())),
        None => (ProducerStateTable::default(), log.previous_segment_base_offset()),
    };
    let mut last_offsets: HashMap<i64, i64> = match &loaded {
        Some((_, entries)) => entries.iter().filter(|e| e.last_offset >= 0).map(|e| (e.producer_id, e.last_offset)).collect(),
        None => HashMap::new(),
    };
    for header in log.batch_headers_since(replay_from).await? {
        if header.base_offset < replay_from {
            continue;
        }
        producers.record(&header);
        if header.has_producer_id() {
            last_offsets.insert(header.producer_id, header.last_offset());
        }
    }
    Ok(Recovered { producers, last_offsets, snapshots })
}

impl Partition {
    /// Under the log's write lock, with the producer state as it is at `offset` (a segment just
    /// rolled there, or a clean shutdown at the log end): writes the snapshot and deletes all but
    /// the last `RETAINED_SNAPSHOTS`. A failed write is logged, not returned: the records are in
    /// the log, and the next open replays from an older snapshot.
    pub(super) async fn take_snapshot(&self, log: &Log, offset: i64) {
        let entries = self.producers.borrow().to_snapshot();
        if let Err(e) = write(log.dir(), offset, &entries).await {
            tracing::warn!(topic = self.topic, partition = self.index, offset, error = %e, "writing a producer state snapshot");
            return;
        }
        let old: Vec<i64> = {
            let mut snapshots = self.snapshots.borrow_mut();
            snapshots.insert(offset);
            let keep_from = snapshots.iter().rev().nth(RETAINED_SNAPSHOTS - 1).copied().unwrap_or(i64::MIN);
            let old = snapshots.range(..keep_from).copied().collect();
            snapshots.retain(|&o| o >= keep_from);
            old
        };
        remove(log.dir(), old).await;
    }

    /// Under the log's write lock: cuts the log back to `offset` (a follower diverged from its
    /// leader). When records went, snapshots past the new log end go too and the producer state
    /// is rebuilt from what remains, as at open.
    pub async fn truncate_to(&self, log: &mut Log, offset: i64) -> Result<(), StorageError> {
        let log_end_before = log.log_end_offset();
        log.truncate_to(offset).await?;
        if log.log_end_offset() < log_end_before {
            let recovered = recover(log).await?;
            *self.producers.borrow_mut() = recovered.producers;
            *self.producer_last_offsets.borrow_mut() = recovered.last_offsets;
            *self.snapshots.borrow_mut() = recovered.snapshots;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(producer_id: i64) -> SnapshotEntry {
        SnapshotEntry {
            producer_id,
            epoch: 3,
            last_sequence: 41,
            last_offset: 1000,
            offset_delta: 4,
            timestamp_ms: 1_700_000_000_000,
            coordinator_epoch: 2,
            current_txn_first_offset: -1,
        }
    }

    #[test]
    fn round_trip_and_damage() {
        let entries = vec![entry(7), SnapshotEntry { current_txn_first_offset: 990, ..entry(8) }];
        let bytes = encode(&entries);
        assert_eq!(bytes.len(), HEADER_BYTES + 2 * ENTRY_BYTES);
        assert_eq!(decode(&bytes).unwrap(), entries);
        assert_eq!(decode(&encode(&[])).unwrap(), vec![]);
        for cut in [0, 5, bytes.len() - 1] {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        flipped[20] ^= 1;
        assert_eq!(decode(&flipped), Err("CRC mismatch".into()));
    }
}
