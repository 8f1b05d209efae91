//! Soak runs: the end-to-end workload at its fixed rate for a long time (`--soak-seconds`), its
//! latency also cut into windows (`--window-seconds`), so a tail that grows or comes back every
//! few minutes (retention deleting segments, a roll, a checkpoint) shows in time instead of
//! melting into one run's percentiles. Beside each window: the shard threads' D-state samples
//! (dstate.rs) taken in it.

use std::fmt::Write;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::dstate::{DStateReport, PRINTED_STACKS};
use crate::produce::wall_clock_nanos;
use crate::report::{number, Percentiles};

/// Window histograms are 170 KB each and kept per consumer: this bounds the memory of a soak
/// run (720 windows: 6 h in 30 s windows).
pub const MAX_WINDOWS: usize = 720;

/// Where a soak's windows start, on both clocks: the consumers place a record by the send time
/// in its payload (wall clock), the D-state sampler its samples by `Instant`.
#[derive(Clone, Debug)]
pub struct WindowClock {
    pub start: Instant,
    pub start_wall_nanos: u64,
    pub window: Duration,
    pub count: usize,
}

impl WindowClock {
    /// Windows from now over `duration_seconds` (the last may be shorter).
    pub fn start(window_seconds: f64, duration_seconds: f64) -> WindowClock {
        let count = (duration_seconds / window_seconds).ceil().max(1.0) as usize;
        WindowClock {
            start: Instant::now(),
            start_wall_nanos: wall_clock_nanos(),
            window: Duration::from_secs_f64(window_seconds),
            count,
        }
    }

    /// The window of an instant; past the last window (the drain after the producers stop) is
    /// the last.
    pub fn window_at(&self, instant: Instant) -> usize {
        let since = instant.saturating_duration_since(self.start);
        self.clamp(since.as_nanos() / self.window.as_nanos().max(1))
    }

    /// The window of a record sent at `wall_nanos` (a send before the start is the first).
    pub fn window_of_send(&self, wall_nanos: u64) -> usize {
        let since = wall_nanos.saturating_sub(self.start_wall_nanos) as u128;
        self.clamp(since / self.window.as_nanos().max(1))
    }

    fn clamp(&self, index: u128) -> usize {
        (index.min(self.count.saturating_sub(1) as u128)) as usize
    }

    pub fn window_start_seconds(&self, index: usize) -> f64 {
        self.window.as_secs_f64() * index as f64
    }
}

