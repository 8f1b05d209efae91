//! Log compaction, as Kafka's LogCleaner: the cleaned part of a log keeps the last record of
//! every key, with its offset unchanged.
//!
//! One clean of one log (`Cleaner::clean`):
//! 1. Under the log's read lock, briefly: which part is dirty (`log_to_clean`: from the
//!    `cleaner-offset-checkpoint` to the first uncleanable offset: never the active segment, never
//!    past the last stable offset the caller gives, never a segment younger than
//!    `min.compaction.lag.ms`) and handles on the closed segments (their files never change).
//! 2. Unlocked: the offset map of the dirty part (key -> its last offset), bounded by the dedupe
//!    buffer: when it fills, this clean ends where the map got (the rest is the next clean's).
//! 3. Unlocked: the segments from the log start to the map's end, in groups of at most
//!    `segment.bytes` (and `segment.index.bytes` of indexes), each rewritten into
//!    `<base>.log.cleaned` (+ indexes): a record stays if it is its key's last, or past the map;
//!    a tombstone also stays until its batch's delete horizon (KIP-534: set to now +
//!    `delete.retention.ms` by the first clean that keeps it, stored in the batch); keyless records
//!    go; records of aborted transactions go (nor do they count in the map: an aborted value never
//!    hides a committed one), as Kafka's. A transaction marker (COMMIT or ABORT) stays while a
//!    batch of its transaction is in the log when the clean starts; the first clean that finds
//!    none stamps the marker's batch with a delete horizon, as a tombstone's (one mechanism for
//!    both), and a clean past that horizon removes it (Kafka's CleanedTransactionMetadata, see
//!    `CleanedTxns`). The cleaned segment's `.txnindex` holds only the aborted transactions whose
//!    marker stays because their data does. A batch keeps its base and last offset and producer
//!    fields; emptied, it stays as a bare header when it is a producer's last (its sequence) or the
//!    group's last (the group's end offset, which recovery relies on).
//! 4. Per group (the swap): the cleaned files are renamed `.swap` (the log file last: the commit
//!    point) and the directory synced, without the lock; then under the write lock the segments
//!    read must still be the log's (else the `.swap` files go, log file first), the old segments go
//!    through `file_deletion` (renamed `.deleted`, removed later), the `.swap` files get their final
//!    names. A crash before the commit point leaves `.cleaned` files that `Log::open` removes; after
//!    it, `Log::open` finishes the swap (`complete_swap`): the log ends with the old segments or
//!    the new one, never a mix, never a loss.
//! 5. The checkpoint moves to the map's end, so the next clean starts there.
//!
//! The shard thread never blocks here: reads and writes go through glommio (io_uring, and the
//! segment append's page-cache pwritev), renames and removals through the blocking thread; record
//! work yields to the executor after every batch, and I/O is throttled by
//! `log.cleaner.io.max.bytes.per.second`.

use std::cell::Cell;
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use glommio::sync::RwLock;

use crate::batch::{self, BatchHeader, BATCH_HEADER_SIZE_BYTES, LOG_OVERHEAD_BYTES, MAGIC_V2};
use crate::error::{Result, StorageError};
use crate::file_deletion::{self, on_blocking_thread};
use crate::log::Log;
use crate::record::RecordCodec;
use crate::segment::{segment_paths, FileSlice, ScanOutcome, Segment, CLEANED_SUFFIX, SWAP_SUFFIX};
use crate::txn_index::{AbortedTxn, ControlType};

/// How much the cleaner reads per I/O; larger batches are read whole.
const READ_CHUNK_BYTES: u64 = 1 << 20;
/// Bytes per offset map entry in Kafka's accounting (16-byte key hash, 8-byte offset) plus the
/// hash table's control byte: what `log.cleaner.dedupe.buffer.size` is divided by.
const MAP_ENTRY_BYTES: u64 = 25;
/// How often the throttle compares the rate with the limit.
const THROTTLE_CHECK_MS: u64 = 100;

/// The cleaner's own settings (Kafka's `log.cleaner.*`).
#[derive(Debug, Clone)]
pub struct CleanerConfig {
    /// This cleaner's share of `log.cleaner.dedupe.buffer.size`: the offset map's memory.
    pub dedupe_buffer_bytes: u64,
    /// `log.cleaner.io.buffer.load.factor`: how full the map may get.
    pub dedupe_load_factor: f64,
    /// `log.cleaner.io.max.bytes.per.second`: reads plus writes; infinite or <= 0: no limit.
    pub io_max_bytes_per_second: f64,
}

impl Default for CleanerConfig {
    fn default() -> Self {
        CleanerConfig { dedupe_buffer_bytes: 128 << 20, dedupe_load_factor: 0.9, io_max_bytes_per_second: f64::MAX }
    }
}

/// What the caller knows about the partition beside its log.
#[derive(Debug, Clone, Default)]
pub struct CleanLimits {
    /// Nothing at or past this offset is cleaned. The hook for transactions: once they exist
    /// this is the last stable offset; until then the caller passes the high watermark (a
    /// follower may yet lose what is above it).
    pub last_stable_offset: i64,
    /// The last offset of each idempotent producer's last batch: such a batch stays, emptied if
    /// need be, so the producer's sequence survives restarts (Kafka's lastRecordsOfActiveProducers).
    pub producer_last_offsets: HashSet<i64>,
}

