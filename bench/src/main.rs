//! `bench`: measures Kafka-API brokers side by side through librdkafka (the client behind kcat
//! and rdkafka_performance), so every broker is driven by the same well-known client.
//!
//! ```text
//! bench --target ours=127.0.0.1:9092,pid=$(pgrep -n broker) --target kafka=127.0.0.1:9093 \
//!       --workload produce-1k --workload consume-1k --rounds 3 --ceiling
//! ```
//! Prints a table (median [min-max] per target, ratio to the first target), and writes
//! `bench.json` and `bench.svg` into `--out`.
//!
//! Soak (is the tail steady over half an hour, with retention deleting segments meanwhile?):
//!
//! ```text
//! taskset -c 1 bench --target ours=127.0.0.1:9092,pid=$(pgrep -n broker) --soak-seconds 1800 \
//!       --window-seconds 30 --rate 50000 --message-size-bytes 1024 \
//!       --topic-config segment.bytes=16777216 --topic-config retention.bytes=67108864
//! ```
//! runs the e2e-latency workload at its fixed rate for the whole time (one round by default),
//! keeps its latency per window as well as overall, and samples the broker's shard threads every
//! millisecond for D state (uninterruptible sleep: the whole shard waits), with the kernel stacks
//! they slept in (dstate.rs). Prints a line per window (count, p50, p99, p99.9, max, D samples) and
//! writes `soak.csv` and `soak.svg` beside `bench.json`. `--dstate` samples D state in ordinary
//! runs too. `bench/tools/retention_tail.sh` compares brokers with and without retention this way;
//! `bench/tools/dstate_perf.sh` counts the same sleeps with perf (every switch, not samples).

mod ceiling;
mod clients;
mod consume;
mod dstate;
mod monitor;
mod plot;
mod process_usage;
mod produce;
mod report;
mod runner;
mod soak;
mod target;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use serde::Serialize;

use crate::target::Target;
use crate::workload::{KeyDistribution, Workload, PRESETS};

#[derive(Parser, Debug)]
#[command(name = "bench", about = "Measures Kafka-API brokers side by side (throughput, latency, broker CPU and memory)")]
struct Args {
    /// A broker: name=host:port[,host:port...][,pid=PID[+PID...]] (repeatable; the first is the
    /// reference for ratios). With pid, the broker's CPU-seconds per GB and peak RSS are read
    /// from /proc; with several (pid=PID+PID+PID, a local cluster) they are summed.
    #[arg(long = "target", value_parser = Target::parse)]
    targets: Vec<Target>,
    /// Workload presets, run in this order each round: produce-1k, consume-1k, e2e-latency, acks-all,
    /// idempotent-1k, transactional-1k [default: produce-1k consume-1k; e2e-latency with
    /// --soak-seconds; produce-1k idempotent-1k transactional-1k with --transactional-records].
    #[arg(long = "workload")]
    workloads: Vec<String>,
    /// Rounds; each round runs every target through every workload (A B A B ...) [default: 3; 1
    /// with --soak-seconds].
    #[arg(long)]
    rounds: Option<usize>,
    /// Also measure the loopback TCP and disk write ceilings each round, in the same run.
    #[arg(long)]
    ceiling: bool,
    /// Where the disk ceiling writes (put it on the brokers' disk).
    #[arg(long, default_value = ".")]
    ceiling_dir: PathBuf,
    /// CPUs for the ceiling's two ends, BROKER,CLIENT (e.g. 0,1): pin them as the broker and
    /// this tool are pinned, so the ceiling pays the same cross-core costs. Unpinned if absent.
    #[arg(long, value_parser = parse_cpu_pair)]
    ceiling_cpus: Option<ceiling::CeilingCpus>,
    /// Seconds each ceiling measurement lasts.
    #[arg(long, default_value_t = 3.0)]
    ceiling_seconds: f64,
    /// Directory for bench.json and bench.svg (and a soak's soak.csv and soak.svg).
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// Leave the run's topics on the brokers (they are deleted after each round otherwise).
    #[arg(long)]
    keep_topics: bool,
    /// During end-to-end runs, also read this existing topic (TOPIC:PARTITIONS) from its
    /// beginning as fast as possible: a catch-up consumer competing with the latency workload.
    #[arg(long, value_parser = parse_catch_up)]
    catch_up_topic: Option<(String, i32)>,
    /// Run the catch-up consumer at normal CPU priority. By default its threads run at
    /// SCHED_IDLE, taking only the CPU the latency clients leave: when this tool shares a core
    /// with them (a 2-core box), a catch-up consumer at full priority saturates that core and the
    /// latency measured is this tool's own queueing, not the broker's.
    #[arg(long)]
    catch_up_normal_priority: bool,
    /// Cap the catch-up consumer's read rate, in MB/s (0: as fast as it can).
    #[arg(long, default_value_t = 0)]
    catch_up_mb_per_second: u64,
    /// librdkafka settings for the catch-up consumer only, key=value (repeatable), applied after
    /// `--client-config`. The default bounds its socket receive buffer: the kernel otherwise
    /// grows it to megabytes, and on a box where the catch-up consumer shares a core with the
    /// latency clients each of its receive calls then copies megabytes in one kernel call, which
    /// this VM's kernel (PREEMPT_NONE) does not interrupt for the latency clients' threads; the
    /// latency measured is then this tool's, not the broker's (tuning.md has the figures). Pass
    /// `socket.receive.buffer.bytes=0` for the kernel's default.
    #[arg(long = "catch-up-client-config", value_parser = parse_key_value, default_value = "socket.receive.buffer.bytes=65536")]
    catch_up_client_config: Vec<(String, String)>,
    /// Drop the page cache before each end-to-end run (root), so the catch-up consumer reads
    /// cold segments from the disk.
    #[arg(long)]
    drop_caches: bool,
    /// Extra librdkafka setting for every client, key=value (repeatable), e.g. security settings.
    #[arg(long = "client-config", value_parser = parse_key_value)]
    client_config: Vec<(String, String)>,

