//! A partition's log: an ordered run of segments in `<log.dir>/<topic>-<partition>/`.
//!
//! Invariants:
//! - Offsets only grow: every appended batch gets base offset = log end offset, and the log end
//!   offset moves past its last record.
//! - Only the last (active) segment is written; retention deletes only closed segments.
//! - Bytes on disk are whole, CRC-valid batches in offset order; after a crash, recovery cuts the
//!   tail back to the last valid batch.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::batch::{self, BatchHeader, TimestampType, Validation, BATCH_HEADER_SIZE_BYTES};
use crate::config::LogConfig;
use crate::error::{Result, StorageError};
use crate::file_deletion;
use crate::leader_epoch_cache::LeaderEpochCache;
use crate::segment::{FileSlice, ScanOutcome, Segment, MAX_SEGMENT_BYTES};
use crate::txn_index::{control_type, AbortedTxn, ControlType, OpenTxns, TxnIndex};

/// Per-partition file holding the offset below which every byte is known durable and checked.
/// Same name and text format as Kafka's per-directory file, with the one partition's line.
const RECOVERY_POINT_FILE: &str = "recovery-point-offset-checkpoint";
/// Per-partition file holding the log start offset when DeleteRecords (or a leader's, for a
/// follower) moved it inside a segment. Kafka's name and text format, with the one partition's line.
const LOG_START_OFFSET_FILE: &str = "log-start-offset-checkpoint";
/// Per-partition file holding the cleaner's first dirty offset: everything below it was cleaned
/// (Kafka's name and text format, with the one partition's line).
const CLEANER_OFFSET_FILE: &str = "cleaner-offset-checkpoint";

/// Batches checked for an append and not yet written (`Log::check_from_producer`,
/// `Log::check_from_leader`); `Log::append_checked` writes them.
#[derive(Debug)]
pub struct CheckedBatches<'a> {
    batches: Vec<&'a [u8]>,
    headers: Vec<BatchHeader>,
    /// A follower's copy: offsets and epochs as the leader wrote them.
    from_leader: bool,
}

impl CheckedBatches<'_> {
    /// The batches' headers as received (base offsets not yet assigned for a producer's).
    pub fn headers(&self) -> &[BatchHeader] {
        &self.headers
    }

    /// Which batches are ABORT markers (transaction control batches whose record says ABORT):
    /// their transactions go to the `.txnindex` once appended (`Log::append_aborted_txn`).
    pub fn abort_marker_indexes(&self) -> Vec<usize> {
        (0..self.batches.len())
            .filter(|&i| self.headers[i].is_control() && control_type(self.batches[i]) == Some(ControlType::Abort))
            .collect()
    }
}

/// What one append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The broker's timestamp when the topic uses LogAppendTime, else -1 (as ProduceResponse says).
    pub log_append_time_ms: i64,
    pub record_count: i64,
    /// `flush.messages` is reached: the caller flushes (`flush`) before acknowledging. Left to
    /// the caller so that one fdatasync can cover the appends of several requests.
    pub flush_due: bool,
    /// The appended batches' headers as written (offsets assigned).
    pub headers: Vec<BatchHeader>,
}

impl AppendInfo {
    fn nothing(log_end_offset: i64) -> AppendInfo {
        AppendInfo { base_offset: log_end_offset, last_offset: log_end_offset - 1, log_append_time_ms: -1, record_count: 0, flush_due: false, headers: Vec::new() }
    }
}

/// The result of `read`.
#[derive(Debug, Default)]
pub struct ReadResult {
    /// Whole batches, in offset order; empty when there is nothing at or below the upper bound.
    pub slices: Vec<FileSlice>,
}

impl ReadResult {
    pub fn size_bytes(&self) -> u64 {
        self.slices.iter().map(|s| s.length_bytes).sum()
    }
}

pub struct Log {
    dir: PathBuf,
    config: LogConfig,
    segments: BTreeMap<i64, Segment>,
    log_end_offset: i64,
    /// The first offset a read may return: the first segment's base, or past it once DeleteRecords
    /// moved it (Kafka's logStartOffset). Only grows, never past the log end.
    log_start_offset: i64,
    /// What the log start offset file says, once this process wrote or read it.
    checkpointed_log_start_offset: Option<i64>,
    recovery_point: i64,
    /// What the recovery point file says, once this process wrote it.
    checkpointed_recovery_point: Option<i64>,
    /// Rolled segments being flushed in the background (`Segment::background_flush`).
    rolled_flushes: Rc<RefCell<RolledFlushes>>,
    unflushed_records: i64,
    oldest_unflushed_append_ms: Option<i64>,
    /// Which leader epoch wrote from which offset (`leader-epoch-checkpoint`).
    leader_epochs: LeaderEpochCache,
    /// Cluster mode, while this replica leads: the epoch stamped into every appended batch.
    leader_epoch: Option<i32>,
    /// The cleaner's first dirty offset, as `cleaner-offset-checkpoint` says (None: never cleaned).
    cleaner_checkpoint: Option<i64>,
}

