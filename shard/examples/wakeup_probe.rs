//! Are glommio wake-ups lost at run time? Two shards (`start_shards`, the broker's mesh), each
//! calling the other with `Router::call` in a loop for `--seconds`, with random gaps (none, a
//! few microseconds, up to 2 ms) so the callee is sometimes running, sometimes just going to
//! sleep, sometimes asleep in io_uring. No other task keeps a timer on a shard while a call is
//! outstanding, so a lost wake-up is not bounded by one: it shows as a call that takes seconds
//! or never ends. A watchdog thread reports any call outstanding for over a second and prints
//! every thread's stack with gdb (the process's own pid) once.
//!
//!   SHARD_WAKE_TICK_MS=0 cargo run --release -p shard --example wakeup_probe -- [--seconds 60]
//!       [--cpus 0,1 | --unpinned] [--one-way] [--latency-matters]
//!
//! `SHARD_WAKE_TICK_MS=0` turns off the runtime's wake ticker, so nothing bounds a loss; without
//! it the probe shows what the ticker leaves. Prints per direction: calls, latency
//! p50/p99/p99.9/max, calls >= 1, 10, 50 ms and >= 1 s; a hang says which wake-up was lost.
//!
//! Runs on this 2-vCPU VM, shards pinned to CPUs 0 and 1, shared with other agents' builds and
//! tests (load average 3-10), 90-120 s each:
//! | setting | calls each way | over 1 s | max |
//! |---|---|---|---|
//! | no ticker, two-way | 200,000 / 77,000 | 1 / 5 | 1.1 s / 2.4 s |
//! | no ticker, one-way | 116,583 | 4 | 3.2 s |
//! | no ticker, one-way, --latency-matters (answers' wake-ups forced) | 119,622 | 0 | 0.48 s |
//! | no ticker, every message also forcing the receiver's eventfd (an experiment since removed), two-way / one-way | 184,000 / 126,502 | 3 / 3 | 2.1 s / 8.3 s |
//! | 10 ms ticker (the default), two-way | 130,614 / 129,623 | 1 episode (both ways at once) | 2.7 s |
//! | 10 ms ticker (the default), one-way | 134,726 | 0 | 0.10 s |

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shard::{start_shards, Router, ShardPlacement};

static LATENCY_MATTERS: AtomicBool = AtomicBool::new(false);
static ONE_WAY: AtomicBool = AtomicBool::new(false);

struct Context {
    router: Rc<Router<Context>>,
}

/// Nanoseconds since `epoch` when the outstanding call of each direction began (0: none); the
/// number of the last call each direction sent, and the last its callee ran: on a hang they tell
/// which wake-up was lost (the request's, through the mesh channel, or the answer's, a waker
/// woken from the callee's thread).
struct Outstanding {
    epoch: Instant,
    started_ns: [AtomicU64; 2],
    sent: [AtomicU64; 2],
    served: [AtomicU64; 2],
}

