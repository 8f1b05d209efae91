//! The side-by-side schedule: every round runs the ceiling (if asked), then each target in turn
//! through every workload, so targets alternate A B A B and drift in the machine's state (other
//! load, page cache, thermal) spreads over all of them rather than favouring one.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::ceiling::{self, CeilingCpus, CeilingFigures};
use crate::clients;
use crate::consume::{self, Until};
use crate::dstate::{self, DStateReport};
use crate::monitor::{Monitor, Progress};
use crate::process_usage;
use crate::produce;
use crate::report::{Figures, Percentiles, RunRecord};
use crate::soak::{SoakRun, WindowClock};
use crate::target::Target;
use crate::workload::{Kind, Workload};

/// How long an end-to-end run waits for the last records to reach its consumers.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Plan {
    pub targets: Vec<Target>,
    pub workloads: Vec<Workload>,
    pub rounds: usize,
    /// Directory for the disk ceiling, how long each ceiling measurement lasts, where it runs.
    pub ceiling: Option<(PathBuf, f64, Option<CeilingCpus>)>,
    /// librdkafka settings applied to every client.
    pub client_config: Vec<(String, String)>,
    pub keep_topics: bool,
    /// A topic (and its partition count) that a catch-up consumer reads during end-to-end runs.
    pub catch_up_topic: Option<(String, i32)>,
    /// Run the catch-up consumer's threads at SCHED_IDLE on this machine.
    pub catch_up_idle_priority: bool,
    /// Bytes per second the catch-up consumer reads at most (0: as fast as it can).
    pub catch_up_rate_bytes_per_second: u64,
    /// librdkafka settings for the catch-up consumer, after `client_config`.
    pub catch_up_client_config: Vec<(String, String)>,
    /// Drop the page cache before each end-to-end run.
    pub drop_caches: bool,
    /// Makes this run's topic names unique.
    pub run_id: String,
    /// Settings of the topics the run creates (`--topic-config`).
    pub topic_config: Vec<(String, String)>,
    /// A soak: end-to-end latency is also kept per window of this many seconds.
    pub soak_window_seconds: Option<f64>,
    /// Left out of a soak's steady percentiles (`SoakRun::steady_ms`).
    pub soak_warmup_seconds: f64,
    /// Sample the brokers' shard threads for D state during every measured run (targets with
    /// a PID only).
    pub dstate: Option<dstate::Options>,
}

/// Latency histograms merged over the rounds, for the percentile curves.
pub struct LatencyCurve {
    pub target: String,
    pub workload: String,
    /// "publish", "e2e" or "commit".
    pub kind: &'static str,
    pub histogram_us: Histogram<u64>,
}

#[derive(Default)]
pub struct Results {
    pub ceiling_rounds: Vec<CeilingFigures>,
    pub runs: Vec<RunRecord>,
    pub curves: Vec<LatencyCurve>,
    pub soak_runs: Vec<SoakRun>,
}

impl Results {
    fn add_curve(&mut self, target: &str, workload: &str, kind: &'static str, histogram: &Histogram<u64>) {
        if histogram.is_empty() {
            return;
        }
        match self.curves.iter_mut().find(|curve| curve.target == target && curve.workload == workload && curve.kind == kind) {
            Some(curve) => curve.histogram_us.add(histogram).expect("same histogram bounds"),
            None => self.curves.push(LatencyCurve {
                target: target.to_string(),
                workload: workload.to_string(),
                kind,
                histogram_us: histogram.clone(),
            }),
        }
    }
}

