//! The picture of a run: payload throughput per workload and target (medians, with the loopback
//! ceiling when measured), and latency percentile curves merged over the rounds.

use std::path::Path;

use plotters::prelude::*;

use crate::report::{Percentiles, Spread, SummaryRow};
use crate::runner::LatencyCurve;
use crate::soak::SoakRun;

const WIDTH: u32 = 1400;
const HEIGHT: u32 = 560;
/// The percentile axis runs in "nines": 1 is p90, 2 p99, 3 p99.9; the maximum is drawn at 5.
const MAX_NINES: f64 = 5.0;

pub fn write_svg(
    path: &Path,
    rows: &[SummaryRow],
    targets: &[String],
    workloads: &[String],
    ceiling: &[(String, Spread)],
    curves: &[LatencyCurve],
) -> Result<(), String> {
    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|error| error.to_string())?;
    let (left, right) = root.split_horizontally(WIDTH / 2);
    draw_throughput(&left, rows, targets, workloads, ceiling).map_err(|error| format!("throughput chart: {error}"))?;
    draw_latency(&right, curves).map_err(|error| format!("latency chart: {error}"))?;
    root.present().map_err(|error| format!("write {}: {error}", path.display()))
}

fn color(index: usize) -> RGBColor {
    // The ten "tab10" colours: distinct enough for several targets x workloads.
    const COLORS: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    COLORS[index % COLORS.len()]
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

fn draw_throughput(
    area: &Area<'_>,
    rows: &[SummaryRow],
    targets: &[String],
    workloads: &[String],
    ceiling: &[(String, Spread)],
) -> Result<(), Box<dyn std::error::Error>> {
    let median = |workload: &str, target: &str| {
        rows.iter()
            .find(|row| row.workload == workload && row.metric == "MB/s")
            .and_then(|row| row.targets.iter().find(|summary| summary.target == target))
            .map(|summary| summary.spread.median)
    };
    let loopback = ceiling.iter().find(|(label, _)| label == "loopback MB/s").map(|(_, spread)| spread.median);
    let highest = workloads
        .iter()
        .flat_map(|workload| targets.iter().filter_map(move |target| median(workload, target)))
        .chain(loopback)
        .fold(1.0_f64, f64::max);
    let mut chart = ChartBuilder::on(area)
        .caption("payload throughput (median MB/s)", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..workloads.len().max(1) as f64, 0.0..highest * 1.15)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(workloads.len().max(1) * 2 + 1)
        .x_label_formatter(&|x| {
            // Group centres sit at 0.5, 1.5, ...: label those with the workload's name.
            let centre = x - 0.5;
            if (centre - centre.round()).abs() < 0.01 {
                workloads.get(centre.round() as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("MB/s")
        .draw()?;
    let bar_width = 0.8 / targets.len().max(1) as f64;
    for (target_index, target) in targets.iter().enumerate() {
        let bars: Vec<Rectangle<(f64, f64)>> = workloads
            .iter()
            .enumerate()
            .filter_map(|(workload_index, workload)| {
                let value = median(workload, target)?;
                let x0 = workload_index as f64 + 0.1 + bar_width * target_index as f64;
                Some(Rectangle::new([(x0, 0.0), (x0 + bar_width * 0.95, value)], color(target_index).filled()))
            })
            .collect();
        chart
            .draw_series(bars)?
            .label(target.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color(target_index).filled()));
    }
    if let Some(loopback) = loopback {
        chart
            .draw_series(LineSeries::new([(0.0, loopback), (workloads.len() as f64, loopback)], BLACK.stroke_width(2)))?
            .label("loopback TCP ceiling")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 12, y)], BLACK.stroke_width(2)));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).position(SeriesLabelPosition::UpperRight).draw()?;
    Ok(())
}

fn nines(percentile: f64) -> f64 {
    if percentile >= 100.0 {
        MAX_NINES
    } else {
        (-(1.0 - percentile / 100.0).log10()).min(MAX_NINES - 0.5)
    }
}

fn draw_latency(area: &Area<'_>, curves: &[LatencyCurve]) -> Result<(), Box<dyn std::error::Error>> {
    let points: Vec<Vec<(f64, f64)>> = curves
        .iter()
        .map(|curve| {
            crate::runner::curve_points(&curve.histogram_us)
                .into_iter()
                .map(|(percentile, ms)| (nines(percentile), ms.max(0.001)))
                .collect()
        })
        .collect();
    let highest = points.iter().flatten().map(|(_, ms)| *ms).fold(1.0_f64, f64::max);
    let lowest = points.iter().flatten().map(|(_, ms)| *ms).fold(highest, f64::min);
    let mut chart = ChartBuilder::on(area)
        .caption("latency by percentile (merged over rounds)", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..MAX_NINES, ((lowest * 0.8).max(0.001)..highest * 1.5).log_scale())?;
    chart
        .configure_mesh()
        .x_labels(6)
        .x_label_formatter(&|x| match x.round() as i64 {
            0 => "min".to_string(),
            1 => "p90".to_string(),
            2 => "p99".to_string(),
            3 => "p99.9".to_string(),
            4 => "p99.99".to_string(),
            _ => "max".to_string(),
        })
        .y_desc("ms (log scale)")
        .draw()?;
    for (index, (curve, points)) in curves.iter().zip(points).enumerate() {
        let style = color(index);
        chart
            .draw_series(LineSeries::new(points.clone(), style.stroke_width(2)))?
            .label(format!("{} {} {}", curve.target, curve.workload, curve.kind))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 12, y)], style.stroke_width(2)));
        chart.draw_series(points.into_iter().map(|point| Circle::new(point, 3, style.filled())))?;
    }
    if !curves.is_empty() {
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).position(SeriesLabelPosition::UpperLeft).draw()?;
    }
    Ok(())
}

