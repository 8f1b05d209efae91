//! One segment: a `.log` file of whole batches starting at `base_offset`, with its `.index`,
//! `.timeindex` and (once a transaction aborted in it) `.txnindex` beside it. Only the last segment of a log (the active one) is appended to.
//!
//! Files are written through glommio's buffered (page-cache) file: see ARCHITECTURE.md for why
//! not O_DIRECT (fetches are served from the page cache, which O_DIRECT writes would bypass).

use std::path::{Path, PathBuf};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;

use glommio::io::{BufferedFile, OpenOptions};

use crate::batch::{self, BatchHeader, Validation, BATCH_HEADER_SIZE_BYTES, LOG_OVERHEAD_BYTES};
use crate::error::{Result, StorageError};
use crate::file_deletion::{self, HeldFile};
use crate::segment_file::{OpenFile, SegmentFile};
use crate::segment_index::{OffsetEntry, OffsetIndex, TimeEntry, TimeIndex};
use crate::txn_index::{AbortedTxn, TxnIndex};

/// How much a recovery scan reads per I/O. Batches larger than this are read whole.
const SCAN_CHUNK_BYTES: usize = 1 << 20;
/// Segment positions are u32 in Kafka's index format, so a segment may not exceed 2 GiB.
pub const MAX_SEGMENT_BYTES: u64 = i32::MAX as u64;

pub fn file_stem(base_offset: i64) -> String {
    format!("{base_offset:020}")
}

pub fn log_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{}.log", file_stem(base_offset)))
}
fn index_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{}.index", file_stem(base_offset)))
}
fn time_index_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{}.timeindex", file_stem(base_offset)))
}
fn txn_index_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{}.txnindex", file_stem(base_offset)))
}

/// The index file suffixes a segment may have beside its `.log` (leftovers without a log go).
pub const INDEX_SUFFIXES: [&str; 3] = [".index", ".timeindex", ".txnindex"];

/// Suffix of a segment the cleaner is still writing (Kafka's): removed at open.
pub const CLEANED_SUFFIX: &str = ".cleaned";
/// Suffix of a complete cleaned segment being swapped in (Kafka's): recovery finishes the swap.
pub const SWAP_SUFFIX: &str = ".swap";

/// The four files of the segment at `base_offset` (log, offset index, time index, transaction
/// index: the last may not exist), each with `suffix` appended (`""`, `CLEANED_SUFFIX`, `SWAP_SUFFIX`).
pub fn segment_paths(dir: &Path, base_offset: i64, suffix: &str) -> [PathBuf; 4] {
    [log_path(dir, base_offset), index_path(dir, base_offset), time_index_path(dir, base_offset), txn_index_path(dir, base_offset)].map(|path| {
        let mut name = path.into_os_string();
        name.push(suffix);
        PathBuf::from(name)
    })
}

fn io_error(context: String) -> impl FnOnce(glommio::GlommioError<()>) -> StorageError {
    move |e| StorageError::io(context, std::io::Error::from(e))
}

/// Where one run of whole batches lies in a segment file. Holds the file open, so bytes stay
/// readable even if retention unlinks the segment while a fetch is still sending them.
#[derive(Clone)]
pub struct FileSlice {
    pub file: Rc<SegmentFile>,
    /// The descriptor the slice reads, when it was open as the slice was made (a fetch's slices
    /// always are: see `Segment::open_slice`); it stays open while the slice lives.
    pub open: Option<Rc<OpenFile>>,
    pub position: u64,
    pub length_bytes: u64,
    pub first_offset: i64,
    pub last_offset: i64,
}

impl std::fmt::Debug for FileSlice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSlice")
            .field("position", &self.position)
            .field("length_bytes", &self.length_bytes)
            .field("first_offset", &self.first_offset)
            .field("last_offset", &self.last_offset)
            .finish()
    }
}

/// A `FileSlice` that may cross to another shard: the owner of a partition answers a fetch with
/// regions and the connection's shard sends their bytes (splice), so no payload crosses shards.
/// Holding the descriptor keeps the bytes readable after retention unlinks the segment.
#[derive(Clone, Debug)]
pub struct FileRegion {
    pub fd: Arc<OwnedFd>,
    pub position: u64,
    pub length_bytes: u64,
}