pub fn execute(plan: &Plan) -> Result<Results, String> {
    let mut results = Results::default();
    for round in 1..=plan.rounds {
        if let Some((dir, seconds, cpus)) = &plan.ceiling {
            eprintln!("[round {round}/{}] ceiling: loopback TCP, loopback round trip, disk write in {}", plan.rounds, dir.display());
            let figures = ceiling::measure(dir, *seconds, *cpus)?;
            eprintln!(
                "[round {round}/{}] ceiling: loopback {:.0} MB/s, disk {:.0} MB/s buffered",
                plan.rounds, figures.loopback_mb_per_second, figures.disk_buffered_write_mb_per_second
            );
            results.ceiling_rounds.push(figures);
        }
        for target in &plan.targets {
            let mut created: Vec<String> = Vec::new();
            let outcome = run_target_round(plan, round, target, &mut created, &mut results);
            if !plan.keep_topics {
                if let Err(error) = clients::delete_topics(target, &created, &plan.client_config) {
                    eprintln!("warning: could not delete the run's topics on {}: {error}", target.name);
                }
            }
            outcome?;
        }
    }
    Ok(results)
}

fn run_target_round(plan: &Plan, round: usize, target: &Target, created: &mut Vec<String>, results: &mut Results) -> Result<(), String> {
    // What the last produce run of this round wrote, for a consume run to read back.
    let mut produced: Option<(Vec<String>, Workload)> = None;
    for (index, workload) in plan.workloads.iter().enumerate() {
        let label = format!("[round {round}/{}] {} {}", plan.rounds, target.name, workload.name);
        eprintln!("{label}: {}", workload.describe());
        let new_topics = |created: &mut Vec<String>| -> Result<Vec<String>, String> {
            let names: Vec<String> = (0..workload.topics)
                .map(|topic| format!("bench-{}-{}-r{round}-w{index}-t{topic}", plan.run_id, target.topic_safe_name()))
                .collect();
            clients::create_topics(target, workload, &names, &plan.topic_config, &plan.client_config)?;
            created.extend(names.iter().cloned());
            Ok(names)
        };
        let figures = match workload.kind {
            Kind::Produce => {
                let topics = new_topics(created)?;
                let (outcome, usage) = measured(&label, target, plan.dstate.as_ref(), None, |progress| {
                    produce::produce(target, workload, &topics, progress, &plan.client_config)
                })?;
                results.add_curve(&target.name, &workload.name, "publish", &outcome.publish_latency_us);
                results.add_curve(&target.name, &workload.name, "commit", &outcome.commit_latency_us);
                produced = Some((topics, workload.clone()));
                produce_figures(&outcome, &usage)
            }
            Kind::Consume => {
                let topics = match &produced {
                    Some((topics, shape)) if same_shape(shape, workload) => topics.clone(),
                    _ => {
                        // Nothing to read back yet: fill a topic first, unmeasured.
                        let topics = new_topics(created)?;
                        eprintln!("{label}: filling the topic first (not measured)");
                        let outcome = produce::produce(target, workload, &topics, Arc::new(Progress::default()), &plan.client_config)?;
                        if outcome.errors > 0 {
                            return Err(format!("filling {topics:?}: {} errors, first: {:?}", outcome.errors, outcome.first_error));
                        }
                        topics
                    }
                };
                let (outcome, usage) = measured(&label, target, plan.dstate.as_ref(), None, |progress| {
                    consume::consume(target, workload, &topics, Until::CaughtUp, None, None, progress, &plan.client_config)
                })?;
                rates(outcome.messages, outcome.bytes, outcome.elapsed, &usage)
            }
            Kind::EndToEnd => {
                let topics = new_topics(created)?;
                end_to_end(plan, round, &label, target, workload, &topics, results)?
            }
        };
        if figures.errors > 0 {
            eprintln!("{label}: {} errors, first: {}", figures.errors, figures.first_error.as_deref().unwrap_or("?"));
        }
        results.runs.push(RunRecord { round, target: target.name.clone(), workload: workload.name.clone(), figures });
    }
    Ok(())
}

