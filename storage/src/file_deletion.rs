//! Deleting and replacing files without putting the shard thread to sleep in the kernel.
//!
//! Contract: a shard thread never unlinks a file, never renames over an existing file and never
//! closes the last descriptor of a deleted file. Each of those can evict an inode, and evicting
//! one frees its blocks: on ext4 mounted with `discard` the thread then waits for the device in D
//! state (measured: 380 such sleeps of a shard in 30 s of retention, p99.9 e2e latency x4.7; see
//! tuning.md). So, as Kafka deletes segments:
//! 1. `retire`: the files get a new name, `<name>.deleted` (a partition directory:
//!    `<dir>.<id>-delete`). A rename to an unused name evicts nothing (`RENAME_NOREPLACE` makes
//!    sure the name is unused); it still takes the journal, so it runs on glommio's blocking
//!    thread and the shard only awaits it.
//! 2. After `file.delete.delay.ms`, and once nothing holds the files (a fetch in flight keeps its
//!    `FileSlice`/`FileRegion`), a task on the shard closes the shard's own descriptor, which is
//!    never the last: the task keeps the duplicate every segment has. Then the `file-deleter`
//!    thread unlinks the files and drops the duplicate: the eviction happens there.
//! A crash between the steps leaves `.deleted` files and `-delete` directories: `Log::open` and
//! `LogDirs::remove_leftover_deletions` remove them at the next start, as Kafka does.
//!
//! `replace_file` is the same rule for checkpoint files: the new content goes to a new file
//! through io_uring, and the rename over the old one (which evicts it) runs on the blocking thread.
//!
//! Renames, checkpoint writes and directory scans use glommio's blocking thread (one per
//! executor): the library's place for syscalls that may sleep, awaited like any other I/O. The
//! removals themselves go to one `file-deleter` thread of our own (see `Deleter`), because
//! glommio's thread is serial and the shard awaits its renames while holding a partition's lock.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;


use crate::error::{Result, StorageError};
use crate::segment_file::{OpenFile, SegmentFile};

/// How long a deletion waits for fetches in flight to let go of a deleted segment's files after
/// `file.delete.delay.ms`. Past it the files are unlinked anyway (the last close may then happen
/// on the shard: logged, since it means a send stalled for this long).
const MAX_HOLDER_WAIT_MS: u64 = 10 * 60 * 1000;
/// How often a deletion looks again whether the files are still held.
const HOLDER_POLL_MS: u64 = 500;

/// Suffix of a segment file waiting for deletion (Kafka's).
pub const DELETED_SUFFIX: &str = ".deleted";
/// Suffix of a partition directory waiting for deletion (Kafka's: `<topic>-<p>.<id>-delete`).
pub const DELETED_DIR_SUFFIX: &str = "-delete";

/// One segment file handed to a deletion: the shard's file, its open descriptor if it has one
/// (a file the descriptor cache closed has none: its unlink is then its last reference) and a
/// duplicate of that descriptor, which the `file-deleter` thread closes last. The deletion waits
/// until the segment and the fetches in flight hold neither any more.
pub struct HeldFile {
    pub file: Rc<SegmentFile>,
    pub open: Option<Rc<OpenFile>>,
    /// None if the file was closed, or if the process was out of descriptors when the deletion
    /// began: the shard then closes the last descriptor itself (logged), rather than never deleting.
    pub shared_fd: Option<Arc<OwnedFd>>,
}

impl HeldFile {
    pub fn new(file: Rc<SegmentFile>) -> HeldFile {
        let open = file.current();
        let shared_fd = match &open {
            Some(open) => match file.shared_fd(open) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    tracing::warn!(error = %e, "no descriptor left to hand a deleted segment to the file deleter; the shard closes it");
                    None
                }
            },
            // Closed by the cache: only a region still in flight may hold it open.
            None => file.live_shared_fd(),
        };
        HeldFile { file, open, shared_fd }
    }

    fn held_elsewhere(&self) -> bool {
        // Every region of this file shares our duplicate (`SegmentFile::shared_fd`), so counts
        // above one mean a fetch in flight.
        Rc::strong_count(&self.file) > 1 || self.shared_fd.as_ref().is_some_and(|fd| Arc::strong_count(fd) > 1)
    }
}