    // Overrides of the presets' workload shape, applied to every selected workload.
    #[arg(long)]
    message_size_bytes: Option<usize>,
    #[arg(long)]
    topics: Option<usize>,
    #[arg(long)]
    partitions: Option<i32>,
    #[arg(long)]
    replication_factor: Option<i32>,
    #[arg(long)]
    producers: Option<usize>,
    #[arg(long)]
    consumers: Option<usize>,
    /// 0, 1 or all.
    #[arg(long)]
    acks: Option<String>,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long)]
    compression: Option<String>,
    #[arg(long)]
    linger_ms: Option<u64>,
    #[arg(long)]
    batch_size_bytes: Option<usize>,
    /// Messages per second over all producers; 0 is as fast as possible.
    #[arg(long)]
    rate: Option<u64>,
    #[arg(long)]
    duration_seconds: Option<f64>,
    /// Stop producing after this many messages (if reached before the duration).
    #[arg(long)]
    message_count: Option<u64>,
    #[arg(long, value_enum)]
    key_distribution: Option<KeyDistribution>,
    /// Keys over this many distinct values (with --key-distribution round-robin or random), e.g.
    /// a keyed load on a topic with --topic-config cleanup.policy=compact.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    key_space: Option<u64>,
    /// Records per transaction of the transactional workload (transactional-1k: a producer with
    /// a transactional.id, begin/produce/commit in a loop; commits/s and commit latency are
    /// reported). Without --workload, runs produce-1k (acks=1, the control), idempotent-1k
    /// (its baseline) and transactional-1k [default for transactional-1k: 100].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    transactional_records: Option<u64>,

    /// Soak: run the end-to-end workload(s) at their fixed rate for this many seconds (in place of
    /// --duration-seconds), keeping latency per --window-seconds window as well as overall and
    /// sampling the targets' shard threads for D state (targets with pid=). Writes soak.csv and
    /// soak.svg into --out and prints a line per window.
    #[arg(long, conflicts_with = "duration_seconds")]
    soak_seconds: Option<f64>,
    /// Length of a soak window.
    #[arg(long, default_value_t = 30.0)]
    window_seconds: f64,
    /// A soak's first seconds (whole windows) are left out of its "steady" percentiles: the
    /// first touch of fresh page-cache pages and the clients' start-up land there whatever the
    /// broker does. The windows and the overall figures still show them.
    #[arg(long, default_value_t = 0.0)]
    warmup_seconds: f64,
    /// A setting of every topic the run creates, key=value (repeatable), e.g.
    /// segment.bytes=16777216 and retention.bytes=67108864 so a soak's topic rolls and deletes
    /// segments while it runs (set on CreateTopics, as kafka-topics --config does).
    #[arg(long = "topic-config", value_parser = parse_key_value)]
    topic_config: Vec<(String, String)>,
    /// Sample the targets' shard threads for D state in every measured run (soaks always do).
    #[arg(long)]
    dstate: bool,
    /// How often the D-state sampler reads each shard thread's state.
    #[arg(long, default_value_t = 1.0)]
    dstate_interval_ms: f64,
    /// Threads whose name starts with this are the broker's shard threads (ours: glommio names
    /// them shard-1, shard-2, ...).
    #[arg(long, default_value = "shard")]
    shard_thread_prefix: String,
    /// Threads whose name starts with this are a shard's helpers, where sleeping is their job
    /// (ours names glommio's blocking thread shard-blocking): their D samples are counted apart.
    /// Another thread with an executor's own name counts as a helper too (the first is the
    /// executor).
    #[arg(long, default_value = "shard-blocking")]
    helper_thread_prefix: String,
}