/// Adds `from`'s windows into `into`'s (consumers each keep their own).
pub fn merge_windows(into: &mut Vec<Histogram<u64>>, from: &[Histogram<u64>]) {
    if into.len() < from.len() {
        into.resize_with(from.len(), crate::produce::new_latency_histogram);
    }
    for (total, part) in into.iter_mut().zip(from) {
        total.add(part).expect("same histogram bounds");
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct SoakWindow {
    pub start_seconds: f64,
    /// Records sent in the window that reached a consumer.
    pub count: u64,
    pub latency_ms: Option<Percentiles>,
    /// D samples of the shard (executor) threads, and of their helpers, in the window; None
    /// without the broker's PID.
    pub shard_d_samples: Option<u64>,
    pub helper_d_samples: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SoakRun {
    pub target: String,
    pub round: usize,
    pub workload: String,
    pub window_seconds: f64,
    pub windows: Vec<SoakWindow>,
    pub overall_ms: Option<Percentiles>,
    /// The windows from `steady_from_seconds` on, merged: the run without its warm-up.
    pub steady_ms: Option<Percentiles>,
    pub steady_from_seconds: f64,
    /// In the run's figures already (`runs`); kept here for the printed report.
    #[serde(skip)]
    pub dstate: Option<DStateReport>,
}

impl SoakRun {
    pub fn new(
        target: &str,
        round: usize,
        workload: &str,
        clock: &WindowClock,
        latency_windows_us: &[Histogram<u64>],
        overall_us: &Histogram<u64>,
        dstate: Option<DStateReport>,
    ) -> SoakRun {
        let windows = (0..clock.count)
            .map(|index| {
                let histogram = latency_windows_us.get(index).filter(|histogram| !histogram.is_empty());
                let d = dstate.as_ref().and_then(|report| report.windows.get(index));
                SoakWindow {
                    start_seconds: clock.window_start_seconds(index),
                    count: histogram.map_or(0, |histogram| histogram.len()),
                    latency_ms: histogram.map(Percentiles::of),
                    shard_d_samples: d.map(|counts| counts.shard_d_samples),
                    helper_d_samples: d.map(|counts| counts.helper_d_samples),
                }
            })
            .collect();
        SoakRun {
            target: target.to_string(),
            round,
            workload: workload.to_string(),
            window_seconds: clock.window.as_secs_f64(),
            windows,
            overall_ms: (!overall_us.is_empty()).then(|| Percentiles::of(overall_us)),
            steady_ms: None,
            steady_from_seconds: 0.0,
            dstate,
        }
    }

    /// Adds the percentiles of the windows that start at or after `warmup_seconds` (merged
    /// histograms: exact, not an average of windows).
    pub fn with_steady(mut self, latency_windows_us: &[Histogram<u64>], warmup_seconds: f64) -> SoakRun {
        let first = (warmup_seconds / self.window_seconds).ceil().max(0.0) as usize;
        let mut merged = crate::produce::new_latency_histogram();
        for window in latency_windows_us.iter().skip(first) {
            merged.add(window).expect("same histogram bounds");
        }
        self.steady_from_seconds = first as f64 * self.window_seconds;
        self.steady_ms = (!merged.is_empty()).then(|| Percentiles::of(&merged));
        self
    }
}

pub const CSV_HEADER: &str =
    "target,round,window_start_s,count,p50_ms,p99_ms,p99_9_ms,max_ms,shard_d_samples,helper_d_samples";

/// One line per window of every run; a figure not measured is an empty field.
pub fn csv(runs: &[SoakRun]) -> String {
    let mut out = format!("{CSV_HEADER}\n");
    let optional = |value: Option<String>| value.unwrap_or_default();
    for run in runs {
        for window in &run.windows {
            let latency = |pick: fn(&Percentiles) -> f64| optional(window.latency_ms.as_ref().map(|p| format!("{:.3}", pick(p))));
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{},{}",
                run.target,
                run.round,
                window.start_seconds,
                window.count,
                latency(|p| p.p50),
                latency(|p| p.p99),
                latency(|p| p.p99_9),
                latency(|p| p.max),
                optional(window.shard_d_samples.map(|count| count.to_string())),
                optional(window.helper_d_samples.map(|count| count.to_string())),
            );
        }
    }
    out
}

/// The printed report of one run: a line per window, the overall percentiles, and where the
/// shard threads slept.
pub fn table(run: &SoakRun) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nsoak: {} round {}, {}, {} s windows (records by send time; D: shard-thread samples in D state)",
        run.target,
        run.round,
        run.workload,
        number(run.window_seconds)
    );
    let _ = writeln!(
        out,
        "  {:>9}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
        "window s", "count", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "shard D", "helper D"
    );
    let cell = |value: Option<f64>| value.map_or("-".to_string(), number);
    let count = |value: Option<u64>| value.map_or("-".to_string(), |count| count.to_string());
    for window in &run.windows {
        let latency = |pick: fn(&Percentiles) -> f64| cell(window.latency_ms.as_ref().map(pick));
        let _ = writeln!(
            out,
            "  {:>9}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
            number(window.start_seconds),
            window.count,
            latency(|p| p.p50),
            latency(|p| p.p99),
            latency(|p| p.p99_9),
            latency(|p| p.max),
            count(window.shard_d_samples),
            count(window.helper_d_samples),
        );
    }
    let overall = |pick: fn(&Percentiles) -> f64| cell(run.overall_ms.as_ref().map(pick));
    let total = |pick: fn(&SoakWindow) -> Option<u64>| {
        run.windows.iter().map(pick).sum::<Option<u64>>().map_or("-".to_string(), |sum| sum.to_string())
    };
    let _ = writeln!(
        out,
        "  {:>9}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
        "overall",
        run.windows.iter().map(|window| window.count).sum::<u64>(),
        overall(|p| p.p50),
        overall(|p| p.p99),
        overall(|p| p.p99_9),
        overall(|p| p.max),
        total(|window| window.shard_d_samples),
        total(|window| window.helper_d_samples),
    );
    if let (Some(steady), true) = (&run.steady_ms, run.steady_from_seconds > 0.0) {
        let _ = writeln!(
            out,
            "  {:>9}{:>10}{:>10}{:>10}{:>10}{:>10}   (windows from {} s on: the warm-up left out)",
            "steady",
            "",
            number(steady.p50),
            number(steady.p99),
            number(steady.p99_9),
            number(steady.max),
            number(run.steady_from_seconds)
        );
    }
    match &run.dstate {
        None => out.push_str("  (no D-state figures: give the target's pid=PID)\n"),
        Some(report) => {
            let _ = writeln!(
                out,
                "  D state: {} shard-thread and {} helper samples in {} passes (mean interval {:.2} ms); longest shard stretch {} ms",
                report.shard_d_samples,
                report.helper_d_samples,
                report.passes,
                report.mean_pass_interval_ms,
                number(report.longest_shard_d_ms)
            );
            for thread in &report.threads {
                let _ = writeln!(
                    out,
                    "    {:<6} {} tid {}: {} D of {} samples, longest run {}",
                    thread.role.label(),
                    thread.comm,
                    thread.tid,
                    thread.d_samples,
                    thread.samples,
                    thread.longest_d_samples
                );
            }
            if report.threads.is_empty() {
                out.push_str("    no thread's name starts with --shard-thread-prefix\n");
            }
            if !report.stacks.is_empty() {
                let _ = writeln!(out, "  top kernel stacks in D (samples, thread, [syscall], innermost frame first):");
                for line in report.stack_lines(PRINTED_STACKS) {
                    let _ = writeln!(out, "  {line}");
                }
            }
            if report.stackless_samples > 0 {
                let _ = writeln!(out, "  ({} D samples without a stack: out of D by the time it was read)", report.stackless_samples);
            }
            if report.unkept_stack_samples > 0 {
                let _ = writeln!(out, "  ({} D samples in stacks beyond the {} kept)", report.unkept_stack_samples, crate::dstate::MAX_STACKS);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::produce::new_latency_histogram;

    #[test]
    fn windows_by_instant_and_send_time() {
        let clock = WindowClock::start(10.0, 25.0);
        assert_eq!(clock.count, 3);
        assert_eq!(clock.window_at(clock.start), 0);
        assert_eq!(clock.window_at(clock.start + Duration::from_secs(12)), 1);
        // The drain after the last window counts in the last one.
        assert_eq!(clock.window_at(clock.start + Duration::from_secs(31)), 2);
        assert_eq!(clock.window_of_send(clock.start_wall_nanos - 5), 0);
        assert_eq!(clock.window_of_send(clock.start_wall_nanos + 20_000_000_000), 2);
        assert_eq!(clock.window_start_seconds(2), 20.0);
    }

    #[test]
    fn csv_has_a_line_per_window() {
        let clock = WindowClock::start(10.0, 20.0);
        let mut windows = vec![new_latency_histogram()];
        windows[0].record(1500).unwrap();
        let mut other = vec![new_latency_histogram(), new_latency_histogram()];
        other[1].record(2000).unwrap();
        merge_windows(&mut windows, &other);
        let mut overall = new_latency_histogram();
        overall.record(1500).unwrap();
        overall.record(2000).unwrap();
        let run = SoakRun::new("ours", 1, "e2e-latency", &clock, &windows, &overall, None);
        let text = csv(&[run.clone()]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], CSV_HEADER);
        assert_eq!(lines[1], "ours,1,0,1,1.500,1.500,1.500,1.500,,");
        assert_eq!(lines[2], "ours,1,10,1,2.000,2.000,2.000,2.000,,");
        assert!(table(&run).contains("overall"));
    }
}
