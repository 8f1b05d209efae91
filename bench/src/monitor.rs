//! Runs beside every measured run: prints a progress line and samples the broker's resident
//! memory, so the peak during the run is known (VmHWM would give the process's lifetime peak).

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::process_usage;

/// Counters the producer and consumer threads bump as records are acknowledged or received.
#[derive(Default)]
pub struct Progress {
    pub messages: AtomicU64,
    pub bytes: AtomicU64,
}

pub struct Monitor {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

impl Monitor {
    /// `label` starts the progress line; `pids` are the broker processes whose memory is sampled
    /// (summed: a local cluster's peak is the peak of its brokers' total).
    pub fn start(label: String, progress: Arc<Progress>, pids: Vec<u32>) -> Monitor {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_seen = stop.clone();
        let thread = std::thread::spawn(move || {
            let terminal = std::io::stderr().is_terminal();
            // Not on a terminal (a log, a test): one line every 5 s instead of redrawing one.
            let print_every = if terminal { Duration::from_secs(1) } else { Duration::from_secs(5) };
            let started = Instant::now();
            let mut last_print = started;
            let mut last_bytes = 0u64;
            let mut peak_rss_bytes = 0u64;
            while !stop_seen.load(Ordering::Relaxed) {
                std::thread::sleep(SAMPLE_INTERVAL);
                if let Some(rss) = process_usage::processes_rss_bytes(&pids) {
                    peak_rss_bytes = peak_rss_bytes.max(rss);
                }
                let now = Instant::now();
                if now - last_print >= print_every {
                    let bytes = progress.bytes.load(Ordering::Relaxed);
                    let rate = (bytes - last_bytes) as f64 / (now - last_print).as_secs_f64() / 1e6;
                    let line = format!(
                        "{label}  {:5.1} s  {} msgs  {rate:8.1} MB/s",
                        (now - started).as_secs_f64(),
                        progress.messages.load(Ordering::Relaxed)
                    );
                    let mut stderr = std::io::stderr().lock();
                    if terminal {
                        let _ = write!(stderr, "\r\x1b[2K{line}");
                    } else {
                        let _ = writeln!(stderr, "{line}");
                    }
                    let _ = stderr.flush();
                    last_print = now;
                    last_bytes = bytes;
                }
            }
            if terminal {
                let _ = write!(std::io::stderr(), "\r\x1b[2K");
            }
            peak_rss_bytes
        });
        Monitor { stop, thread: Some(thread) }
    }

    /// Stops the monitor; returns the broker's peak resident memory seen (0 without a PID).
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().map(|thread| thread.join().unwrap_or(0)).unwrap_or(0)
    }
}
