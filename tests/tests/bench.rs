//! A smoke run of the load generator (seconds, not a benchmark): two brokers of ours side by side,
//! every preset, the ceiling, and the three outputs (table, JSON, SVG). Figures are not asserted:
//! speed is measured by running the bench, never inside the test suite.

use std::process::Command;
use std::time::Duration;

use tests::{bench_binary, run_with_timeout, Broker, TempDir};

#[test]
fn bench_runs_presets_against_two_brokers_and_writes_its_outputs() {
    let dir_a = TempDir::new("bench-a");
    let dir_b = TempDir::new("bench-b");
    let out = TempDir::new("bench-out");
    let mut first = Broker::start(&dir_a.0, 1, &[]);
    let mut second = Broker::start(&dir_b.0, 1, &[]);
    let mut command = Command::new(bench_binary());
    command
        .arg("--target")
        .arg(format!("ours={},pid={}", first.bootstrap(), first.pid()))
        .arg("--target")
        .arg(format!("second={}", second.bootstrap()))
        .args(["--workload", "produce-1k", "--workload", "consume-1k", "--workload", "e2e-latency", "--workload", "acks-all"])
        .args(["--rounds", "1", "--duration-seconds", "1", "--message-count", "20000"])
        .args(["--ceiling", "--ceiling-seconds", "0.3", "--ceiling-cpus", "0,0", "--ceiling-dir"])
        .arg(&out.0)
        .arg("--out")
        .arg(&out.0);
    let (ok, stdout, stderr) = run_with_timeout(&mut command, Duration::from_secs(120));
    assert!(ok, "bench failed\nstdout:\n{stdout}\nstderr:\n{stderr}\nbroker:\n{}", first.log());

    // The table: every workload, both targets, the ratio column, the ceiling comparison.
    for expected in ["produce-1k", "consume-1k", "e2e-latency", "acks-all", "second", "e2e p99.9 ms", "broker CPU-s/GB", "loopback MB/s", "MB/s / loopback MB/s", "e2e p99 / loopback round trip p99"] {
        assert!(stdout.contains(expected), "{expected:?} missing from the table:\n{stdout}");
    }
    assert!(stdout.contains(" x"), "no ratio to the first target:\n{stdout}");
    // Nothing was refused or lost: every run's error count is 0 and e2e consumers got it all.
    let errors_row = stdout.lines().filter(|line| line.trim_start().starts_with("errors")).collect::<Vec<_>>();
    assert_eq!(errors_row.len(), 4, "{stdout}");
    assert!(errors_row.iter().all(|line| line.split_whitespace().skip(1).all(|cell| cell.starts_with('0') || cell == "[0-0]" || cell.starts_with("x"))), "{stdout}");

    let json = std::fs::read_to_string(out.0.join("bench.json")).expect("bench.json");
    for key in ["\"runs\"", "\"summary\"", "\"ceiling_rounds\"", "\"against_ceiling\"", "\"latency_curves\"", "\"end_to_end_latency_ms\""] {
        assert!(json.contains(key), "{key} missing from bench.json");
    }
    assert_eq!(json.matches("\"round\":").count(), 8, "2 targets x 4 workloads");
    let svg = std::fs::read_to_string(out.0.join("bench.svg")).expect("bench.svg");
    assert!(svg.starts_with("<svg") && svg.contains("latency by percentile"), "not the plot: {}", &svg[..svg.len().min(200)]);
    // The bench leaves no topics behind.
    std::thread::sleep(Duration::from_millis(500));
    let leftovers: Vec<String> = std::fs::read_dir(dir_a.0.join("logs"))
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with("bench-") && !name.contains("-delete"))
        .collect();
    assert!(leftovers.is_empty(), "topics left behind: {leftovers:?}");
    assert_eq!(first.stop(), 0);
    assert_eq!(second.stop(), 0);
}