/// The dirty part of a log and what it weighs (Kafka's LogToClean).
#[derive(Debug, Clone, PartialEq)]
pub struct LogToClean {
    pub first_dirty_offset: i64,
    /// A segment boundary: the base of the first segment not cleaned.
    pub first_uncleanable_offset: i64,
    /// Bytes of the segments below the first dirty offset.
    pub clean_bytes: u64,
    /// Bytes of the segments from the first dirty offset to the first uncleanable one.
    pub cleanable_bytes: u64,
    /// `max.compaction.lag.ms` passed for a dirty record: clean whatever the ratio.
    pub needs_compaction_now: bool,
}

impl LogToClean {
    pub fn cleanable_ratio(&self) -> f64 {
        let total = self.clean_bytes + self.cleanable_bytes;
        if total == 0 {
            0.0
        } else {
            self.cleanable_bytes as f64 / total as f64
        }
    }

    /// Kafka's rule: dirty enough, or forced by the max compaction lag.
    pub fn worth_cleaning(&self, min_cleanable_dirty_ratio: f64) -> bool {
        self.cleanable_bytes > 0 && (self.needs_compaction_now || self.cleanable_ratio() > min_cleanable_dirty_ratio)
    }
}

/// Kafka's cleanableOffsets and calculateCleanableBytes for `log` at `now_ms`. None for a log
/// without bytes. Reads the first batch header of dirty segments only when a max compaction
/// lag is set.
pub async fn log_to_clean(log: &Log, now_ms: i64, last_stable_offset: i64) -> Result<Option<LogToClean>> {
    let segments = log.segments();
    let log_start = log.log_start_offset();
    let checkpoint = log.cleaner_checkpoint().unwrap_or(log_start);
    // A checkpoint outside the log (DeleteRecords, truncation, a torn tail): start over.
    let first_dirty = if checkpoint < log_start || checkpoint > log.log_end_offset() { log_start } else { checkpoint };
    let active_base = *segments.keys().next_back().expect("a log always has a segment");
    let config = log.config();
    let mut uncleanable = last_stable_offset.min(active_base);
    if config.min_compaction_lag_ms > 0 {
        let young = segments
            .range(..active_base)
            .filter(|(_, s)| s.next_offset() > first_dirty)
            .find(|(_, s)| s.max_timestamp_ms() > now_ms.saturating_sub(config.min_compaction_lag_ms));
        if let Some((&base, _)) = young {
            uncleanable = uncleanable.min(base);
        }
    }
    let uncleanable = uncleanable.max(first_dirty);
    // Cleaning stops at a segment boundary: the segment holding the uncleanable offset is not cleaned.
    let first_uncleanable = segments.range(..=uncleanable).next_back().map(|(&b, _)| b).unwrap_or(active_base).min(active_base);
    let clean_bytes: u64 = segments.range(..first_dirty).map(|(_, s)| s.size_bytes()).sum();
    let cleanable_bytes: u64 = segments
        .range(..first_uncleanable)
        .filter(|(_, s)| s.next_offset() > first_dirty.min(first_uncleanable) || s.base_offset >= first_dirty)
        .map(|(_, s)| s.size_bytes())
        .sum();
    if clean_bytes + cleanable_bytes == 0 {
        return Ok(None);
    }
    let mut needs_compaction_now = false;
    if config.max_compaction_lag_ms < i64::MAX {
        let clean_until_ms = now_ms.saturating_sub(config.max_compaction_lag_ms.max(0));
        for (_, segment) in segments.range(..active_base).filter(|(_, s)| s.next_offset() > first_dirty) {
            if let Some(first) = segment.read_header_at(0).await? {
                if first.max_timestamp > 0 && first.max_timestamp < clean_until_ms {
                    needs_compaction_now = true;
                    break;
                }
            }
        }
    }
    Ok(Some(LogToClean { first_dirty_offset: first_dirty, first_uncleanable_offset: first_uncleanable, clean_bytes, cleanable_bytes, needs_compaction_now }))
}

/// What one clean did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CleanStats {
    pub first_dirty_offset: i64,
    /// The new checkpoint: everything below it is clean.
    pub end_offset: i64,
    pub map_entries: usize,
    /// The map filled before the dirty part's end.
    pub map_full: bool,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_read: u64,
    pub records_kept: u64,
    pub segments_before: usize,
    pub segments_after: usize,
    /// How long the swaps held the log's write lock (produce and fetch of the partition wait
    /// meanwhile): the longest one and all of them.
    pub swap_lock_max_us: u64,
    pub swap_lock_total_us: u64,
}

