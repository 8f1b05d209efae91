//! Shard threads asleep in the kernel: a thread beside a measured run reads each of the broker's
//! shard threads' `/proc/<pid>/task/<tid>/stat` every millisecond and counts the samples in
//! uninterruptible sleep ('D'). A shard thread in D runs nothing else of its core (every
//! connection and partition of the shard waits), so these samples are the tail the broker itself
//! adds; when one is seen the thread's kernel stack (`/proc/<pid>/task/<tid>/stack`, root only)
//! is read so the report can name what it waited in (evict, unlink, rename, fsync...). Works
//! without perf (`bench/tools/dstate_perf.sh` is the perf check: every switch, not samples).
//!
//! The executor is not the only thread of a shard: glommio names its executor thread
//! `<name>-<id>` (ours: `shard-1`, ...) and the executor starts glommio's blocking thread, where
//! sleeping syscalls belong. Its D samples are reported apart, as `helper`, found two ways: by
//! name (`--helper-thread-prefix`: ours names it `shard-blocking`), and, for brokers that leave it
//! unnamed, as a second thread of an executor's name (Linux copies the creator's comm to a new
//! thread): of a name, the lowest thread id is the executor (it exists before the thread it
//! creates; ids grow until pid_max wraps, which a broker's start does not meet in practice).

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::soak::WindowClock;

/// Distinct kernel stacks kept; D samples with a stack beyond these are only counted.
pub const MAX_STACKS: usize = 64;
/// Frames kept of a stack, from the top (deep enough to reach the syscall of most D sleeps).
const MAX_FRAMES: usize = 16;
/// How often the thread list is read again (threads come and go: a restarted executor, say).
const RESCAN_INTERVAL: Duration = Duration::from_secs(1);
/// Stacks shown in the printed report.
pub const PRINTED_STACKS: usize = 5;

#[derive(Clone, Debug, Serialize)]
pub struct Options {
    /// Threads whose name starts with this are shard threads (ours: "shard").
    pub thread_prefix: String,
    /// Threads whose name starts with this are helpers, not executors (ours: "shard-blocking").
    pub helper_prefix: String,
    pub interval_ms: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The executor thread: a D sample here stalls the whole shard.
    Shard,
    /// Another thread with a shard's name (glommio's blocking thread): sleeping there is its job.
    Helper,
}

