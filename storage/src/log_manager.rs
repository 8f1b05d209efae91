//! The broker's `log.dirs`: where partitions live and the clean-shutdown marker of each directory.
//!
//! A partition directory is `<log.dir>/<topic>-<partition>`. New partitions go to the directory
//! holding the fewest partitions, as Kafka places them.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::error::{Result, StorageError};

/// Kafka's marker file: present only while the broker is stopped after a clean shutdown.
pub const CLEAN_SHUTDOWN_FILE: &str = ".kafka_cleanshutdown";

pub fn partition_dir_name(topic: &str, partition: i32) -> String {
    format!("{topic}-{partition}")
}

/// Splits `<topic>-<partition>`; topics may themselves contain '-'.
pub fn parse_partition_dir_name(name: &str) -> Option<(String, i32)> {
    let (topic, partition) = name.rsplit_once('-')?;
    let partition: i32 = partition.parse().ok()?;
    if topic.is_empty() || partition < 0 {
        return None;
    }
    Some((topic.to_string(), partition))
}

#[derive(Debug, Clone)]
pub struct LogDirs {
    dirs: Vec<PathBuf>,
    /// Partitions in each dir, counted once from the listing and then kept in memory (as
    /// Kafka's `LogManager` does): a partition's directory is made only when its log opens, so
    /// placements close together all saw the same listing and went to the same dir.
    placed: std::sync::Arc<Mutex<Option<Vec<usize>>>>,
}

impl LogDirs {
    pub fn new(dirs: Vec<PathBuf>) -> Result<LogDirs> {
        assert!(!dirs.is_empty(), "at least one log dir");
        for dir in &dirs {
            std::fs::create_dir_all(dir).map_err(|e| StorageError::io(format!("creating log dir {}", dir.display()), e))?;
        }
        let _ = FAILURES.get_or_init(|| Failures { dirs: dirs.clone(), state: Mutex::default() });
        Ok(LogDirs { dirs, placed: Default::default() })
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Every partition found on disk: (topic, partition, its directory).
    pub fn existing_partitions(&self) -> Result<Vec<(String, i32, PathBuf)>> {
        let mut found = Vec::new();
        for dir in &self.dirs {
            let entries = std::fs::read_dir(dir).map_err(|e| StorageError::io(format!("listing {}", dir.display()), e))?;
            for entry in entries.flatten() {
                if !entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    continue;
                }
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some((topic, partition)) = parse_partition_dir_name(&name) {
                    found.push((topic, partition, entry.path()));
                }
            }
        }
        found.sort();
        Ok(found)
    }

    /// Removes the partition directories a deletion left renamed `<dir>.<id>-delete` when the
    /// broker stopped before it finished (Kafka does the same at start). Blocking: call it
    /// before the shards start. Errors are logged: a leftover that stays is harmless.
    pub fn remove_leftover_deletions(&self) {
        for dir in &self.dirs {
            let Ok(entries) = std::fs::read_dir(dir) else { continue };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(crate::file_deletion::DELETED_DIR_SUFFIX) && entry.path().is_dir() {
                    match std::fs::remove_dir_all(entry.path()) {
                        Ok(()) => tracing::info!(dir = %entry.path().display(), "removed a partition directory left by an interrupted deletion"),
                        Err(e) => tracing::warn!(dir = %entry.path().display(), error = %e, "removing a deleted partition directory"),
                    }
                }
            }
        }
    }

    /// The directory a new partition should live in: where it already is, or else the log dir
    /// with the fewest partitions.
    pub fn place_partition(&self, topic: &str, partition: i32) -> Result<PathBuf> {
        let name = partition_dir_name(topic, partition);
        if let Some(existing) = self.dirs.iter().map(|d| d.join(&name)).find(|p| p.is_dir()) {
            return Ok(existing);
        }
        if let [only] = self.dirs.as_slice() {
            // One dir: nothing to balance, and counting its entries for every new partition
            // made creating 10,000 of them quadratic.
            return Ok(only.join(name));
        }
        let mut placed = self.placed.lock().unwrap();
        if placed.is_none() {
            let mut counts = Vec::with_capacity(self.dirs.len());
            for dir in &self.dirs {
                let count = std::fs::read_dir(dir)
                    .map_err(|e| StorageError::io(format!("listing {}", dir.display()), e))?
                    .flatten()
                    .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                    .filter(|e| e.file_name().to_str().and_then(parse_partition_dir_name).is_some())
                    .count();
                counts.push(count);
            }
            *placed = Some(counts);
        }
        let counts = placed.as_mut().expect("counted above");
        // The fewest partitions, and of those the first online dir.
        let best = (0..self.dirs.len())
            .filter(|&i| !is_offline(&self.dirs[i]))
            .min_by_key(|&i| counts[i])
            .ok_or_else(|| StorageError::Offline { path: self.dirs[0].clone(), position: 0, reason: "every log dir has failed".into() })?;
        counts[best] += 1;
        Ok(self.dirs[best].join(name))
    }

    /// True if every log dir holds the clean-shutdown marker. The markers are removed, so a crash
    /// from here on is seen as unclean at the next start.
    pub fn take_clean_shutdown_markers(&self) -> Result<bool> {
        let mut clean = true;
        for dir in &self.dirs {
            let marker = dir.join(CLEAN_SHUTDOWN_FILE);
            if marker.exists() {
                std::fs::remove_file(&marker).map_err(|e| StorageError::io(format!("removing {}", marker.display()), e))?;
            } else {
                clean = false;
            }
        }
        sync_dirs(&self.dirs)?;
        Ok(clean)
    }

    /// Written after every log is closed (flushed), so the next start can skip recovery.
    pub fn write_clean_shutdown_markers(&self) -> Result<()> {
        for dir in &self.dirs {
            let marker = dir.join(CLEAN_SHUTDOWN_FILE);
            std::fs::write(&marker, b"").map_err(|e| StorageError::io(format!("writing {}", marker.display()), e))?;
        }
        sync_dirs(&self.dirs)
    }
}