impl CleanStats {
    fn note_swap_lock(&mut self, held: Duration) {
        let held_us = held.as_micros() as u64;
        self.swap_lock_max_us = self.swap_lock_max_us.max(held_us);
        self.swap_lock_total_us += held_us;
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum CleanOutcome {
    /// Nothing dirty to clean.
    Nothing,
    Cleaned(CleanStats),
    /// The log changed under the clean (retention, truncation, deletion, shutdown): nothing
    /// swapped from the group on; the next pass starts again.
    Aborted(String),
}

/// One shard's cleaner: its offset map's memory, its throttle.
pub struct Cleaner {
    map: OffsetMap,
    throttle: Throttle,
}

impl Cleaner {
    pub fn new(config: &CleanerConfig) -> Cleaner {
        Cleaner { map: OffsetMap::new(config.dedupe_buffer_bytes, config.dedupe_load_factor), throttle: Throttle::new(config.io_max_bytes_per_second) }
    }

    /// How many keys one clean can map.
    pub fn map_capacity(&self) -> usize {
        self.map.capacity
    }

    /// Cleans `log` once, now. `stop` is asked between batches and before each swap (the
    /// partition closed, the broker stopping): a clean stopped mid-way leaves the log as it was
    /// from the group it was on.
    pub async fn clean(&mut self, lock: &RwLock<Log>, codec: &dyn RecordCodec, now_ms: i64, limits: &CleanLimits, stop: &dyn Fn() -> bool) -> Result<CleanOutcome> {
        let (plan, snapshot, config, dir, aborted) = {
            let log = lock.read().await.map_err(lock_error)?;
            let Some(plan) = log_to_clean(&log, now_ms, limits.last_stable_offset).await? else { return Ok(CleanOutcome::Nothing) };
            if plan.cleanable_bytes == 0 {
                return Ok(CleanOutcome::Nothing);
            }
            let snapshot: Vec<SegmentRef> = log
                .segments()
                .range(..plan.first_uncleanable_offset)
                .map(|(&base, s)| SegmentRef {
                    base,
                    next_offset: s.next_offset(),
                    size_bytes: s.size_bytes(),
                    index_bytes: s.offset_index_size_bytes(),
                    time_index_bytes: s.time_index_size_bytes(),
                    slice: s.slice(0, s.size_bytes(), base, s.next_offset() - 1),
                })
                .collect();
            // Every aborted transaction with data in the part cleaned (its marker may be later).
            let aborted = log.collect_aborted_txns(log.log_start_offset(), plan.first_uncleanable_offset);
            (plan, snapshot, log.config().clone(), log.dir().to_path_buf(), aborted)
        };
        let mut stats = CleanStats { first_dirty_offset: plan.first_dirty_offset, segments_before: 0, ..CleanStats::default() };

        // The offset map of the dirty part.
        self.map.clear();
        let mut latest_offset: Option<i64> = None;
        'segments: for segment in snapshot.iter().filter(|s| s.next_offset > plan.first_dirty_offset) {
            let mut reader = BatchReader::new(&segment.slice);
            while let Some((header, bytes)) = reader.next().await? {
                if stop() {
                    return Ok(CleanOutcome::Aborted("stopped while mapping".into()));
                }
                stats.bytes_read += bytes.len() as u64;
                if header.last_offset() < plan.first_dirty_offset {
                    continue;
                }
                if !header.is_control() && !is_aborted(&aborted, &header) {
                    if latest_offset.is_some() && self.map.len() + header.record_count as usize > self.map.capacity {
                        stats.map_full = true;
                        break 'segments;
                    }
                    let (map, first_dirty) = (&mut self.map, plan.first_dirty_offset);
                    codec.for_each_record(&bytes, &mut |record| {
                        if let (Some(key), true) = (record.key, record.offset >= first_dirty) {
                            map.put(key_hash(key), record.offset);
                        }
                    })?;
                }
                latest_offset = Some(header.last_offset());
                self.throttle.maybe_throttle(bytes.len() as u64).await;
                glommio::yield_if_needed().await;
            }
        }
        let Some(latest_offset) = latest_offset else { return Ok(CleanOutcome::Nothing) };
        let end_offset = latest_offset + 1;
        stats.end_offset = end_offset;
        stats.map_entries = self.map.len();

        // The segments from the log start up to the map's end, in groups.
        let to_clean: Vec<&SegmentRef> = snapshot.iter().filter(|s| s.base < end_offset).collect();
        stats.segments_before = to_clean.len();
        let groups = group_by_size(&to_clean, config.segment_bytes, config.segment_index_bytes);
        let filter = Filter {
            latest_offset,
            now_ms,
            delete_retention_ms: config.delete_retention_ms,
            round_end_offset: end_offset,
            producer_last_offsets: &limits.producer_last_offsets,
        };
        let mut txns = CleanedTxns::new(&aborted);
        for group in groups {
            let base = group[0].base;
            let cleaned = match self.clean_group(&dir, &group, &config, codec, &filter, &mut txns, &mut stats, stop).await {
                Ok(Some(cleaned)) => cleaned,
                Ok(None) => {
                    remove_cleaned(&dir, base).await;
                    return Ok(CleanOutcome::Aborted("stopped while cleaning".into()));
                }
                Err(e) => {
                    remove_cleaned(&dir, base).await;
                    return Err(e);
                }
            };
            // The commit point before the lock: renames and the directory's fsync took the
            // partition's write lock for up to tens of ms a group (tuning.md, compaction).
            let cleaned = commit_swap(&dir, cleaned).await?;
            let mut log = lock.write().await.map_err(lock_error)?;
            let locked_at = Instant::now();
            if let Err(reason) = still_the_logs(&log, &group, stop) {
                drop(log);
                drop(cleaned);
                // Undone, the `.swap` log file first. A crash before this finishes the swap at
                // open: the segments it replaces changed only by going (retention, DeleteRecords)
                // or by a truncation, which never reaches below the last stable offset cleaned.
                remove_swapped(dir.clone(), base).await;
                return Ok(CleanOutcome::Aborted(reason));
            }
            swap_in(&mut log, cleaned, &group).await?;
            drop(log);
            stats.note_swap_lock(locked_at.elapsed());
            stats.segments_after += 1;
        }
        let mut log = lock.write().await.map_err(lock_error)?;
        if stop() {
            return Ok(CleanOutcome::Aborted("stopped before the checkpoint".into()));
        }
        log.write_cleaner_checkpoint(end_offset).await?;
        Ok(CleanOutcome::Cleaned(stats))
    }

    /// Writes one group's cleaned segment (`.cleaned`, durable). None when stopped.
    #[allow(clippy::too_many_arguments)]
    async fn clean_group(
        &mut self,
        dir: &Path,
        group: &[&SegmentRef],
        config: &crate::LogConfig,
        codec: &dyn RecordCodec,
        filter: &Filter<'_>,
        txns: &mut CleanedTxns,
        stats: &mut CleanStats,
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<Segment>> {
        let base = group[0].base;
        // A leftover of an earlier attempt in this process (an error): create_new needs the name.
        remove_cleaned(dir, base).await;
        let mut cleaned = Segment::create_with_suffix(dir, base, config.index_interval_bytes, CLEANED_SUFFIX).await?;
        let group_end = group.last().expect("a group has a segment").next_offset;
        let mut last_header: Option<BatchHeader> = None;
        for segment in group {
            let mut reader = BatchReader::new(&segment.slice);
            while let Some((header, bytes)) = reader.next().await? {
                if stop() {
                    return Ok(None);
                }
                stats.bytes_read += bytes.len() as u64;
                stats.records_read += header.record_count as u64;
                last_header = Some(header);
                let output = filter.apply(&self.map, txns, codec, &header, &bytes)?;
                let written = match output {
                    Output::Drop => 0,
                    Output::Original => {
                        stats.records_kept += header.record_count as u64;
                        append_cleaned(&mut cleaned, &bytes, now_ms_of(filter)).await?
                    }
                    Output::Rebuilt(rebuilt) => {
                        stats.records_kept += BatchHeader::parse(&rebuilt)?.record_count as u64;
                        append_cleaned(&mut cleaned, &rebuilt, now_ms_of(filter)).await?
                    }
                };
                stats.bytes_written += written;
                self.throttle.maybe_throttle(bytes.len() as u64 + written).await;
                glommio::yield_if_needed().await;
            }
        }
        // The group's end offset survives even when its last batch emptied: recovery tells the
        // segments a swap replaces by the swapped segment's offsets.
        if cleaned.next_offset() < group_end {
            if let Some(last) = last_header.filter(|h| h.next_offset() == group_end) {
                stats.bytes_written += append_cleaned(&mut cleaned, &batch::empty_copy(&last), now_ms_of(filter)).await?;
            }
        }
        // The aborted transactions whose marker stayed here with data of theirs still in the log:
        // a read_committed fetch needs them; those whose data is gone need no entry (Kafka's).
        cleaned.set_txn_index(std::mem::take(&mut txns.kept_index));
        cleaned.flush().await?;
        Ok(Some(cleaned))
    }
}

fn now_ms_of(filter: &Filter<'_>) -> i64 {
    filter.now_ms
}

async fn append_cleaned(cleaned: &mut Segment, bytes: &[u8], now_ms: i64) -> Result<u64> {
    let header = BatchHeader::parse(bytes)?;
    // Offsets only grow in a cleaned segment, as in any other.
    assert!(
        cleaned.is_empty() || header.base_offset >= cleaned.next_offset(),
        "cleaned batch at {} after offset {}",
        header.base_offset,
        cleaned.next_offset()
    );
    cleaned.append(&[bytes], &[header], now_ms).await?;
    Ok(bytes.len() as u64)
}

/// The segments a clean read must still be the log's, unchanged, for its swap.
fn still_the_logs(log: &Log, group: &[&SegmentRef], stop: &dyn Fn() -> bool) -> std::result::Result<(), String> {
    if stop() {
        return Err("stopped before the swap".into());
    }
    let active_base = *log.segments().keys().next_back().expect("a log always has a segment");
    for segment in group {
        match log.segments().get(&segment.base) {
            Some(current) if current.holds(&segment.slice) && current.size_bytes() == segment.size_bytes && segment.base < active_base => {}
            _ => return Err(format!("segment {} changed during the clean", segment.base)),
        }
    }
    Ok(())
}

/// The commit point of a swap, without the log's lock: the log file's `.swap` name, after its
/// indexes', made durable (Log::open finishes a swap from there).
async fn commit_swap(dir: &Path, mut cleaned: Segment) -> Result<Segment> {
    let base = cleaned.base_offset;
    let owned_dir = dir.to_path_buf();
    let committed = on_blocking_thread(move || {
        rename_segment_files(&owned_dir, base, CLEANED_SUFFIX, SWAP_SUFFIX, false)?;
        crate::log_manager::sync_dir(&owned_dir)
    })
    .await;
    if let Err(e) = committed {
        drop(cleaned);
        remove_swapped(dir.to_path_buf(), base).await;
        return Err(e);
    }
    cleaned.renamed_to_suffix(SWAP_SUFFIX);
    Ok(cleaned)
}

/// The swap, under the log's write lock, of a committed (`.swap`) cleaned segment: see the
/// module doc, step 4.
async fn swap_in(log: &mut Log, mut cleaned: Segment, group: &[&SegmentRef]) -> Result<()> {
    let dir = log.dir().to_path_buf();
    let base = cleaned.base_offset;
    let mut paths = Vec::new();
    let mut held = Vec::new();
    for segment in group {
        let old = log.segments().get(&segment.base).expect("checked under this lock");
        paths.extend(old.file_paths());
        held.push(old.held());
    }
    let delay_ms = log.config().file_delete_delay_ms;
    let retired = file_deletion::retire_files(paths, held).await;
    for segment in group {
        log.segments_mut().remove(&segment.base);
    }
    let retired = match retired {
        Ok(retired) => retired,
        Err(e) => {
            // Committed on disk: the next open finishes the swap. Serve the cleaned copy meanwhile.
            log.segments_mut().insert(base, cleaned);
            return Err(e);
        }
    };
    file_deletion::delete_later(retired, delay_ms);
    let owned_dir = dir.clone();
    let renamed = on_blocking_thread(move || {
        rename_segment_files(&owned_dir, base, SWAP_SUFFIX, "", false)
    })
    .await;
    if renamed.is_ok() {
        cleaned.renamed_to_suffix("");
    }
    log.segments_mut().insert(base, cleaned);
    renamed
}

/// Renames a segment's files from `from_suffix` to `to_suffix`, its log file last (the commit
/// point of a swap). A missing `.txnindex` is normal (no transaction aborted in the segment);
/// with `missing_ok` (recovery) so is any missing index. Blocking: on the blocking thread.
fn rename_segment_files(dir: &Path, base: i64, from_suffix: &str, to_suffix: &str, missing_ok: bool) -> Result<()> {
    let from = segment_paths(dir, base, from_suffix);
    let to = segment_paths(dir, base, to_suffix);
    for i in [1, 2, 3, 0] {
        match std::fs::rename(&from[i], &to[i]) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && (i == 3 || missing_ok) => {}
            Err(e) => return Err(StorageError::io(format!("renaming {}", from[i].display()), e)),
        }
    }
    Ok(())
}

async fn remove_swapped(dir: PathBuf, base: i64) {
    let mut paths = segment_paths(&dir, base, SWAP_SUFFIX).to_vec();
    paths.extend(segment_paths(&dir, base, CLEANED_SUFFIX));
    file_deletion::remove_files(paths).await;
}

async fn remove_cleaned(dir: &Path, base: i64) {
    file_deletion::remove_files(segment_paths(dir, base, CLEANED_SUFFIX).to_vec()).await;
}

/// Recovery (`Log::open`) of a cleaned segment found as `<base>.log.swap`: complete and
/// durable (it was synced before its rename), so it replaces every segment whose base lies in
/// its range [base, its next offset), which are removed; then it gets its final name.
pub(crate) async fn complete_swap(dir: &Path, base: i64, index_interval_bytes: u64) -> Result<()> {
    let mut swapped = Segment::open_with_suffix(dir, base, index_interval_bytes, SWAP_SUFFIX).await?;
    if let ScanOutcome::InvalidFrom { valid_bytes, reason } = swapped.scan().await? {
        return Err(StorageError::Offline { path: swapped.path(), position: valid_bytes, reason: format!("swapped cleaned segment: {reason}") });
    }
    let end = swapped.next_offset().max(base + 1);
    drop(swapped);
    tracing::info!(dir = %dir.display(), base_offset = base, end_offset = end, "finishing a cleaned segment's interrupted swap");
    let dir = dir.to_path_buf();
    on_blocking_thread(move || {
        let entries = std::fs::read_dir(&dir).map_err(|e| StorageError::io(format!("listing {}", dir.display()), e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(old_base) = name.strip_suffix(".log").and_then(|stem| stem.parse::<i64>().ok()) else { continue };
            if (base..end).contains(&old_base) {
                for path in segment_paths(&dir, old_base, "") {
                    if let Err(e) = std::fs::remove_file(&path) {
                        if e.kind() != std::io::ErrorKind::NotFound {
                            return Err(StorageError::io(format!("removing {}", path.display()), e));
                        }
                    }
                }
            }
        }
        // An index renamed before the crash, or never written: the scan rebuilds it.
        rename_segment_files(&dir, base, SWAP_SUFFIX, "", true)?;
        crate::log_manager::sync_dir(&dir)
    })
    .await
}

fn lock_error<E: std::fmt::Debug>(e: E) -> StorageError {
    StorageError::io("the partition's log lock", std::io::Error::other(format!("{e:?}")))
}

/// A closed segment as the clean saw it: read through `slice`, which holds its file open.
struct SegmentRef {
    base: i64,
    next_offset: i64,
    size_bytes: u64,
    index_bytes: u64,
    time_index_bytes: u64,
    slice: FileSlice,
}

/// Kafka's groupSegmentsBySize: consecutive segments whose data fit in `segment.bytes` and whose
/// indexes fit in `segment.index.bytes`, with relative offsets that fit the index format.
fn group_by_size<'a>(segments: &[&'a SegmentRef], max_bytes: u64, max_index_bytes: u64) -> Vec<Vec<&'a SegmentRef>> {
    let mut groups = Vec::new();
    let mut rest = segments;
    while let Some((first, tail)) = rest.split_first() {
        let mut group = vec![*first];
        let (mut log_bytes, mut index_bytes, mut time_index_bytes) = (first.size_bytes, first.index_bytes, first.time_index_bytes);
        rest = tail;
        while let Some((next, tail)) = rest.split_first() {
            let fits = log_bytes + next.size_bytes <= max_bytes
                && index_bytes + next.index_bytes <= max_index_bytes
                && time_index_bytes + next.time_index_bytes <= max_index_bytes
                && next.next_offset - first.base <= i32::MAX as i64;
            if !fits {
                break;
            }
            group.push(*next);
            log_bytes += next.size_bytes;
            index_bytes += next.index_bytes;
            time_index_bytes += next.time_index_bytes;
            rest = tail;
        }
        groups.push(group);
    }
    groups
}