fn end_to_end(
    plan: &Plan,
    round: usize,
    label: &str,
    target: &Target,
    workload: &Workload,
    topics: &[String],
    results: &mut Results,
) -> Result<Figures, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let consumed = Arc::new(Progress::default());
    let ready = Arc::new(Barrier::new(workload.consumers.max(1) + 1));
    let windows: Option<consume::Windows> = plan.soak_window_seconds.map(|_| Arc::new(OnceLock::new()));
    let consumers = {
        let (target, workload, topics, stop, consumed, ready, windows, extra) = (
            target.clone(),
            workload.clone(),
            topics.to_vec(),
            stop.clone(),
            consumed.clone(),
            ready.clone(),
            windows.clone(),
            plan.client_config.clone(),
        );
        std::thread::spawn(move || {
            consume::consume(&target, &workload, &topics, Until::Stopped(stop), Some(ready), windows, consumed, &extra)
        })
    };
    ready.wait();
    let catch_up = match &plan.catch_up_topic {
        Some((topic, partitions)) => {
            if plan.drop_caches {
                drop_page_cache()?;
            }
            let catch_up_workload = Workload {
                partitions_per_topic: *partitions,
                consumers: 1,
                consume_rate_bytes_per_second: plan.catch_up_rate_bytes_per_second,
                ..workload.clone()
            };
            let extra: Vec<(String, String)> = plan.client_config.iter().chain(&plan.catch_up_client_config).cloned().collect();
            let (target, topics, stop, progress) = (target.clone(), vec![topic.clone()], stop.clone(), Arc::new(Progress::default()));
            let idle = plan.catch_up_idle_priority;
            Some(std::thread::spawn(move || {
                if idle {
                    // The threads librdkafka starts for this consumer inherit the policy.
                    let param = libc::sched_param { sched_priority: 0 };
                    // SAFETY: plain syscall on the calling thread with a valid parameter.
                    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
                        eprintln!("catch-up consumer: SCHED_IDLE refused: {}", std::io::Error::last_os_error());
                    }
                }
                consume::consume(&target, &catch_up_workload, &topics, Until::Stopped(stop), None, None, progress, &extra)
            }))
        }
        None => None,
    };
    // The soak's windows start as the producers do, on the consumers' clock and the sampler's.
    let clock = plan.soak_window_seconds.map(|window_seconds| WindowClock::start(window_seconds, workload.duration_seconds));
    if let (Some(windows), Some(clock)) = (&windows, &clock) {
        let _ = windows.set(clock.clone());
    }
    let produced = measured(label, target, plan.dstate.as_ref(), clock.clone(), |progress| {
        let outcome = produce::produce(target, workload, topics, progress, &plan.client_config);
        // The consumers are part of the run: the broker's CPU counts until they have it all.
        if let Ok(outcome) = &outcome {
            let deadline = Instant::now() + DRAIN_TIMEOUT;
            while consumed.messages.load(Ordering::Relaxed) < outcome.acked_messages && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        stop.store(true, Ordering::Relaxed);
        outcome
    });
    let consumer_outcome = consumers.join().map_err(|_| "consumer thread panicked".to_string())?;
    if let Some(catch_up) = catch_up {
        let read = catch_up.join().map_err(|_| "catch-up consumer thread panicked".to_string())??;
        eprintln!(
            "{label}: the catch-up consumer read {} records, {:.0} MB at {:.0} MB/s meanwhile",
            read.messages,
            read.bytes as f64 / 1e6,
            read.bytes as f64 / 1e6 / read.elapsed.as_secs_f64().max(1e-9)
        );
    }
    let (outcome, usage) = produced?;
    let consumer_outcome = consumer_outcome?;
    results.add_curve(&target.name, &workload.name, "publish", &outcome.publish_latency_us);
    results.add_curve(&target.name, &workload.name, "e2e", &consumer_outcome.end_to_end_latency_us);
    if let Some(clock) = &clock {
        results.soak_runs.push(SoakRun::new(
            &target.name,
            round,
            &workload.name,
            clock,
            &consumer_outcome.end_to_end_windows_us,
            &consumer_outcome.end_to_end_latency_us,
            usage.dstate.clone(),
        )
        .with_steady(&consumer_outcome.end_to_end_windows_us, plan.soak_warmup_seconds));
    }
    let mut figures = produce_figures(&outcome, &usage);
    figures.consumed_messages = Some(consumer_outcome.messages);
    // An acknowledged record that never reached a consumer is lost as far as the run can tell.
    let missing = outcome.acked_messages.saturating_sub(consumer_outcome.messages);
    if missing > 0 {
        figures.errors += missing;
        figures.first_error.get_or_insert_with(|| format!("{missing} acknowledged records not consumed within {DRAIN_TIMEOUT:?}"));
    }
    figures.end_to_end_latency_ms = (!consumer_outcome.end_to_end_latency_us.is_empty())
        .then(|| Percentiles::of(&consumer_outcome.end_to_end_latency_us));
    // CPU per GB: the broker moved the payload twice, in and out; the figure counts it once, as
    // OpenMessaging reports rates of the published payload.
    Ok(figures)
}

