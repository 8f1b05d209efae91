//! Zero-copy sending of segment bytes to a client socket: io_uring SPLICE file -> pipe -> socket,
//! the two operations linked, on a small io_uring private to the shard. No payload byte passes
//! through user space, and the shard never blocks: the kernel's io-wq workers do the waiting (on
//! pages not in the page cache, and on a socket whose client reads slowly).
//!
//! Why not glommio: it has no public splice or sendfile (its splice lives in a private module).
//! Why not plain sendfile: glommio's sockets are blocking descriptors, and sendfile would block the
//! whole shard on a cold page or a full socket buffer. ARCHITECTURE.md has the measurements.
//!
//! Completions reach the shard through an eventfd registered with the ring. glommio cannot await
//! an eventfd (its streams use recv(), which an eventfd refuses), so one small thread per shard
//! blocks on the eventfd and writes a byte to a socketpair whose other end the shard awaits as a
//! glommio `UnixStream`. The shard then drains the completion queue itself: the ring is only ever
//! touched from the shard's thread.
//!
//! Limits: at most `MAX_TRANSFERS` transfers in flight per shard (one pipe each; others wait), at
//! most `MAX_KERNEL_WORKERS` io-wq workers per ring, and a transfer that makes no progress for
//! `STALLED_TRANSFER_TIMEOUT_MS` shuts the socket down (which frees the worker blocked on it).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_channel::oneshot;
use futures_lite::AsyncReadExt;
use glommio::net::UnixStream;
use glommio::sync::Semaphore;
use io_uring::{opcode, squeue, types, IoUring};
use storage::FileRegion;

/// Transfers in flight at once on one shard; each holds one pipe.
const MAX_TRANSFERS: usize = 16;
/// Submission queue size: two linked operations per transfer, with room to spare.
const RING_ENTRIES: u32 = 64;
/// io-wq workers per ring: [bounded (regular files), unbounded (pipes, sockets)]. Splices are
/// accounted as unbounded work (their target is a pipe or a socket).
const MAX_KERNEL_WORKERS: [u32; 2] = [2, MAX_TRANSFERS as u32];
/// Each pipe's capacity, so one linked pair moves up to this much (F_SETPIPE_SZ).
const PIPE_CAPACITY_BYTES: usize = 1 << 20;
/// A transfer step (one linked pair) that has not completed by then is a stalled consumer.
const STALLED_TRANSFER_TIMEOUT_MS: u64 = 30_000;

#[derive(Debug)]
pub enum SendError {
    /// The segment file ended before the region did (truncated under the fetch).
    FileShorterThanRegion,
    /// The client did not take the bytes within the timeout; the socket was shut down.
    Stalled,
    Io(std::io::Error),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::FileShorterThanRegion => write!(f, "segment file shorter than the region being sent"),
            SendError::Stalled => write!(f, "client took no bytes for {STALLED_TRANSFER_TIMEOUT_MS} ms"),
            SendError::Io(e) => write!(f, "{e}"),
        }
    }
}

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity_bytes: usize,
}

impl Pipe {
    fn new() -> std::io::Result<Pipe> {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded; we own both descriptors from here on.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // A smaller pipe (an unprivileged limit) still works, with more round trips.
        // SAFETY: fcntl on a descriptor we own.
        let set = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_CAPACITY_BYTES as libc::c_int) };
        // SAFETY: as above.
        let capacity_bytes = if set > 0 { set as usize } else { unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) }.max(4096) as usize };
        Ok(Pipe { read, write, capacity_bytes })
    }
}

pub struct SpliceSender {
    ring: RefCell<IoUring>,
    /// Completion slots by user_data.
    pending: RefCell<HashMap<u64, oneshot::Sender<i32>>>,
    next_user_data: Cell<u64>,
    /// Empty pipes ready for a transfer (a pipe left holding bytes is closed, never reused).
    pipes: RefCell<Vec<Pipe>>,
    transfer_slots: Semaphore,
    eventfd: Arc<OwnedFd>,
    stop_waker: Arc<AtomicBool>,
}

