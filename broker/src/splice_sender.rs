//! Zero-copy sending of a response to a client socket: its framing with IORING_OP_SEND, its
//! segment bytes with io_uring SPLICE file -> pipe -> socket, the whole response as one linked
//! chain on a small io_uring private to the shard. No payload byte passes through user space,
//! and the shard never blocks: the kernel's io-wq workers do the waiting (on pages not in the
//! page cache, and on a socket whose client reads slowly). Only a chain's last operation posts a
//! completion when all goes well, so a response costs one wake-up.
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
//! `STALLED_TRANSFER_TIMEOUT_MS` (plus a second per MiB) shuts the socket down (which frees the
//! worker blocked on it). A chain names descriptors the kernel resolves only when it reaches
//! each operation, so the chain's record (not the waiting future) owns the socket duplicate, the
//! pipe, the files and the buffers until its last completion.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
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
/// Operations per linked chain: a response longer than this goes as several chains in turn.
const MAX_CHAIN_OPERATIONS: usize = 64;
/// Submission queue size: one chain per transfer in flight fits, whatever the others do, since a
/// chain is submitted as soon as it is queued.
const RING_ENTRIES: u32 = 128;
const PAGE_BYTES: usize = 4096;
/// io-wq workers per ring: [bounded (regular files), unbounded (pipes, sockets)]. Splices are
/// accounted as unbounded work (their target is a pipe or a socket).
const MAX_KERNEL_WORKERS: [u32; 2] = [2, MAX_TRANSFERS as u32];
/// Each pipe's capacity, so one linked pair moves up to this much (F_SETPIPE_SZ).
const PIPE_CAPACITY_BYTES: usize = 1 << 20;
/// A chain that has not completed by then (plus a second per MiB it sends) is a stalled consumer.
const STALLED_TRANSFER_TIMEOUT_MS: u64 = 30_000;

