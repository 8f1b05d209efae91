//! Starting the shards and calling from one to another.
//!
//! A cross-shard call ships a `Send` closure to the owning shard over the channel mesh; the owner
//! runs the future it makes (with the owner's shard-local context, which never leaves its thread)
//! and sends the result back over a oneshot. Payloads travel as `Bytes`, so a produce routed to
//! another shard moves its record bytes without copying them.
//!
//! Lost wake-ups (measured with `shard/examples/wakeup_probe.rs`): glommio 0.9 loses cross-thread
//! wake-ups at run time too, not only at start. Two shards calling each other with `Router::call`
//! and random gaps of 0-2 ms, with no timer pending on either (`SHARD_WAKE_TICK_MS=0 cargo run
//! --release -p shard --example wakeup_probe -- --seconds 120`), saw 1-5 calls per run (of
//! 80,000-200,000 each way) outstanding for over a second (up to 8.3 s), both shard threads asleep
//! in io_uring_enter (`SleepableRing::sleep` -> `cq().wait(1)`, from `Reactor::wait`'s
//! `link_rings_and_sleep`), with the call queued on the callee's channel (the shared channel's
//! notification lost) or already run by the callee with its answer's waker queued for the
//! caller's thread (a foreign `Waker`'s notification lost). Nothing but gdb's attach (which
//! interrupts io_uring_enter) ended them. Not only the `should_notify` flag's gate
//! (`sys/mod.rs` `SleepNotifier::notify(false)` writes the sleeper's eventfd only when the flag
//! says it sleeps): ringing the receiving shard with a forced notification after every message
//! (a waker of a `Latency::Matters` task: `notify(true)`, an unconditional eventfd write) still
//! left calls stuck for seconds (3 in 126,502 one-way). So a write to the sleeper's eventfd itself
//! sometimes does not end its sleep: the eventfd is read by a request on glommio's latency ring,
//! and the sleeping main ring waits on a poll of the latency ring's fd (`Reactor::wait` ->
//! `link_rings_and_sleep`); the hole is in that chain (glommio's arming of the eventfd read, or
//! the kernel's (6.18) wake-up of a poll on an io_uring fd). Not found further here.
//! What usually ends such a sleep is the sleeper's own timer (a timeout on the same latency
//! ring, through the same poll): the broker's periodic timers bounded most losses before (20 ms in
//! cluster mode, the leadership checks; 50 ms standalone, the group timers). So every shard now
//! keeps a timer pending for its whole life, a ticker every `SHARD_WAKE_TICK_MS` (10 ms by
//! default; 0 turns it off, for the probe; cost: 100 timer wake-ups a second per idle shard).
//! It is a bound most of the time, not always: with it the probe saw no call over 100 ms one-way
//! (134,726 calls) but one episode of 2.7 s two-way (of 130,000 each way), both shards asleep
//! with the 10 ms timer pending, so a timer's completion was lost the same way. That points at
//! the main ring's poll of the latency ring's fd (glommio `SleepableRing::sleep`'s PollAdd, or
//! the kernel's wake-up of a poll on an io_uring fd) rather than at any one notifier. Not done:
//! what did end every stuck sleep was a signal (gdb's attach: io_uring_enter returns EINTR, which
//! glommio takes as a wake-up), so a watchdog thread interrupting a shard thread that sleeps
//! with work queued for it would bound it for certain; it needs every other syscall of a shard
//! to be safe against EINTR, which was not checked.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use futures_lite::StreamExt;
use glommio::channels::shared_channel::ConnectedSender;
use glommio::{LocalExecutorBuilder, Placement};

use crate::mesh::full_mesh;

/// Bound on calls queued from one shard to another; a full queue makes the caller wait.
const CALL_QUEUE_DEPTH: usize = 1024;
/// How often a shard's executor wakes at least, for its whole life (see the file's header, "Lost
/// wake-ups"); `SHARD_WAKE_TICK_MS` in the environment overrides it, 0 turns the ticker off.
const WAKE_TICK_MS: u64 = 10;

fn wake_tick_ms() -> u64 {
    std::env::var("SHARD_WAKE_TICK_MS").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(WAKE_TICK_MS)
}

type LocalFuture = Pin<Box<dyn Future<Output = ()>>>;
/// Work for another shard: given that shard's context, make the future to run there.
pub struct ShardCall<C>(Box<dyn FnOnce(Rc<C>) -> LocalFuture + Send>);

/// How shards are placed on CPUs.
#[derive(Debug, Clone)]
pub enum ShardPlacement {
    /// One shard per listed CPU, pinned.
    Pinned(Vec<usize>),
    /// This many shards, unpinned (tests may run more shards than cores).
    Unpinned(usize),
}

impl ShardPlacement {
    pub fn shard_count(&self) -> usize {
        match self {
            ShardPlacement::Pinned(cpus) => cpus.len(),
            ShardPlacement::Unpinned(count) => *count,
        }
    }
}

