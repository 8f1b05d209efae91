//! The physical ceilings a broker works under, measured in the same run as the brokers: the raw
//! loopback TCP stream rate and its CPU cost, a loopback request/response round trip, and the
//! sequential write rate of the disk that holds `--ceiling-dir`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::process_usage::own_cpu;
use crate::produce::new_latency_histogram;
use crate::report::Percentiles;

const CHUNK_BYTES: usize = 1 << 20;
/// The disk test stops at this size even if time is left, to bound the space it takes.
const DISK_LIMIT_BYTES: u64 = 4 << 30;
/// Bytes of each request and response in the round-trip test: one 1 KiB record.
const ROUND_TRIP_BYTES: usize = 1024;
/// O_DIRECT writes in flight at once in the direct-write test (one thread each).
const DIRECT_WRITERS: u64 = 4;
/// O_DIRECT wants buffers, offsets and lengths aligned to the device's block; a page covers it.
const DIRECT_ALIGNMENT_BYTES: usize = 4096;

#[derive(Clone, Debug, Serialize)]
pub struct CeilingFigures {
    /// One TCP stream over loopback, 1 MiB writes, the reader on another thread.
    pub loopback_mb_per_second: f64,
    /// CPU-seconds (both ends) per GB moved over loopback.
    pub loopback_cpu_seconds_per_gb: f64,
    /// 1 KiB request and 1 KiB response over one loopback connection, back to back.
    pub loopback_round_trip_ms: Percentiles,
    /// Sequential 1 MiB writes into the page cache (what a broker with Kafka's default flush
    /// policy does).
    pub disk_buffered_write_mb_per_second: f64,
    /// The same bytes counted until fdatasync returns: what the disk itself sustains.
    pub disk_durable_write_mb_per_second: f64,
    /// Sequential 1 MiB O_DIRECT writes, `DIRECT_WRITERS` in flight, into a preallocated file:
    /// what the disk takes when the page cache is bypassed, the bound of an append path that
    /// writes around the page cache. None where the file system refuses O_DIRECT (tmpfs).
    pub disk_direct_write_mb_per_second: Option<f64>,
}

/// Where the two ends of the loopback tests run: the receiving end plays the broker, the sending
/// end the client. Pinned like the broker and the load generator, the ceiling includes the same
/// cross-core wake-ups a broker pays; unpinned (None) the threads go where the scheduler puts them.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct CeilingCpus {
    pub broker_side: usize,
    pub client_side: usize,
}

pub fn measure(dir: &Path, seconds: f64, cpus: Option<CeilingCpus>) -> Result<CeilingFigures, String> {
    let duration = Duration::from_secs_f64(seconds);
    let (loopback_mb_per_second, loopback_cpu_seconds_per_gb) =
        loopback_stream(duration, cpus).map_err(|error| format!("loopback stream: {error}"))?;
    let loopback_round_trip_ms = loopback_round_trip(duration.min(Duration::from_secs(2)), cpus)
        .map_err(|error| format!("loopback round trip: {error}"))?;
    let dir_owned = dir.to_path_buf();
    let (disk_buffered_write_mb_per_second, disk_durable_write_mb_per_second) = std::thread::spawn(move || {
        pin(cpus.map(|cpus| cpus.broker_side))?;
        disk_write(&dir_owned, duration)
    })
    .join()
    .map_err(|_| "disk writer panicked".to_string())?
    .map_err(|error| format!("disk write in {}: {error}", dir.display()))?;
    let disk_direct_write_mb_per_second = disk_direct_write(dir, duration)
        .inspect_err(|error| eprintln!("ceiling: no direct disk write figure: O_DIRECT writes in {}: {error}", dir.display()))
        .ok();
    Ok(CeilingFigures {
        loopback_mb_per_second,
        loopback_cpu_seconds_per_gb,
        loopback_round_trip_ms,
        disk_buffered_write_mb_per_second,
        disk_durable_write_mb_per_second,
        disk_direct_write_mb_per_second,
    })
}

/// Pins the calling thread to `cpu` (nothing to do for None).
fn pin(cpu: Option<usize>) -> std::io::Result<()> {
    let Some(cpu) = cpu else { return Ok(()) };
    // SAFETY: a zeroed cpu_set_t is an empty set; sched_setaffinity(0) applies to this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::other(format!("pin to CPU {cpu}: {}", std::io::Error::last_os_error())));
        }
    }
    Ok(())
}

fn loopback_stream(duration: Duration, cpus: Option<CeilingCpus>) -> std::io::Result<(f64, f64)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> std::io::Result<u64> {
        pin(cpus.map(|cpus| cpus.broker_side))?;
        let (mut stream, _) = listener.accept()?;
        let mut buffer = vec![0u8; CHUNK_BYTES];
        let mut total = 0u64;
        loop {
            match stream.read(&mut buffer)? {
                0 => return Ok(total),
                read => total += read as u64,
            }
        }
    });
    let cpu_start = own_cpu();
    let start = Instant::now();
    std::thread::spawn(move || -> std::io::Result<()> {
        pin(cpus.map(|cpus| cpus.client_side))?;
        let mut stream = TcpStream::connect(address)?;
        let chunk = vec![0x5a_u8; CHUNK_BYTES];
        while start.elapsed() < duration {
            stream.write_all(&chunk)?;
        }
        Ok(())
    })
    .join()
    .map_err(|_| std::io::Error::other("writer panicked"))??;
    let total = reader.join().map_err(|_| std::io::Error::other("reader panicked"))??;
    let elapsed = start.elapsed().as_secs_f64();
    let cpu_seconds = (own_cpu() - cpu_start).as_secs_f64();
    Ok((total as f64 / elapsed / 1e6, cpu_seconds / (total as f64 / 1e9)))
}