fn main() {
    let mut seconds = 60u64;
    let mut placement = ShardPlacement::Pinned(vec![0, 1]);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => seconds = args.next().and_then(|s| s.parse().ok()).expect("--seconds N"),
            "--cpus" => placement = ShardPlacement::Pinned(args.next().expect("--cpus A,B").split(',').map(|c| c.parse().expect("a cpu")).collect()),
            "--unpinned" => placement = ShardPlacement::Unpinned(2),
            // The callers run in a task queue with Latency::Matters: glommio then wakes them from
            // the other thread with a forced eventfd write (SleepNotifier::notify(true)) instead
            // of one only when the executor said it sleeps. Tells the two suspects apart.
            // Only shard 0 calls; shard 1 only serves, so nothing else wakes either side and a
            // lost wake-up of either kind hangs until the watchdog's gdb interrupts the sleep.
            "--one-way" => ONE_WAY.store(true, Ordering::Release),
            "--latency-matters" => LATENCY_MATTERS.store(true, Ordering::Release),
            other => panic!("unknown argument {other}"),
        }
    }
    let outstanding = Arc::new(Outstanding {
        epoch: Instant::now(),
        started_ns: [AtomicU64::new(0), AtomicU64::new(0)],
        sent: [AtomicU64::new(0), AtomicU64::new(0)],
        served: [AtomicU64::new(0), AtomicU64::new(0)],
    });
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let (outstanding, done) = (outstanding.clone(), done.clone());
        std::thread::spawn(move || {
            let mut dumped = false;
            while !done.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(100));
                for (direction, started) in outstanding.started_ns.iter().enumerate() {
                    let started = started.load(Ordering::Acquire);
                    let now = outstanding.epoch.elapsed().as_nanos() as u64;
                    if started != 0 && now.saturating_sub(started) > 1_000_000_000 {
                        let (sent, served) = (outstanding.sent[direction].load(Ordering::Acquire), outstanding.served[direction].load(Ordering::Acquire));
                        let lost = if served == sent { "the answer's wake-up (the callee ran the call)" } else { "the request's wake-up (the callee has not run the call)" };
                        eprintln!("HANG: the call of shard {direction} has been outstanding for {} ms; call {sent}, callee ran up to {served}: lost {lost}", (now - started) / 1_000_000);
                        // gdb's attach interrupts every thread's io_uring_enter (EINTR), which ends
                        // a lost wake-up's sleep: the stacks once, a bare attach after.
                        let command = if dumped { "info threads" } else { "thread apply all bt 12" };
                        dumped = true;
                        let output = std::process::Command::new("gdb").args(["-p", &std::process::id().to_string(), "-batch", "-ex", command]).output();
                        match output {
                            Ok(output) if command != "info threads" => eprintln!("{}", String::from_utf8_lossy(&output.stdout)),
                            Ok(_) => {}
                            Err(e) => eprintln!("gdb: {e}"),
                        }
                    }
                }
            }
        })
    };
    let run_outstanding = outstanding.clone();
    start_shards(
        placement,
        |router: Rc<Router<Context>>| async move { Rc::new(Context { router }) },
        move |context: Rc<Context>| {
            let outstanding = run_outstanding.clone();
            async move {
                let probing = probe(context, outstanding, Duration::from_secs(seconds));
                if LATENCY_MATTERS.load(Ordering::Acquire) {
                    let queue = glommio::executor().create_task_queue(glommio::Shares::default(), glommio::Latency::Matters(Duration::from_millis(50)), "probe");
                    glommio::spawn_local_into(probing, queue).expect("a task queue").await
                } else {
                    probing.await
                }
            }
        },
    )
    .expect("shards");
    done.store(true, Ordering::Release);
    watchdog.join().unwrap();
}

async fn probe(context: Rc<Context>, outstanding: Arc<Outstanding>, duration: Duration) {
    let me = context.router.shard_id();
    let other = 1 - me;
    if me == 1 && ONE_WAY.load(Ordering::Acquire) {
        return;
    }
    let mut latencies_ns: Vec<u64> = Vec::new();
    let started = Instant::now();
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ me as u64;
    while started.elapsed() < duration {
        // xorshift: the gap before the next call.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        match state % 4 {
            0 => {}
            1 => glommio::yield_if_needed().await,
            2 => glommio::timer::sleep(Duration::from_micros(state % 200)).await,
            _ => glommio::timer::sleep(Duration::from_micros(state % 2_000)).await,
        }
        let call_started = Instant::now();
        let number = outstanding.sent[me].fetch_add(1, Ordering::AcqRel) + 1;
        outstanding.started_ns[me].store(outstanding.epoch.elapsed().as_nanos() as u64, Ordering::Release);
        let served = outstanding.clone();
        let answer = context
            .router
            .call(other, move |_| async move {
                served.served[me].store(number, Ordering::Release);
                me + 1
            })
            .await;
        outstanding.started_ns[me].store(0, Ordering::Release);
        assert_eq!(answer, me + 1);
        latencies_ns.push(call_started.elapsed().as_nanos() as u64);
    }
    latencies_ns.sort_unstable();
    let at = |q: f64| latencies_ns[((latencies_ns.len() as f64 * q) as usize).min(latencies_ns.len() - 1)] as f64 / 1e6;
    let over = |ms: u64| latencies_ns.iter().filter(|&&ns| ns >= ms * 1_000_000).count();
    println!(
        "shard {me} -> {other}: {} calls, p50 {:.3} p99 {:.3} p99.9 {:.3} max {:.3} ms; >= 1 ms {}, >= 10 ms {}, >= 50 ms {}, >= 1 s {}",
        latencies_ns.len(),
        at(0.5),
        at(0.99),
        at(0.999),
        at(1.0),
        over(1),
        over(10),
        over(50),
        over(1000)
    );
}