thread_local! {
    /// Calls this shard's thread sent to other shards (the broker's metrics read it on the shard).
    static CROSS_SHARD_CALLS_SENT: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many calls the calling shard has sent to other shards so far.
pub fn cross_shard_calls_sent() -> u64 {
    CROSS_SHARD_CALLS_SENT.with(std::cell::Cell::get)
}

/// A shard's handle on every other shard.
pub struct Router<C> {
    shard_id: usize,
    shard_count: usize,
    /// Indexed by shard; None at this shard's own index.
    senders: Vec<Option<ConnectedSender<ShardCall<C>>>>,
    local: std::cell::OnceCell<Rc<C>>,
}

impl<C: 'static> Router<C> {
    pub fn shard_id(&self) -> usize {
        self.shard_id
    }
    pub fn shard_count(&self) -> usize {
        self.shard_count
    }

    /// Runs `work` on shard `shard` with that shard's context and returns its result. On the
    /// calling shard itself the work runs inline, without a channel.
    pub async fn call<T, F, Fut>(&self, shard: usize, work: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(Rc<C>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        if shard == self.shard_id {
            let context = self.local.get().expect("shard context installed").clone();
            return work(context).await;
        }
        CROSS_SHARD_CALLS_SENT.with(|sent| sent.set(sent.get() + 1));
        let (reply, answer) = futures_channel::oneshot::channel();
        let call = ShardCall(Box::new(move |context: Rc<C>| -> LocalFuture {
            Box::pin(async move {
                let _ = reply.send(work(context).await);
            })
        }));
        let sender = self.senders[shard].as_ref().expect("a channel to every other shard");
        if sender.send(call).await.is_err() {
            panic!("shard {shard} stopped while shard {} still calls it", self.shard_id);
        }
        answer.await.unwrap_or_else(|_| panic!("shard {shard} dropped a call from shard {}", self.shard_id))
    }
}

/// Starts one executor per shard. On each, `make_context(router)` builds the shard-local context
/// (it may open logs, bind listeners...) and `run(context)` is the shard's main task; calls from
/// other shards are served until every shard's main task has returned. Blocks until then.
pub fn start_shards<C, M, MFut, R, RFut>(placement: ShardPlacement, make_context: M, run: R) -> Result<(), String>
where
    C: 'static,
    M: Fn(Rc<Router<C>>) -> MFut + Clone + Send + 'static,
    MFut: Future<Output = Rc<C>> + 'static,
    R: Fn(Rc<C>) -> RFut + Clone + Send + 'static,
    RFut: Future<Output = ()> + 'static,
{
    let shard_count = placement.shard_count();
    let mut meshes = full_mesh::<ShardCall<C>>(shard_count, CALL_QUEUE_DEPTH).into_iter();
    // A second mesh only to agree that every shard has finished its main task before any stops
    // serving calls (a shard that stopped early would strand calls to it).
    let mut done_meshes = full_mesh::<()>(shard_count, 1).into_iter();
    let mut handles = Vec::new();
    for index in 0..shard_count {
        let placement_for_shard = match &placement {
            ShardPlacement::Pinned(cpus) => Placement::Fixed(cpus[index]),
            ShardPlacement::Unpinned(_) => Placement::Unbound,
        };
        let (mesh, done_mesh) = (meshes.next().expect("one mesh end per shard"), done_meshes.next().expect("one end per shard"));
        let (make_context, run) = (make_context.clone(), run.clone());
        let handle = LocalExecutorBuilder::new(placement_for_shard)
            .name("shard")
            .spawn(move || async move {
                // glommio's blocking thread (one per executor: where file deletions, renames and
                // directory scans run, see storage::file_deletion) inherits this thread's name.
                // Its own name keeps tools that watch the "shard" threads (perf, the bench's
                // D-state sampler) on the shards alone.
                // For the shard's whole life a timer wakes the executor every few milliseconds.
                // glommio sometimes loses the wake-up of a shard that sleeps: at start-up (the
                // blocking thread's answer, a peer's channel connection: seen as a broker that
                // never became ready, 1 start in a few hundred with 4 shards on 2 busy cores,
                // every shard asleep in the kernel) and at run time (a cross-shard call, see the
                // file's header). A pending timer bounds the sleep, and each wake-up looks at the
                // other threads' work again.
                let tick_ms = wake_tick_ms();
                let wake_ticker = (tick_ms > 0).then(|| {
                    glommio::spawn_local(async move {
                        loop {
                            glommio::timer::sleep(std::time::Duration::from_millis(tick_ms)).await;
                        }
                    })
                });
                tracing::debug!(index, "shard starting: naming its blocking thread");
                glommio::executor().spawn_blocking(|| name_this_thread(BLOCKING_THREAD_NAME)).await;
                tracing::debug!(index, "shard starting: connecting the mesh");
                let channels = mesh.connect().await;
                let done = done_mesh.connect().await;
                tracing::debug!(index, "shard starting: making its context");
                let shard_id = index;
                let router = Rc::new(Router {
                    shard_id,
                    shard_count,
                    senders: channels.senders,
                    local: std::cell::OnceCell::new(),
                });
                let context = make_context(router.clone()).await;
                let _ = router.local.set(context.clone());
                tracing::debug!(index, "shard started");
                let mut servers = Vec::new();
                for mut stream in channels.receivers.into_iter().flatten() {
                    let context = context.clone();
                    servers.push(glommio::spawn_local(async move {
                        while let Some(ShardCall(work)) = stream.next().await {
                            glommio::spawn_local(work(context.clone())).detach();
                        }
                    }));
                }
                run(context).await;
                for sender in done.senders.iter().flatten() {
                    let _ = sender.send(()).await;
                }
                for receiver in done.receivers.iter().flatten() {
                    let _ = receiver.recv().await;
                }
                drop(servers);
                drop(wake_ticker);
            })
            .map_err(|e| format!("starting shard {index}: {e}"))?;
        handles.push(handle);
    }
    for handle in handles {
        handle.join().map_err(|e| format!("a shard failed: {e}"))?;
    }
    Ok(())
}

/// The name of each shard's glommio blocking thread (15 bytes at most: the kernel's limit).
pub const BLOCKING_THREAD_NAME: &str = "shard-blocking";

/// Sets the kernel's name (comm) of the calling thread.
fn name_this_thread(name: &str) {
    let name = std::ffi::CString::new(name).expect("a name without NUL");
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes (longer is cut).
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong, 0, 0, 0) };
}