impl FileSlice {
    /// Fails when the process is out of descriptors (see `OpenFile::shared_fd`), or for a slice
    /// made without an open file (the cleaner's, which never sends regions).
    pub fn region(&self) -> Result<FileRegion> {
        let Some(open) = &self.open else {
            return Err(StorageError::io("a region of a slice with no open file", std::io::Error::from(std::io::ErrorKind::NotConnected)));
        };
        Ok(FileRegion { fd: self.file.shared_fd(open)?, position: self.position, length_bytes: self.length_bytes })
    }

    /// Copies the slice into memory (the copy path; zero-copy senders use `file` directly).
    pub async fn read_bytes(&self) -> Result<Vec<u8>> {
        let open = match &self.open {
            Some(open) => open.clone(),
            None => self.file.get().await?,
        };
        let read = open
            .read_at(self.position, self.length_bytes as usize)
            .await
            .map_err(io_error(format!("reading {} bytes at {}", self.length_bytes, self.position)))?;
        if read.len() as u64 != self.length_bytes {
            return Err(StorageError::io(
                "reading a file slice",
                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "segment shorter than its slice"),
            ));
        }
        Ok(read.to_vec())
    }
}

/// The outcome of scanning a segment from its start.
#[derive(Debug, PartialEq, Eq)]
pub enum ScanOutcome {
    /// Every byte belongs to a valid batch.
    Clean,
    /// Bytes from `valid_bytes` on do not form a valid batch; `reason` says why.
    InvalidFrom { valid_bytes: u64, reason: String },
}

pub struct Segment {
    pub base_offset: i64,
    dir: PathBuf,
    /// Open while pinned (the active segment) or cached (`segment_file`); `FileRegion`s and
    /// deletions duplicate its descriptor while they need to.
    file: Rc<SegmentFile>,
    size_bytes: u64,
    /// Offset after the last batch in this segment (== base_offset while empty).
    next_offset: i64,
    offset_index: OffsetIndex,
    time_index: TimeIndex,
    bytes_since_last_index_entry: u64,
    max_timestamp_ms: i64,
    offset_of_max_timestamp: i64,
    /// Wall time of the first append, for `segment.ms` rolls; None while empty.
    first_append_at_ms: Option<i64>,
    /// The in-memory indexes have entries the files do not.
    indexes_dirty: bool,
    /// `index.interval.bytes`: bytes of batches between two offset index entries.
    index_interval_bytes: u64,
    /// Appended to the file names while the cleaner writes and swaps this segment ("" otherwise).
    suffix: &'static str,
    /// The transactions aborted by markers in this segment (`.txnindex`).
    txn_index: TxnIndex,
    /// The `.txnindex` file exists (it is written only once it has entries, as Kafka creates it).
    txn_index_file_exists: bool,
}

impl Segment {
    pub async fn create(dir: &Path, base_offset: i64, index_interval_bytes: u64) -> Result<Segment> {
        Segment::create_with_suffix(dir, base_offset, index_interval_bytes, "").await
    }

    /// A new segment file named with `suffix` (the cleaner's `CLEANED_SUFFIX`).
    pub async fn create_with_suffix(dir: &Path, base_offset: i64, index_interval_bytes: u64, suffix: &'static str) -> Result<Segment> {
        let [path, _, _, _] = segment_paths(dir, base_offset, suffix);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .buffered_open(&path)
            .await
            .map_err(io_error(format!("creating {}", path.display())))?;
        // A new segment is the active one, or a cleaner's copy under a temporary name: pinned.
        let mut segment = Segment::new(dir, base_offset, SegmentFile::opened(path, file, true), 0, index_interval_bytes)?;
        segment.suffix = suffix;
        Ok(segment)
    }

    /// An existing segment file named with `suffix` (recovery of a `SWAP_SUFFIX` segment).
    pub async fn open_with_suffix(dir: &Path, base_offset: i64, index_interval_bytes: u64, suffix: &'static str) -> Result<Segment> {
        let [path, _, _, _] = segment_paths(dir, base_offset, suffix);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .buffered_open(&path)
            .await
            .map_err(io_error(format!("opening {}", path.display())))?;
        let size_bytes = file.file_size().await.map_err(io_error(format!("sizing {}", path.display())))?;
        // Pinned while its name carries the suffix: a reopen by that name fails once renamed.
        let mut segment = Segment::new(dir, base_offset, SegmentFile::opened(path, file, true), size_bytes, index_interval_bytes)?;
        segment.suffix = suffix;
        Ok(segment)
    }