/// Writes back dirty pages, then drops the clean page cache (needs root).
fn drop_page_cache() -> Result<(), String> {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "1").map_err(|error| format!("--drop-caches: /proc/sys/vm/drop_caches: {error}"))?;
    wait_for_free_page_reporting();
    Ok(())
}

/// How much memory a VM's kernel has handed back to its host (virtio-balloon free page
/// reporting); absent on bare metal.
const FREE_PAGE_REPORTING_KIB_PATH: &str = "/sys/module/page_reporting/parameters/reported_kib";
/// Free page reporting waits about 2 s before it works on freed memory: quiet for longer than
/// that means it is done.
const FREE_PAGE_REPORTING_QUIET: Duration = Duration::from_secs(3);
const FREE_PAGE_REPORTING_TIMEOUT: Duration = Duration::from_secs(60);

/// On a VM with free page reporting, the gigabytes just dropped are handed back to the host by a
/// kernel worker over the next seconds, on whichever core it lands, in stretches of tens of
/// milliseconds that a PREEMPT_NONE kernel does not interrupt (measured on the 2-core VM: 525 ms
/// of the broker's core during the run that followed, with a single 23 ms stretch). That is the
/// measurement's own setup, not the broker: wait until the count stops moving.
fn wait_for_free_page_reporting() {
    let read = || std::fs::read_to_string(FREE_PAGE_REPORTING_KIB_PATH).ok().and_then(|text| text.trim().parse::<u64>().ok());
    let Some(first) = read() else { return };
    let started = Instant::now();
    let (mut last, mut quiet_since) = (first, Instant::now());
    while quiet_since.elapsed() < FREE_PAGE_REPORTING_QUIET && started.elapsed() < FREE_PAGE_REPORTING_TIMEOUT {
        std::thread::sleep(Duration::from_millis(250));
        let now = read().unwrap_or(last);
        if now != last {
            (last, quiet_since) = (now, Instant::now());
        }
    }
    eprintln!(
        "--drop-caches: waited {:.1} s for the kernel's free page reporting to hand {} MiB back to the host",
        started.elapsed().as_secs_f64(),
        last.saturating_sub(first) / 1024
    );
}

fn same_shape(produced: &Workload, consume: &Workload) -> bool {
    produced.message_size_bytes == consume.message_size_bytes
        && produced.topics == consume.topics
        && produced.partitions_per_topic == consume.partitions_per_topic
}

/// What a run cost beyond its own figures.
struct Usage {
    wall_seconds: f64,
    broker_cpu_seconds: Option<f64>,
    broker_peak_rss_bytes: Option<u64>,
    client_cpu_seconds: f64,
    dstate: Option<DStateReport>,
}

