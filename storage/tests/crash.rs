//! kill -9 in the middle of appends: every acknowledged batch must come back byte-exact, and
//! nothing but whole expected batches may follow it.
//!
//! The test re-runs its own binary as the child (`crash_child_appends_until_killed`, which does
//! nothing unless CRASH_CHILD_DIR is set), reads the child's acknowledgements from its stdout and
//! kills it at a random moment.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use storage::{Log, LogConfig};

fn config() -> LogConfig {
    LogConfig { segment_bytes: 64 * 1024, index_interval_bytes: 1024, ..LogConfig::default() }
}

/// The i-th batch the child writes; the parent rebuilds the same bytes to compare.
fn nth_batch(i: u64) -> Vec<u8> {
    build_batch(1 + (i % 5) as i32, 50 + ((i * 37) % 900) as usize, i as i64, i as u8)
}

#[test]
fn crash_child_appends_until_killed() {
    let Ok(dir) = std::env::var("CRASH_CHILD_DIR") else { return };
    run(move || async move {
        let mut log = Log::open(std::path::Path::new(&dir), config(), false).await.unwrap();
        let mut stdout = std::io::stdout().lock();
        for i in 0.. {
            let info = log.append(nth_batch(i), 0).await.unwrap();
            if i % 50 == 49 {
                log.flush().await.unwrap();
            }
            writeln!(stdout, "acked {i} {}", info.base_offset).unwrap();
            stdout.flush().unwrap();
        }
    });
}

#[test]
fn acknowledged_batches_survive_kill_9_twenty_times() {
    if std::env::var("CRASH_CHILD_DIR").is_ok() {
        return;
    }
    let mut rng = Rng::new(std::process::id() as u64);
    for run_number in 0..20 {
        let dir = TempDir::new("crash");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_child_appends_until_killed", "--nocapture", "--test-threads=1"])
            .env("CRASH_CHILD_DIR", dir.partition())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let kill_after = Duration::from_millis(100 + rng.below(600));
        let acked = std::thread::scope(|scope| {
            let reader = scope.spawn(move || {
                let mut acked: Vec<(u64, i64)> = Vec::new();
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let mut words = line.split_whitespace();
                    if words.next() != Some("acked") {
                        continue;
                    }
                    let i: u64 = words.next().unwrap().parse().unwrap();
                    let base: i64 = words.next().unwrap().parse().unwrap();
                    acked.push((i, base));
                }
                acked
            });
            let started = Instant::now();
            while started.elapsed() < kill_after {
                std::thread::sleep(Duration::from_millis(10));
            }
            nix_kill(child.id());
            let _ = child.wait();
            reader.join().unwrap()
        });
        assert!(!acked.is_empty(), "run {run_number}: the child acknowledged nothing before the kill");
        let acked_count = acked.len() as u64;
        let partition = dir.partition();
        run(move || async move {
            let log = Log::open(&partition, config(), false).await.unwrap();
            let mut all = Vec::new();
            let mut offset = 0;
            while offset < log.log_end_offset() {
                for slice in log.read(offset, u64::MAX, i64::MAX, true).await.unwrap().slices {
                    all.extend(slice.read_bytes().await.unwrap());
                    offset = slice.last_offset + 1;
                }
            }
            // Expected: batches 0..k with k >= acked, each at its offset, nothing else.
            let mut expected = Vec::new();
            let mut next_offset = 0i64;
            let mut i = 0u64;
            let mut base_offsets = Vec::new();
            while expected.len() < all.len() {
                let batch = nth_batch(i);
                let count = i32::from_be_bytes(batch[57..61].try_into().unwrap()) as i64;
                expected.extend(with_base_offset(batch, next_offset));
                base_offsets.push(next_offset);
                next_offset += count;
                i += 1;
            }
            assert!(i >= acked_count, "run {run_number}: {acked_count} acknowledged, {i} recovered");
            assert_eq!(all, expected, "run {run_number}: recovered bytes differ from what was written");
            assert_eq!(log.log_end_offset(), next_offset);
            for (index, base) in &acked {
                assert_eq!(base_offsets[*index as usize], *base, "acknowledged base offset");
            }
        });
    }
}

fn nix_kill(pid: u32) {
    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    assert_eq!(rc, 0, "kill -9 the child");
}
