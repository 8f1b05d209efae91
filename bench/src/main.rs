//! `bench`: measures Kafka-API brokers side by side through librdkafka (the client behind kcat
//! and rdkafka_performance), so every broker is driven by the same well-known client.
//!
//! ```text
//! bench --target ours=127.0.0.1:9092,pid=$(pgrep -n broker) --target kafka=127.0.0.1:9093 \
//!       --workload produce-1k --workload consume-1k --rounds 3 --ceiling
//! ```
//! Prints a table (median [min-max] per target, ratio to the first target), and writes
//! `bench.json` and `bench.svg` into `--out`.

mod ceiling;
mod clients;
mod consume;
mod monitor;
mod plot;
mod process_usage;
mod produce;
mod report;
mod runner;
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
    /// Workload presets, run in this order each round: produce-1k, consume-1k, e2e-latency, acks-all.
    #[arg(long = "workload", default_values_t = ["produce-1k".to_string(), "consume-1k".to_string()])]
    workloads: Vec<String>,
    /// Rounds; each round runs every target through every workload (A B A B ...).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
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
    /// Directory for bench.json and bench.svg.
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
    fn workloads(&self) -> Result<Vec<Workload>, String> {
        self.workloads
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
                if self.message_count.is_some() {
                    workload.message_count = self.message_count;
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
    if args.rounds == 0 {
        return Err("--rounds must be at least 1".to_string());
    }
    let workloads = if args.targets.is_empty() { Vec::new() } else { args.workloads()? };
    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let plan = runner::Plan {
        targets: args.targets.clone(),
        workloads: workloads.clone(),
        rounds: args.rounds,
        ceiling: args.ceiling.then(|| (args.ceiling_dir.clone(), args.ceiling_seconds, args.ceiling_cpus)),
        client_config: args.client_config.clone(),
        keep_topics: args.keep_topics,
        catch_up_topic: args.catch_up_topic.clone(),
        catch_up_idle_priority: !args.catch_up_normal_priority,
        catch_up_rate_bytes_per_second: args.catch_up_mb_per_second * 1_000_000,
        catch_up_client_config: args.catch_up_client_config.clone(),
        drop_caches: args.drop_caches,
        run_id: format!("{}-{}", started.as_secs(), std::process::id()),
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
        report::table(&[], &[String::new()], &ceiling_summary, &[], args.rounds)
    } else {
        report::table(&summary, &target_names, &ceiling_summary, &fractions, args.rounds)
    };
    println!("{table}");

    let output = Output {
        command: std::env::args().collect(),
        started_unix_seconds: started.as_secs(),
        rounds: args.rounds,
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
    };
    let json_path = args.out.join("bench.json");
    let json = serde_json::to_string_pretty(&output).map_err(|error| format!("encode JSON: {error}"))?;
    std::fs::write(&json_path, json).map_err(|error| format!("write {}: {error}", json_path.display()))?;
    let svg_path = args.out.join("bench.svg");
    plot::write_svg(&svg_path, &summary, &target_names, &workload_names, &ceiling_summary, &results.curves)?;
    println!("wrote {} and {}", json_path.display(), svg_path.display());
    Ok(())
}
