//! A segment's open `.log` file: one descriptor per segment, plus a duplicate only while some
//! fetch is sending from it on another thread.
//!
//! Why the duplicate exists at all: glommio's file is shard-local (`Rc`, closed through the
//! shard's ring), but a fetch's bytes are sent by the connection's shard, and a deleted
//! segment's last descriptor must be closed by the `file-deleter` thread (`file_deletion`), not
//! by the shard. Both need a descriptor that is `Send`. Keeping one duplicate per segment for
//! the segment's whole life cost two descriptors per segment: 10,000 partitions took the whole
//! table (issue 21). So the duplicate is made when a `FileRegion` or a deletion asks for it and
//! shared by every holder through a weak reference here; it closes when the last region is sent.
//! Closing it is never the file's last close (the shard's own descriptor is still open), so it
//! costs no eviction on whatever thread drops it.
//!
//! Contract: `shared_fd` either returns the one live duplicate or makes a new one; so while any
//! holder has one, every new holder gets that same `Arc` (a deletion counts the holders).

use std::cell::RefCell;
use std::ops::Deref;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Weak};

use glommio::io::BufferedFile;

use crate::error::{Result, StorageError};

pub struct SegmentFile {
    file: BufferedFile,
    shared: RefCell<Weak<OwnedFd>>,
}

impl SegmentFile {
    pub fn new(file: BufferedFile) -> SegmentFile {
        SegmentFile { file, shared: RefCell::new(Weak::new()) }
    }

    /// The duplicate descriptor other threads send from (see the module comment). Fails only
    /// when the process is out of descriptors (EMFILE), which the caller answers per request.
    pub fn shared_fd(&self) -> Result<Arc<OwnedFd>> {
        if let Some(live) = self.shared.borrow().upgrade() {
            return Ok(live);
        }
        // SAFETY: the descriptor belongs to `self.file`, which is alive for this call.
        let duplicate = unsafe { BorrowedFd::borrow_raw(self.file.as_raw_fd()) }
            .try_clone_to_owned()
            .map_err(|e| StorageError::io("duplicating a segment's descriptor", e))?;
        let duplicate = Arc::new(duplicate);
        *self.shared.borrow_mut() = Arc::downgrade(&duplicate);
        Ok(duplicate)
    }

    /// Whether a duplicate is held by anyone now (a deletion waits until it is not).
    pub fn shared_fd_held(&self) -> bool {
        self.shared.borrow().strong_count() > 0
    }

    pub fn into_inner(self) -> BufferedFile {
        self.file
    }
}

impl Deref for SegmentFile {
    type Target = BufferedFile;
    fn deref(&self) -> &BufferedFile {
        &self.file
    }
}