impl SpliceSender {
    /// Sets up the ring, its waker thread and the shard's task that reaps completions.
    pub fn start() -> std::io::Result<Rc<SpliceSender>> {
        let ring = IoUring::builder().build(RING_ENTRIES)?;
        let mut workers = MAX_KERNEL_WORKERS;
        ring.submitter().register_iowq_max_workers(&mut workers)?;
        // SAFETY: plain eventfd creation; we own the result.
        let eventfd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if eventfd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: eventfd succeeded.
        let eventfd = Arc::new(unsafe { OwnedFd::from_raw_fd(eventfd) });
        ring.submitter().register_eventfd(eventfd.as_raw_fd())?;
        let (shard_end, waker_end) = std::os::unix::net::UnixStream::pair()?;
        let stop_waker = Arc::new(AtomicBool::new(false));
        {
            let (eventfd, stop_waker) = (eventfd.clone(), stop_waker.clone());
            std::thread::Builder::new()
                .name("splice-waker".into())
                .spawn(move || forward_wakeups(&eventfd, waker_end, &stop_waker))?;
        }
        // SAFETY: the descriptor comes from a std UnixStream we give up here.
        let wake = unsafe { UnixStream::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(shard_end)) };
        let sender = Rc::new(SpliceSender {
            ring: RefCell::new(ring),
            pending: RefCell::new(HashMap::new()),
            next_user_data: Cell::new(1),
            pipes: RefCell::new(Vec::new()),
            transfer_slots: Semaphore::new(MAX_TRANSFERS as u64),
            eventfd,
            stop_waker,
        });
        glommio::spawn_local(reap_completions(Rc::downgrade(&sender), wake)).detach();
        Ok(sender)
    }

    /// Sends `region`'s bytes to `socket`, whole. On an error the connection must be closed: some
    /// of the region may have been sent.
    pub async fn send(&self, socket: RawFd, region: &FileRegion) -> Result<(), SendError> {
        if region.length_bytes == 0 {
            return Ok(());
        }
        let _slot = self.transfer_slots.acquire_permit(1).await.expect("the semaphore is never closed");
        let pipe = match self.pipes.borrow_mut().pop() {
            Some(pipe) => pipe,
            None => Pipe::new().map_err(SendError::Io)?,
        };
        // Until the transfer ends well, dropping it (or an error) shuts the socket down, which
        // unblocks any io-wq worker still writing to it; the pipe is then dropped, not reused.
        let mut guard = ShutdownOnDrop { socket, armed: true };
        let mut position = region.position;
        let mut remaining = region.length_bytes;
        while remaining > 0 {
            let chunk = remaining.min(pipe.capacity_bytes as u64) as u32;
            let into_pipe = opcode::Splice::new(types::Fd(region.fd.as_raw_fd()), position as i64, types::Fd(pipe.write.as_raw_fd()), -1, chunk)
                .flags(libc::SPLICE_F_MOVE)
                .build()
                .flags(squeue::Flags::IO_LINK);
            let more = if (chunk as u64) < remaining { libc::SPLICE_F_MORE } else { 0 };
            let into_socket = opcode::Splice::new(types::Fd(pipe.read.as_raw_fd()), -1, types::Fd(socket), -1, chunk)
                .flags(libc::SPLICE_F_MOVE | more)
                .build();
            let completions = self.submit(vec![into_pipe, into_socket]).map_err(SendError::Io)?;
            let mut results = Vec::with_capacity(2);
            for completion in completions {
                results.push(self.wait(completion).await?);
            }
            let (moved_in, moved_out) = (results[0], results[1]);
            if moved_in < 0 {
                return Err(SendError::Io(std::io::Error::from_raw_os_error(-moved_in)));
            }
            if moved_in == 0 {
                return Err(SendError::FileShorterThanRegion);
            }
            // A short first splice cancels the linked second (-ECANCELED): drain what the pipe holds.
            let mut in_pipe = moved_in as u32;
            if moved_out > 0 {
                in_pipe -= moved_out as u32;
            } else if moved_out != -libc::ECANCELED {
                return Err(SendError::Io(std::io::Error::from_raw_os_error(-moved_out)));
            }
            while in_pipe > 0 {
                let drain = opcode::Splice::new(types::Fd(pipe.read.as_raw_fd()), -1, types::Fd(socket), -1, in_pipe)
                    .flags(libc::SPLICE_F_MOVE)
                    .build();
                let completion = self.submit(vec![drain]).map_err(SendError::Io)?.pop().expect("one completion");
                let moved = self.wait(completion).await?;
                if moved <= 0 {
                    return Err(SendError::Io(std::io::Error::from_raw_os_error(-moved.min(-libc::EPIPE))));
                }
                in_pipe -= moved as u32;
            }
            position += moved_in as u64;
            remaining -= moved_in as u64;
        }
        guard.armed = false;
        self.pipes.borrow_mut().push(pipe);
        Ok(())
    }

    /// Pushes linked entries and submits them; returns one completion per entry.
    fn submit(&self, entries: Vec<squeue::Entry>) -> std::io::Result<Vec<oneshot::Receiver<i32>>> {
        let mut ring = self.ring.borrow_mut();
        let mut receivers = Vec::with_capacity(entries.len());
        {
            let mut queue = ring.submission();
            assert!(queue.capacity() - queue.len() >= entries.len(), "submission queue sized for MAX_TRANSFERS");
            for entry in entries {
                let user_data = self.next_user_data.get();
                self.next_user_data.set(user_data + 1);
                let (sender, receiver) = oneshot::channel();
                self.pending.borrow_mut().insert(user_data, sender);
                receivers.push(receiver);
                // SAFETY: the entry's descriptors stay open until it completes: the file by the
                // caller's `FileRegion`, the pipe by the transfer (or the kernel's own reference
                // if the transfer is dropped), the socket by the connection.
                unsafe { queue.push(&entry.user_data(user_data)) }.expect("room checked above");
            }
        }
        ring.submit()?;
        Ok(receivers)
    }

    async fn wait(&self, completion: oneshot::Receiver<i32>) -> Result<i32, SendError> {
        let timeout = async {
            glommio::timer::sleep(Duration::from_millis(STALLED_TRANSFER_TIMEOUT_MS)).await;
            None
        };
        match futures_lite::future::or(async { completion.await.ok() }, timeout).await {
            Some(result) => Ok(result),
            None => Err(SendError::Stalled),
        }
    }

    fn reap(&self) {
        let mut ring = self.ring.borrow_mut();
        let mut pending = self.pending.borrow_mut();
        for completion in ring.completion() {
            if let Some(slot) = pending.remove(&completion.user_data()) {
                let _ = slot.send(completion.result()); // the transfer may have gone away
            }
        }
    }
}