    /// The files were renamed (by the cleaner, off the shard) to carry `suffix` now.
    pub fn renamed_to_suffix(&mut self, suffix: &'static str) {
        self.suffix = suffix;
        self.file.set_path(self.path());
        if suffix.is_empty() {
            self.file.unpin();
        }
    }

    /// Keeps this segment's file open outside the descriptor cache (it became the active one).
    pub async fn pin(&self) -> Result<()> {
        self.file.pin().await
    }

    /// Puts this segment's file under the descriptor cache (it stopped being the active one).
    pub fn unpin(&self) {
        self.file.unpin();
    }

    /// The files this segment's data and indexes are in now.
    pub fn file_paths(&self) -> [PathBuf; 4] {
        segment_paths(&self.dir, self.base_offset, self.suffix)
    }

    /// Whether `slice` reads this segment's file (the cleaner checks, before a swap, that the
    /// segments it read are still the log's).
    pub fn holds(&self, slice: &FileSlice) -> bool {
        Rc::ptr_eq(&self.file, &slice.file)
    }

    pub fn offset_index_size_bytes(&self) -> u64 {
        (self.offset_index.len() * crate::segment_index::OFFSET_ENTRY_SIZE_BYTES) as u64
    }
    pub fn time_index_size_bytes(&self) -> u64 {
        (self.time_index.len() * crate::segment_index::TIME_ENTRY_SIZE_BYTES) as u64
    }

    fn new(dir: &Path, base_offset: i64, file: Rc<SegmentFile>, size_bytes: u64, index_interval_bytes: u64) -> Result<Segment> {
        Ok(Segment {
            base_offset,
            dir: dir.to_path_buf(),
            file,
            size_bytes,
            next_offset: base_offset,
            offset_index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            bytes_since_last_index_entry: 0,
            max_timestamp_ms: -1,
            offset_of_max_timestamp: base_offset,
            first_append_at_ms: None,
            indexes_dirty: true,
            index_interval_bytes,
            suffix: "",
            txn_index: TxnIndex::default(),
            txn_index_file_exists: false,
        })
    }

    /// Opens an existing segment without scanning it. The caller then either `load_indexes`
    /// (trusted segments) or `scan` (segments that recovery must check).
    pub async fn open(dir: &Path, base_offset: i64, index_interval_bytes: u64) -> Result<Segment> {
        let path = log_path(dir, base_offset);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .buffered_open(&path)
            .await
            .map_err(io_error(format!("opening {}", path.display())))?;
        let size_bytes = file
            .file_size()
            .await
            .map_err(io_error(format!("sizing {}", path.display())))?;
        // Under the descriptor cache: the log pins its last segment once loaded.
        Segment::new(dir, base_offset, SegmentFile::opened(path, file, false), size_bytes, index_interval_bytes)
    }