/// What becomes of one batch.
enum Output {
    Drop,
    Original,
    Rebuilt(Vec<u8>),
}

/// Kafka's cleanInto filter for one clean.
struct Filter<'a> {
    /// The map covers the dirty part up to here; records past it stay as they are.
    latest_offset: i64,
    now_ms: i64,
    delete_retention_ms: i64,
    /// The clean's end: its last batch stays, emptied if need be (Kafka keeps it so the last
    /// offset is not lost).
    round_end_offset: i64,
    producer_last_offsets: &'a HashSet<i64>,
}

/// Whether `header`'s batch belongs to one of the `aborted` transactions.
fn is_aborted(aborted: &[AbortedTxn], header: &BatchHeader) -> bool {
    header.is_transactional()
        && !header.is_control()
        && aborted.iter().any(|t| t.producer_id == header.producer_id && t.first_offset <= header.base_offset && header.last_offset() < t.last_offset)
}

impl Filter<'_> {
    fn apply(&self, map: &OffsetMap, txns: &mut CleanedTxns, codec: &dyn RecordCodec, header: &BatchHeader, bytes: &[u8]) -> Result<Output> {
        if header.is_control() {
            return self.apply_to_marker(txns, codec, header, bytes);
        }
        if txns.on_data_batch(header) {
            return Ok(self.emptied(header));
        }
        let horizon = header.delete_horizon_ms();
        let mut keep = Vec::new();
        let mut total = 0usize;
        let mut kept_tombstone = false;
        codec.for_each_record(bytes, &mut |record| {
            total += 1;
            let retain = if record.offset > self.latest_offset {
                true
            } else if let Some(key) = record.key {
                let latest_for_key = map.get(key_hash(key)).map_or(true, |latest| record.offset >= latest);
                latest_for_key && (record.value.is_some() || horizon.map_or(true, |h| self.now_ms < h))
            } else {
                false // a keyless record has no place in a compacted log (Kafka drops it too)
            };
            if retain {
                keep.push(record.offset);
                kept_tombstone |= record.value.is_none();
            }
        })?;
        let new_horizon = horizon.or_else(|| kept_tombstone.then(|| self.now_ms.saturating_add(self.delete_retention_ms)));
        if keep.len() == total && new_horizon == horizon {
            return Ok(Output::Original);
        }
        if !keep.is_empty() {
            return Ok(Output::Rebuilt(codec.retain(bytes, &keep, new_horizon)?));
        }
        Ok(self.emptied(header))
    }

    /// Kafka's rule for a control batch: it stays while its transaction has a batch in the log;
    /// after that the first clean stamps its delete horizon (now + `delete.retention.ms`, the
    /// tombstones' KIP-534 mechanism) and a clean at or past the horizon removes it.
    fn apply_to_marker(&self, txns: &mut CleanedTxns, codec: &dyn RecordCodec, header: &BatchHeader, bytes: &[u8]) -> Result<Output> {
        let discardable = txns.on_marker(header, bytes);
        match header.delete_horizon_ms() {
            _ if !discardable => Ok(Output::Original),
            // A bare control batch (an earlier clean emptied it): nothing left to keep.
            _ if header.record_count == 0 => Ok(self.emptied(header)),
            Some(horizon) if horizon <= self.now_ms => Ok(self.emptied(header)),
            Some(_) => Ok(Output::Original),
            None => {
                let mut offsets = Vec::with_capacity(header.record_count as usize);
                codec.for_each_record(bytes, &mut |record| offsets.push(record.offset))?;
                Ok(Output::Rebuilt(codec.retain(bytes, &offsets, Some(self.now_ms.saturating_add(self.delete_retention_ms)))?))
            }
        }
    }

    /// A batch none of whose records stays: dropped, or kept as a bare header when it is a
    /// producer's last (its sequence) or the clean's last (the end offset).
    fn emptied(&self, header: &BatchHeader) -> Output {
        let producers_last = header.has_producer_id() && self.producer_last_offsets.contains(&header.last_offset());
        if producers_last || header.next_offset() == self.round_end_offset {
            return Output::Rebuilt(batch::empty_copy(header));
        }
        Output::Drop
    }
}

