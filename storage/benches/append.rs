//! Append throughput of the partition log beside a raw sequential write of the same bytes to the
//! same disk, in one run: `cargo bench -p storage --bench append [-- --total-mib 1024]`.
//!
//! Both sides write into the page cache with pwrite(2), the way the log does under Kafka's default
//! flush policy (no fsync per append), so the ratio is the cost of the log's own work: validation
//! (CRC-32C), offset rewrite, indexes. A third column writes the same bytes with io_uring buffered
//! writes, the alternative the log does not use. Dirty pages are synced between runs,
//! outside the timing, so one run's writeback does not slow the next.

use std::time::Instant;

use glommio::io::OpenOptions;
use storage::test_support::build_batch;
use storage::{Log, LogConfig};

/// About 1 KiB per record with its framing, so that 1024 of them fit `max.message.bytes`.
const RECORD_VALUE_BYTES: usize = 1000;

/// The batch template and how many copies make up the run. Each side copies the template into a
/// fresh buffer right before writing it, inside the timing: that stands for the bytes a produce
/// request just brought in (warm in cache, as in the broker), and costs both sides the same.
struct Input {
    template: Vec<u8>,
    count: usize,
}

fn input(batch_size_bytes: usize, total_bytes: usize) -> Input {
    let records = (batch_size_bytes / 1024).max(1) as i32;
    let template = build_batch(records, RECORD_VALUE_BYTES, 0, 0x5a);
    let count = total_bytes / template.len();
    Input { template, count }
}

/// The same bytes with io_uring buffered writes (glommio's BufferedFile::write_at): kept to show
/// why the log does not append that way.
async fn uring_write(dir: &std::path::Path, input: &Input) -> f64 {
    let path = dir.join("raw.bin");
    let file = OpenOptions::new().write(true).create(true).truncate(true).buffered_open(&path).await.unwrap();
    let total = input.template.len() * input.count;
    let started = Instant::now();
    let mut position = 0u64;
    for _ in 0..input.count {
        let batch = input.template.clone();
        let length = batch.len();
        assert_eq!(file.write_at(batch, position).await.unwrap(), length);
        position += length as u64;
    }
    let seconds = started.elapsed().as_secs_f64();
    file.close().await.unwrap();
    std::fs::remove_file(&path).unwrap();
    total as f64 / seconds / 1e6
}

/// The raw ceiling: pwrite(2) of the same bytes, back to back, to a file in the same directory.
fn raw_write(dir: &std::path::Path, input: &Input) -> f64 {
    use std::os::fd::AsRawFd;
    let path = dir.join("raw.bin");
    let file = std::fs::File::create(&path).unwrap();
    let total = input.template.len() * input.count;
    let started = Instant::now();
    let mut position = 0u64;
    for _ in 0..input.count {
        let batch = input.template.clone();
        storage::segment::pwrite_all(file.as_raw_fd(), &batch, position).unwrap();
        position += batch.len() as u64;
    }
    let seconds = started.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path).unwrap();
    total as f64 / seconds / 1e6
}

async fn log_append(dir: &std::path::Path, input: &Input) -> f64 {
    let partition = dir.join("bench-0");
    let mut log = Log::open(&partition, LogConfig::default(), false).await.unwrap();
    let total = input.template.len() * input.count;
    let started = Instant::now();
    for _ in 0..input.count {
        log.append(input.template.clone(), 0).await.unwrap();
    }
    let seconds = started.elapsed().as_secs_f64();
    log.delete().await.unwrap();
    total as f64 / seconds / 1e6
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let total_mib: usize = args
        .iter()
        .position(|a| a == "--total-mib")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(512);
    let rounds = 5;
    let dir = std::env::var("BENCH_DIR").map(std::path::PathBuf::from).unwrap_or_else(|_| std::env::temp_dir().join("storage-append-bench"));
    std::fs::create_dir_all(&dir).unwrap();
    println!("append bench: {total_mib} MiB per run, {rounds} rounds alternating raw/log, dir {}", dir.display());
    println!("{:>12} {:>14} {:>14} {:>16} {:>8}", "batch", "raw MB/s", "log MB/s", "uring-write MB/s", "log/raw");
    for batch_size in [16 * 1024usize, 1024 * 1024] {
        let dir = dir.clone();
        let (raw, log, uring) = glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let mut raw = Vec::new();
                let mut log = Vec::new();
                let mut uring = Vec::new();
                let input = input(batch_size, total_mib << 20);
                for _ in 0..rounds {
                    sync_everything();
                    raw.push(raw_write(&dir, &input));
                    sync_everything();
                    log.push(log_append(&dir, &input).await);
                    sync_everything();
                    uring.push(uring_write(&dir, &input).await);
                }
                (raw, log, uring)
            })
            .unwrap()
            .join()
            .unwrap();
        let median = |mut v: Vec<f64>| {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            v[v.len() / 2]
        };
        eprintln!("  raw runs {raw:.0?} log runs {log:.0?} uring runs {uring:.0?}");
        let (raw, log, uring) = (median(raw), median(log), median(uring));
        println!("{:>10}KiB {:>14.0} {:>14.0} {:>16.0} {:>8.2}", batch_size / 1024, raw, log, uring, log / raw);
    }
}

fn sync_everything() {
    // SAFETY: sync(2) has no arguments and cannot fail.
    unsafe { libc::sync() };
}