    pub fn path(&self) -> PathBuf {
        let [log, _, _, _] = self.file_paths();
        log
    }
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }
    pub fn is_empty(&self) -> bool {
        self.size_bytes == 0
    }
    pub fn max_timestamp_ms(&self) -> i64 {
        self.max_timestamp_ms
    }
    pub fn first_append_at_ms(&self) -> Option<i64> {
        self.first_append_at_ms
    }
    pub fn offset_index(&self) -> &OffsetIndex {
        &self.offset_index
    }
    pub fn time_index(&self) -> &TimeIndex {
        &self.time_index
    }
    pub fn txn_index(&self) -> &TxnIndex {
        &self.txn_index
    }

    /// Records an aborted transaction whose marker is in this segment (written with the other
    /// indexes).
    pub fn push_aborted_txn(&mut self, entry: AbortedTxn) {
        assert!(entry.last_offset >= self.base_offset && entry.last_offset < self.next_offset, "the marker is in this segment");
        self.txn_index.push(entry);
        self.indexes_dirty = true;
    }

    /// Replaces the aborted transactions (recovery's rebuild, the cleaner's copy).
    pub fn set_txn_index(&mut self, index: TxnIndex) {
        self.txn_index = index;
        self.indexes_dirty = true;
    }

    /// The log is cut back to `offset`: aborts whose marker is gone leave the index.
    pub fn truncate_txn_index(&mut self, offset: i64) {
        if self.txn_index.truncate_from(offset) {
            self.indexes_dirty = true;
        }
    }

    /// Loads the index files of a segment that recovery trusts. Returns false (and leaves the
    /// in-memory indexes empty) if either file is missing or invalid: the caller rebuilds with `scan`.
    /// Also finds `next_offset` and the max timestamp, by walking batch headers after the last entry.
    pub async fn load_indexes(&mut self) -> Result<bool> {
        let offset_bytes = read_whole_file(&index_path(&self.dir, self.base_offset)).await?;
        let time_bytes = read_whole_file(&time_index_path(&self.dir, self.base_offset)).await?;
        let (Some(offset_bytes), Some(time_bytes)) = (offset_bytes, time_bytes) else {
            return Ok(false);
        };
        let Some(offset_index) = OffsetIndex::decode(&offset_bytes, self.size_bytes) else {
            return Ok(false);
        };
        let Some(time_index) = TimeIndex::decode(&time_bytes) else {
            return Ok(false);
        };
        // No `.txnindex`: no transaction aborted in the segment (Kafka creates it on the first).
        let txn_bytes = read_whole_file(&txn_index_path(&self.dir, self.base_offset)).await?;
        let Some(txn_index) = TxnIndex::decode(txn_bytes.as_deref().unwrap_or_default()) else {
            return Ok(false);
        };
        if self.size_bytes > 0 && offset_index.is_empty() {
            return Ok(false);
        }
        // Walk the headers after the last index entry to learn where the segment ends.
        let start = offset_index.lookup(u32::MAX).map(|e| e.position as u64).unwrap_or(0);
        let mut position = start;
        let mut next_offset = self.base_offset;
        while position < self.size_bytes {
            let Some(header) = self.read_header_at(position).await? else {
                return Ok(false);
            };
            if position + header.size_bytes() as u64 > self.size_bytes {
                return Ok(false);
            }
            next_offset = header.next_offset();
            if header.max_timestamp > self.max_timestamp_ms {
                self.max_timestamp_ms = header.max_timestamp;
                self.offset_of_max_timestamp = header.last_offset();
            }
            position += header.size_bytes() as u64;
        }
        self.next_offset = next_offset;
        self.offset_index = offset_index;
        self.time_index = time_index;
        self.txn_index = txn_index;
        self.txn_index_file_exists = txn_bytes.is_some();
        if let Some((timestamp_ms, relative_offset)) = self.time_index.last() {
            if timestamp_ms > self.max_timestamp_ms {
                self.max_timestamp_ms = timestamp_ms;
                self.offset_of_max_timestamp = self.base_offset + relative_offset as i64;
            }
        }
        self.indexes_dirty = false;
        if self.size_bytes > 0 {
            self.first_append_at_ms = Some(file_mtime_ms(self.file.get().await?.as_raw_fd()));
        }
        Ok(true)
    }

    /// Reads and validates every batch from the start, rebuilding both indexes and the segment's
    /// end. Stops at the first invalid byte and says where; it does not truncate by itself.
    pub async fn scan(&mut self) -> Result<ScanOutcome> {
        self.offset_index = OffsetIndex::default();
        self.time_index = TimeIndex::default();
        self.bytes_since_last_index_entry = 0;
        self.max_timestamp_ms = -1;
        self.next_offset = self.base_offset;
        self.indexes_dirty = true;
        let mut position: u64 = 0;
        let mut last_offset = self.base_offset - 1;
        while position < self.size_bytes {
            let want = (self.size_bytes - position).min(SCAN_CHUNK_BYTES as u64) as usize;
            let chunk = self
                .file
                .get()
                .await?
                .read_at(position, want)
                .await
                .map_err(io_error(format!("scanning {}", self.path().display())))?;
            let mut at = 0usize;
            while at < chunk.len() {
                let rest = &chunk[at..];
                let batch_bytes: Vec<u8>;
                let batch: &[u8] = if rest.len() >= LOG_OVERHEAD_BYTES {
                    let length = i32::from_be_bytes(rest[8..12].try_into().unwrap());
                    if length < (BATCH_HEADER_SIZE_BYTES - LOG_OVERHEAD_BYTES) as i32
                        || position + at as u64 + LOG_OVERHEAD_BYTES as u64 + length as u64 > self.size_bytes
                    {
                        return Ok(self.invalid_from(position + at as u64, format!("batch length {length} runs past the segment end or is too small")));
                    }
                    let size = LOG_OVERHEAD_BYTES + length as usize;
                    if size <= rest.len() {
                        &rest[..size]
                    } else if at == 0 {
                        // A batch larger than the chunk: read it whole.
                        let whole = self
                            .file
                            .get()
                            .await?
                            .read_at(position, size)
                            .await
                            .map_err(io_error(format!("scanning {}", self.path().display())))?;
                        batch_bytes = whole.to_vec();
                        &batch_bytes
                    } else {
                        break; // re-read from this batch's start
                    }
                } else if at == 0 {
                    return Ok(self.invalid_from(position, format!("{} trailing bytes do not hold a batch", rest.len())));
                } else {
                    break;
                };
                let batch_position = position + at as u64;
                let header = match batch::validate(batch, Validation::FromLog) {
                    Ok(header) => header,
                    Err(e) => return Ok(self.invalid_from(batch_position, e.to_string())),
                };
                if header.base_offset <= last_offset || header.base_offset < self.base_offset {
                    return Ok(self.invalid_from(
                        batch_position,
                        format!("offset {} does not follow {}", header.base_offset, last_offset),
                    ));
                }
                last_offset = header.last_offset();
                self.index_batch(&header, batch_position);
                at += batch.len();
            }
            position += at as u64;
        }
        Ok(ScanOutcome::Clean)
    }

    fn invalid_from(&self, valid_bytes: u64, reason: String) -> ScanOutcome {
        ScanOutcome::InvalidFrom { valid_bytes, reason }
    }

    /// Cuts the file at `size_bytes` (a batch boundary) and forgets index entries past it.
    pub async fn truncate_to_size(&mut self, size_bytes: u64) -> Result<()> {
        self.file
            .get()
            .await?
            .truncate(size_bytes)
            .await
            .map_err(io_error(format!("truncating {}", self.path().display())))?;
        self.size_bytes = size_bytes;
        self.offset_index.truncate_to_position(size_bytes as u32);
        self.indexes_dirty = true;
        if size_bytes == 0 {
            self.next_offset = self.base_offset;
            self.first_append_at_ms = None;
        }
        Ok(())
    }

    /// Records one appended batch in the indexes. `position` is where the batch starts.
    fn index_batch(&mut self, header: &BatchHeader, position: u64) {
        let relative_offset = (header.base_offset - self.base_offset) as u32;
        if self.offset_index.is_empty() || self.bytes_since_last_index_entry >= self.index_interval_bytes {
            self.offset_index.push(OffsetEntry { relative_offset, position: position as u32 });
            self.time_index.maybe_push(TimeEntry {
                timestamp_ms: header.max_timestamp.max(self.max_timestamp_ms),
                relative_offset: if header.max_timestamp > self.max_timestamp_ms {
                    (header.last_offset() - self.base_offset) as u32
                } else {
                    (self.offset_of_max_timestamp - self.base_offset) as u32
                },
            });
            self.bytes_since_last_index_entry = 0;
        }
        self.bytes_since_last_index_entry += header.size_bytes() as u64;
        if header.max_timestamp > self.max_timestamp_ms {
            self.max_timestamp_ms = header.max_timestamp;
            self.offset_of_max_timestamp = header.last_offset();
        }
        assert!(header.next_offset() > self.next_offset, "offsets in a segment only grow");
        self.next_offset = header.next_offset();
        self.size_bytes = self.size_bytes.max(position + header.size_bytes() as u64);
        self.indexes_dirty = true;
    }

    /// Appends `bytes` (whole, validated batches whose headers are `headers`) at the segment end.
    ///
    /// The write is a plain pwrite(2) into the page cache on the shard's own thread, not an
    /// io_uring write: ext4 punts buffered io_uring writes to io-wq worker threads, and the wake-ups
    /// cost more than the copy (ARCHITECTURE.md has the figures). It can block only when the kernel
    /// throttles dirty pages, which stall detection reports.
    pub async fn append(&mut self, pieces: &[&[u8]], headers: &[BatchHeader], now_ms: i64) -> Result<()> {
        let position = self.size_bytes;
        let length_bytes: u64 = pieces.iter().map(|p| p.len() as u64).sum();
        let file = self.file.get().await?;
        if let Err(e) = pwritev_all(file.as_raw_fd(), pieces, position) {
            // A short write (disk full): cut back so the file holds whole batches only.
            let _ = file.truncate(position).await;
            return Err(StorageError::io(format!("appending to {}", self.path().display()), e));
        }
        let mut batch_position = position;
        for header in headers {
            self.index_batch(header, batch_position);
            batch_position += header.size_bytes() as u64;
        }
        debug_assert_eq!(batch_position, position + length_bytes);
        self.first_append_at_ms.get_or_insert(now_ms);
        Ok(())
    }

    /// Reads the fixed header of the batch at `position`; None if the bytes there cannot be one.
    pub async fn read_header_at(&self, position: u64) -> Result<Option<BatchHeader>> {
        if position + BATCH_HEADER_SIZE_BYTES as u64 > self.size_bytes {
            return Ok(None);
        }
        let bytes = self
            .file
            .get()
            .await?
            .read_at(position, BATCH_HEADER_SIZE_BYTES)
            .await
            .map_err(io_error(format!("reading a header in {}", self.path().display())))?;
        if bytes.len() < BATCH_HEADER_SIZE_BYTES {
            return Ok(None);
        }
        Ok(BatchHeader::parse(&bytes).ok())
    }

    /// Position and header of the batch holding `offset` (or the first batch after it, if a gap
    /// left by compaction holds it). None if the segment ends before `offset`.
    pub async fn find_batch(&self, offset: i64, size_limit_bytes: u64) -> Result<Option<(u64, BatchHeader)>> {
        let relative = (offset - self.base_offset).max(0) as u32;
        let mut position = self.offset_index.lookup(relative).map(|e| e.position as u64).unwrap_or(0);
        let end = size_limit_bytes.min(self.size_bytes);
        while position < end {
            let Some(header) = self.read_header_at(position).await? else { return Ok(None) };
            if header.last_offset() >= offset {
                return Ok(Some((position, header)));
            }
            position += header.size_bytes() as u64;
        }
        Ok(None)
    }

    /// The whole batch at `position`, for timestamp lookups that walk records.
    pub async fn read_batch(&self, position: u64, header: &BatchHeader) -> Result<Vec<u8>> {
        FileSlice {
            file: self.file.clone(),
            open: Some(self.file.get().await?),
            position,
            length_bytes: header.size_bytes() as u64,
            first_offset: header.base_offset,
            last_offset: header.last_offset(),
        }
        .read_bytes()
        .await
    }

    /// A slice of this segment's file (no I/O); it reopens the file to read if it is closed.
    pub fn slice(&self, position: u64, length_bytes: u64, first_offset: i64, last_offset: i64) -> FileSlice {
        debug_assert!(position + length_bytes <= self.size_bytes, "a slice lies within the segment");
        FileSlice { file: self.file.clone(), open: self.file.current(), position, length_bytes, first_offset, last_offset }
    }

    /// A slice holding the file open (a fetch's: it becomes a `FileRegion`).
    pub async fn open_slice(&self, position: u64, length_bytes: u64, first_offset: i64, last_offset: i64) -> Result<FileSlice> {
        let open = self.file.get().await?;
        Ok(FileSlice { open: Some(open), ..self.slice(position, length_bytes, first_offset, last_offset) })
    }

    /// Makes the log bytes durable (fdatasync of the log file only).
    pub async fn sync_data(&mut self) -> Result<()> {
        self.file.get().await?.fdatasync().await.map_err(io_error(format!("fdatasync {}", self.path().display())))
    }

    /// Makes the log bytes durable and writes both index files (with a final time index entry for
    /// the segment's max timestamp, as Kafka does when a segment becomes inactive).
    pub async fn flush(&mut self) -> Result<()> {
        self.sync_data().await?;
        self.write_indexes_if_dirty().await
    }

    /// A rolled (closed) segment's flush, to run in the background without the log's lock, as
    /// Kafka's `flush-log` task after a roll: the segment is never appended to again, so its
    /// data and final indexes can be made durable while appends go on in the next one. The
    /// indexes stay marked dirty here: a later `write_indexes_if_dirty` writes the same bytes.
    pub fn background_flush(&mut self) -> BackgroundFlush {
        self.push_final_time_index_entry();
        let [log_path, index_path, time_index_path, txn_index_path] = self.file_paths();
        BackgroundFlush {
            file: self.file.clone(),
            log_path,
            index_path,
            index_bytes: self.offset_index.encode(),
            time_index_path,
            time_index_bytes: self.time_index.encode(),
            txn_index: self.txn_index_to_write().then(|| (txn_index_path, self.txn_index.encode())),
        }
    }

    fn push_final_time_index_entry(&mut self) {
        if self.max_timestamp_ms >= 0 {
            self.time_index.maybe_push(TimeEntry {
                timestamp_ms: self.max_timestamp_ms,
                relative_offset: (self.offset_of_max_timestamp - self.base_offset) as u32,
            });
        }
    }

    /// Writes the index files if they changed since last written (durably: a clean start
    /// trusts them).
    pub async fn write_indexes_if_dirty(&mut self) -> Result<()> {
        if self.indexes_dirty {
            self.push_final_time_index_entry();
            let [_, index, time_index, txn_index] = self.file_paths();
            write_whole_file(&index, self.offset_index.encode()).await?;
            write_whole_file(&time_index, self.time_index.encode()).await?;
            if self.txn_index_to_write() {
                write_whole_file(&txn_index, self.txn_index.encode()).await?;
            }
            self.indexes_dirty = false;
        }
        Ok(())
    }

    /// Whether the `.txnindex` is written (from its first entry on: most segments never have one,
    /// and a file for each would cost an inode), noting that it will exist.
    fn txn_index_to_write(&mut self) -> bool {
        self.txn_index_file_exists |= !self.txn_index.is_empty();
        self.txn_index_file_exists
    }

    /// Deletes the segment as Kafka does, without blocking the shard (see `file_deletion`): its
    /// files are renamed to `.deleted` now and removed after `delay_ms`, once no `FileSlice` or
    /// `FileRegion` of a fetch in flight holds them any more (they stay readable until then).
    pub async fn delete(self, delay_ms: u64) -> Result<()> {
        let (paths, held) = self.into_held();
        let retired = file_deletion::retire_files(paths, vec![held]).await?;
        file_deletion::delete_later(retired, delay_ms);
        Ok(())
    }

    /// The segment's file paths and open handles, for a deletion (the segment is gone after).
    pub fn into_held(self) -> (Vec<PathBuf>, HeldFile) {
        let paths = self.file_paths().to_vec();
        (paths, HeldFile::new(self.file.clone()))
    }

    /// Clones of the segment's open handles (a whole-directory deletion holds them while the
    /// segment itself lives on until its log is dropped).
    pub fn held(&self) -> HeldFile {
        HeldFile::new(self.file.clone())
    }
}