impl Drop for SpliceSender {
    fn drop(&mut self) {
        self.stop_waker.store(true, Ordering::Release);
        let one = 1u64.to_ne_bytes();
        // SAFETY: writing 8 bytes to an eventfd we own wakes the waker thread so it can exit.
        unsafe { libc::write(self.eventfd.as_raw_fd(), one.as_ptr().cast(), 8) };
    }
}

struct ShutdownOnDrop {
    socket: RawFd,
    armed: bool,
}

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        if self.armed {
            // SAFETY: shutdown on the connection's socket, which the connection still owns.
            unsafe { libc::shutdown(self.socket, libc::SHUT_RDWR) };
        }
    }
}

/// The waker thread: turns eventfd signals into bytes on the socketpair the shard awaits.
fn forward_wakeups(eventfd: &OwnedFd, mut to_shard: std::os::unix::net::UnixStream, stop: &AtomicBool) {
    use std::io::Write;
    let mut count = [0u8; 8];
    loop {
        // SAFETY: reading 8 bytes from an eventfd into an 8-byte buffer.
        let read = unsafe { libc::read(eventfd.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
        if stop.load(Ordering::Acquire) {
            return;
        }
        if read < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            tracing::error!(error = %std::io::Error::last_os_error(), "reading the splice ring's eventfd");
            return;
        }
        if to_shard.write_all(&[1]).is_err() {
            return; // the shard is gone
        }
    }
}

async fn reap_completions(sender: Weak<SpliceSender>, mut wake: UnixStream) {
    let mut signals = [0u8; 64];
    loop {
        // Ending here leaves every later transfer waiting: say so loudly.
        match wake.read(&mut signals).await {
            Ok(0) => return tracing::error!("the splice waker thread went away; zero-copy fetches will stall"),
            Err(e) => return tracing::error!(error = %e, "reading splice wake-ups; zero-copy fetches will stall"),
            Ok(_) => {}
        }
        match sender.upgrade() {
            Some(sender) => sender.reap(),
            None => return,
        }
    }
}
