//! A partition's leader epochs: from which offset on each leader epoch's leader wrote. It is
//! how a replica that comes back finds where its log and a new leader's part ways
//! (OffsetForLeaderEpoch): the leader answers the end offset of the replica's latest epoch, and
//! everything past it on the replica is cut. Kafka's `leader-epoch-checkpoint` file, same name
//! and text format: a version line (0), a count line, then one `epoch start_offset` per line.
//!
//! Invariants (asserted): epochs strictly grow, start offsets never go down.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::file_deletion;

pub const LEADER_EPOCH_CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";

/// Kafka's "no epoch" and "no offset" answers.
pub const UNDEFINED_EPOCH: i32 = -1;
pub const UNDEFINED_OFFSET: i64 = -1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

#[derive(Debug)]
pub struct LeaderEpochCache {
    path: PathBuf,
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    /// Reads the checkpoint in `dir`; none (or an unreadable one, logged) is an empty cache.
    pub async fn load(dir: &Path) -> LeaderEpochCache {
        let path = dir.join(LEADER_EPOCH_CHECKPOINT_FILE);
        let read_path = path.clone();
        let text = file_deletion::on_blocking_thread(move || std::fs::read_to_string(read_path)).await;
        let entries = match text {
            Ok(text) => parse(&text).unwrap_or_else(|| {
                tracing::warn!(path = %path.display(), "unreadable leader epoch checkpoint; starting without epochs");
                Vec::new()
            }),
            Err(_) => Vec::new(),
        };
        LeaderEpochCache { path, entries }
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// Records that `epoch` starts at `start_offset` (a leader's first append in its epoch, or a
    /// follower's first batch of a new epoch). Older or equal epochs change nothing. As Kafka,
    /// entries starting at or after `start_offset` give way (an epoch that wrote nothing).
    pub async fn assign(&mut self, epoch: i32, start_offset: i64) -> Result<()> {
        if epoch < 0 || self.latest_epoch().is_some_and(|latest| epoch <= latest) {
            return Ok(());
        }
        self.entries.retain(|e| e.start_offset < start_offset);
        self.entries.push(EpochEntry { epoch, start_offset });
        self.check_invariants();
        self.persist().await
    }

    /// Kafka's `endOffsetFor`: (the largest epoch <= `requested`, the offset where the next epoch
    /// starts, or the log end for the latest epoch). A requested epoch older than every entry
    /// answers the first entry's start offset; one newer than every entry, or none at all,
    /// answers UNDEFINED.
    pub fn end_offset_for(&self, requested: i32, log_end_offset: i64) -> (i32, i64) {
        if requested == UNDEFINED_EPOCH {
            return (UNDEFINED_EPOCH, UNDEFINED_OFFSET);
        }
        if self.latest_epoch() == Some(requested) {
            return (requested, log_end_offset);
        }
        let Some(higher) = self.entries.iter().find(|e| e.epoch > requested) else {
            return (UNDEFINED_EPOCH, UNDEFINED_OFFSET);
        };
        match self.entries.iter().rev().find(|e| e.epoch <= requested) {
            Some(floor) => (floor.epoch, higher.start_offset),
            None => (requested, higher.start_offset),
        }
    }

    /// The log was cut back to `end_offset`: epochs that started at or after it are gone.
    pub async fn truncate_from_end(&mut self, end_offset: i64) -> Result<()> {
        let before = self.entries.len();
        self.entries.retain(|e| e.start_offset < end_offset);
        if self.entries.len() != before {
            self.persist().await?;
        }
        Ok(())
    }

    /// Retention moved the log start to `start_offset`: the epoch holding it now starts there.
    pub async fn truncate_from_start(&mut self, start_offset: i64) -> Result<()> {
        let covering = self.entries.iter().rposition(|e| e.start_offset <= start_offset);
        let Some(index) = covering.filter(|&i| i > 0 || self.entries[0].start_offset < start_offset) else { return Ok(()) };
        self.entries.drain(..index);
        self.entries[0].start_offset = start_offset;
        self.check_invariants();
        self.persist().await
    }

    fn check_invariants(&self) {
        for pair in self.entries.windows(2) {
            assert!(pair[1].epoch > pair[0].epoch, "leader epochs only grow: {:?}", self.entries);
            assert!(pair[1].start_offset >= pair[0].start_offset, "epoch start offsets never go down: {:?}", self.entries);
        }
    }

    /// Written whole to a temporary file, synced, renamed over the old one: a crash leaves one
    /// or the other; the rename (which evicts the old file) runs off the shard thread.
    async fn persist(&self) -> Result<()> {
        let mut text = format!("0\n{}\n", self.entries.len());
        for entry in &self.entries {
            text.push_str(&format!("{} {}\n", entry.epoch, entry.start_offset));
        }
        file_deletion::replace_file(&self.path, text.into_bytes()).await
    }
}

fn parse(text: &str) -> Option<Vec<EpochEntry>> {
    let mut lines = text.lines();
    if lines.next()?.trim() != "0" {
        return None;
    }
    let count: usize = lines.next()?.trim().parse().ok()?;
    let entries: Vec<EpochEntry> = lines
        .take(count)
        .map(|line| {
            let (epoch, offset) = line.trim().split_once(' ')?;
            Some(EpochEntry { epoch: epoch.parse().ok()?, start_offset: offset.parse().ok()? })
        })
        .collect::<Option<_>>()?;
    (entries.len() == count).then_some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn cache(entries: &[(i32, i64)]) -> (tempfile_dir::Dir, LeaderEpochCache) {
        let dir = tempfile_dir::Dir::new();
        let mut cache = LeaderEpochCache::load(&dir.0).await;
        for &(epoch, offset) in entries {
            cache.assign(epoch, offset).await.unwrap();
        }
        (dir, cache)
    }

    /// The cache writes through glommio (its blocking thread): tests run in an executor.
    fn on_executor(test: impl std::future::Future<Output = ()> + 'static) {
        glommio::LocalExecutorBuilder::default().make().expect("executor").run(test);
    }

    /// A scratch directory removed on drop (no dev-dependency for one test module).
    mod tempfile_dir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                let path = std::env::temp_dir().join(format!("epochs-{}-{}", std::process::id(), uuid_like()));
                std::fs::create_dir_all(&path).unwrap();
                Dir(path)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        fn uuid_like() -> u64 {
            use std::sync::atomic::{AtomicU64, Ordering};
            static NEXT: AtomicU64 = AtomicU64::new(0);
            NEXT.fetch_add(1, Ordering::Relaxed)
        }
    }