/// Kafka's CleanedTransactionMetadata: follows the transactions through one clean's batches, in
/// log order from the log start, to tell which transactional batches may go.
struct CleanedTxns {
    /// The aborted transactions of the part cleaned not reached yet, by first offset.
    pending_aborted: std::collections::VecDeque<AbortedTxn>,
    /// Per producer, the aborted transaction it is in, and whether a batch of it was seen.
    ongoing_aborted: HashMap<i64, (AbortedTxn, bool)>,
    /// Producers with a batch seen of a transaction not aborted (committed: the markers after).
    ongoing_committed: HashSet<i64>,
    /// The entries of the aborted transactions whose marker stays because data of theirs does:
    /// the `.txnindex` of the cleaned segment being written.
    kept_index: crate::txn_index::TxnIndex,
}

impl CleanedTxns {
    fn new(aborted: &[AbortedTxn]) -> CleanedTxns {
        let mut pending: Vec<AbortedTxn> = aborted.to_vec();
        pending.sort_by_key(|t| t.first_offset);
        pending.dedup();
        CleanedTxns { pending_aborted: pending.into(), ongoing_aborted: HashMap::new(), ongoing_committed: HashSet::new(), kept_index: Default::default() }
    }

    fn reach(&mut self, offset: i64) {
        while self.pending_aborted.front().is_some_and(|t| t.first_offset <= offset) {
            let txn = self.pending_aborted.pop_front().expect("checked");
            self.ongoing_aborted.entry(txn.producer_id).or_insert((txn, false));
        }
    }