impl Role {
    pub fn label(self) -> &'static str {
        match self {
            Role::Shard => "shard",
            Role::Helper => "helper",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ThreadReport {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub role: Role,
    pub samples: u64,
    pub d_samples: u64,
    /// The longest run of consecutive D samples.
    pub longest_d_samples: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct StackReport {
    pub role: Role,
    pub samples: u64,
    /// The syscall the stack is in (its `__x64_sys_*` / `__do_sys_*` frame), if any.
    pub syscall: Option<String>,
    /// Function names, innermost first, without the syscall entry frames.
    pub frames: Vec<String>,
}

/// D samples in one soak window, summed over the threads of a role.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WindowCounts {
    pub shard_d_samples: u64,
    pub helper_d_samples: u64,
    /// Sampling passes over the threads made in the window.
    pub passes: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct DStateReport {
    pub interval_ms: f64,
    /// Passes over the threads made; fewer than the run's milliseconds when this tool's core
    /// was busy (the mean interval says by how much).
    pub passes: u64,
    pub mean_pass_interval_ms: f64,
    pub shard_d_samples: u64,
    pub helper_d_samples: u64,
    /// The longest run of consecutive D samples on one shard thread, in milliseconds (samples
    /// times the mean interval: a lower bound within one interval).
    pub longest_shard_d_ms: f64,
    pub threads: Vec<ThreadReport>,
    /// Most samples first.
    pub stacks: Vec<StackReport>,
    /// D samples whose stack was not kept (beyond MAX_STACKS distinct).
    pub unkept_stack_samples: u64,
    /// D samples whose stack could not be had: the thread had left D when it was read.
    pub stackless_samples: u64,
    /// Per soak window (empty outside a soak); the soak's own output carries them.
    #[serde(skip)]
    pub windows: Vec<WindowCounts>,
}

impl DStateReport {
    /// The most frequent stacks, one line each: "samples role [syscall] frame <- frame <- ...".
    pub fn stack_lines(&self, count: usize) -> Vec<String> {
        self.stacks
            .iter()
            .take(count)
            .map(|stack| {
                format!(
                    "{:>7} {:<6} [{}] {}",
                    stack.samples,
                    stack.role.label(),
                    stack.syscall.as_deref().unwrap_or("-"),
                    stack.frames.join(" <- ")
                )
            })
            .collect()
    }
}

struct Tracked {
    pid: u32,
    tid: u32,
    comm: String,
    role: Role,
    /// Kept open: a pread at offset 0 makes procfs render the line afresh, so a sample costs
    /// one syscall instead of open, read and close.
    stat: File,
    samples: u64,
    d_samples: u64,
    d_run: u64,
    longest_d_run: u64,
}

pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<DStateReport>>,
}

impl Sampler {
    /// Samples the shard threads of `pids` until `finish`; with a clock, D samples are also
    /// counted per window (samples after the last window count in the last one: the drain).
    pub fn start(options: Options, pids: Vec<u32>, clock: Option<WindowClock>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_seen = stop.clone();
        let thread = std::thread::Builder::new()
            .name("bench-dstate".to_string())
            .spawn(move || sample(&options, &pids, clock.as_ref(), &stop_seen))
            .expect("spawn the D-state sampler");
        Sampler { stop, thread: Some(thread) }
    }

    pub fn finish(mut self) -> DStateReport {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|thread| thread.join().ok()).unwrap_or_default()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn sample(options: &Options, pids: &[u32], clock: Option<&WindowClock>, stop: &AtomicBool) -> DStateReport {
    // The default 50 us timer slack would stretch every 1 ms sleep by up to 5%.
    // SAFETY: prctl on the calling thread with an integer argument.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong) };
    let interval = Duration::from_secs_f64(options.interval_ms.max(0.01) / 1000.0);
    let mut tracked: Vec<Tracked> = Vec::new();
    let mut gone: Vec<Tracked> = Vec::new();
    let mut stacks: HashMap<(Role, Vec<String>), u64> = HashMap::new();
    let mut unkept_stack_samples = 0u64;
    let mut stackless_samples = 0u64;
    let mut windows: Vec<WindowCounts> = vec![WindowCounts::default(); clock.map_or(0, |clock| clock.count)];
    let mut passes = 0u64;
    let started = Instant::now();
    let mut last_rescan: Option<Instant> = None;
    let mut next = started;
    let mut buffer = [0u8; 1024];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if last_rescan.is_none_or(|last| now - last >= RESCAN_INTERVAL) {
            rescan(options, pids, &mut tracked);
            last_rescan = Some(now);
        }
        let window = clock.map(|clock| &mut windows[clock.window_at(now)]);
        let mut window_counts = WindowCounts { passes: 1, ..WindowCounts::default() };
        let mut index = 0;
        while index < tracked.len() {
            let thread = &mut tracked[index];
            let Some(state) = read_state(&thread.stat, &mut buffer) else {
                // Exited: keep its figures.
                gone.push(tracked.swap_remove(index));
                continue;
            };
            index += 1;
            thread.samples += 1;
            if state != b'D' {
                thread.d_run = 0;
                continue;
            }
            thread.d_samples += 1;
            thread.d_run += 1;
            thread.longest_d_run = thread.longest_d_run.max(thread.d_run);
            match thread.role {
                Role::Shard => window_counts.shard_d_samples += 1,
                Role::Helper => window_counts.helper_d_samples += 1,
            }
            // Read while the thread may still be in the sleep. If it left D meanwhile, the
            // stack is where it is now (empty while it runs, or a later sleep): not kept.
            let frames = std::fs::read_to_string(format!("/proc/{}/task/{}/stack", thread.pid, thread.tid))
                .map(|text| stack_frames(&text))
                .unwrap_or_default();
            let still_asleep = read_state(&thread.stat, &mut buffer) == Some(b'D');
            let frames = if still_asleep { frames } else { Vec::new() };
            let key = (thread.role, frames);
            if key.1.is_empty() {
                stackless_samples += 1;
            } else if let Some(count) = stacks.get_mut(&key) {
                *count += 1;
            } else if stacks.len() < MAX_STACKS {
                stacks.insert(key, 1);
            } else {
                unkept_stack_samples += 1;
            }
        }
        passes += 1;
        if let Some(window) = window {
            window.shard_d_samples += window_counts.shard_d_samples;
            window.helper_d_samples += window_counts.helper_d_samples;
            window.passes += window_counts.passes;
        }
        next += interval;
        let now = Instant::now();
        match next.checked_duration_since(now) {
            Some(wait) => std::thread::sleep(wait),
            // Behind (this tool's core was busy): sample at once and keep the pace from here,
            // rather than a burst of catch-up passes.
            None => next = now,
        }
    }
    let elapsed = started.elapsed();
    let mean_pass_interval_ms = elapsed.as_secs_f64() * 1000.0 / passes.max(1) as f64;
    let threads: Vec<ThreadReport> = tracked
        .into_iter()
        .chain(gone)
        .map(|thread| ThreadReport {
            pid: thread.pid,
            tid: thread.tid,
            comm: thread.comm,
            role: thread.role,
            samples: thread.samples,
            d_samples: thread.d_samples,
            longest_d_samples: thread.longest_d_run,
        })
        .collect();
    let mut stacks: Vec<StackReport> = stacks
        .into_iter()
        .map(|((role, frames), samples)| StackReport { role, samples, syscall: syscall_of(&frames), frames })
        .collect();
    stacks.sort_by(|a, b| b.samples.cmp(&a.samples).then_with(|| a.frames.cmp(&b.frames)));
    let by_role = |role: Role| threads.iter().filter(|thread| thread.role == role).map(|thread| thread.d_samples).sum::<u64>();
    let longest_shard_run = threads.iter().filter(|thread| thread.role == Role::Shard).map(|thread| thread.longest_d_samples).max();
    DStateReport {
        interval_ms: options.interval_ms,
        passes,
        mean_pass_interval_ms,
        shard_d_samples: by_role(Role::Shard),
        helper_d_samples: by_role(Role::Helper),
        longest_shard_d_ms: longest_shard_run.unwrap_or(0) as f64 * mean_pass_interval_ms,
        threads,
        stacks,
        unkept_stack_samples,
        stackless_samples,
        windows,
    }
}

/// Adds the shard threads of `pids` not tracked yet.
fn rescan(options: &Options, pids: &[u32], tracked: &mut Vec<Tracked>) {
    for &pid in pids {
        let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/task")) else { continue };
        let mut named: Vec<(u32, String)> = entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(|tid| {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).ok()?;
                let comm = comm.trim_end().to_string();
                comm.starts_with(&options.thread_prefix).then_some((tid, comm))
            })
            .collect();
        named.sort();
        for (tid, comm) in &named {
            if tracked.iter().any(|thread| thread.pid == pid && thread.tid == *tid) {
                continue;
            }
            let role = role_of(options, &named, *tid, comm);
            let Ok(stat) = File::open(format!("/proc/{pid}/task/{tid}/stat")) else { continue };
            tracked.push(Tracked {
                pid,
                tid: *tid,
                comm: comm.clone(),
                role,
                stat,
                samples: 0,
                d_samples: 0,
                d_run: 0,
                longest_d_run: 0,
            });
        }
    }
}

/// A helper by name, or as a second thread of an executor's name: of a name, the lowest id is the
/// executor (see the module's comment). `named` is sorted by thread id.
fn role_of(options: &Options, named: &[(u32, String)], tid: u32, comm: &str) -> Role {
    if !options.helper_prefix.is_empty() && comm.starts_with(&options.helper_prefix) {
        return Role::Helper;
    }
    let first_of_name = named.iter().find(|(_, other)| other == comm).map(|(first, _)| *first);
    if first_of_name == Some(tid) {
        Role::Shard
    } else {
        Role::Helper
    }
}

/// The state letter of a stat line, or None once the thread is gone.
fn read_state(stat: &File, buffer: &mut [u8]) -> Option<u8> {
    let length = stat.read_at(buffer, 0).ok()?;
    state_of(&buffer[..length])
}

/// stat(5): "tid (comm) S ...": the name may hold spaces and parentheses, so the state is the
/// first letter after the last ')'.
fn state_of(line: &[u8]) -> Option<u8> {
    let close = line.iter().rposition(|byte| *byte == b')')?;
    line[close + 1..].iter().copied().find(|byte| !byte.is_ascii_whitespace())
}

/// Function names of a `/proc/<tid>/stack` ("[<0>] io_schedule+0x46/0x70"), innermost first,
/// without the syscall entry frames every stack ends with.
fn stack_frames(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let function = line.split_once("] ").map_or(line, |(_, rest)| rest).trim();
            let name = function.split('+').next().unwrap_or(function);
            (!name.is_empty()).then(|| name.to_string())
        })
        .filter(|name| !matches!(name.as_str(), "entry_SYSCALL_64_after_hwframe" | "do_syscall_64" | "x64_sys_call"))
        .take(MAX_FRAMES)
        .collect()
}

