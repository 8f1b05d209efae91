//! Starting the shards and calling from one to another.
//!
//! A cross-shard call ships a `Send` closure to the owning shard over the channel mesh; the owner
//! runs the future it makes (with the owner's shard-local context, which never leaves its thread)
//! and sends the result back over a oneshot. Payloads travel as `Bytes`, so a produce routed to
//! another shard moves its record bytes without copying them.
//!
//! Lost wake-ups (measured with `shard/examples/wakeup_probe.rs`): glommio 0.9 loses cross-thread
//! wake-ups at run time, not only at start. Two shards calling each other with random gaps and no
//! timer pending (cargo run --release -p shard --example wakeup_probe -- --seconds 120) saw 1-5
//! calls per 2 minutes (of about 100,000 each way) outstanding for over a second, both shard
//! threads asleep in io_uring_enter (`SleepableRing::sleep` -> `cq().wait(1)`) with the call
//! queued on the callee's channel, or run by the callee with its answer's waker queued for the
//! caller's thread: both of glommio's paths, the shared channel's and a foreign `Waker`'s, whose
//! notification (`SleepNotifier::notify(false)`) writes the sleeper's eventfd only when its
//! `should_notify` flag says it sleeps. They ended only when gdb's attach interrupted the sleep.
//! With the callers in a `Latency::Matters` task queue, whose foreign wake-ups glommio forces
//! (`notify(true)`: the eventfd is written whatever the flag), none was seen (one-way: 0 of
//! 119,622 calls over a second, against 4 of 116,583). So the loss is in the flag's protocol
//! (`sys/mod.rs` `SleepNotifier`, `sys/uring.rs` `Reactor::wait`: prepare_to_sleep, a
//! membarrier, one last look at the channels, sleep), not in the kernel's eventfd; the exact
//! hole was not found. In the broker a loss was bounded by the next timer on the sleeping shard:
//! the group timers' 50 ms tick and the 100 ms shutdown poll standalone, the 20 ms leadership
//! checks in cluster mode: a p99 tail of up to that much on a cross-shard request.
//! The fix here: every shard has a `Doorbell`, a task in a `Latency::Matters` queue doing
//! nothing; a call rings the callee's after queueing the call, and the callee rings the caller's
//! after answering, so each message also writes the receiving shard's eventfd unconditionally
//! (one eventfd write, about a microsecond, per message) and a lost flag-gated notification no
//! longer leaves a shard asleep.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

use futures_lite::StreamExt;
use glommio::channels::shared_channel::ConnectedSender;
use glommio::{LocalExecutorBuilder, Placement};

use crate::mesh::full_mesh;

/// Bound on calls queued from one shard to another; a full queue makes the caller wait.
const CALL_QUEUE_DEPTH: usize = 1024;
/// How often a starting shard's executor wakes at least (see `start_shards`).
const START_TICK_MS: u64 = 10;
/// The doorbell's task queue latency: glommio forces foreign wake-ups of a queue whose latency
/// matters; the value itself only bounds how long the doorbell's (empty) task may wait to run.
const DOORBELL_LATENCY_MS: u64 = 10;

/// Wakes a shard's executor from any thread with an unconditional eventfd write (see the file's
/// header, "Lost wake-ups"): the waker of a task in a `Latency::Matters` queue that only parks.
#[derive(Default)]
pub struct Doorbell {
    waker: Mutex<Option<Waker>>,
}

impl Doorbell {
    pub fn ring(&self) {
        if let Some(waker) = self.waker.lock().expect("the doorbell's lock is never poisoned").as_ref() {
            waker.wake_by_ref();
        }
    }

    /// The doorbell's task, on its shard for the shard's life.
    fn install(self: Arc<Doorbell>) {
        let queue = glommio::executor().create_task_queue(
            glommio::Shares::default(),
            glommio::Latency::Matters(std::time::Duration::from_millis(DOORBELL_LATENCY_MS)),
            "doorbell",
        );
        let parked = std::future::poll_fn(move |cx| {
            *self.waker.lock().expect("the doorbell's lock is never poisoned") = Some(cx.waker().clone());
            Poll::<()>::Pending
        });
        glommio::spawn_local_into(parked, queue).expect("the doorbell's task queue was just made").detach();
    }
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
    /// Every shard's doorbell, indexed by shard.
    doorbells: Arc<Vec<Arc<Doorbell>>>,
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
        let caller_doorbell = self.doorbells[self.shard_id].clone();
        let call = ShardCall(Box::new(move |context: Rc<C>| -> LocalFuture {
            Box::pin(async move {
                let _ = reply.send(work(context).await);
                caller_doorbell.ring();
            })
        }));
        let sender = self.senders[shard].as_ref().expect("a channel to every other shard");
        if sender.send(call).await.is_err() {
            panic!("shard {shard} stopped while shard {} still calls it", self.shard_id);
        }
        self.doorbells[shard].ring();
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
    let doorbells: Arc<Vec<Arc<Doorbell>>> = Arc::new((0..shard_count).map(|_| Arc::default()).collect());
    let mut handles = Vec::new();
    for index in 0..shard_count {
        let placement_for_shard = match &placement {
            ShardPlacement::Pinned(cpus) => Placement::Fixed(cpus[index]),
            ShardPlacement::Unpinned(_) => Placement::Unbound,
        };
        let (mesh, done_mesh) = (meshes.next().expect("one mesh end per shard"), done_meshes.next().expect("one end per shard"));
        let (make_context, run, doorbells) = (make_context.clone(), run.clone(), doorbells.clone());
        let handle = LocalExecutorBuilder::new(placement_for_shard)
            .name("shard")
            .spawn(move || async move {
                // glommio's blocking thread (one per executor: where file deletions, renames and
                // directory scans run, see storage::file_deletion) inherits this thread's name.
                // Its own name keeps tools that watch the "shard" threads (perf, the bench's
                // D-state sampler) on the shards alone.
                // Until the shard runs its main task (which keeps timers of its own), a timer
                // wakes the executor every few milliseconds. glommio sometimes loses the wake-up
                // of a shard that sleeps during start-up (the blocking thread's answer, a peer's
                // channel connection): seen as a broker that never became ready, 1 start in
                // a few hundred with 4 shards on 2 busy cores, every shard asleep in the kernel.
                // A pending timer bounds the sleep, and each wake-up looks at the other threads'
                // work again.
                let start_ticker = glommio::spawn_local(async {
                    loop {
                        glommio::timer::sleep(std::time::Duration::from_millis(START_TICK_MS)).await;
                    }
                });
                doorbells[index].clone().install();
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
                    doorbells,
                    local: std::cell::OnceCell::new(),
                });
                let context = make_context(router.clone()).await;
                let _ = router.local.set(context.clone());
                tracing::debug!(index, "shard started");
                drop(start_ticker);
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