fn parse_catch_up(text: &str) -> Result<(String, i32), String> {
    let (topic, partitions) = text.rsplit_once(':').ok_or("expected TOPIC:PARTITIONS")?;
    let partitions = partitions.parse::<i32>().map_err(|_| format!("bad partition count in {text:?}"))?;
    Ok((topic.to_string(), partitions))
}

fn parse_cpu_pair(text: &str) -> Result<ceiling::CeilingCpus, String> {
    let (broker_side, client_side) = text.split_once(',').ok_or_else(|| format!("{text:?}: expected BROKER_CPU,CLIENT_CPU"))?;
    let number = |cpu: &str| cpu.trim().parse::<usize>().map_err(|_| format!("{cpu:?} is not a CPU number"));
    Ok(ceiling::CeilingCpus { broker_side: number(broker_side)?, client_side: number(client_side)? })
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .ok_or_else(|| format!("{text:?}: expected key=value"))
}

impl Args {
    fn workload_names(&self) -> Vec<String> {
        if !self.workloads.is_empty() {
            self.workloads.clone()
        } else if self.transactional_records.is_some() {
            ["produce-1k", "idempotent-1k", "transactional-1k"].map(String::from).to_vec()
        } else if self.soak_seconds.is_some() {
            vec!["e2e-latency".to_string()]
        } else {
            vec!["produce-1k".to_string(), "consume-1k".to_string()]
        }
    }

    fn rounds(&self) -> usize {
        self.rounds.unwrap_or(if self.soak_seconds.is_some() { 1 } else { 3 })
    }

    fn workloads(&self) -> Result<Vec<Workload>, String> {
        let names = self.workload_names();
        if self.transactional_records.is_some() && !names.iter().any(|name| name == "transactional-1k") {
            return Err("--transactional-records applies to the transactional-1k workload: add --workload transactional-1k".to_string());
        }
        names
            .iter()
            .map(|name| {
                let mut workload = Workload::preset(name)
                    .ok_or_else(|| format!("unknown workload {name:?}; presets: {}", PRESETS.join(", ")))?;
                macro_rules! apply {
                    ($($field:ident <- $arg:ident),* $(,)?) => {
                        $(if let Some(value) = &self.$arg { workload.$field = value.clone(); })*
                    };
                }
                apply!(
                    message_size_bytes <- message_size_bytes,
                    topics <- topics,
                    partitions_per_topic <- partitions,
                    replication_factor <- replication_factor,
                    producers <- producers,
                    consumers <- consumers,
                    acks <- acks,
                    compression <- compression,
                    linger_ms <- linger_ms,
                    batch_size_bytes <- batch_size_bytes,
                    rate_messages_per_second <- rate,
                    duration_seconds <- duration_seconds,
                    key_distribution <- key_distribution,
                );
                if self.key_space.is_some() {
                    workload.key_space = self.key_space;
                }
                if self.message_count.is_some() {
                    workload.message_count = self.message_count;
                }
                if let (Some(records), Some(_)) = (self.transactional_records, workload.transactional_records) {
                    workload.transactional_records = Some(records);
                }
                if let Some(seconds) = self.soak_seconds {
                    if workload.kind != workload::Kind::EndToEnd {
                        return Err(format!("{name}: --soak-seconds runs end-to-end workloads only (e2e-latency)"));
                    }
                    workload.duration_seconds = seconds;
                }
                if workload.kind == workload::Kind::EndToEnd && workload.rate_messages_per_second == 0 {
                    return Err(format!("{name}: an end-to-end run needs a fixed --rate"));
                }
                if workload.topics == 0 || workload.partitions_per_topic <= 0 {
                    return Err(format!("{name}: needs at least one topic and one partition"));
                }
                Ok(workload)
            })
            .collect()
    }
}

#[derive(Serialize)]
struct Output<'a> {
    command: Vec<String>,
    started_unix_seconds: u64,
    rounds: usize,
    targets: &'a [Target],
    workloads: &'a [Workload],
    ceiling_rounds: &'a [ceiling::CeilingFigures],
    runs: &'a [report::RunRecord],
    summary: &'a [report::SummaryRow],
    ceiling_summary: Vec<(String, report::Spread)>,
    against_ceiling: &'a [report::AgainstCeiling],
    latency_curves: Vec<CurveOutput>,
    /// Soak runs' windows (also in soak.csv); the D-state figures are in `runs`.
    soak: &'a [soak::SoakRun],
}