#[derive(Debug)]
pub enum SendError {
    /// An operation moved fewer bytes than asked: the segment file ended before the region did
    /// (truncated under the fetch), or the socket took only part.
    ShortTransfer,
    /// The client did not take the bytes within the timeout; the socket was shut down.
    Stalled,
    Io(std::io::Error),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::ShortTransfer => write!(f, "a splice or send moved fewer bytes than asked (segment truncated?)"),
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

/// One piece of a response, in sending order.
pub enum Outgoing {
    Memory(bytes::Bytes),
    File(FileRegion),
}

/// One io_uring operation of a response's chain.
enum Operation {
    /// Send `length` bytes from `buffers[index]` at `offset`.
    Send { buffer: usize, offset: usize, length: u32 },
    FileToPipe { file: usize, position: u64, length: u32 },
    PipeToSocket { length: u32 },
}

/// What a chain in flight holds: everything its operations refer to stays alive here, not in
/// the (droppable) future that waits for it, until the kernel has answered for its last one.
struct Chain {
    first_user_data: u64,
    last_user_data: u64,
    expected: Vec<u32>,
    failure: Option<(u64, i32)>,
    /// Answers the transfer, handing the pipe back when the chain left it empty.
    done: Option<oneshot::Sender<(Result<(), SendError>, Option<Pipe>)>>,
    pipe: Option<Pipe>,
    _socket: Arc<OwnedFd>,
    _files: Vec<Arc<OwnedFd>>,
    _buffers: Vec<bytes::Bytes>,
}

pub struct SpliceSender {
    ring: RefCell<IoUring>,
    /// Chains in flight, by the user_data of their last operation (a chain's operations have
    /// consecutive user_data, so a completion belongs to the first chain whose key is >= it).
    chains: RefCell<BTreeMap<u64, Chain>>,
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
            chains: RefCell::new(BTreeMap::new()),
            next_user_data: Cell::new(1),
            pipes: RefCell::new(Vec::new()),
            transfer_slots: Semaphore::new(MAX_TRANSFERS as u64),
            eventfd,
            stop_waker,
        });
        glommio::spawn_local(reap_completions(Rc::downgrade(&sender), wake)).detach();
        Ok(sender)
    }

    /// Sends `pieces` to `socket` in order, whole: bytes in memory with IORING_OP_SEND, file
    /// regions spliced through a pipe. The operations go to the kernel as linked chains of at
    /// most `MAX_CHAIN_OPERATIONS`, and only a chain's last operation (or a failed one) posts a
    /// completion (IOSQE_CQE_SKIP_SUCCESS): one wake-up per chain, not per operation. On an error
    /// the connection must be closed: part of the response may have been sent.
    pub async fn send(&self, socket: &impl AsRawFd, pieces: Vec<Outgoing>) -> Result<(), SendError> {
        let _slot = self.transfer_slots.acquire_permit(1).await.expect("the semaphore is never closed");
        // The chain uses its own duplicate of the socket, so the descriptor number it names can
        // never be closed and reused under it, even if this future is dropped mid-way.
        // SAFETY: the connection owns the socket for this call.
        let socket = unsafe { std::os::fd::BorrowedFd::borrow_raw(socket.as_raw_fd()) }.try_clone_to_owned().map_err(SendError::Io)?;
        let socket = Arc::new(socket);
        let mut guard = ShutdownOnDrop { socket: socket.clone(), armed: true };
        let mut pipe = Some(match self.pipes.borrow_mut().pop() {
            Some(pipe) => pipe,
            None => Pipe::new().map_err(SendError::Io)?,
        });
        // Unaligned file bytes may need one pipe slot (page) more than their length suggests.
        let chunk_bytes = (pipe.as_ref().unwrap().capacity_bytes - PAGE_BYTES).max(PAGE_BYTES) as u64;
        let mut buffers = Vec::new();
        let mut files = Vec::new();
        let mut operations = Vec::new();
        for piece in pieces {
            match piece {
                Outgoing::Memory(bytes) if bytes.is_empty() => {}
                Outgoing::Memory(bytes) => {
                    let mut offset = 0;
                    while offset < bytes.len() {
                        let length = (bytes.len() - offset).min(u32::MAX as usize / 2);
                        operations.push(Operation::Send { buffer: buffers.len(), offset, length: length as u32 });
                        offset += length;
                    }
                    buffers.push(bytes);
                }
                Outgoing::File(region) => {
                    let (mut position, end) = (region.position, region.position + region.length_bytes);
                    while position < end {
                        let length = (end - position).min(chunk_bytes) as u32;
                        operations.push(Operation::FileToPipe { file: files.len(), position, length });
                        operations.push(Operation::PipeToSocket { length });
                        position += length as u64;
                    }
                    files.push(region.fd);
                }
            }
        }
        let mut first = 0;
        while first < operations.len() {
            let mut last = (first + MAX_CHAIN_OPERATIONS).min(operations.len());
            if matches!(operations[last - 1], Operation::FileToPipe { .. }) {
                last -= 1; // a chain never ends with bytes left in the pipe
            }
            let chain_bytes: u64 = operations[first..last]
                .iter()
                .map(|o| match o {
                    Operation::Send { length, .. } | Operation::PipeToSocket { length } => *length as u64,
                    Operation::FileToPipe { .. } => 0,
                })
                .sum();
            let chain_pipe = pipe.take().expect("the transfer holds its pipe between chains");
            let finished = self.submit_chain(&operations[first..last], &socket, chain_pipe, &files, &buffers).map_err(SendError::Io)?;
            let timeout_ms = STALLED_TRANSFER_TIMEOUT_MS + chain_bytes / (1 << 20) * 1000;
            let timeout = async {
                glommio::timer::sleep(Duration::from_millis(timeout_ms)).await;
                None
            };
            match futures_lite::future::or(async { finished.await.ok() }, timeout).await {
                Some((Ok(()), returned)) => pipe = returned,
                Some((Err(e), _)) => return Err(e),
                None => return Err(SendError::Stalled),
            }
            first = last;
        }
        guard.armed = false;
        if let Some(pipe) = pipe {
            self.pipes.borrow_mut().push(pipe);
        }
        Ok(())
    }

    /// Queues `operations` as one linked chain and submits it; the receiver answers once the
    /// kernel is done with the chain's last operation, with the pipe if the chain left it empty.
    fn submit_chain(
        &self,
        operations: &[Operation],
        socket: &Arc<OwnedFd>,
        pipe: Pipe,
        files: &[Arc<OwnedFd>],
        buffers: &[bytes::Bytes],
    ) -> std::io::Result<oneshot::Receiver<(Result<(), SendError>, Option<Pipe>)>> {
        let (pipe_read, pipe_write) = (pipe.read.as_raw_fd(), pipe.write.as_raw_fd());
        let first_user_data = self.next_user_data.get();
        self.next_user_data.set(first_user_data + operations.len() as u64);
        let last_user_data = first_user_data + operations.len() as u64 - 1;
        let mut expected = Vec::with_capacity(operations.len());
        let mut ring = self.ring.borrow_mut();
        {
            let mut queue = ring.submission();
            assert!(queue.capacity() - queue.len() >= operations.len(), "chains are shorter than the submission queue");
            for (index, operation) in operations.iter().enumerate() {
                let (entry, length) = match operation {
                    Operation::Send { buffer, offset, length } => {
                        let start = buffers[*buffer][*offset..].as_ptr();
                        let entry = opcode::Send::new(types::Fd(socket.as_raw_fd()), start, *length)
                            .flags(libc::MSG_WAITALL | libc::MSG_NOSIGNAL)
                            .build();
                        (entry, *length)
                    }
                    Operation::FileToPipe { file, position, length } => {
                        let entry = opcode::Splice::new(types::Fd(files[*file].as_raw_fd()), *position as i64, types::Fd(pipe_write), -1, *length)
                            .flags(libc::SPLICE_F_MOVE)
                            .build();
                        (entry, *length)
                    }
                    Operation::PipeToSocket { length } => {
                        let entry = opcode::Splice::new(types::Fd(pipe_read), -1, types::Fd(socket.as_raw_fd()), -1, *length)
                            .flags(libc::SPLICE_F_MOVE)
                            .build();
                        (entry, *length)
                    }
                };
                let is_last = index + 1 == operations.len();
                let flags = if is_last { squeue::Flags::empty() } else { squeue::Flags::IO_LINK | squeue::Flags::SKIP_SUCCESS };
                expected.push(length);
                // SAFETY: everything the entry names (buffers, file and pipe descriptors, the
                // socket duplicate) is moved into the chain's record below and lives until the
                // kernel answers for the chain's last operation.
                unsafe { queue.push(&entry.flags(flags).user_data(first_user_data + index as u64)) }.expect("room checked above");
            }
        }
        let (done, finished) = oneshot::channel();
        self.chains.borrow_mut().insert(
            last_user_data,
            Chain {
                first_user_data,
                last_user_data,
                expected,
                failure: None,
                done: Some(done),
                pipe: Some(pipe),
                _socket: socket.clone(),
                _files: files.to_vec(),
                _buffers: buffers.to_vec(),
            },
        );
        if let Err(e) = ring.submit() {
            // Nothing reached the kernel: forget the chain.
            self.chains.borrow_mut().remove(&last_user_data);
            return Err(e);
        }
        Ok(finished)
    }

    fn reap(&self) {
        let mut ring = self.ring.borrow_mut();
        let mut chains = self.chains.borrow_mut();
        for completion in ring.completion() {
            let user_data = completion.user_data();
            let result = completion.result();
            // A completion before a chain's last comes only from a failed or cancelled operation.
            let Some((&key, chain)) = chains.range_mut(user_data..).next() else { continue };
            if user_data < chain.first_user_data {
                continue;
            }
            let index = (user_data - chain.first_user_data) as usize;
            let failed = result < 0 || result as u32 != chain.expected[index];
            if failed && chain.failure.map_or(true, |(first, _)| user_data < first) {
                chain.failure = Some((user_data, result));
            }
            if user_data == chain.last_user_data {
                let mut chain = chains.remove(&key).expect("found above");
                let (outcome, pipe) = match chain.failure {
                    None => (Ok(()), chain.pipe.take()),
                    // The pipe may hold bytes: it is closed, not reused.
                    Some((_, result)) if result < 0 => (Err(SendError::Io(std::io::Error::from_raw_os_error(-result))), None),
                    Some(_) => (Err(SendError::ShortTransfer), None),
                };
                if let Some(done) = chain.done.take() {
                    if let Err((_, Some(pipe))) = done.send((outcome, pipe)) {
                        self.pipes.borrow_mut().push(pipe); // the transfer went away
                    }
                }
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

/// Until a transfer ends well, dropping it (or an error) shuts the socket down, which ends the
/// chains still in flight on it (a worker blocked on a consumer that stopped reading included).
struct ShutdownOnDrop {
    socket: Arc<OwnedFd>,
    armed: bool,
}

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        if self.armed {
            // SAFETY: shutdown on a descriptor this guard keeps open.
            unsafe { libc::shutdown(self.socket.as_raw_fd(), libc::SHUT_RDWR) };
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