impl Log {
    /// Opens (or creates) the partition directory `dir`. After a clean shutdown the index files
    /// are trusted; otherwise every segment from the recovery point on is scanned, and a torn tail
    /// of the last segment is truncated. Invalid bytes inside an earlier segment make the partition
    /// offline: the error names the file and position.
    pub async fn open(dir: &Path, config: LogConfig, clean_shutdown: bool) -> Result<Log> {
        assert!(config.segment_bytes <= MAX_SEGMENT_BYTES, "segment.bytes over 2 GiB");
        crate::log_manager::note_partition_dir(dir);
        // Directory scans and reads by path may wait for the disk: off the shard thread.
        let owned_dir = dir.to_path_buf();
        let (listing, recovery_point, saved_log_start_offset, cleaner_checkpoint) = file_deletion::on_blocking_thread(move || {
            std::fs::create_dir_all(&owned_dir).map_err(|e| StorageError::io(format!("creating {}", owned_dir.display()), e))?;
            let listing = list_segments(&owned_dir)?;
            let recovery_point = read_checkpoint(&owned_dir.join(RECOVERY_POINT_FILE)).unwrap_or(0);
            let cleaner_checkpoint = read_checkpoint(&owned_dir.join(CLEANER_OFFSET_FILE));
            Ok::<_, StorageError>((listing, recovery_point, read_checkpoint(&owned_dir.join(LOG_START_OFFSET_FILE)), cleaner_checkpoint))
        })
        .await?;
        let SegmentListing { mut base_offsets, leftovers, swaps } = listing;
        file_deletion::remove_files(leftovers).await;
        // A cleaning interrupted after its commit point: finish it, so the log holds the cleaned
        // segment and none it replaced. Those segments are scanned below, never trusted.
        let mut must_scan = std::collections::BTreeSet::new();
        if !swaps.is_empty() {
            for &base in &swaps {
                crate::cleaner::complete_swap(dir, base, config.index_interval_bytes).await?;
                must_scan.insert(base);
            }
            let owned_dir = dir.to_path_buf();
            let listing = file_deletion::on_blocking_thread(move || list_segments(&owned_dir)).await?;
            file_deletion::remove_files(listing.leftovers).await;
            base_offsets = listing.base_offsets;
        }
        let recovery_point = if clean_shutdown { i64::MAX } else { recovery_point };
        let mut log = Log {
            dir: dir.to_path_buf(),
            config,
            segments: BTreeMap::new(),
            log_end_offset: 0,
            log_start_offset: 0,
            checkpointed_log_start_offset: saved_log_start_offset,
            recovery_point: 0,
            checkpointed_recovery_point: None,
            rolled_flushes: Rc::default(),
            unflushed_records: 0,
            oldest_unflushed_append_ms: None,
            leader_epochs: LeaderEpochCache::load(dir).await,
            leader_epoch: None,
            cleaner_checkpoint,
        };
        let count = base_offsets.len();
        let mut scanned = Vec::new();
        for (i, &base_offset) in base_offsets.iter().enumerate() {
            let is_last = i + 1 == count;
            let next_base = base_offsets.get(i + 1).copied();
            let mut segment = Segment::open(dir, base_offset, log.config.index_interval_bytes).await?;
            // A segment must be checked if it may hold bytes written after the last flush.
            let after_recovery_point = (!clean_shutdown && next_base.map_or(true, |next| next > recovery_point)) || must_scan.contains(&base_offset);
            let trusted = !after_recovery_point && segment.load_indexes().await?;
            if !trusted {
                scanned.push(base_offset);
                if let ScanOutcome::InvalidFrom { valid_bytes, reason } = segment.scan().await? {
                    if is_last {
                        tracing::warn!(
                            path = %segment.path().display(),
                            position = valid_bytes,
                            reason,
                            "truncating the log tail to the last valid batch"
                        );
                        segment.truncate_to_size(valid_bytes).await?;
                    } else {
                        return Err(StorageError::Offline { path: segment.path(), position: valid_bytes, reason });
                    }
                }
                if let Some(next) = next_base {
                    if segment.next_offset() > next {
                        return Err(StorageError::Offline {
                            path: segment.path(),
                            position: segment.size_bytes(),
                            reason: format!("segment ends at offset {} past the next segment's base {next}", segment.next_offset()),
                        });
                    }
                }
                // Persist the rebuilt indexes so the next clean start can trust them.
                segment.flush().await?;
            }
            log.segments.insert(base_offset, segment);
        }
        if log.segments.is_empty() {
            let segment = Segment::create(dir, 0, log.config.index_interval_bytes).await?;
            log.segments.insert(0, segment);
        }
        // The active segment's file stays open; the others go by the descriptor cache.
        log.active().pin().await?;
        let active = log.active();
        log.log_end_offset = active.next_offset().max(active.base_offset);
        if let Some(&first_scanned) = scanned.first() {
            log.rebuild_txn_indexes(first_scanned).await?;
        }
        let first_base = log.first_segment_base();
        log.log_start_offset = saved_log_start_offset.unwrap_or(first_base).clamp(first_base, log.log_end_offset);
        log.recovery_point = if clean_shutdown { log.log_end_offset } else { recovery_point.min(log.log_end_offset) };
        // Epochs that started in a torn tail, or in segments retention removed, are gone.
        log.leader_epochs.truncate_from_end(log.log_end_offset).await?;
        let log_start_offset = log.log_start_offset();
        log.leader_epochs.truncate_from_start(log_start_offset).await?;
        // Everything now on disk has been checked: write that down so a crash before the next
        // flush does not scan it all again, and make the rebuilt indexes durable.
        log.checkpoint().await?;
        Ok(log)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn config(&self) -> &LogConfig {
        &self.config
    }
    pub fn set_config(&mut self, config: LogConfig) {
        assert!(config.segment_bytes <= MAX_SEGMENT_BYTES, "segment.bytes over 2 GiB");
        self.config = config;
    }
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }
    fn first_segment_base(&self) -> i64 {
        *self.segments.keys().next().expect("a log always has a segment")
    }
    pub fn log_end_offset(&self) -> i64 {
        self.log_end_offset
    }
    pub fn recovery_point(&self) -> i64 {
        self.recovery_point
    }
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size_bytes()).sum()
    }
    pub fn segment_base_offsets(&self) -> Vec<i64> {
        self.segments.keys().copied().collect()
    }

    /// The segments, for the cleaner (which never writes one the log uses: it swaps).
    pub(crate) fn segments(&self) -> &BTreeMap<i64, Segment> {
        &self.segments
    }
    pub(crate) fn segments_mut(&mut self) -> &mut BTreeMap<i64, Segment> {
        &mut self.segments
    }

    /// The cleaner's first dirty offset as last checkpointed (None: never cleaned).
    pub fn cleaner_checkpoint(&self) -> Option<i64> {
        self.cleaner_checkpoint
    }

    /// Records that everything below `offset` is clean, durably (`cleaner-offset-checkpoint`).
    pub async fn write_cleaner_checkpoint(&mut self, offset: i64) -> Result<()> {
        if self.cleaner_checkpoint != Some(offset) {
            write_checkpoint(&self.dir, CLEANER_OFFSET_FILE, offset).await?;
            self.cleaner_checkpoint = Some(offset);
        }
        Ok(())
    }

    /// Cluster mode: this replica now leads in `epoch`; appends are stamped with it (the batch
    /// header's partition leader epoch, outside the CRC), and its first append starts the epoch
    /// in the leader epoch cache.
    pub async fn become_leader(&mut self, epoch: i32) {
        if let Some(latest) = self.leader_epochs.latest_epoch().filter(|&latest| epoch < latest) {
            // Not possible while ZooKeeper's epochs only grow; stamping would break the cache's
            // order, so the batches keep the producer's value instead.
            tracing::error!(dir = %self.dir.display(), epoch, latest, "leader epoch older than this log's; not stamping");
            return;
        }
        self.leader_epoch = Some(epoch);
        // As Kafka's makeLeader: the epoch starts at the log end now, not at its first append,
        // so a follower asking about an epoch this leader never saw gets a defined answer.
        let log_end_offset = self.log_end_offset;
        if let Err(e) = self.leader_epochs.assign(epoch, log_end_offset).await {
            tracing::error!(dir = %self.dir.display(), error = %e, "writing the leader epoch checkpoint");
        }
    }

    /// The epoch this replica leads in, if it does.
    pub fn leader_epoch(&self) -> Option<i32> {
        self.leader_epoch
    }

    pub fn become_follower(&mut self) {
        self.leader_epoch = None;
    }

    /// The latest leader epoch this log holds batches of.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.leader_epochs.latest_epoch()
    }

    /// The leader epoch that wrote `offset` (None when no epoch covers it).
    pub fn epoch_of_offset(&self, offset: i64) -> Option<i32> {
        self.leader_epochs.entries().iter().rev().find(|e| e.start_offset <= offset).map(|e| e.epoch)
    }

    /// OffsetForLeaderEpoch: (the largest epoch <= `requested` this log knows, where it ends).
    pub fn end_offset_for_epoch(&self, requested: i32) -> (i32, i64) {
        self.leader_epochs.end_offset_for(requested, self.log_end_offset)
    }

    fn active(&self) -> &Segment {
        self.segments.values().next_back().expect("a log always has a segment")
    }
    fn active_mut(&mut self) -> &mut Segment {
        self.segments.values_mut().next_back().expect("a log always has a segment")
    }

    /// Checks the batches of one produce partition's bytes before anything is written: framing,
    /// magic, CRC, record count, `max.message.bytes`. The headers it parsed are the ones the
    /// caller inspects (producer sequences) and `append_checked` writes: parsed once.
    pub fn check_from_producer<'a>(&self, records: &'a [u8]) -> Result<CheckedBatches<'a>> {
        let mut batches = Vec::new();
        let mut headers = Vec::new();
        for batch in batch::split_batches(records)? {
            if batch.len() > self.config.max_message_bytes {
                return Err(StorageError::RecordTooLarge { size_bytes: batch.len(), max_bytes: self.config.max_message_bytes });
            }
            headers.push(batch::validate(batch, Validation::FromProducer)?);
            batches.push(batch);
        }
        if batches.is_empty() {
            return Err(StorageError::CorruptBatch("produce request carries no record batch".into()));
        }
        Ok(CheckedBatches { batches, headers, from_leader: false })
    }

    /// Checks batches a follower copies from its leader: they carry their final offsets and
    /// epochs, must be valid as stored, in order, and start at or past this log's end.
    pub fn check_from_leader<'a>(&self, records: &'a [u8]) -> Result<CheckedBatches<'a>> {
        let mut batches = Vec::new();
        let mut headers: Vec<BatchHeader> = Vec::new();
        for batch in batch::split_batches(records)? {
            let header = batch::validate(batch, Validation::FromLog)?;
            let expected_from = headers.last().map_or(self.log_end_offset, |previous| previous.next_offset());
            if header.base_offset < expected_from {
                return Err(StorageError::CorruptBatch(format!(
                    "replicated batch at offset {} is below {expected_from} (the log end or the previous batch)",
                    header.base_offset
                )));
            }
            headers.push(header);
            batches.push(batch);
        }
        Ok(CheckedBatches { batches, headers, from_leader: true })
    }

    /// Appends batches checked by `check_from_producer` (offsets assigned from the log end; the
    /// header's base offset, this leader's epoch and, for LogAppendTime topics, the timestamp
    /// rewritten in a copy of its 61 bytes, the rest written untouched with pwritev) or by
    /// `check_from_leader` (written unchanged). The flush policy is the caller's: see
    /// `AppendInfo::flush_due`.
    pub async fn append_checked(&mut self, checked: CheckedBatches<'_>, now_ms: i64) -> Result<AppendInfo> {
        if checked.batches.is_empty() {
            return Ok(AppendInfo::nothing(self.log_end_offset));
        }
        if checked.from_leader {
            let base_offset = checked.headers[0].base_offset;
            if base_offset < self.log_end_offset {
                // The log moved (truncated or appended) since the check.
                return Err(StorageError::CorruptBatch(format!("replicated batch at {base_offset} is below the log end {}", self.log_end_offset)));
            }
            for header in &checked.headers {
                self.leader_epochs.assign(header.partition_leader_epoch, header.base_offset).await?;
            }
            let flush_due = self.append_validated(&checked.batches, &checked.headers, now_ms).await?;
            let last_offset = checked.headers.last().expect("not empty").last_offset();
            let record_count = checked.headers.iter().map(|h| h.record_count as i64).sum();
            return Ok(AppendInfo { base_offset, last_offset, log_append_time_ms: -1, record_count, flush_due, headers: checked.headers });
        }
        let batches = checked.batches;
        let log_append_time = self.config.timestamp_type == TimestampType::LogAppendTime;
        let base_offset = self.log_end_offset;
        let mut next_offset = base_offset;
        let mut record_count = 0i64;
        let mut rewritten_headers = Vec::with_capacity(batches.len());
        let mut headers = Vec::with_capacity(batches.len());
        for batch in &batches {
            let (header_bytes, body) = batch.split_at(BATCH_HEADER_SIZE_BYTES);
            let mut header_bytes: [u8; BATCH_HEADER_SIZE_BYTES] = header_bytes.try_into().expect("validated batch has a header");
            batch::set_base_offset(&mut header_bytes, next_offset);
            if let Some(epoch) = self.leader_epoch {
                batch::set_partition_leader_epoch(&mut header_bytes, epoch);
            }
            if log_append_time {
                batch::set_log_append_time_split(&mut header_bytes, body, now_ms);
            }
            let header = BatchHeader::parse(&header_bytes)?;
            assert_eq!(header.size_bytes(), batch.len(), "the rewritten header keeps the batch length");
            next_offset = header.next_offset();
            record_count += header.record_count as i64;
            rewritten_headers.push(header_bytes);
            headers.push(header);
        }
        let mut pieces = Vec::with_capacity(batches.len() * 2);
        for (header_bytes, batch) in rewritten_headers.iter().zip(&batches) {
            pieces.push(&header_bytes[..]);
            pieces.push(&batch[BATCH_HEADER_SIZE_BYTES..]);
        }
        if let Some(epoch) = self.leader_epoch {
            self.leader_epochs.assign(epoch, base_offset).await?;
        }
        let flush_due = self.append_validated(&pieces, &headers, now_ms).await?;
        Ok(AppendInfo {
            base_offset,
            last_offset: next_offset - 1,
            log_append_time_ms: if log_append_time { now_ms } else { -1 },
            record_count,
            flush_due,
            headers,
        })
    }

    /// `check_from_producer` then `append_checked`: for callers that need not look at the
    /// batches in between (storage's own tests and benches).
    pub async fn append(&mut self, records: impl AsRef<[u8]>, now_ms: i64) -> Result<AppendInfo> {
        let checked = self.check_from_producer(records.as_ref())?;
        self.append_checked(checked, now_ms).await
    }

    /// Writes `pieces` (whole batches, back to back) at the log end; returns whether
    /// `flush.messages` is now due.
    async fn append_validated(&mut self, pieces: &[&[u8]], headers: &[BatchHeader], now_ms: i64) -> Result<bool> {
        let first_offset = headers[0].base_offset;
        assert!(first_offset >= self.log_end_offset, "offsets only grow");
        let size_bytes: u64 = pieces.iter().map(|p| p.len() as u64).sum();
        debug_assert_eq!(size_bytes, headers.iter().map(|h| h.size_bytes() as u64).sum::<u64>());
        if self.should_roll(size_bytes, now_ms) {
            self.roll(first_offset).await?;
        }
        let active = self.active_mut();
        active.append(pieces, headers, now_ms).await?;
        let new_end = active.next_offset();
        assert!(new_end > self.log_end_offset, "log end offset only grows");
        self.log_end_offset = new_end;
        self.unflushed_records += headers.iter().map(|h| h.record_count as i64).sum::<i64>();
        self.oldest_unflushed_append_ms.get_or_insert(now_ms);
        Ok(self.flush_due())
    }

    /// `flush.messages`: enough records appended since the last flush.
    pub fn flush_due(&self) -> bool {
        self.unflushed_records >= self.config.flush_messages
    }

    /// Flushes if `flush.messages` is due (for callers that do not group their flushes).
    pub async fn flush_if_due(&mut self) -> Result<()> {
        if self.flush_due() {
            self.flush().await?;
        }
        Ok(())
    }

    fn should_roll(&self, incoming_bytes: u64, now_ms: i64) -> bool {
        let active = self.active();
        if active.is_empty() {
            return false;
        }
        let too_big = active.size_bytes() + incoming_bytes > self.config.segment_bytes;
        let too_old = active
            .first_append_at_ms()
            .is_some_and(|first| now_ms - first >= self.config.max_segment_ms());
        // Index positions are u32 relative offsets: roll before either overflows.
        let offsets_overflow = self.log_end_offset - active.base_offset > u32::MAX as i64 / 2;
        too_big || too_old || offsets_overflow
    }

    /// Closes the active segment and starts a new one. The closed segment is flushed (data and
    /// indexes) in the background, as Kafka's `flush-log` task after a roll: an fdatasync of a
    /// whole segment inside the append that rolled held the partition for tens of ms at every
    /// roll, the tail of every producer to it. Its end becomes the recovery point once it and
    /// every earlier roll's flush are done (`checkpoint_recovery_point`).
    async fn roll(&mut self, base_offset: i64) -> Result<()> {
        let flush = self.active_mut().background_flush();
        let segment = Segment::create(&self.dir, base_offset, self.config.index_interval_bytes).await?;
        self.active().unpin();
        self.segments.insert(base_offset, segment);
        tracing::debug!(dir = %self.dir.display(), base_offset, "rolled a new segment");
        if self.rolled_flushes.borrow().pending.len() >= MAX_ROLLED_FLUSHES {
            // The disk is not keeping up with the rolls: this one waits, which slows the writer.
            flush.run().await?;
            self.rolled_flushes.borrow_mut().done(base_offset);
            return Ok(());
        }
        self.rolled_flushes.borrow_mut().pending.push_back((base_offset, false));
        let (flushes, dir) = (self.rolled_flushes.clone(), self.dir.clone());
        glommio::spawn_local(async move {
            match flush.run().await {
                Ok(()) => flushes.borrow_mut().done(base_offset),
                // The recovery point stays below it until a full flush (the next checkpoint).
                Err(e) => tracing::warn!(dir = %dir.display(), base_offset, error = %e, "flushing a rolled segment"),
            }
        })
        .detach();
        Ok(())
    }

    /// The periodic recovery point checkpoint (`log.flush.offset.checkpoint.interval.ms`), as
    /// Kafka's: writes what is already durable (rolled segments flushed in the background, or
    /// a flush by the flush policy), flushes nothing itself.
    pub async fn checkpoint_recovery_point(&mut self) -> Result<()> {
        let flushed_through = self.rolled_flushes.borrow().through;
        self.recovery_point = self.recovery_point.max(flushed_through.min(self.log_end_offset));
        if self.checkpointed_recovery_point != Some(self.recovery_point) {
            write_checkpoint(&self.dir, RECOVERY_POINT_FILE, self.recovery_point).await?;
            self.checkpointed_recovery_point = Some(self.recovery_point);
        }
        Ok(())
    }

    /// Makes every appended byte durable: one fdatasync per segment holding unflushed bytes
    /// (normally only the active one). This is the flush policy's path (`flush.messages`,
    /// `flush.ms`), so it writes nothing else: the active segment's indexes are rebuilt by the
    /// scan after a crash anyway, and the recovery point file is only a hint that shortens that
    /// scan, written by `checkpoint`. Kafka likewise checkpoints recovery points on a timer
    /// (`log.flush.offset.checkpoint.interval.ms`), not per flush.
    pub async fn flush(&mut self) -> Result<()> {
        let from = self.recovery_point;
        for segment in self.segments.values_mut() {
            if segment.next_offset() > from || segment.is_empty() {
                segment.sync_data().await?;
            }
        }
        self.recovery_point = self.log_end_offset;
        self.unflushed_records = 0;
        self.oldest_unflushed_append_ms = None;
        Ok(())
    }

    /// `flush`, then writes the indexes of every segment whose indexes changed and the recovery
    /// point file: what a clean start trusts. On roll, at open and shutdown, and on the
    /// checkpoint timer.
    pub async fn checkpoint(&mut self) -> Result<()> {
        self.flush().await?;
        for segment in self.segments.values_mut() {
            segment.write_indexes_if_dirty().await?;
        }
        if self.checkpointed_recovery_point != Some(self.recovery_point) {
            write_checkpoint(&self.dir, RECOVERY_POINT_FILE, self.recovery_point).await?;
            self.checkpointed_recovery_point = Some(self.recovery_point);
        }
        Ok(())
    }

    /// `flush.ms`: flushes if the oldest unflushed append is older than the policy allows.
    pub async fn maybe_flush_on_time(&mut self, now_ms: i64) -> Result<bool> {
        match self.oldest_unflushed_append_ms {
            Some(oldest) if now_ms.saturating_sub(oldest) >= self.config.flush_ms => {
                self.flush().await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Locations of whole batches from the one holding `offset`, up to `max_bytes`, never past
    /// `upper_bound_offset` (exclusive: the high watermark). With `min_one_batch`, the first batch
    /// is returned even when larger than `max_bytes` (KIP-74), so a consumer always progresses.
    pub async fn read(&self, offset: i64, max_bytes: u64, upper_bound_offset: i64, min_one_batch: bool) -> Result<ReadResult> {
        let upper = upper_bound_offset.min(self.log_end_offset);
        if offset < self.log_start_offset() || offset > self.log_end_offset {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset(),
                log_end_offset: self.log_end_offset,
            });
        }
        let mut result = ReadResult::default();
        if offset >= upper {
            return Ok(result);
        }
        // The segment holding `offset`, or the next one if it ends before (a compacted gap).
        // A read that found only record-less batches (the cleaner's bare headers) goes on into
        // the next segment: some clients take a response without a record for a too-small fetch.
        let mut taken_before = 0u64;
        let mut records_found = false;
        for (_, segment) in self.segments.range(..=offset).next_back().into_iter().chain(self.segments.range(offset + 1..)) {
            let Some((position, header)) = segment.find_batch(offset, u64::MAX).await? else { continue };
            let mut end = position;
            let mut last_offset = -1;
            let mut current = Some(header);
            let mut reached_limit = false;
            while let Some(header) = current {
                if header.last_offset() >= upper {
                    reached_limit = true;
                    break;
                }
                let size = header.size_bytes() as u64;
                let taken = taken_before + end - position;
                if taken + size > max_bytes && !(min_one_batch && taken == 0) {
                    reached_limit = true;
                    break;
                }
                end += size;
                last_offset = header.last_offset();
                records_found |= header.record_count > 0;
                current = segment.read_header_at(end).await?;
            }
            if end > position {
                result.slices.push(segment.open_slice(position, end - position, header.base_offset, last_offset).await?);
            }
            taken_before += end - position;
            if records_found || reached_limit {
                break;
            }
        }
        Ok(result)
    }

    /// Records the transaction an ABORT marker just appended ends (the caller knows where the
    /// producer's transaction began; see `txn_index`). The marker is in the active segment.
    pub fn append_aborted_txn(&mut self, entry: AbortedTxn) {
        assert!(entry.last_offset < self.log_end_offset, "the marker is in the log");
        self.active_mut().push_aborted_txn(entry);
    }

    /// The aborted transactions overlapping [fetch_offset, upper_bound_offset), from the index of
    /// the segment holding `fetch_offset` on, as Kafka's `collectAbortedTransactions`: a
    /// read_committed fetch returns them beside its records.
    pub fn collect_aborted_txns(&self, fetch_offset: i64, upper_bound_offset: i64) -> Vec<AbortedTxn> {
        let mut found = Vec::new();
        let first = self.segments.range(..=fetch_offset).next_back().map(|(&base, _)| base).unwrap_or(i64::MIN);
        for segment in self.segments.range(first..).map(|(_, s)| s) {
            if segment.txn_index().collect(fetch_offset, upper_bound_offset, &mut found) {
                break;
            }
        }
        found
    }

    /// Recovery: the `.txnindex` of every segment from `first_scanned` on is rebuilt from the
    /// log (a crash may have lost entries written since the last flush). Where each aborted
    /// transaction began needs the batches before it: headers from the log start are replayed,
    /// reading whole batches only for the control batches of the rebuilt segments.
    async fn rebuild_txn_indexes(&mut self, first_scanned: i64) -> Result<()> {
        // Most logs have no transaction: then the rebuilt indexes are empty, no replay needed.
        let mut any_abort = false;
        'segments: for segment in self.segments.range(first_scanned..).map(|(_, s)| s) {
            let mut position = 0;
            while let Some(header) = segment.read_header_at(position).await? {
                if header.is_control() && header.is_transactional() && control_type(&segment.read_batch(position, &header).await?) == Some(ControlType::Abort) {
                    any_abort = true;
                    break 'segments;
                }
                position += header.size_bytes() as u64;
            }
        }
        let replay_from = if any_abort { i64::MIN } else { first_scanned };
        let mut open = OpenTxns::default();
        let bases: Vec<i64> = self.segments.range(replay_from..).map(|(&base, _)| base).collect();
        for base in bases {
            let segment = &self.segments[&base];
            let rebuild = base >= first_scanned;
            let mut index = TxnIndex::default();
            let mut position = 0;
            while let Some(header) = segment.read_header_at(position).await? {
                if let Some(entry) = open.record(&header).filter(|_| any_abort) {
                    if rebuild && control_type(&segment.read_batch(position, &header).await?) == Some(ControlType::Abort) {
                        index.push(entry);
                    }
                }
                position += header.size_bytes() as u64;
            }
            if rebuild {
                if !index.is_empty() {
                    tracing::info!(dir = %self.dir.display(), base_offset = base, aborted = index.entries().len(), "rebuilt the transaction index");
                }
                self.segments.get_mut(&base).expect("listed").set_txn_index(index);
            }
        }
        Ok(())
    }

    /// Copies a read's bytes into memory (tests and the copy path).
    pub async fn read_bytes(&self, offset: i64, max_bytes: u64) -> Result<Vec<u8>> {
        let result = self.read(offset, max_bytes, i64::MAX, true).await?;
        let mut bytes = Vec::new();
        for slice in result.slices {
            bytes.extend(slice.read_bytes().await?);
        }
        Ok(bytes)
    }

    /// ListOffsets by timestamp: the first offset whose record timestamp is >= `timestamp_ms`,
    /// with that timestamp; None when every record is older.
    pub async fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<(i64, i64)>> {
        for segment in self.segments.values() {
            if segment.max_timestamp_ms() < timestamp_ms || segment.next_offset() <= self.log_start_offset {
                continue;
            }
            let start_offset = segment
                .time_index()
                .lookup(timestamp_ms)
                .map(|relative| segment.base_offset + relative as i64)
                .unwrap_or(segment.base_offset);
            let Some((mut position, mut header)) = segment.find_batch(start_offset, u64::MAX).await? else { continue };
            loop {
                if header.max_timestamp >= timestamp_ms {
                    let bytes = segment.read_batch(position, &header).await?;
                    let (offset, timestamp) = batch::first_offset_at_or_after(&bytes, &header, timestamp_ms);
                    // Records below the log start (DeleteRecords) are not there for readers.
                    return Ok(Some((offset.max(self.log_start_offset), timestamp)));
                }
                position += header.size_bytes() as u64;
                match segment.read_header_at(position).await? {
                    Some(next) => header = next,
                    None => break,
                }
            }
        }
        Ok(None)
    }

    /// Headers of every batch from the segment holding `offset` on (a replay of recent history,
    /// e.g. producer state). Reads headers only, never record bytes.
    pub async fn batch_headers_since(&self, offset: i64) -> Result<Vec<BatchHeader>> {
        let mut headers = Vec::new();
        let first = self.segments.range(..=offset.max(self.log_start_offset())).next_back().map(|(&b, _)| b).unwrap_or(0);
        for segment in self.segments.range(first..).map(|(_, s)| s) {
            let mut position = 0;
            while let Some(header) = segment.read_header_at(position).await? {
                position += header.size_bytes() as u64;
                headers.push(header);
            }
        }
        Ok(headers)
    }

    /// Base offset of the active segment (a change across an append means it rolled).
    pub fn active_segment_base_offset(&self) -> i64 {
        self.active().base_offset
    }

    /// Base offset of the segment before the active one (or the active one's), for bounded replays.
    pub fn previous_segment_base_offset(&self) -> i64 {
        self.segments.keys().rev().nth(1).or_else(|| self.segments.keys().next_back()).copied().unwrap_or(0)
    }

    /// The largest timestamp and its offset (ListOffsets MAX_TIMESTAMP).
    pub fn max_timestamp(&self) -> Option<i64> {
        self.segments.values().map(|s| s.max_timestamp_ms()).max().filter(|&t| t >= 0)
    }

    /// Deletes whole closed segments past `retention.ms` (by their max timestamp) or beyond
    /// `retention.bytes`; never the active one. Returns how many were deleted.
    pub async fn apply_retention(&mut self, now_ms: i64) -> Result<usize> {
        let mut deleted = 0;
        let mut total_bytes = self.size_bytes() as i64;
        while self.segments.len() > 1 {
            let oldest = self.segments.values().next().unwrap();
            let expired = self.config.retention_ms >= 0 && oldest.max_timestamp_ms() >= 0
                && now_ms - oldest.max_timestamp_ms() > self.config.retention_ms;
            let over_size = self.config.retention_bytes >= 0
                && total_bytes - oldest.size_bytes() as i64 >= self.config.retention_bytes;
            // An empty closed segment (all its time is unknown) goes only by size.
            if !(expired || over_size) {
                break;
            }
            let base = oldest.base_offset;
            let segment = self.segments.remove(&base).unwrap();
            total_bytes -= segment.size_bytes() as i64;
            tracing::info!(dir = %self.dir.display(), base_offset = base, expired, over_size, "retention deletes a segment");
            segment.delete(self.config.file_delete_delay_ms).await?;
            deleted += 1;
        }
        if deleted > 0 {
            self.log_start_offset = self.log_start_offset.max(self.first_segment_base());
            let log_start_offset = self.log_start_offset;
            self.leader_epochs.truncate_from_start(log_start_offset).await?;
        }
        Ok(deleted)
    }

    /// DeleteRecords (and a follower following its leader's log start): records below `offset`
    /// are gone for readers; whole segments below it are deleted (never the active one). The new
    /// log start offset is durable on return (`log-start-offset-checkpoint`). An offset at or
    /// below the current start changes nothing; the caller keeps it at or below the high
    /// watermark (asserted: never past the log end). Returns the log start offset.
    pub async fn advance_log_start_offset(&mut self, offset: i64) -> Result<i64> {
        assert!(offset <= self.log_end_offset, "the log start offset never passes the log end ({offset} > {})", self.log_end_offset);
        if offset <= self.log_start_offset {
            return Ok(self.log_start_offset);
        }
        self.log_start_offset = offset;
        // Whole segments below the new start: those whose successor starts at or below it.
        loop {
            let mut bases = self.segments.keys();
            let (Some(&first), Some(&next)) = (bases.next(), bases.next()) else { break };
            if next > offset {
                break;
            }
            let segment = self.segments.remove(&first).expect("listed");
            tracing::info!(dir = %self.dir.display(), base_offset = first, log_start_offset = offset, "the log start moved past a segment: deleting it");
            segment.delete(self.config.file_delete_delay_ms).await?;
        }
        self.leader_epochs.truncate_from_start(offset).await?;
        self.write_log_start_offset().await?;
        Ok(offset)
    }

    async fn write_log_start_offset(&mut self) -> Result<()> {
        if self.checkpointed_log_start_offset != Some(self.log_start_offset) {
            write_checkpoint(&self.dir, LOG_START_OFFSET_FILE, self.log_start_offset).await?;
            self.checkpointed_log_start_offset = Some(self.log_start_offset);
        }
        Ok(())
    }

    /// Cuts the log back so that `offset` becomes the log end (a follower diverged from its
    /// leader). Segments entirely past it are deleted.
    pub async fn truncate_to(&mut self, offset: i64) -> Result<()> {
        if offset >= self.log_end_offset {
            // No record goes, but epochs starting there do (one that wrote nothing here), so
            // the batches fetched next start their own epoch entries.
            return self.leader_epochs.truncate_from_end(offset).await;
        }
        let offset = offset.max(self.first_segment_base());
        let later: Vec<i64> = self.segments.range(offset + 1..).map(|(&b, _)| b).collect();
        for base in later {
            if self.segments.len() > 1 {
                self.segments.remove(&base).unwrap().delete(self.config.file_delete_delay_ms).await?;
            }
        }
        self.active().pin().await?;
        let segment = self.active_mut();
        segment.truncate_txn_index(offset);
        let cut = match segment.find_batch(offset, u64::MAX).await? {
            Some((position, _)) => position,
            None => segment.size_bytes(),
        };
        segment.truncate_to_size(cut).await?;
        if let ScanOutcome::InvalidFrom { valid_bytes, reason } = segment.scan().await? {
            return Err(StorageError::Offline { path: segment.path(), position: valid_bytes, reason });
        }
        self.log_end_offset = self.active().next_offset().max(self.active().base_offset);
        self.log_start_offset = self.log_start_offset.min(self.log_end_offset);
        self.recovery_point = self.recovery_point.min(self.log_end_offset);
        self.rolled_flushes.borrow_mut().forget_from(self.log_end_offset);
        self.leader_epochs.truncate_from_end(self.log_end_offset).await?;
        self.checkpoint().await
    }

    /// Flushes everything so the next open can trust the index files. Call before writing the
    /// clean-shutdown marker.
    pub async fn close(mut self) -> Result<()> {
        self.checkpoint().await
    }

    /// Deletes the partition's directory and every segment in it (topic deletion), without
    /// blocking the shard (`file_deletion`): the directory is renamed to `<dir>.<id>-delete` now
    /// and removed after `file.delete.delay.ms`, once this log and every fetch in flight let go of
    /// its files. The log must not be used after (its partition is closed).
    pub async fn delete_files(&mut self) -> Result<()> {
        let held = self.segments.values().map(Segment::held).collect();
        let retired = file_deletion::retire_dir(self.dir.clone(), held).await?;
        file_deletion::delete_later(retired, self.config.file_delete_delay_ms);
        Ok(())
    }
}