/// The file's modification time, by fstat on its open descriptor: the inode is in memory, so
/// unlike a stat by path this never waits for the disk on the shard.
/// See `Segment::background_flush`.
pub struct BackgroundFlush {
    file: Rc<SegmentFile>,
    log_path: PathBuf,
    index_path: PathBuf,
    index_bytes: Vec<u8>,
    time_index_path: PathBuf,
    time_index_bytes: Vec<u8>,
    txn_index: Option<(PathBuf, Vec<u8>)>,
}

impl BackgroundFlush {
    /// fdatasync of the log (io_uring: the kernel's worker waits, not the shard), then both
    /// index files written durably.
    pub async fn run(self) -> Result<()> {
        // A rolled segment may have been closed by the cache since: fdatasync of a new
        // descriptor syncs the same inode.
        self.file.get().await?.fdatasync().await.map_err(io_error(format!("fdatasync {}", self.log_path.display())))?;
        write_whole_file(&self.index_path, self.index_bytes).await?;
        write_whole_file(&self.time_index_path, self.time_index_bytes).await?;
        if let Some((path, bytes)) = self.txn_index {
            write_whole_file(&path, bytes).await?;
        }
        Ok(())
    }
}

fn file_mtime_ms(fd: RawFd) -> i64 {
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `fd` is open for the call; fstat fills `stat` when it returns 0.
    if unsafe { libc::fstat(fd, stat.as_mut_ptr()) } != 0 {
        return 0;
    }
    // SAFETY: fstat succeeded.
    let stat = unsafe { stat.assume_init() };
    stat.st_mtime * 1000 + stat.st_mtime_nsec / 1_000_000
}