/// A soak over time: end-to-end latency percentiles per window (log scale) above, the shard
/// threads' D-state samples per window below, on the same time axis so a tail and the sleeps
/// behind it line up.
pub fn write_soak_svg(path: &Path, runs: &[SoakRun]) -> Result<(), String> {
    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|error| error.to_string())?;
    let (top, bottom) = root.split_vertically(HEIGHT * 2 / 3);
    let end_seconds = runs
        .iter()
        .filter_map(|run| run.windows.last().map(|window| window.start_seconds + run.window_seconds))
        .fold(1.0_f64, f64::max);
    draw_soak_latency(&top, runs, end_seconds).map_err(|error| format!("soak latency chart: {error}"))?;
    draw_soak_dstate(&bottom, runs, end_seconds).map_err(|error| format!("soak D-state chart: {error}"))?;
    root.present().map_err(|error| format!("write {}: {error}", path.display()))
}

/// How a run is named in a legend: nothing when there is one.
fn run_label(runs: &[SoakRun], run: &SoakRun) -> String {
    if runs.len() == 1 {
        String::new()
    } else {
        format!("{} r{} ", run.target, run.round)
    }
}

fn draw_soak_latency(area: &Area<'_>, runs: &[SoakRun], end_seconds: f64) -> Result<(), Box<dyn std::error::Error>> {
    type Pick = fn(&Percentiles) -> f64;
    const PERCENTILES: [(&str, Pick); 3] = [("p50", |p| p.p50), ("p99", |p| p.p99), ("p99.9", |p| p.p99_9)];
    // A window's figures are drawn at its middle.
    let series = |run: &SoakRun, pick: fn(&Percentiles) -> f64| -> Vec<(f64, f64)> {
        run.windows
            .iter()
            .filter_map(|window| {
                let ms = pick(window.latency_ms.as_ref()?);
                Some((window.start_seconds + run.window_seconds / 2.0, ms.max(0.001)))
            })
            .collect()
    };
    let all: Vec<f64> = runs
        .iter()
        .flat_map(|run| PERCENTILES.iter().flat_map(move |(_, pick)| series(run, *pick)))
        .map(|(_, ms)| ms)
        .collect();
    let highest = all.iter().copied().fold(1.0_f64, f64::max);
    let lowest = all.iter().copied().fold(highest, f64::min);
    // From a power of ten, so the axis has a label below the p50 line.
    let bottom = 10f64.powf((lowest * 0.95).max(0.001).log10().floor());
    let mut chart = ChartBuilder::on(area)
        .caption("end-to-end latency per window", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end_seconds, (bottom..highest * 1.5).log_scale())?;
    chart.configure_mesh().x_desc("seconds").y_desc("ms (log scale)").max_light_lines(3).draw()?;
    for (run_index, run) in runs.iter().enumerate() {
        for (percentile_index, (name, pick)) in PERCENTILES.iter().enumerate() {
            // One run: a colour per percentile. Several: a colour per run, thicker for higher
            // percentiles.
            let (style, width) = if runs.len() == 1 { (color(percentile_index), 2) } else { (color(run_index), percentile_index as u32 + 1) };
            let points = series(run, *pick);
            chart
                .draw_series(LineSeries::new(points.clone(), style.stroke_width(width)))?
                .label(format!("{}{name}", run_label(runs, run)))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 12, y)], style.stroke_width(width)));
            chart.draw_series(points.into_iter().map(|point| Circle::new(point, 2, style.filled())))?;
        }
    }
    if !runs.is_empty() {
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).position(SeriesLabelPosition::UpperLeft).draw()?;
    }
    Ok(())
}

fn draw_soak_dstate(area: &Area<'_>, runs: &[SoakRun], end_seconds: f64) -> Result<(), Box<dyn std::error::Error>> {
    let measured = runs.iter().any(|run| run.dstate.is_some());
    let highest = runs
        .iter()
        .flat_map(|run| run.windows.iter())
        .flat_map(|window| [window.shard_d_samples, window.helper_d_samples])
        .flatten()
        // At least 0-4, so the whole-number labels stay distinct.
        .fold(4, u64::max) as f64;
    let caption = if measured {
        "shard threads' D-state samples per window (solid: shard, thin: helper)"
    } else {
        "D-state samples: not measured (give the target's pid=PID)"
    };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(15)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end_seconds, 0.0..highest * 1.15)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("D samples")
        .y_labels(5)
        .max_light_lines(2)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    for (run_index, run) in runs.iter().enumerate() {
        if run.dstate.is_none() {
            continue;
        }
        let style = color(run_index);
        let pick_points = |pick: fn(&crate::soak::SoakWindow) -> Option<u64>| -> Vec<(f64, f64)> {
            run.windows
                .iter()
                .filter_map(|window| Some((window.start_seconds + run.window_seconds / 2.0, pick(window)? as f64)))
                .collect()
        };
        let shard = pick_points(|window| window.shard_d_samples);
        chart
            .draw_series(LineSeries::new(shard.clone(), style.stroke_width(2)))?
            .label(if runs.len() == 1 { "shard (thin: helper)".to_string() } else { run_label(runs, run) })
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 12, y)], style.stroke_width(2)));
        chart.draw_series(shard.into_iter().map(|point| Circle::new(point, 2, style.filled())))?;
        // In the run's colour, thin: the caption says so, and a legend line per run fits the
        // chart's height where two would not.
        chart.draw_series(LineSeries::new(pick_points(|window| window.helper_d_samples), style.mix(0.5).stroke_width(1)))?;
    }
    if measured {
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).position(SeriesLabelPosition::UpperLeft).draw()?;
    }
    Ok(())
}