/// Files renamed by `retire_*`, to be removed later by `delete_later`.
pub struct Retired {
    /// Files and directories (removed whole) under their new names.
    paths: Vec<PathBuf>,
    held: Vec<HeldFile>,
}

/// Step 1 for a segment's files: each existing path gets the `.deleted` suffix (a missing one,
/// e.g. an index never written, is skipped). Off the shard thread.
pub async fn retire_files(paths: Vec<PathBuf>, held: Vec<HeldFile>) -> Result<Retired> {
    let renamed = on_blocking_thread(move || {
        let mut renamed = Vec::with_capacity(paths.len());
        for path in paths {
            let mut name = path.as_os_str().to_owned();
            name.push(DELETED_SUFFIX);
            match rename_to_unused_name(&path, PathBuf::from(name)) {
                Ok(new_path) => renamed.push(new_path),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io(format!("renaming {} for deletion", path.display()), e)),
            }
        }
        Ok(renamed)
    })
    .await?;
    Ok(Retired { paths: renamed, held })
}

/// Step 1 for a whole partition directory: `<dir>.<id>-delete`. Off the shard thread.
pub async fn retire_dir(dir: PathBuf, held: Vec<HeldFile>) -> Result<Retired> {
    let renamed = on_blocking_thread(move || {
        let mut name = dir.as_os_str().to_owned();
        name.push(format!(".{}{DELETED_DIR_SUFFIX}", unique_id()));
        let new_path = PathBuf::from(name);
        rename_to_unused_name(&dir, new_path).map_err(|e| StorageError::io(format!("renaming {} for deletion", dir.display()), e))
    })
    .await?;
    Ok(Retired { paths: vec![renamed], held })
}

/// Step 2, as a detached task on this shard: after `delay_ms` and once nothing else holds the
/// files, closes the shard's descriptors and hands the files and the duplicates to the
/// `file-deleter` thread. Bounded: one wait of at most `delay_ms` + `MAX_HOLDER_WAIT_MS`.
pub fn delete_later(retired: Retired, delay_ms: u64) {
    glommio::spawn_local(async move {
        glommio::timer::sleep(Duration::from_millis(delay_ms)).await;
        let mut waited_ms = 0;
        while retired.held.iter().any(HeldFile::held_elsewhere) && waited_ms < MAX_HOLDER_WAIT_MS {
            glommio::timer::sleep(Duration::from_millis(HOLDER_POLL_MS)).await;
            waited_ms += HOLDER_POLL_MS;
        }
        let Retired { paths, held } = retired;
        let mut duplicates = Vec::with_capacity(held.len());
        for HeldFile { file, open, shared_fd } in held {
            match Rc::try_unwrap(file) {
                Ok(file) => drop(file.take_open()),
                Err(_) => tracing::warn!(?paths, "a deleted segment is still held after {MAX_HOLDER_WAIT_MS} ms; removing it anyway"),
            }
            // Not the file's last descriptor while `shared_fd` is open.
            if let Some(Ok(open)) = open.map(Rc::try_unwrap) {
                let _ = open.into_inner().close().await;
            }
            duplicates.extend(shared_fd);
        }
        DELETER.get_or_init(Deleter::start).remove(paths, duplicates);
    })
    .detach();
}

/// Jobs waiting for the deleter thread, at most. Past it a removal runs on the shard's glommio
/// blocking thread instead (never on the shard; only slower checkpoints meanwhile).
const DELETER_QUEUE_DEPTH: usize = 4096;

/// The process's file deleter: one thread that unlinks files whose delay is over and closes their
/// last descriptors, so the evictions (the slow part: blocks freed, discards waited for) do not
/// queue ahead of the renames and checkpoint writes each shard's glommio blocking thread serves
/// while the shard awaits them, holding a partition's lock.
struct Deleter {
    jobs: std::sync::mpsc::SyncSender<(Vec<PathBuf>, Vec<Arc<OwnedFd>>)>,
}

static DELETER: std::sync::OnceLock<Deleter> = std::sync::OnceLock::new();

impl Deleter {
    fn start() -> Deleter {
        let (jobs, queue) = std::sync::mpsc::sync_channel::<(Vec<PathBuf>, Vec<Arc<OwnedFd>>)>(DELETER_QUEUE_DEPTH);
        std::thread::Builder::new()
            .name("file-deleter".into())
            .spawn(move || {
                while let Ok((paths, duplicates)) = queue.recv() {
                    remove_now(&paths, duplicates);
                }
            })
            .expect("starting the file deleter thread");
        Deleter { jobs }
    }

