//! CPU time and memory of a process, read from /proc (the broker, given its PID) or from
//! getrusage (this load generator, so a client-bound run shows).

use std::time::Duration;

/// CPU time (user + system) a process has used so far, or None if it is gone or not ours to read.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields are counted after the last ')'.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // stat(5): utime and stime are fields 14 and 15, i.e. 11 and 12 after the name and state.
    let user_ticks: u64 = fields.get(11)?.parse().ok()?;
    let system_ticks: u64 = fields.get(12)?.parse().ok()?;
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_nanos((user_ticks + system_ticks) * 1_000_000_000 / ticks_per_second))
}

/// CPU time summed over several processes (a local cluster's brokers), or None if there are
/// none or any is gone.
pub fn processes_cpu(pids: &[u32]) -> Option<Duration> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|pid| process_cpu(*pid)).sum()
}

/// Resident set size summed over several processes now, in bytes, or None if there are none or
/// any is gone.
pub fn processes_rss_bytes(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|pid| process_rss_bytes(*pid)).sum()
}

/// Resident set size now, in bytes.
pub fn process_rss_bytes(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:").map(|kib| kib * 1024)
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    line[field.len()..].trim().trim_end_matches("kB").trim().parse().ok()
}

/// CPU time (user + system) of this process, every thread included (librdkafka's too).
pub fn own_cpu() -> Duration {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let to_duration = |time: libc::timeval| Duration::new(time.tv_sec as u64, time.tv_usec as u32 * 1000);
    to_duration(usage.ru_utime) + to_duration(usage.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        let start = process_cpu(pid).unwrap();
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        assert!(process_cpu(pid).unwrap() >= start);
        assert!(process_rss_bytes(pid).unwrap() > 0);
        assert_eq!(processes_rss_bytes(&[pid, pid]).map(|both| both > 0), Some(true));
        assert!(processes_cpu(&[pid, pid]).unwrap() >= start * 2);
        assert_eq!(processes_cpu(&[pid, u32::MAX]), None);
        assert_eq!(processes_cpu(&[]), None);
        assert!(own_cpu() > Duration::ZERO);
    }
}