/// What `list_segments` found.
struct SegmentListing {
    /// Base offsets of the `.log` files, sorted.
    base_offsets: Vec<i64>,
    /// Files to remove.
    leftovers: Vec<PathBuf>,
    /// Base offsets of complete cleaned segments (`.log.swap`) whose swap recovery finishes.
    swaps: Vec<i64>,
}

/// The segments in `dir` and the leftovers to remove: files of an interrupted deletion
/// (`.deleted`), replacement (`.tmp`) or cleaning (`.cleaned`, and `.swap` indexes whose log
/// never reached `.swap`: the commit point is the log file's rename), and index files without
/// a log. Blocking: runs on the blocking thread.
fn list_segments(dir: &Path) -> Result<SegmentListing> {
    use crate::segment::{CLEANED_SUFFIX, INDEX_SUFFIXES, SWAP_SUFFIX};
    let mut base_offsets = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| StorageError::io(format!("listing {}", dir.display()), e))?;
    let mut leftovers = Vec::new();
    let mut swaps = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io(format!("listing {}", dir.display()), e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if file_deletion::is_leftover(&name) || name.ends_with(CLEANED_SUFFIX) {
            leftovers.push(entry.path());
        } else if let Some(stem) = name.strip_suffix(SWAP_SUFFIX) {
            if let Some(base) = stem.strip_suffix(".log").and_then(|b| b.parse::<i64>().ok()) {
                swaps.push(base);
            } else if let Some(index_stem) = INDEX_SUFFIXES.iter().find_map(|suffix| stem.strip_suffix(suffix)) {
                if !dir.join(format!("{index_stem}.log{SWAP_SUFFIX}")).exists() {
                    leftovers.push(entry.path());
                }
            }
        } else if let Some(stem) = name.strip_suffix(".log") {
            if let Ok(base) = stem.parse::<i64>() {
                base_offsets.push(base);
            }
        } else if let Some(stem) = INDEX_SUFFIXES.iter().find_map(|suffix| name.strip_suffix(suffix)) {
            if !dir.join(format!("{stem}.log")).exists() {
                leftovers.push(entry.path());
            }
        }
    }
    base_offsets.sort_unstable();
    swaps.sort_unstable();
    Ok(SegmentListing { base_offsets, leftovers, swaps })
}