/// Reads a small file whole; None if it does not exist.
async fn read_whole_file(path: &Path) -> Result<Option<Vec<u8>>> {
    let file = match BufferedFile::open(path).await {
        Ok(file) => file,
        Err(e) => {
            let e = std::io::Error::from(e);
            if e.kind() == std::io::ErrorKind::NotFound {
                return Ok(None);
            }
            return Err(StorageError::io(format!("opening {}", path.display()), e));
        }
    };
    let size = file.file_size().await.map_err(io_error(format!("sizing {}", path.display())))?;
    let bytes = file
        .read_at(0, size as usize)
        .await
        .map_err(io_error(format!("reading {}", path.display())))?;
    let bytes = bytes.to_vec();
    let _ = file.close().await;
    Ok(Some(bytes))
}

/// Writes a small file whole with `bytes`, durably, in place: the file is not truncated first
/// (that would free its blocks on the shard, see `file_deletion`), only cut at the end when it
/// was longer. Not atomic: for files a crash may not leave half-written, `file_deletion::replace_file`.
pub(crate) async fn write_whole_file(path: &Path, bytes: Vec<u8>) -> Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .buffered_open(path)
        .await
        .map_err(io_error(format!("creating {}", path.display())))?;
    let old_size = file.file_size().await.map_err(io_error(format!("sizing {}", path.display())))?;
    let length = bytes.len();
    if length > 0 {
        let written = file.write_at(bytes, 0).await.map_err(io_error(format!("writing {}", path.display())))?;
        if written != length {
            return Err(StorageError::io(
                format!("writing {}", path.display()),
                std::io::Error::new(std::io::ErrorKind::WriteZero, "short write"),
            ));
        }
    }
    if old_size > length as u64 {
        // glommio truncates on its blocking thread.
        file.truncate(length as u64).await.map_err(io_error(format!("truncating {}", path.display())))?;
    }
    file.fdatasync().await.map_err(io_error(format!("fdatasync {}", path.display())))?;
    file.close().await.map_err(io_error(format!("closing {}", path.display())))?;
    Ok(())
}

