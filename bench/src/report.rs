//! Figures of one run, the per-target medians and ratios over rounds, and their printed table.

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::ceiling::CeilingFigures;
use crate::dstate::DStateReport;

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
}

impl Percentiles {
    /// `histogram` holds microseconds.
    pub fn of(histogram: &Histogram<u64>) -> Percentiles {
        let ms = |micros: u64| micros as f64 / 1000.0;
        Percentiles {
            p50: ms(histogram.value_at_quantile(0.50)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p99_9: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Figures {
    pub messages: u64,
    pub payload_bytes: u64,
    pub elapsed_seconds: f64,
    /// Payload megabytes (10^6) per second: keys and framing are not counted.
    pub mb_per_second: f64,
    pub messages_per_second: f64,
    /// Records the broker refused or the client gave up on; in end-to-end runs also acknowledged
    /// records the consumers never received.
    pub errors: u64,
    pub first_error: Option<String>,
    /// End-to-end runs: records the consumers received (should equal `messages`).
    pub consumed_messages: Option<u64>,
    pub publish_latency_ms: Option<Percentiles>,
    pub end_to_end_latency_ms: Option<Percentiles>,
    /// Transactional runs: transactions committed per second, and how long each
    /// `commit_transaction()` took (the last records' flush, EndTxn).
    pub commits_per_second: Option<f64>,
    pub commit_latency_ms: Option<Percentiles>,
    /// The broker's CPU time during the run per GB of payload moved (needs its PID).
    pub broker_cpu_seconds_per_gb: Option<f64>,
    /// The broker's largest resident set sampled during the run, in MB (needs its PID).
    pub broker_peak_rss_mb: Option<f64>,
    /// This load generator's CPU time over the run's wall time: near the core count means the
    /// client, not the broker, was the limit.
    pub client_cpu_cores: f64,
    /// The broker's shard threads sampled for D state during the run (soak runs, or `--dstate`;
    /// needs its PID).
    pub broker_dstate: Option<DStateReport>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RunRecord {
    pub round: usize,
    pub target: String,
    pub workload: String,
    pub figures: Figures,
}

/// One figure read off a run, with how it is printed.
pub struct Metric {
    pub label: &'static str,
    pub value: Option<f64>,
}

pub fn metrics(figures: &Figures) -> Vec<Metric> {
    let latency = |percentiles: &Option<Percentiles>, pick: fn(&Percentiles) -> f64| percentiles.as_ref().map(pick);
    vec![
        Metric { label: "MB/s", value: Some(figures.mb_per_second) },
        Metric { label: "msgs/s", value: Some(figures.messages_per_second) },
        Metric { label: "publish p50 ms", value: latency(&figures.publish_latency_ms, |p| p.p50) },
        Metric { label: "publish p99 ms", value: latency(&figures.publish_latency_ms, |p| p.p99) },
        Metric { label: "publish p99.9 ms", value: latency(&figures.publish_latency_ms, |p| p.p99_9) },
        Metric { label: "publish max ms", value: latency(&figures.publish_latency_ms, |p| p.max) },
        Metric { label: "e2e p50 ms", value: latency(&figures.end_to_end_latency_ms, |p| p.p50) },
        Metric { label: "e2e p99 ms", value: latency(&figures.end_to_end_latency_ms, |p| p.p99) },
        Metric { label: "e2e p99.9 ms", value: latency(&figures.end_to_end_latency_ms, |p| p.p99_9) },
        Metric { label: "e2e max ms", value: latency(&figures.end_to_end_latency_ms, |p| p.max) },
        Metric { label: "commits/s", value: figures.commits_per_second },
        Metric { label: "commit p50 ms", value: latency(&figures.commit_latency_ms, |p| p.p50) },
        Metric { label: "commit p99 ms", value: latency(&figures.commit_latency_ms, |p| p.p99) },
        Metric { label: "commit p99.9 ms", value: latency(&figures.commit_latency_ms, |p| p.p99_9) },
        Metric { label: "commit max ms", value: latency(&figures.commit_latency_ms, |p| p.max) },
        Metric { label: "broker CPU-s/GB", value: figures.broker_cpu_seconds_per_gb },
        Metric { label: "broker peak RSS MB", value: figures.broker_peak_rss_mb },
        Metric { label: "shard D samples", value: figures.broker_dstate.as_ref().map(|d| d.shard_d_samples as f64) },
        Metric { label: "shard longest D ms", value: figures.broker_dstate.as_ref().map(|d| d.longest_shard_d_ms) },
        Metric { label: "helper D samples", value: figures.broker_dstate.as_ref().map(|d| d.helper_d_samples as f64) },
        Metric { label: "client CPU cores", value: Some(figures.client_cpu_cores) },
        Metric { label: "errors", value: Some(figures.errors as f64) },
    ]
}

pub fn ceiling_metrics(ceiling: &CeilingFigures) -> Vec<Metric> {
    vec![
        Metric { label: "loopback MB/s", value: Some(ceiling.loopback_mb_per_second) },
        Metric { label: "loopback CPU-s/GB", value: Some(ceiling.loopback_cpu_seconds_per_gb) },
        Metric { label: "loopback round trip p50 ms", value: Some(ceiling.loopback_round_trip_ms.p50) },
        Metric { label: "loopback round trip p99 ms", value: Some(ceiling.loopback_round_trip_ms.p99) },
        Metric { label: "loopback round trip p99.9 ms", value: Some(ceiling.loopback_round_trip_ms.p99_9) },
        Metric { label: "disk buffered write MB/s", value: Some(ceiling.disk_buffered_write_mb_per_second) },
        Metric { label: "disk durable write MB/s", value: Some(ceiling.disk_durable_write_mb_per_second) },
        Metric { label: "disk direct write MB/s", value: ceiling.disk_direct_write_mb_per_second },
    ]
}

#[derive(Clone, Debug, Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: &[f64]) -> Option<Spread> {
        if values.is_empty() {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let middle = sorted.len() / 2;
        let median = if sorted.len() % 2 == 1 { sorted[middle] } else { (sorted[middle - 1] + sorted[middle]) / 2.0 };
        Some(Spread { median, min: sorted[0], max: sorted[sorted.len() - 1] })
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct TargetSummary {
    pub target: String,
    pub spread: Spread,
    /// This target's median over the first target's median.
    pub ratio_to_first: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SummaryRow {
    pub workload: String,
    pub metric: String,
    pub targets: Vec<TargetSummary>,
}

pub fn summarize(runs: &[RunRecord], targets: &[String], workloads: &[String]) -> Vec<SummaryRow> {
    let mut rows = Vec::new();
    for workload in workloads {
        let Some(first_run) = runs.iter().find(|run| &run.workload == workload) else { continue };
        for (index, metric) in metrics(&first_run.figures).iter().enumerate() {
            let mut summaries = Vec::new();
            for target in targets {
                let values: Vec<f64> = runs
                    .iter()
                    .filter(|run| &run.workload == workload && &run.target == target)
                    .filter_map(|run| metrics(&run.figures)[index].value)
                    .collect();
                if let Some(spread) = Spread::of(&values) {
                    summaries.push(TargetSummary { target: target.clone(), spread, ratio_to_first: None });
                }
            }
            if summaries.is_empty() {
                continue;
            }
            let first_median = (summaries[0].target == targets[0]).then(|| summaries[0].spread.median);
            for summary in &mut summaries {
                summary.ratio_to_first = first_median.filter(|median| *median != 0.0).map(|median| summary.spread.median / median);
            }
            rows.push(SummaryRow { workload: workload.clone(), metric: metric.label.to_string(), targets: summaries });
        }
    }
    rows
}

pub fn summarize_ceiling(rounds: &[CeilingFigures]) -> Vec<(String, Spread)> {
    let Some(first) = rounds.first() else { return Vec::new() };
    (0..ceiling_metrics(first).len())
        .filter_map(|index| {
            let values: Vec<f64> = rounds.iter().filter_map(|round| ceiling_metrics(round)[index].value).collect();
            Spread::of(&values).map(|spread| (ceiling_metrics(first)[index].label.to_string(), spread))
        })
        .collect()
}

/// A broker figure set against the ceiling figure it is bounded by.
#[derive(Clone, Debug, Serialize)]
pub struct AgainstCeiling {
    pub workload: String,
    pub target: String,
    pub comparison: String,
    pub fraction: f64,
}

/// Throughput and CPU per GB are set against the ceiling only for `max_rate_workloads`: at a fixed
/// rate the first is the rate asked for and the second mostly the broker's idle cost; latency is
/// set against it only for fixed-rate runs, as a max-rate run's latency is the client's queue.
pub fn against_ceiling(rows: &[SummaryRow], ceiling: &[(String, Spread)], max_rate_workloads: &[String]) -> Vec<AgainstCeiling> {
    let ceiling_median = |label: &str| ceiling.iter().find(|(name, _)| name == label).map(|(_, spread)| spread.median);
    // (broker metric, ceiling metric, how it reads)
    let pairs = [
        ("MB/s", "loopback MB/s", "MB/s / loopback MB/s"),
        ("MB/s", "disk buffered write MB/s", "MB/s / disk buffered write MB/s"),
        ("broker CPU-s/GB", "loopback CPU-s/GB", "broker CPU-s/GB / loopback CPU-s/GB"),
        ("e2e p99 ms", "loopback round trip p99 ms", "e2e p99 / loopback round trip p99"),
    ];
    let mut out = Vec::new();
    for row in rows {
        for (metric, ceiling_label, comparison) in pairs {
            let max_rate = max_rate_workloads.contains(&row.workload);
            if row.metric != metric || max_rate == metric.starts_with("e2e") {
                continue;
            }
            let Some(bound) = ceiling_median(ceiling_label).filter(|bound| *bound > 0.0) else { continue };
            for target in &row.targets {
                out.push(AgainstCeiling {
                    workload: row.workload.clone(),
                    target: target.target.clone(),
                    comparison: comparison.to_string(),
                    fraction: target.spread.median / bound,
                });
            }
        }
    }
    out
}

pub fn number(value: f64) -> String {
    if value == 0.0 {
        "0".to_string()
    } else if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

/// The human table: per workload, each figure's median [min-max] per target and its ratio to the
/// first target; then the ceiling and each broker figure as a fraction of it.
pub fn table(rows: &[SummaryRow], targets: &[String], ceiling: &[(String, Spread)], fractions: &[AgainstCeiling], rounds: usize) -> String {
    let mut out = String::new();
    let column = targets.iter().map(|target| target.len() + 2).max().unwrap_or(0).max(30);
    let target_column = targets.iter().map(|target| target.len() + 2).max().unwrap_or(0).max(14);
    let mut workload = "";
    for row in rows {
        if row.workload != workload {
            workload = &row.workload;
            out.push_str(&format!("\n{workload} (median [min-max] of {rounds} round(s); ratio to {})\n", targets[0]));
            out.push_str(&format!("  {:<20}", "figure"));
            for target in targets {
                out.push_str(&format!("{target:>column$}"));
            }
            out.push('\n');
        }
        out.push_str(&format!("  {:<20}", row.metric));
        for target in targets {
            let cell = match row.targets.iter().find(|summary| &summary.target == target) {
                Some(summary) => {
                    let spread = &summary.spread;
                    let ratio = match summary.ratio_to_first {
                        Some(ratio) if target != &targets[0] => format!(" x{ratio:.2}"),
                        _ => String::new(),
                    };
                    format!("{} [{}-{}]{ratio}", number(spread.median), number(spread.min), number(spread.max))
                }
                None => "-".to_string(),
            };
            out.push_str(&format!("{cell:>column$}"));
        }
        out.push('\n');
    }
    if !ceiling.is_empty() {
        out.push_str(&format!("\nceiling (median [min-max] of {rounds} round(s))\n"));
        for (label, spread) in ceiling {
            out.push_str(&format!("  {label:<30}{:>26}\n", format!("{} [{}-{}]", number(spread.median), number(spread.min), number(spread.max))));
        }
        if !fractions.is_empty() {
            out.push_str("\nagainst the ceiling (medians)\n");
            for fraction in fractions {
                out.push_str(&format!(
                    "  {:<14}{:<target_column$}{:<42}{:>8}\n",
                    fraction.workload,
                    fraction.target,
                    fraction.comparison,
                    format!("{:.3}", fraction.fraction)
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_ratio() {
        let spread = Spread::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((spread.median, spread.min, spread.max), (2.0, 1.0, 3.0));
        assert_eq!(Spread::of(&[1.0, 4.0]).unwrap().median, 2.5);
        let run = |target: &str, mb: f64| RunRecord {
            round: 1,
            target: target.to_string(),
            workload: "produce-1k".to_string(),
            figures: Figures { mb_per_second: mb, ..Figures::default() },
        };
        let runs = [run("a", 100.0), run("b", 50.0), run("a", 300.0), run("b", 70.0), run("a", 200.0), run("b", 60.0)];
        let rows = summarize(&runs, &["a".to_string(), "b".to_string()], &["produce-1k".to_string()]);
        let mb = rows.iter().find(|row| row.metric == "MB/s").unwrap();
        assert_eq!(mb.targets[0].spread.median, 200.0);
        assert_eq!(mb.targets[1].ratio_to_first, Some(0.3));
        // Figures a run did not produce (no PID, no latency) leave no row.
        assert!(rows.iter().all(|row| row.metric != "broker CPU-s/GB"));
    }
}