fn loopback_round_trip(duration: Duration, cpus: Option<CeilingCpus>) -> std::io::Result<Percentiles> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        pin(cpus.map(|cpus| cpus.broker_side))?;
        let (mut stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        let mut buffer = [0u8; ROUND_TRIP_BYTES];
        loop {
            if let Err(error) = stream.read_exact(&mut buffer) {
                return if error.kind() == std::io::ErrorKind::UnexpectedEof { Ok(()) } else { Err(error) };
            }
            stream.write_all(&buffer)?;
        }
    });
    let histogram = std::thread::spawn(move || -> std::io::Result<_> {
        pin(cpus.map(|cpus| cpus.client_side))?;
        let mut stream = TcpStream::connect(address)?;
        stream.set_nodelay(true)?;
        let mut buffer = [0x5a_u8; ROUND_TRIP_BYTES];
        let mut histogram = new_latency_histogram();
        let start = Instant::now();
        while start.elapsed() < duration {
            let sent = Instant::now();
            stream.write_all(&buffer)?;
            stream.read_exact(&mut buffer)?;
            histogram.saturating_record(sent.elapsed().as_micros() as u64);
        }
        Ok(histogram)
    })
    .join()
    .map_err(|_| std::io::Error::other("client panicked"))??;
    echo.join().map_err(|_| std::io::Error::other("echo panicked"))??;
    Ok(Percentiles::of(&histogram))
}

/// Runs `test` on a fresh path in `dir` and removes the file it made there, whatever the outcome.
fn with_scratch_file<T>(dir: &Path, name: &str, test: impl FnOnce(&Path) -> std::io::Result<T>) -> std::io::Result<T> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!(".bench-ceiling-{name}{}", std::process::id()));
    let result = test(&path);
    let _ = std::fs::remove_file(&path);
    result
}

fn disk_write(dir: &Path, duration: Duration) -> std::io::Result<(f64, f64)> {
    with_scratch_file(dir, "", |path| {
        let mut file = std::fs::File::create(path)?;
        let chunk = vec![0x5a_u8; CHUNK_BYTES];
        let start = Instant::now();
        let mut written = 0u64;
        while start.elapsed() < duration && written < DISK_LIMIT_BYTES {
            file.write_all(&chunk)?;
            written += CHUNK_BYTES as u64;
        }
        let buffered = start.elapsed().as_secs_f64();
        file.sync_data()?;
        let durable = start.elapsed().as_secs_f64();
        Ok((written as f64 / buffered / 1e6, written as f64 / durable / 1e6))
    })
}

/// A page-aligned page, so a Vec of them is a buffer O_DIRECT accepts.
#[derive(Clone, Copy)]
#[repr(C, align(4096))]
struct AlignedPage([u8; DIRECT_ALIGNMENT_BYTES]);

/// `DIRECT_WRITERS` threads write interleaved 1 MiB chunks of one preallocated file with
/// O_DIRECT (writes inside the file's size run in parallel on ext4; extending ones would not).
fn disk_direct_write(dir: &Path, duration: Duration) -> std::io::Result<f64> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    with_scratch_file(dir, "direct-", |path| {
        let file = std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).custom_flags(libc::O_DIRECT).open(path)?;
        // SAFETY: fallocate on a descriptor we own, with a valid range.
        if unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, DISK_LIMIT_BYTES as libc::off_t) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let file = std::sync::Arc::new(file);
        let start = Instant::now();
        let writers: Vec<_> = (0..DIRECT_WRITERS)
            .map(|writer| {
                let file = file.clone();
                std::thread::spawn(move || -> std::io::Result<u64> {
                    let pages = vec![AlignedPage([0x5a; DIRECT_ALIGNMENT_BYTES]); CHUNK_BYTES / DIRECT_ALIGNMENT_BYTES];
                    // SAFETY: the pages are plain bytes back to back (an AlignedPage's size is its
                    // alignment), CHUNK_BYTES in all, alive for the whole loop.
                    let chunk = unsafe { std::slice::from_raw_parts(pages.as_ptr().cast::<u8>(), CHUNK_BYTES) };
                    let mut written = 0u64;
                    let mut position = writer * CHUNK_BYTES as u64;
                    while start.elapsed() < duration && position + CHUNK_BYTES as u64 <= DISK_LIMIT_BYTES {
                        file.write_all_at(chunk, position)?;
                        written += CHUNK_BYTES as u64;
                        position += DIRECT_WRITERS * CHUNK_BYTES as u64;
                    }
                    Ok(written)
                })
            })
            .collect();
        let mut written = 0u64;
        for writer in writers {
            written += writer.join().map_err(|_| std::io::Error::other("direct writer panicked"))??;
        }
        file.sync_data()?;
        Ok(written as f64 / start.elapsed().as_secs_f64() / 1e6)
    })
}