/// Writes `pieces` back to back at `position` with pwritev, retrying short writes and EINTR.
pub fn pwritev_all(fd: RawFd, pieces: &[&[u8]], mut position: u64) -> std::io::Result<()> {
    /// Below the kernel's IOV_MAX (1024).
    const MAX_PIECES_PER_CALL: usize = 512;
    let mut pieces: Vec<&[u8]> = pieces.iter().copied().filter(|p| !p.is_empty()).collect();
    let mut first = 0;
    while first < pieces.len() {
        let batch = &pieces[first..pieces.len().min(first + MAX_PIECES_PER_CALL)];
        let iovecs: Vec<libc::iovec> =
            batch.iter().map(|p| libc::iovec { iov_base: p.as_ptr() as *mut libc::c_void, iov_len: p.len() }).collect();
        // SAFETY: every iovec points into a live slice of `pieces`; the fd is owned by an open file.
        let written = unsafe { libc::pwritev(fd, iovecs.as_ptr(), iovecs.len() as libc::c_int, position as libc::off_t) };
        if written < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        if written == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::WriteZero, "pwritev wrote nothing"));
        }
        position += written as u64;
        let mut written = written as usize;
        while written > 0 {
            let piece = pieces[first];
            if written >= piece.len() {
                written -= piece.len();
                first += 1;
            } else {
                pieces[first] = &piece[written..];
                written = 0;
            }
        }
    }
    Ok(())
}

/// Writes all of `bytes` at `position`, retrying short writes and EINTR (the storage bench's raw
/// baseline: a single-piece pwritev is the same kernel path as pwrite).
pub fn pwrite_all(fd: RawFd, bytes: &[u8], position: u64) -> std::io::Result<()> {
    pwritev_all(fd, &[bytes], position)
}