    fn remove(&self, paths: Vec<PathBuf>, duplicates: Vec<Arc<OwnedFd>>) {
        if let Err(std::sync::mpsc::TrySendError::Full((paths, duplicates)) | std::sync::mpsc::TrySendError::Disconnected((paths, duplicates))) =
            self.jobs.try_send((paths, duplicates))
        {
            glommio::spawn_local(on_blocking_thread(move || remove_now(&paths, duplicates))).detach();
        }
    }
}

/// Unlinks `paths` (directories whole), then drops the duplicates: the last close of each
/// deleted file, and so its eviction, happens on the calling (blocking) thread.
fn remove_now(paths: &[PathBuf], duplicates: Vec<Arc<OwnedFd>>) {
    for path in paths {
        let removed = if path.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
        if let Err(e) = removed {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %e, "removing a deleted file");
            }
        }
    }
    drop(duplicates);
}

/// Replaces `path` with `bytes`, atomically and durably: written to `<path>.tmp` through io_uring
/// and synced, then renamed over `path` and the directory synced on the blocking thread (the
/// rename evicts the old file's inode: never on the shard).
pub async fn replace_file(path: &Path, bytes: Vec<u8>) -> Result<()> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    crate::segment::write_whole_file(&tmp, bytes).await?;
    let target = path.to_path_buf();
    on_blocking_thread(move || {
        std::fs::rename(&tmp, &target).map_err(|e| StorageError::io(format!("renaming {} over {}", tmp.display(), target.display()), e))?;
        match target.parent() {
            Some(dir) => crate::log_manager::sync_dir(dir),
            None => Ok(()),
        }
    })
    .await
}

/// Removes files on the blocking thread (leftovers found at open: `.deleted`, `.tmp`, orphaned
/// indexes). Errors are logged, not returned: a leftover that stays is harmless.
pub async fn remove_files(paths: Vec<PathBuf>) {
    if paths.is_empty() {
        return;
    }
    on_blocking_thread(move || {
        for path in paths {
            let removed = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            if let Err(e) = removed {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %e, "removing a leftover file");
                }
            }
        }
    })
    .await
}

/// Runs `work` on this executor's blocking thread and awaits it (inside a glommio executor only).
pub async fn on_blocking_thread<R: Send + 'static>(work: impl FnOnce() -> R + Send + 'static) -> R {
    glommio::executor().spawn_blocking(work).await
}

/// Renames `from` to `to`, or to `to` with a number before its suffix if `to` exists, never
/// replacing anything (RENAME_NOREPLACE). Returns the name used.
fn rename_to_unused_name(from: &Path, to: PathBuf) -> std::io::Result<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    /// Bounds the search for an unused name; each collision is a same-named earlier deletion
    /// still waiting for its delay.
    const MAX_ATTEMPTS: u32 = 1000;
    let from_c = std::ffi::CString::new(from.as_os_str().as_bytes())?;
    for attempt in 0..MAX_ATTEMPTS {
        let candidate = if attempt == 0 {
            to.clone()
        } else {
            let mut name = to.as_os_str().to_owned();
            name.push(format!(".{attempt}"));
            PathBuf::from(name)
        };
        let to_c = std::ffi::CString::new(candidate.as_os_str().as_bytes())?;
        // SAFETY: both are valid NUL-terminated paths, relative to the working directory.
        let result = unsafe {
            libc::renameat2(libc::AT_FDCWD, from_c.as_ptr(), libc::AT_FDCWD, to_c.as_ptr(), libc::RENAME_NOREPLACE)
        };
        if result == 0 {
            return Ok(candidate);
        }
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EEXIST) {
            return Err(error);
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, format!("no unused name for {}", to.display())))
}

/// Unique within this process and across restarts (time-based), for `-delete` directory names.
fn unique_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{:x}{:04x}", nanos, NEXT.fetch_add(1, Ordering::Relaxed) & 0xffff)
}

/// Whether a file name (not a path) is a leftover of an interrupted deletion or replacement.
pub fn is_leftover(name: &str) -> bool {
    name.ends_with(DELETED_SUFFIX) || name.ends_with(".tmp") || name.contains(".deleted.")
}
