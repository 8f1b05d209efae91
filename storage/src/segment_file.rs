//! A segment's `.log` file and the shard's descriptor budget (issue 21).
//!
//! Descriptors are a budget, not one per segment forever: an active segment (and a cleaner's
//! segment while it carries a suffix) is *pinned*, always open; every other segment's file is
//! opened on demand and kept in a bounded per-shard cache (`log.segment.fd.cache.size`), which
//! closes the least recently used one (clock) when a new one comes in. Whoever is reading holds
//! an `Rc<OpenFile>`, so an eviction never closes a file under a fetch in flight: the
//! descriptor closes when the last holder lets go. Opens go through io_uring (`openat`) and
//! closes of evicted files through the ring too (glommio's drop), so neither blocks the shard;
//! a deleted file's last close is the `file-deleter` thread's (`file_deletion`).
//!
//! The duplicate: glommio's file is shard-local (`Rc`, closed through the shard's ring), but a
//! fetch's bytes are sent by the connection's shard, and a deleted segment's last descriptor
//! must be closed by the `file-deleter` thread, not by the shard. Both need a descriptor that
//! is `Send`. It is made when a `FileRegion` or a deletion asks for it and shared by every
//! holder through a weak reference; it closes when the last region is sent. Closing it is
//! never the file's last close (the `OpenFile` is still open), so it costs no eviction on
//! whatever thread drops it.
//!
//! Running out of descriptors (EMFILE) while opening: the cache gives back half its files and
//! the open is tried once more; if it still fails the caller gets the error, answered per
//! request (KAFKA_STORAGE_ERROR, or the copy fallback for a region), never a wait.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::ops::Deref;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak as RcWeak};
use std::sync::{Arc, Weak};

use glommio::io::{BufferedFile, OpenOptions};

use crate::error::{Result, StorageError};

/// Files in a shard's cache when the broker does not size it (storage's own tests).
const DEFAULT_CACHE_CAPACITY: usize = 1024;

/// An open descriptor of a segment file.
pub struct OpenFile {
    file: BufferedFile,
}

impl OpenFile {
    fn new(file: BufferedFile) -> OpenFile {
        OpenFile { file }
    }

    pub fn into_inner(self) -> BufferedFile {
        self.file
    }
}

impl Deref for OpenFile {
    type Target = BufferedFile;
    fn deref(&self) -> &BufferedFile {
        &self.file
    }
}

/// A segment's log file: open while pinned, else open while in the shard's cache or held.
pub struct SegmentFile {
    /// Where the file is now (the cleaner renames its segments' files).
    path: RefCell<PathBuf>,
    open: RefCell<Option<Rc<OpenFile>>>,
    /// The live duplicate, whichever `OpenFile` it was made from (one evicted since counts too):
    /// a deletion must see every region in flight.
    shared: RefCell<Weak<OwnedFd>>,
    pinned: Cell<bool>,
    /// Clock bit: used since the cache's hand last passed.
    referenced: Cell<bool>,
    /// Has an entry in the cache's ring (at most one).
    in_cache: Cell<bool>,
}

impl SegmentFile {
    /// A file just opened (or created) by the caller: pinned (always open) or in the cache.
    pub fn opened(path: PathBuf, file: BufferedFile, pinned: bool) -> Rc<SegmentFile> {
        let segment_file = Rc::new(SegmentFile {
            path: RefCell::new(path),
            open: RefCell::new(Some(Rc::new(OpenFile::new(file)))),
            shared: RefCell::new(Weak::new()),
            pinned: Cell::new(pinned),
            referenced: Cell::new(true),
            in_cache: Cell::new(false),
        });
        if !pinned {
            CACHE.with(|cache| cache.admit(&segment_file));
        }
        segment_file
    }

    /// The duplicate descriptor other threads send from (see the module comment), made from
    /// `open` (this file's) unless one is alive. Fails only when the process is out of
    /// descriptors (EMFILE), which the caller answers per request. Contract: while any holder
    /// has one, every new holder gets that same `Arc` (a deletion counts the holders).
    pub fn shared_fd(&self, open: &OpenFile) -> Result<Arc<OwnedFd>> {
        if let Some(live) = self.live_shared_fd() {
            return Ok(live);
        }
        // SAFETY: the descriptor belongs to `open.file`, which is alive for this call.
        let duplicate = unsafe { BorrowedFd::borrow_raw(open.file.as_raw_fd()) }
            .try_clone_to_owned()
            .map_err(|e| StorageError::io("duplicating a segment's descriptor", e))?;
        let duplicate = Arc::new(duplicate);
        *self.shared.borrow_mut() = Arc::downgrade(&duplicate);
        Ok(duplicate)
    }

    /// The duplicate if some region or deletion holds one now.
    pub fn live_shared_fd(&self) -> Option<Arc<OwnedFd>> {
        self.shared.borrow().upgrade()
    }

    /// The open descriptor if there is one now (no I/O).
    pub fn current(&self) -> Option<Rc<OpenFile>> {
        let open = self.open.borrow().clone();
        if open.is_some() {
            self.referenced.set(true);
        }
        open
    }