    #[test]
    fn end_offsets_follow_kafkas_rules() {
        on_executor(async {
        let (_dir, cache) = cache(&[(1, 0), (3, 100), (4, 250)]).await;
        assert_eq!(cache.end_offset_for(4, 300), (4, 300), "the latest epoch ends at the log end");
        assert_eq!(cache.end_offset_for(3, 300), (3, 250));
        assert_eq!(cache.end_offset_for(2, 300), (1, 100), "an epoch this log never saw: the one before it");
        assert_eq!(cache.end_offset_for(0, 300), (0, 0), "older than every entry");
        assert_eq!(cache.end_offset_for(7, 300), (UNDEFINED_EPOCH, UNDEFINED_OFFSET));
        assert_eq!(cache.end_offset_for(UNDEFINED_EPOCH, 300), (UNDEFINED_EPOCH, UNDEFINED_OFFSET));
        });
    }

    #[test]
    fn assign_truncate_and_reload() {
        on_executor(async {
        let (dir, mut cache) = cache(&[(1, 0), (2, 50)]).await;
        cache.assign(2, 60).await.unwrap();
        cache.assign(1, 70).await.unwrap();
        assert_eq!(cache.entries().len(), 2, "older or equal epochs change nothing");
        cache.assign(3, 50).await.unwrap();
        assert_eq!(cache.entries(), &[EpochEntry { epoch: 1, start_offset: 0 }, EpochEntry { epoch: 3, start_offset: 50 }], "epoch 2 wrote nothing");
        cache.assign(5, 80).await.unwrap();
        cache.truncate_from_end(80).await.unwrap();
        assert_eq!(cache.latest_epoch(), Some(3));
        cache.truncate_from_start(60).await.unwrap();
        assert_eq!(cache.entries(), &[EpochEntry { epoch: 3, start_offset: 60 }]);
        let reloaded = LeaderEpochCache::load(&dir.0).await;
        assert_eq!(reloaded.entries(), cache.entries());
        assert_eq!(std::fs::read_to_string(dir.0.join(LEADER_EPOCH_CHECKPOINT_FILE)).unwrap(), "0\n1\n3 60\n");
        });
    }
}