/// The transactional mode (issue 18's cost of a transaction): `--transactional-records` alone runs
/// produce-1k, idempotent-1k and transactional-1k; the transactional run reports commits/s and
/// commit latency, and nothing is refused.
#[test]
fn bench_transactional_mode_reports_commits() {
    let dir = TempDir::new("bench-txn");
    let out = TempDir::new("bench-txn-out");
    let mut broker = Broker::start(&dir.0, 1, &[]);
    let mut command = Command::new(bench_binary());
    command
        .arg("--target")
        .arg(format!("ours={},pid={}", broker.bootstrap(), broker.pid()))
        .args(["--transactional-records", "10", "--rounds", "1", "--duration-seconds", "30", "--message-count", "3000", "--out"])
        .arg(&out.0);
    let (ok, stdout, stderr) = run_with_timeout(&mut command, Duration::from_secs(120));
    assert!(ok, "bench failed\nstdout:\n{stdout}\nstderr:\n{stderr}\nbroker:\n{}", broker.log());
    for expected in ["produce-1k", "idempotent-1k", "transactional-1k", "commits/s", "commit p50 ms", "commit p99.9 ms"] {
        assert!(stdout.contains(expected), "{expected:?} missing from the table:\n{stdout}");
    }
    let errors_row = stdout.lines().filter(|line| line.trim_start().starts_with("errors")).collect::<Vec<_>>();
    assert_eq!(errors_row.len(), 3, "{stdout}");
    assert!(errors_row.iter().all(|line| line.split_whitespace().nth(1) == Some("0")), "{stdout}");
    // 3000 records in transactions of 10: 300 commits, all of them acknowledged.
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.0.join("bench.json")).expect("bench.json")).unwrap();
    let transactional = json["runs"].as_array().unwrap().iter().find(|run| run["workload"] == "transactional-1k").expect("a transactional run");
    assert_eq!(transactional["figures"]["messages"], 3000, "{transactional}");
    assert!(transactional["figures"]["commit_latency_ms"]["p50"].as_f64().unwrap() > 0.0, "{transactional}");
    assert_eq!(broker.stop(), 0);

    // The flag names the workload it shapes: without it in the list, a clear refusal.
    let (ok, _, stderr) =
        run_with_timeout(Command::new(bench_binary()).args(["--target", "x=127.0.0.1:1", "--workload", "produce-1k", "--transactional-records", "5"]), Duration::from_secs(30));
    assert!(!ok && stderr.contains("--transactional-records applies to the transactional-1k workload"), "{stderr}");
}

/// A read-back from the beginning while time retention deletes the oldest segments under the
/// reader: the broker answers OFFSET_OUT_OF_RANGE below the new log start, and the bench's
/// consumer goes on from there (`auto.offset.reset=earliest`). With librdkafka's default
/// (`latest`) it jumped to the end and waited 30 s for records it had skipped, then failed
/// (the stall acl_cost.sh met with `log.retention.bytes` below a round's data).
#[test]
fn bench_read_back_goes_on_when_retention_deletes_under_the_reader() {
    let dir = TempDir::new("bench-retention");
    let out = TempDir::new("bench-retention-out");
    let mut broker = Broker::start(&dir.0, 1, &["log.retention.check.interval.ms=100", "log.segment.delete.delay.ms=500"]);
    let mut command = Command::new(bench_binary());
    command
        .arg("--target")
        .arg(format!("ours={}", broker.bootstrap()))
        .args(["--workload", "produce-1k", "--workload", "consume-1k", "--rounds", "2", "--duration-seconds", "2"])
        // Segments expire half a second after their last record: the oldest go while being read.
        .args(["--topic-config", "retention.ms=500", "--topic-config", "segment.bytes=4194304", "--out"])
        .arg(&out.0);
    let (ok, stdout, stderr) = run_with_timeout(&mut command, Duration::from_secs(120));
    assert!(ok, "bench failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("consume-1k"), "{stdout}");
    assert!(broker.log().contains("retention deletes a segment"), "retention never ran: the case was not met");
    assert_eq!(broker.stop(), 0);
}