    /// The open file, opened through the cache if it is closed.
    pub async fn get(self: &Rc<Self>) -> Result<Rc<OpenFile>> {
        if let Some(open) = self.current() {
            return Ok(open);
        }
        let path = self.path.borrow().clone();
        let file = match open_rw(&path).await {
            Err(e) if is_out_of_descriptors(&e) => {
                let released = CACHE.with(DescriptorCache::release_half);
                warn_exhausted(&path, released);
                open_rw(&path).await
            }
            other => other,
        }
        .map_err(|e| StorageError::io(format!("opening {}", path.display()), e))?;
        if let Some(open) = self.current() {
            // Another task opened it while this one waited: keep theirs (ours closes on drop).
            return Ok(open);
        }
        let open = Rc::new(OpenFile::new(file));
        *self.open.borrow_mut() = Some(open.clone());
        self.referenced.set(true);
        if !self.pinned.get() {
            CACHE.with(|cache| cache.admit(self));
        }
        Ok(open)
    }

    /// Keeps the file open outside the cache's budget (the active segment).
    pub async fn pin(self: &Rc<Self>) -> Result<()> {
        self.pinned.set(true);
        self.get().await.map(drop)
    }

    /// Back under the cache's budget (a segment rolled, or a cleaned one got its final name).
    pub fn unpin(self: &Rc<Self>) {
        if self.pinned.replace(false) && self.open.borrow().is_some() {
            CACHE.with(|cache| cache.admit(self));
        }
    }

    /// The files were renamed (off the shard): a later open uses the new name.
    pub fn set_path(&self, path: PathBuf) {
        *self.path.borrow_mut() = path;
    }

    /// Forgets the open descriptor (a deletion closes it, or it closes with its last holder).
    pub fn take_open(&self) -> Option<Rc<OpenFile>> {
        self.open.borrow_mut().take()
    }
}

fn is_out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

async fn open_rw(path: &Path) -> std::io::Result<BufferedFile> {
    OpenOptions::new().read(true).write(true).buffered_open(path).await.map_err(std::io::Error::from)
}

/// Once a minute at most per shard: an operator's problem (raise `ulimit -n` or lower
/// `log.segment.fd.cache.size`), not a per-request one.
fn warn_exhausted(path: &Path, released: usize) {
    thread_local!(static LAST_WARNED: Cell<Option<std::time::Instant>> = const { Cell::new(None) });
    LAST_WARNED.with(|last| {
        if last.get().is_none_or(|at| at.elapsed().as_secs() >= 60) {
            last.set(Some(std::time::Instant::now()));
            tracing::warn!(path = %path.display(), released, "descriptor budget exhausted: closed cached segment files to open another");
        }
    });
}

/// The per-shard cache of unpinned open segment files: a clock over a ring of weak entries.
struct DescriptorCache {
    capacity: Cell<usize>,
    ring: RefCell<VecDeque<RcWeak<SegmentFile>>>,
    evictions: Cell<u64>,
}

thread_local! {
    static CACHE: DescriptorCache = DescriptorCache {
        capacity: Cell::new(DEFAULT_CACHE_CAPACITY),
        ring: RefCell::new(VecDeque::new()),
        evictions: Cell::new(0),
    };
}

impl DescriptorCache {
    fn admit(&self, file: &Rc<SegmentFile>) {
        if !file.in_cache.replace(true) {
            self.ring.borrow_mut().push_back(Rc::downgrade(file));
        }
        while self.ring.borrow().len() > self.capacity.get() {
            if !self.evict_one() {
                break;
            }
        }
    }

    /// Removes one entry (a stale one, or the first not used since the hand last passed).
    /// Bounded: two turns of the ring at most.
    fn evict_one(&self) -> bool {
        let turns = 2 * self.ring.borrow().len() + 1;
        for _ in 0..turns {
            let Some(entry) = self.ring.borrow_mut().pop_front() else { return false };
            let Some(file) = entry.upgrade() else { return true };
            if file.pinned.get() || file.open.borrow().is_none() {
                file.in_cache.set(false);
                return true;
            }
            if file.referenced.replace(false) {
                self.ring.borrow_mut().push_back(entry);
                continue;
            }
            file.in_cache.set(false);
            // Holders (fetches in flight) keep the descriptor until they let go.
            drop(file.take_open());
            self.evictions.set(self.evictions.get() + 1);
            return true;
        }
        false
    }

    /// After EMFILE: gives back half the cached files. Returns how many entries went.
    fn release_half(&self) -> usize {
        let target = self.ring.borrow().len() / 2;
        let mut released = 0;
        while self.ring.borrow().len() > target && self.evict_one() {
            released += 1;
        }
        released
    }
}

/// This shard's cache bound (`log.segment.fd.cache.size`); set once when the shard starts.
pub fn set_cache_capacity(files: usize) {
    CACHE.with(|cache| {
        cache.capacity.set(files.max(1));
        while cache.ring.borrow().len() > cache.capacity.get() && cache.evict_one() {}
    });
}

/// (entries in this shard's cache, files it closed so far).
pub fn cache_stats() -> (usize, u64) {
    CACHE.with(|cache| (cache.ring.borrow().len(), cache.evictions.get()))
}