/// Background flushes of rolled segments waiting at most; past it a roll flushes inline.
const MAX_ROLLED_FLUSHES: usize = 64;

/// The background flushes of rolled segments, in roll order: `through` is the offset below
/// which every byte is durable with its indexes, the end of the longest run of finished flushes.
#[derive(Debug, Default)]
struct RolledFlushes {
    /// (the rolled segment's end, finished), oldest first.
    pending: VecDeque<(i64, bool)>,
    through: i64,
}

impl RolledFlushes {
    fn done(&mut self, end_offset: i64) {
        if let Some(entry) = self.pending.iter_mut().find(|(end, _)| *end == end_offset) {
            entry.1 = true;
        } else if self.pending.is_empty() {
            self.through = self.through.max(end_offset);
        }
        while let Some(&(end, true)) = self.pending.front() {
            self.through = self.through.max(end);
            self.pending.pop_front();
        }
    }

    /// The log was cut back to `end_offset`: nothing past it was flushed.
    fn forget_from(&mut self, end_offset: i64) {
        self.pending.retain(|(end, _)| *end <= end_offset);
        self.through = self.through.min(end_offset);
    }
}

/// The offset in one of the per-partition checkpoint files; None if missing or unreadable.
fn read_checkpoint(path: &Path) -> Option<i64> {
    std::fs::read_to_string(path).ok().and_then(|text| text.lines().nth(2).and_then(|line| line.split_whitespace().last()?.parse().ok()))
}

/// Writes one of the per-partition checkpoint files, in Kafka's text format (version 0, one
/// entry: `topic partition offset`). Atomic (a crash leaves the old or the new file, never half
/// of one) and never evicting the old file's inode on the shard: `file_deletion::replace_file`.
async fn write_checkpoint(dir: &Path, file_name: &str, offset: i64) -> Result<()> {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let (topic, partition) = name.rsplit_once('-').unwrap_or((&name, "0"));
    let text = format!("0\n1\n{topic} {partition} {offset}\n");
    file_deletion::replace_file(&dir.join(file_name), text.into_bytes()).await
}
