//! The partitions one shard owns: opened on first use (recovery runs then, or at start for those
//! on disk), each key by one opener at a time so a log is never opened twice, never after
//! shutdown began. Different partitions open concurrently (at most `MAX_CONCURRENT_OPENS`):
//! an open is mostly waits (file opens, reads on the blocking thread), and one at a time made a
//! start with 10,000 partitions take tens of seconds (issue 21).
//!
//! Contract: lives on its shard's thread; only the owner (`BrokerConfig::owner_shard`) opens a
//! partition (asserted), so no two shards ever touch one log.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use std::collections::HashSet;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use glommio::sync::Semaphore;
use shard::notify::Notify;

use super::{check_leader, Partition, PartitionError, TopicPartition};
use crate::state::BrokerState;
use crate::topics::log_config_for;

/// Partitions opened (or closed at shutdown) at once on one shard.
const MAX_CONCURRENT_OPENS: usize = 32;
/// A waiter for another request's open of the same partition looks again this often at most
/// (the opener's notification normally wakes it first).
const OPEN_RECHECK_MS: u64 = 100;

pub struct PartitionTable {
    broker: Arc<BrokerState>,
    shard_id: usize,
    shard_count: usize,
    partitions: RefCell<HashMap<TopicPartition, Rc<Partition>>>,
    /// Partitions being opened now: a second request for one waits for `opened` instead of
    /// opening the log twice.
    opening: RefCell<HashSet<TopicPartition>>,
    opened: Notify,
    /// Bounds the opens in flight (descriptors, blocking-thread queue).
    open_slots: Semaphore,
    /// Fired after every append on this shard (and when a high watermark moves): long-polling
    /// fetches and acks=all waits re-check.
    pub appended: Rc<Notify>,
}

impl PartitionTable {
    pub fn new(broker: Arc<BrokerState>, shard_id: usize, shard_count: usize) -> PartitionTable {
        PartitionTable {
            broker,
            shard_id,
            shard_count,
            partitions: RefCell::new(HashMap::new()),
            opening: RefCell::new(HashSet::new()),
            opened: Notify::default(),
            open_slots: Semaphore::new(MAX_CONCURRENT_OPENS as u64),
            appended: Rc::new(Notify::default()),
        }
    }

    pub fn owns(&self, topic: &str, partition: i32) -> bool {
        self.broker.config.owner_shard(topic, partition, self.shard_count) == self.shard_id
    }

    /// The partition for serving clients: in cluster mode only while this broker leads it.
    pub async fn serving(&self, topic: &str, partition: i32) -> Result<Rc<Partition>, PartitionError> {
        check_leader(&self.broker, topic, partition)?;
        self.replica(topic, partition).await
    }

    /// This broker's replica of the partition, whatever its role (the follower's fetcher).
    pub async fn replica(&self, topic: &str, partition: i32) -> Result<Rc<Partition>, PartitionError> {
        assert!(self.owns(topic, partition), "only the owner shard opens {topic}-{partition}");
        let key = (topic.to_string(), partition);
        if let Some(found) = self.partitions.borrow().get(&key) {
            return Ok(found.clone());
        }
        if self.broker.is_shutting_down() {
            return Err(PartitionError::ShuttingDown);
        }
        let overrides = {
            let topics = self.broker.topics.read().unwrap();
            match topics.get(topic) {
                Some(info) if partition >= 0 && partition < info.partitions => info.overrides.clone(),
                _ => return Err(PartitionError::UnknownTopicOrPartition),
            }
        };
        // Bounded: each turn either finds the partition, or waits for the one opener of this
        // key to finish (success or failure), or becomes that opener.
        loop {
            if let Some(found) = self.partitions.borrow().get(&key) {
                return Ok(found.clone());
            }
            if !self.opening.borrow().contains(&key) {
                break;
            }
            let ticket = self.opened.ticket();
            if self.opening.borrow().contains(&key) {
                Notify::wait(ticket, Duration::from_millis(OPEN_RECHECK_MS)).await;
            }
        }
        self.opening.borrow_mut().insert(key.clone());
        let opened = {
            let _slot = self.open_slots.acquire_permit(1).await.expect("open slots never close");
            Partition::open(self.broker.clone(), self.appended.clone(), topic, partition, &overrides).await
        };
        self.opening.borrow_mut().remove(&key);
        self.opened.notify_all();
        let opened = Rc::new(opened?);
        self.partitions.borrow_mut().insert(key, opened.clone());
        Ok(opened)
    }