#[derive(Serialize)]
struct CurveOutput {
    target: String,
    workload: String,
    kind: &'static str,
    /// (percentile, milliseconds)
    points: Vec<(f64, f64)>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    if args.targets.is_empty() && !args.ceiling {
        return Err("give at least one --target name=host:port (or --ceiling alone)".to_string());
    }
    let rounds = args.rounds();
    if rounds == 0 {
        return Err("--rounds must be at least 1".to_string());
    }
    if let Some(seconds) = args.soak_seconds {
        if !(args.window_seconds > 0.0 && seconds > 0.0) {
            return Err("--soak-seconds and --window-seconds must be above 0".to_string());
        }
        let windows = (seconds / args.window_seconds).ceil();
        if windows > soak::MAX_WINDOWS as f64 {
            return Err(format!("{windows} soak windows: at most {} (use longer --window-seconds)", soak::MAX_WINDOWS));
        }
    }
    if args.dstate_interval_ms <= 0.0 {
        return Err("--dstate-interval-ms must be above 0".to_string());
    }
    let workloads = if args.targets.is_empty() { Vec::new() } else { args.workloads()? };
    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let plan = runner::Plan {
        targets: args.targets.clone(),
        workloads: workloads.clone(),
        rounds,
        ceiling: args.ceiling.then(|| (args.ceiling_dir.clone(), args.ceiling_seconds, args.ceiling_cpus)),
        client_config: args.client_config.clone(),
        keep_topics: args.keep_topics,
        catch_up_topic: args.catch_up_topic.clone(),
        catch_up_idle_priority: !args.catch_up_normal_priority,
        catch_up_rate_bytes_per_second: args.catch_up_mb_per_second * 1_000_000,
        catch_up_client_config: args.catch_up_client_config.clone(),
        drop_caches: args.drop_caches,
        run_id: format!("{}-{}", started.as_secs(), std::process::id()),
        topic_config: args.topic_config.clone(),
        soak_window_seconds: args.soak_seconds.map(|_| args.window_seconds),
        soak_warmup_seconds: args.warmup_seconds,
        dstate: (args.dstate || args.soak_seconds.is_some()).then(|| dstate::Options {
            thread_prefix: args.shard_thread_prefix.clone(),
            helper_prefix: args.helper_thread_prefix.clone(),
            interval_ms: args.dstate_interval_ms,
        }),
    };
    std::fs::create_dir_all(&args.out).map_err(|error| format!("create {}: {error}", args.out.display()))?;
    let results = runner::execute(&plan)?;

    let target_names: Vec<String> = plan.targets.iter().map(|target| target.name.clone()).collect();
    let workload_names: Vec<String> = workloads.iter().map(|workload| workload.name.clone()).collect();
    let summary = report::summarize(&results.runs, &target_names, &workload_names);
    let ceiling_summary = report::summarize_ceiling(&results.ceiling_rounds);
    let max_rate: Vec<String> =
        workloads.iter().filter(|workload| workload.rate_messages_per_second == 0).map(|workload| workload.name.clone()).collect();
    let fractions = report::against_ceiling(&summary, &ceiling_summary, &max_rate);
    let table = if target_names.is_empty() {
        report::table(&[], &[String::new()], &ceiling_summary, &[], rounds)
    } else {
        report::table(&summary, &target_names, &ceiling_summary, &fractions, rounds)
    };
    for run in &results.soak_runs {
        print!("{}", soak::table(run));
    }
    println!("{table}");

    let output = Output {
        command: std::env::args().collect(),
        started_unix_seconds: started.as_secs(),
        rounds,
        targets: &plan.targets,
        workloads: &workloads,
        ceiling_rounds: &results.ceiling_rounds,
        runs: &results.runs,
        summary: &summary,
        ceiling_summary: ceiling_summary.clone(),
        against_ceiling: &fractions,
        latency_curves: results
            .curves
            .iter()
            .map(|curve| CurveOutput {
                target: curve.target.clone(),
                workload: curve.workload.clone(),
                kind: curve.kind,
                points: runner::curve_points(&curve.histogram_us),
            })
            .collect(),
        soak: &results.soak_runs,
    };
    let json_path = args.out.join("bench.json");
    let json = serde_json::to_string_pretty(&output).map_err(|error| format!("encode JSON: {error}"))?;
    std::fs::write(&json_path, json).map_err(|error| format!("write {}: {error}", json_path.display()))?;
    let svg_path = args.out.join("bench.svg");
    plot::write_svg(&svg_path, &summary, &target_names, &workload_names, &ceiling_summary, &results.curves)?;
    println!("wrote {} and {}", json_path.display(), svg_path.display());
    if !results.soak_runs.is_empty() {
        let csv_path = args.out.join("soak.csv");
        std::fs::write(&csv_path, soak::csv(&results.soak_runs)).map_err(|error| format!("write {}: {error}", csv_path.display()))?;
        let soak_svg_path = args.out.join("soak.svg");
        plot::write_soak_svg(&soak_svg_path, &results.soak_runs)?;
        println!("wrote {} and {}", csv_path.display(), soak_svg_path.display());
    }
    Ok(())
}