fn sync_dirs(dirs: &[PathBuf]) -> Result<()> {
    for dir in dirs {
        sync_dir(dir)?;
    }
    Ok(())
}

/// fsync a directory so created, renamed or removed entries survive power loss.
pub fn sync_dir(dir: &Path) -> Result<()> {
    let handle = std::fs::File::open(dir).map_err(|e| StorageError::io(format!("opening {}", dir.display()), e))?;
    handle.sync_all().map_err(|e| StorageError::io(format!("syncing {}", dir.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_round_trip_with_dashes_in_topics() {
        assert_eq!(parse_partition_dir_name("my-topic-12"), Some(("my-topic".into(), 12)));
        assert_eq!(parse_partition_dir_name("plain"), None);
        assert_eq!(parse_partition_dir_name("-3"), None);
    }

    #[test]
    fn new_partitions_go_to_the_emptiest_dir() {
        let root = std::env::temp_dir().join(format!("logdirs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dirs = LogDirs::new(vec![root.join("a"), root.join("b")]).unwrap();
        std::fs::create_dir_all(root.join("a/t-0")).unwrap();
        assert_eq!(dirs.place_partition("t", 1).unwrap(), root.join("b/t-1"));
        assert_eq!(dirs.place_partition("t", 0).unwrap(), root.join("a/t-0"), "existing stays");
        assert!(!dirs.take_clean_shutdown_markers().unwrap());
        dirs.write_clean_shutdown_markers().unwrap();
        assert!(dirs.take_clean_shutdown_markers().unwrap());
        assert!(!dirs.take_clean_shutdown_markers().unwrap(), "markers are consumed");
        std::fs::remove_dir_all(&root).unwrap();
    }
}

/// Kafka's `LogDirFailureChannel` and `ReplicaManager.handleLogDirFailure`, for the process: an
/// I/O error that says the disk or file system under a log dir failed (EIO, EROFS, ...) takes
/// that whole dir offline. Its partitions then answer KAFKA_STORAGE_ERROR to produce and fetch
/// (`Partition` asks `is_offline` at its doors), Metadata shows them without a leader and
/// DescribeLogDirs answers KAFKA_STORAGE_ERROR for the dir; the other dirs keep working. With
/// every dir offline the broker stops, as Kafka halts. The line is logged once per dir.
///
/// Deviation: ENOSPC (and EDQUOT) do not take the dir offline, where Kafka's do: the append
/// that failed cut its file back to whole batches (nothing half-written remains), so writes
/// resume once space is freed, without a restart (tests/tests/disk_full.rs).
struct Failures {
    dirs: Vec<PathBuf>,
    state: Mutex<FailureState>,
}

#[derive(Default)]
struct FailureState {
    offline: Vec<PathBuf>,
    /// Every partition directory opened, so Metadata can tell which are in an offline dir
    /// without listing it (a shard never reads a directory).
    partition_dirs: HashSet<PathBuf>,
}

static FAILURES: OnceLock<Failures> = OnceLock::new();
/// Fast path for the doors: no dir has failed (the common case costs one load).
static ANY_OFFLINE: AtomicBool = AtomicBool::new(false);

/// Whether `error` means the storage under the file failed, as opposed to a full disk, a
/// descriptor limit or a missing file, which are answered per request.
pub fn is_dir_failure(error: &StorageError) -> bool {
    let StorageError::Io { source, .. } = error else { return false };
    matches!(source.raw_os_error(), Some(libc::EIO | libc::EROFS | libc::ENODEV | libc::ENXIO | libc::EUCLEAN | libc::ESTALE))
}

/// Told whenever the set of offline partitions grows (cluster mode: the broker tells the
/// controller, broker/src/log_dir_failure.rs). Called on the thread that met the error, a shard's:
/// it must return at once.
static ON_OFFLINE: OnceLock<Box<dyn Fn() + Send + Sync>> = OnceLock::new();

/// Sets the one listener of `ON_OFFLINE` (a second call is ignored).
pub fn on_offline_partitions(listener: Box<dyn Fn() + Send + Sync>) {
    let _ = ON_OFFLINE.set(listener);
}

fn tell_offline_listener() {
    if let Some(listener) = ON_OFFLINE.get() {
        listener();
    }
}

/// Records where a partition lives (called when its log opens).
pub fn note_partition_dir(partition_dir: &Path) {
    let Some(failures) = FAILURES.get() else { return };
    let mut state = failures.state.lock().unwrap();
    let added = state.partition_dirs.insert(partition_dir.to_path_buf());
    let offline = added && state.offline.iter().any(|d| partition_dir.parent() == Some(d.as_path()));
    drop(state);
    if offline {
        // A replica of a failed dir opened after the failure: offline too.
        tell_offline_listener();
    }
}

/// An I/O error on `path` (a file or partition directory): if it is a storage failure, the log
/// dir holding `path` goes offline. Returns true if this call took it offline.
pub fn note_failure(path: &Path, error: &StorageError) -> bool {
    let Some(failures) = FAILURES.get() else { return false };
    if !is_dir_failure(error) {
        return false;
    }
    let Some(dir) = failures.dirs.iter().filter(|d| path.starts_with(d)).max_by_key(|d| d.as_os_str().len()) else { return false };
    let mut state = failures.state.lock().unwrap();
    if state.offline.contains(dir) {
        return false;
    }
    state.offline.push(dir.clone());
    ANY_OFFLINE.store(true, Ordering::Release);
    let partitions = state.partition_dirs.iter().filter(|p| p.parent() == Some(dir.as_path())).count();
    tracing::error!(
        log_dir = %dir.display(),
        %error,
        partitions,
        "log dir failed: its partitions are offline (KAFKA_STORAGE_ERROR) until the broker restarts with the dir repaired or removed from log.dirs"
    );
    if state.offline.len() == failures.dirs.len() {
        tracing::error!(log_dirs = ?failures.dirs, "every log dir has failed: stopping the broker, as Kafka does");
        std::process::exit(1);
    }
    drop(state);
    tell_offline_listener();
    true
}

/// Whether `path` (a partition directory or a file in one) lies in an offline log dir.
pub fn is_offline(path: &Path) -> bool {
    if !ANY_OFFLINE.load(Ordering::Acquire) {
        return false;
    }
    FAILURES.get().is_some_and(|f| f.state.lock().unwrap().offline.iter().any(|d| path.starts_with(d)))
}

/// Whether `topic`-`partition` lives in an offline log dir (Metadata).
pub fn partition_offline(topic: &str, partition: i32) -> bool {
    if !ANY_OFFLINE.load(Ordering::Acquire) {
        return false;
    }
    let Some(failures) = FAILURES.get() else { return false };
    let state = failures.state.lock().unwrap();
    let name = partition_dir_name(topic, partition);
    state.offline.iter().any(|d| state.partition_dirs.contains(&d.join(&name)))
}

/// Every partition opened in an offline log dir: (topic, partition).
pub fn offline_partitions() -> Vec<(String, i32)> {
    if !ANY_OFFLINE.load(Ordering::Acquire) {
        return Vec::new();
    }
    let Some(failures) = FAILURES.get() else { return Vec::new() };
    let state = failures.state.lock().unwrap();
    let in_offline_dir = |p: &&PathBuf| state.offline.iter().any(|d| p.parent() == Some(d.as_path()));
    let mut partitions: Vec<(String, i32)> =
        state.partition_dirs.iter().filter(in_offline_dir).filter_map(|p| parse_partition_dir_name(p.file_name()?.to_str()?)).collect();
    partitions.sort();
    partitions
}

/// The offline log dirs (DescribeLogDirs).
pub fn offline_dirs() -> Vec<PathBuf> {
    FAILURES.get().map(|f| f.state.lock().unwrap().offline.clone()).unwrap_or_default()
}

/// A partition's answer while its dir is offline.
pub fn offline_error(partition_dir: &Path) -> StorageError {
    StorageError::Offline { path: partition_dir.to_path_buf(), position: 0, reason: "its log dir failed".into() }
}