    /// The partition if this shard has it open; never opens one.
    pub fn if_open(&self, topic: &str, partition: i32) -> Option<Rc<Partition>> {
        self.partitions.borrow().get(&(topic.to_string(), partition)).cloned()
    }

    pub fn all_open(&self) -> Vec<Rc<Partition>> {
        self.partitions.borrow().values().cloned().collect()
    }

    /// Opens every partition this shard owns that exists on disk (recovery runs at start, not at
    /// the first request).
    pub async fn open_existing(&self) {
        let existing = match self.existing_partitions().await {
            Ok(found) => found,
            Err(e) => {
                tracing::error!(error = %e, "listing log dirs");
                return;
            }
        };
        let owned = existing.into_iter().filter(|(topic, partition, _)| self.owns(topic, *partition));
        stream::iter(owned)
            .for_each_concurrent(MAX_CONCURRENT_OPENS, |(topic, partition, _)| async move {
                if let Err(e) = self.replica(&topic, partition).await {
                    tracing::error!(topic, partition, error = ?e, "partition left offline");
                }
            })
            .await;
    }

    /// Closes and deletes this shard's partitions of `topic` (topic deletion), also those on
    /// disk that were never opened.
    pub async fn delete_topic(&self, topic: &str) {
        let doomed: Vec<Rc<Partition>> = {
            let mut partitions = self.partitions.borrow_mut();
            let keys: Vec<TopicPartition> = partitions.keys().filter(|(t, _)| t == topic).cloned().collect();
            keys.into_iter().filter_map(|k| partitions.remove(&k)).collect()
        };
        for handle in doomed {
            if let Err(e) = handle.close_and_delete().await {
                tracing::warn!(topic, partition = handle.index, error = %e, "deleting a partition");
            }
        }
        if let Ok(existing) = self.existing_partitions().await {
            for (t, partition, dir) in existing {
                if t == topic && self.owns(&t, partition) {
                    match storage::file_deletion::retire_dir(dir, Vec::new()).await {
                        Ok(retired) => storage::file_deletion::delete_later(retired, self.broker.config.log_defaults.file_delete_delay_ms),
                        Err(e) => tracing::warn!(topic, partition, error = %e, "deleting a partition never opened"),
                    }
                }
            }
        }
    }

    /// Every partition directory in the log dirs, listed off the shard thread (a directory scan
    /// may wait for the disk).
    async fn existing_partitions(&self) -> storage::Result<Vec<(String, i32, std::path::PathBuf)>> {
        let log_dirs = self.broker.log_dirs.clone();
        storage::file_deletion::on_blocking_thread(move || log_dirs.existing_partitions()).await
    }

    /// The topics this shard has partitions of, open or on disk.
    pub async fn topics_held(&self) -> std::collections::BTreeSet<String> {
        let mut topics: std::collections::BTreeSet<String> = self.partitions.borrow().keys().map(|(topic, _)| topic.clone()).collect();
        if let Ok(existing) = self.existing_partitions().await {
            topics.extend(existing.into_iter().filter(|(topic, partition, _)| self.owns(topic, *partition)).map(|(topic, _, _)| topic));
        }
        topics
    }

    /// Applies new topic overrides to this shard's open partitions of `topic`.
    pub async fn reconfigure_topic(&self, topic: &str) {
        let overrides = match self.broker.topics.read().unwrap().get(topic) {
            Some(info) => info.overrides.clone(),
            None => return,
        };
        let Ok(config) = log_config_for(&self.broker.config, &overrides) else { return };
        let handles: Vec<Rc<Partition>> = self.all_open().into_iter().filter(|p| p.topic == topic).collect();
        for handle in handles {
            handle.log.write().await.expect("partition lock").set_config(config.clone());
        }
    }

    /// Flushes and closes every partition (graceful shutdown); false if one could not be flushed.
    pub async fn close_all(&self) -> bool {
        let all_clean = std::cell::Cell::new(true);
        let partitions: Vec<_> = self.partitions.borrow_mut().drain().map(|(_, p)| p).collect();
        // Concurrently, as the opens: each close is a flush and checkpoint writes, mostly waits.
        stream::iter(partitions)
            .for_each_concurrent(MAX_CONCURRENT_OPENS, |handle| {
                let all_clean = &all_clean;
                async move {
                    if let Err(e) = handle.close(true).await {
                        tracing::error!(topic = handle.topic, partition = handle.index, error = %e, "flush at shutdown failed");
                        all_clean.set(false);
                    }
                }
            })
            .await;
        all_clean.get()
    }
}