/// Runs `run` with the broker's CPU, memory and (with `dstate`) shard threads' D state measured
/// around it; `clock` counts D samples per soak window.
fn measured<T>(
    label: &str,
    target: &Target,
    dstate: Option<&dstate::Options>,
    clock: Option<WindowClock>,
    run: impl FnOnce(Arc<Progress>) -> Result<T, String>,
) -> Result<(T, Usage), String> {
    let progress = Arc::new(Progress::default());
    let pids = &target.pids;
    let monitor = Monitor::start(label.to_string(), progress.clone(), pids.clone());
    let sampler = dstate.filter(|_| !pids.is_empty()).map(|options| dstate::Sampler::start(options.clone(), pids.clone(), clock));
    let broker_cpu = || process_usage::processes_cpu(pids);
    let broker_cpu_start = broker_cpu();
    let client_cpu_start = process_usage::own_cpu();
    let start = Instant::now();
    let outcome = run(progress);
    let wall_seconds = start.elapsed().as_secs_f64();
    let client_cpu_seconds = (process_usage::own_cpu() - client_cpu_start).as_secs_f64();
    let broker_cpu_end = broker_cpu();
    let peak_rss_bytes = monitor.finish();
    let dstate = sampler.map(dstate::Sampler::finish);
    let broker_cpu_seconds = match (broker_cpu_start, broker_cpu_end) {
        (Some(start), Some(end)) => Some((end.saturating_sub(start)).as_secs_f64()),
        _ => None,
    };
    if !pids.is_empty() && broker_cpu_seconds.is_none() {
        eprintln!("warning: could not read /proc for {}'s pid(s) {pids:?}: no broker CPU or memory figures", target.name);
    }
    let usage = Usage {
        wall_seconds,
        broker_cpu_seconds,
        broker_peak_rss_bytes: (peak_rss_bytes > 0).then_some(peak_rss_bytes),
        client_cpu_seconds,
        dstate,
    };
    Ok((outcome?, usage))
}

fn rates(messages: u64, bytes: u64, elapsed: Duration, usage: &Usage) -> Figures {
    let seconds = elapsed.as_secs_f64().max(1e-9);
    let gigabytes = bytes as f64 / 1e9;
    Figures {
        messages,
        payload_bytes: bytes,
        elapsed_seconds: seconds,
        mb_per_second: bytes as f64 / seconds / 1e6,
        messages_per_second: messages as f64 / seconds,
        broker_cpu_seconds_per_gb: usage.broker_cpu_seconds.filter(|_| gigabytes > 0.0).map(|cpu| cpu / gigabytes),
        broker_peak_rss_mb: usage.broker_peak_rss_bytes.map(|bytes| bytes as f64 / 1e6),
        client_cpu_cores: usage.client_cpu_seconds / usage.wall_seconds.max(1e-9),
        broker_dstate: usage.dstate.clone(),
        ..Figures::default()
    }
}

fn produce_figures(outcome: &produce::ProduceOutcome, usage: &Usage) -> Figures {
    let mut figures = rates(outcome.acked_messages, outcome.acked_bytes, outcome.elapsed, usage);
    figures.errors = outcome.errors;
    figures.first_error = outcome.first_error.clone();
    figures.publish_latency_ms = (!outcome.publish_latency_us.is_empty()).then(|| Percentiles::of(&outcome.publish_latency_us));
    if !outcome.commit_latency_us.is_empty() {
        figures.commits_per_second = Some(outcome.transactions as f64 / figures.elapsed_seconds);
        figures.commit_latency_ms = Some(Percentiles::of(&outcome.commit_latency_us));
    }
    figures
}

/// (percentile, milliseconds) points of a latency curve, from p0 to the maximum.
pub fn curve_points(histogram_us: &Histogram<u64>) -> Vec<(f64, f64)> {
    const QUANTILES: &[f64] = &[0.0, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 1.0];
    QUANTILES
        .iter()
        .map(|quantile| (quantile * 100.0, histogram_us.value_at_quantile(*quantile) as f64 / 1000.0))
        .collect()
}