    /// A data batch: whether it belongs to an aborted transaction (then it goes).
    fn on_data_batch(&mut self, header: &BatchHeader) -> bool {
        self.reach(header.last_offset());
        if !header.is_transactional() || !header.has_producer_id() {
            return false;
        }
        match self.ongoing_aborted.get_mut(&header.producer_id) {
            Some((_, seen)) => {
                *seen = true;
                true
            }
            None => {
                self.ongoing_committed.insert(header.producer_id);
                false
            }
        }
    }

    /// A control batch: whether it may go once its delete horizon passed (no batch of its
    /// transaction was seen in this clean). An ABORT marker that stays keeps its index entry.
    fn on_marker(&mut self, header: &BatchHeader, bytes: &[u8]) -> bool {
        self.reach(header.last_offset());
        if header.record_count == 0 {
            return true;
        }
        let producer_id = header.producer_id;
        match crate::txn_index::control_type(bytes) {
            Some(ControlType::Abort) => {
                // Data of the transaction seen without an index entry (an index lost before its
                // rebuild) keeps the marker too: when unsure, keep.
                let seen_unindexed = self.ongoing_committed.remove(&producer_id);
                match self.ongoing_aborted.remove(&producer_id) {
                    Some((txn, true)) => {
                        if txn.last_offset == header.base_offset {
                            self.kept_index.push(txn);
                        }
                        false
                    }
                    _ => !seen_unindexed,
                }
            }
            Some(ControlType::Commit) => !self.ongoing_committed.remove(&producer_id),
            // Not a transaction marker, or unreadable: it stays as it is.
            Some(ControlType::Other) | None => false,
        }
    }
}