/// The syscall a stack is in; "task_work" for work the kernel does on the way back to user space
/// (the last close of a file: `__fput`, which may evict a deleted file's inode).
fn syscall_of(frames: &[String]) -> Option<String> {
    let syscall = frames.iter().rev().find_map(|frame| {
        ["__x64_sys_", "__do_sys_", "__se_sys_", "__ia32_sys_"]
            .iter()
            .find_map(|prefix| frame.strip_prefix(prefix))
            .map(str::to_string)
    });
    syscall.or_else(|| frames.iter().any(|frame| frame == "task_work_run").then(|| "task_work".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_after_the_last_parenthesis() {
        assert_eq!(state_of(b"12367 (shard-1) S 12365 12365"), Some(b'S'));
        assert_eq!(state_of(b"7 (a) b) (c) D 1 2"), Some(b'D'));
        assert_eq!(state_of(b"garbage"), None);
    }

    #[test]
    fn frames_and_syscall() {
        let text = "[<0>] folio_wait_bit_common+0x13b/0x330\n[<0>] truncate_inode_pages_range+0x2d1/0x4d0\n\
                    [<0>] ext4_evict_inode+0x10b/0x650\n[<0>] evict+0xcb/0x290\n[<0>] do_unlinkat+0x2c8/0x330\n\
                    [<0>] __x64_sys_unlinkat+0x38/0x70\n[<0>] do_syscall_64+0x71/0x280\n[<0>] entry_SYSCALL_64_after_hwframe+0x76/0x7e\n";
        let frames = stack_frames(text);
        assert_eq!(frames.first().map(String::as_str), Some("folio_wait_bit_common"));
        assert_eq!(frames.last().map(String::as_str), Some("__x64_sys_unlinkat"));
        assert_eq!(frames.len(), 6);
        assert_eq!(syscall_of(&frames).as_deref(), Some("unlinkat"));
        let close = stack_frames("[<0>] evict+0xcb/0x290\n[<0>] __fput+0xe6/0x2a0\n[<0>] task_work_run+0x59/0x90\n[<0>] exit_to_user_mode_loop+0x10b/0x120\n");
        assert_eq!(syscall_of(&close).as_deref(), Some("task_work"));
        assert!(stack_frames("").is_empty());
    }

    #[test]
    fn roles_by_name_and_order() {
        let options = Options { thread_prefix: "shard".to_string(), helper_prefix: "shard-blocking".to_string(), interval_ms: 1.0 };
        let named: Vec<(u32, String)> = [(10, "shard-1"), (11, "shard-1"), (12, "shard-2"), (13, "shard-blocking"), (14, "shard-blocking")]
            .into_iter()
            .map(|(tid, comm)| (tid, comm.to_string()))
            .collect();
        let roles: Vec<Role> = named.iter().map(|(tid, comm)| role_of(&options, &named, *tid, comm)).collect();
        assert_eq!(roles, [Role::Shard, Role::Helper, Role::Shard, Role::Helper, Role::Helper]);
    }

    #[test]
    fn samples_named_threads_of_this_process() {
        // Two threads of one name, as glommio's executor and its blocking thread: the first is
        // the shard, the one it starts the helper.
        let stop = Arc::new(AtomicBool::new(false));
        let stop_seen = stop.clone();
        let executor = std::thread::Builder::new()
            .name("dtest-1".to_string())
            .spawn(move || {
                let stop_helper = stop_seen.clone();
                // Unnamed: it inherits the creator's comm, as glommio's blocking thread does.
                let helper = std::thread::spawn(move || {
                    while !stop_helper.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                });
                while !stop_seen.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                helper.join().unwrap();
            })
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let clock = WindowClock::start(0.05, 0.1);
        let sampler = Sampler::start(Options { thread_prefix: "dtest".to_string(), helper_prefix: String::new(), interval_ms: 1.0 }, vec![std::process::id()], Some(clock));
        std::thread::sleep(Duration::from_millis(150));
        let report = sampler.finish();
        stop.store(true, Ordering::Relaxed);
        executor.join().unwrap();
        let roles: Vec<Role> = report.threads.iter().map(|thread| thread.role).collect();
        assert_eq!(roles.iter().filter(|role| **role == Role::Shard).count(), 1, "{roles:?}");
        assert_eq!(roles.iter().filter(|role| **role == Role::Helper).count(), 1, "{roles:?}");
        assert!(report.passes > 50, "{} passes", report.passes);
        assert!(report.threads.iter().all(|thread| thread.samples == report.passes));
        assert_eq!(report.windows.len(), 2);
        assert_eq!(report.windows.iter().map(|window| window.passes).sum::<u64>(), report.passes);
    }
}