/// Reads a segment's batches in order through its file (the cleaner's own reads, not a log read:
/// the segment is closed, so its bytes never change).
struct BatchReader<'a> {
    slice: &'a FileSlice,
    position: u64,
    buffer: Vec<u8>,
    buffer_position: u64,
}

impl<'a> BatchReader<'a> {
    fn new(slice: &'a FileSlice) -> BatchReader<'a> {
        BatchReader { slice, position: 0, buffer: Vec::new(), buffer_position: 0 }
    }

    async fn fill(&mut self, want_bytes: u64) -> Result<()> {
        let length = want_bytes.max(READ_CHUNK_BYTES).min(self.slice.length_bytes - self.position);
        let chunk = FileSlice { position: self.position, length_bytes: length, ..self.slice.clone() };
        self.buffer = chunk.read_bytes().await?;
        self.buffer_position = self.position;
        Ok(())
    }

    fn buffered(&self, length: u64) -> Option<&[u8]> {
        let start = self.position.checked_sub(self.buffer_position)? as usize;
        self.buffer.get(start..start + length as usize)
    }

    async fn next(&mut self) -> Result<Option<(BatchHeader, Vec<u8>)>> {
        let size = self.slice.length_bytes;
        if self.position + BATCH_HEADER_SIZE_BYTES as u64 > size {
            return Ok(None);
        }
        if self.buffered(BATCH_HEADER_SIZE_BYTES as u64).is_none() {
            self.fill(BATCH_HEADER_SIZE_BYTES as u64).await?;
        }
        let header = BatchHeader::parse(self.buffered(BATCH_HEADER_SIZE_BYTES as u64).expect("filled"))?;
        if header.magic != MAGIC_V2 || header.batch_length < (BATCH_HEADER_SIZE_BYTES - LOG_OVERHEAD_BYTES) as i32 {
            return Err(StorageError::CorruptBatch(format!("the cleaner found no valid batch at byte {} of a segment", self.position)));
        }
        let batch_size = header.size_bytes() as u64;
        if self.position + batch_size > size {
            return Err(StorageError::CorruptBatch(format!("the cleaner found no valid batch at byte {} of a segment", self.position)));
        }
        if self.buffered(batch_size).is_none() {
            self.fill(batch_size).await?;
        }
        let bytes = self.buffered(batch_size).expect("filled").to_vec();
        self.position += batch_size;
        Ok(Some((header, bytes)))
    }
}

/// Key -> its last offset in the dirty part, by a 128-bit hash of the key (Kafka's
/// SkimpyOffsetMap keeps a 16-byte MD5: a collision, so rare, would drop a key's older version
/// as if superseded). At most `capacity` entries, so the table never outgrows its budget.
struct OffsetMap {
    entries: HashMap<u128, i64, BuildHasherDefault<PrehashedHasher>>,
    capacity: usize,
}

impl OffsetMap {
    fn new(budget_bytes: u64, load_factor: f64) -> OffsetMap {
        // hashbrown doubles its buckets past 7/8 full: stay below that for the largest power of
        // two of buckets the budget pays for.
        let buckets = prev_power_of_two((budget_bytes / MAP_ENTRY_BYTES).max(2));
        let capacity = ((buckets * 7 / 8) as f64 * load_factor.clamp(0.05, 1.0)).max(1.0) as usize;
        OffsetMap { entries: HashMap::default(), capacity }
    }
    fn clear(&mut self) {
        self.entries.clear();
    }
    fn len(&self) -> usize {
        self.entries.len()
    }
    fn put(&mut self, key: u128, offset: i64) {
        let entry = self.entries.entry(key).or_insert(offset);
        *entry = (*entry).max(offset);
    }
    fn get(&self, key: u128) -> Option<i64> {
        self.entries.get(&key).copied()
    }
}

fn prev_power_of_two(n: u64) -> u64 {
    1 << (63 - n.leading_zeros())
}

fn key_hash(key: &[u8]) -> u128 {
    let mut first = DefaultHasher::new();
    first.write(key);
    let mut second = DefaultHasher::new();
    second.write_u8(0x5a);
    second.write(key);
    ((first.finish() as u128) << 64) | second.finish() as u128
}

/// The map's keys are hashes already.
#[derive(Default)]
struct PrehashedHasher(u64);

impl Hasher for PrehashedHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ b as u64;
        }
    }
    fn write_u128(&mut self, value: u128) {
        self.0 = value as u64;
    }
}

/// `log.cleaner.io.max.bytes.per.second`, as Kafka's Throttler: over each check window, sleep
/// long enough to bring the rate down to the limit.
struct Throttle {
    max_bytes_per_second: f64,
    window_start: Cell<Instant>,
    window_bytes: Cell<u64>,
}

impl Throttle {
    fn new(max_bytes_per_second: f64) -> Throttle {
        Throttle { max_bytes_per_second, window_start: Cell::new(Instant::now()), window_bytes: Cell::new(0) }
    }

    async fn maybe_throttle(&self, bytes: u64) {
        if !(self.max_bytes_per_second.is_finite() && self.max_bytes_per_second > 0.0) || self.max_bytes_per_second >= f64::MAX / 2.0 {
            return;
        }
        self.window_bytes.set(self.window_bytes.get() + bytes);
        let elapsed = self.window_start.get().elapsed();
        // Looks at the rate every window, or sooner once a window's worth of bytes went by: a
        // clean shorter than one window would otherwise never be throttled at all.
        let window_budget_bytes = self.max_bytes_per_second * THROTTLE_CHECK_MS as f64 / 1000.0;
        if elapsed < Duration::from_millis(THROTTLE_CHECK_MS) && (self.window_bytes.get() as f64) < window_budget_bytes {
            return;
        }
        let allowed = Duration::from_secs_f64(self.window_bytes.get() as f64 / self.max_bytes_per_second);
        if allowed > elapsed {
            // Bounded: one window's worth of bytes over the limit, at most a few seconds.
            glommio::timer::sleep((allowed - elapsed).min(Duration::from_secs(10))).await;
        }
        self.window_start.set(Instant::now());
        self.window_bytes.set(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_stays_within_its_budget() {
        let map = OffsetMap::new(1 << 20, 0.9);
        // 2^15 buckets of 25 bytes fit 1 MiB; 7/8 of them at a 0.9 load factor.
        assert_eq!(map.capacity, (32768 * 7 / 8) as usize * 9 / 10);
        assert!(OffsetMap::new(0, 0.9).capacity >= 1);
    }

    #[test]
    fn key_hashes_differ_and_repeat() {
        assert_eq!(key_hash(b"a"), key_hash(b"a"));
        assert_ne!(key_hash(b"a"), key_hash(b"b"));
        assert_ne!(key_hash(b""), key_hash(b"\0"));
    }
}
