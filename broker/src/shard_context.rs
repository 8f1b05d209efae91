//! One shard's state: the partitions it owns (opened on first use), the notification that wakes
//! long-polling fetches, and its router to the other shards. Lives on the shard's thread only.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use glommio::sync::{RwLock, Semaphore};
use shard::notify::Notify;
use shard::shards_table::shard_for_partition;
use shard::Router;
use storage::{Log, StorageError};

use crate::groups::GroupCoordinator;
use crate::producer_state::ProducerStateTable;
use crate::splice_sender::SpliceSender;
use crate::state::BrokerState;
use crate::topics::log_config_for;

pub type TopicPartition = (String, i32);

pub struct Partition {
    pub log: RwLock<Log>,
    pub producers: RefCell<ProducerStateTable>,
    /// Cluster mode: what replication knows about this partition.
    pub replication: RefCell<Replication>,
}

/// A partition's replication state on this broker.
#[derive(Debug, Default)]
pub struct Replication {
    /// Leader: each follower's log end offset, as its last fetch said (the fetch offset).
    pub follower_log_end_offsets: std::collections::BTreeMap<i32, i64>,
    /// Leader: when each follower last fetched from the log end (Kafka's lastCaughtUpTime).
    pub follower_caught_up_ms: std::collections::BTreeMap<i32, i64>,
    /// Leader: an ISR change is being written; no second one until it shows in the snapshot.
    pub isr_change_pending: bool,
    /// The leader epoch the follower maps belong to: a new leadership starts them afresh, so
    /// offsets followers reported to an earlier leadership of ours never count.
    pub leader_epoch: Option<i32>,
    /// Leader: the high watermark computed last (it never moves back). Follower: the leader's,
    /// from the last fetch response.
    pub high_watermark: i64,
}

pub struct Shard {
    pub router: Rc<Router<Shard>>,
    pub broker: Arc<BrokerState>,
    partitions: RefCell<HashMap<TopicPartition, Rc<Partition>>>,
    /// Serialises opening partitions, so two requests never open the same log twice.
    opening: Semaphore,
    /// Fired after every append on this shard: long-polling fetches re-check.
    pub appended: Notify,
    /// Fired once when the broker begins a graceful shutdown: idle connections close.
    pub shutdown: Notify,
    /// Open connections on this shard, bounded by `max.connections` / shard count.
    pub connections: std::cell::Cell<usize>,
    /// The consumer groups whose `__consumer_offsets` partition this shard owns.
    pub groups: GroupCoordinator,
    /// Sends fetched file regions to sockets without copying; None on the copy path.
    pub splice_sender: Option<Rc<SpliceSender>>,
}

/// Why a partition cannot be served.
#[derive(Debug)]
pub enum PartitionError {
    UnknownTopicOrPartition,
    /// Cluster mode: another broker leads this partition (or none does yet).
    NotLeaderOrFollower,
    /// The broker is stopping: logs are being closed and no partition is opened any more.
    ShuttingDown,
    Storage(StorageError),
}

/// Why an acks=all wait for the ISR ended without the records replicated.
#[derive(Debug)]
pub enum HighWatermarkWaitError {
    /// This broker no longer leads the partition (the new leader may lack the records).
    LeadershipMoved(PartitionError),
    TimedOut,
}

impl Shard {
    /// Must run on the shard's executor (the splice sender starts a task there).
    pub fn new(router: Rc<Router<Shard>>, broker: Arc<BrokerState>) -> Shard {
        let splice_sender = if broker.config.fetch_zero_copy {
            match SpliceSender::start() {
                Ok(sender) => Some(sender),
                Err(e) => {
                    tracing::warn!(shard = router.shard_id(), error = %e, "no io_uring splice here: fetches fall back to the copy path");
                    None
                }
            }
        } else {
            None
        };
        Shard {
            splice_sender,
            router,
            broker,
            partitions: RefCell::new(HashMap::new()),
            opening: Semaphore::new(1),
            appended: Notify::default(),
            shutdown: Notify::default(),
            connections: std::cell::Cell::new(0),
            groups: GroupCoordinator::default(),
        }
    }

    pub fn id(&self) -> usize {
        self.router.shard_id()
    }

    pub fn owner_of(&self, topic: &str, partition: i32) -> usize {
        match &self.broker.config.partition_shards {
            None => shard_for_partition(topic, partition, self.router.shard_count()),
            Some(owners) => owners[shard_for_partition(topic, partition, owners.len())],
        }
    }

    /// The partition, opened (and recovered) on first use, for serving clients: in cluster mode
    /// only while this broker leads it. Only the owning shard may call this.
    pub async fn partition(&self, topic: &str, partition: i32) -> Result<Rc<Partition>, PartitionError> {
        self.broker.check_leader(topic, partition)?;
        self.get_or_open(topic, partition).await
    }

    /// This broker's replica of the partition, whatever its role (the follower's fetcher).
    pub async fn local_replica(&self, topic: &str, partition: i32) -> Result<Rc<Partition>, PartitionError> {
        self.get_or_open(topic, partition).await
    }

    /// The partition, opened (and recovered) on first use, whatever this broker's role for it.
    async fn get_or_open(&self, topic: &str, partition: i32) -> Result<Rc<Partition>, PartitionError> {
        debug_assert_eq!(self.owner_of(topic, partition), self.id(), "only the owner opens a partition");
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
        let _permit = self.opening.acquire_permit(1).await.expect("opening semaphore never closes");
        if let Some(found) = self.partitions.borrow().get(&key) {
            return Ok(found.clone());
        }
        let config = log_config_for(&self.broker.config, &overrides)
            .map_err(|e| PartitionError::Storage(StorageError::CorruptBatch(format!("topic config: {e}"))))?;
        let dir = self.broker.log_dirs.place_partition(topic, partition).map_err(PartitionError::Storage)?;
        let log = Log::open(&dir, config, self.broker.clean_shutdown).await.map_err(|e| {
            tracing::error!(topic, partition, error = %e, "partition cannot be opened");
            PartitionError::Storage(e)
        })?;
        let mut producers = ProducerStateTable::default();
        for header in log.batch_headers_since(log.previous_segment_base_offset()).await.map_err(PartitionError::Storage)? {
            producers.record(&header);
        }
        let opened = Rc::new(Partition {
            log: RwLock::new(log),
            producers: RefCell::new(producers),
            replication: RefCell::new(Replication::default()),
        });
        self.partitions.borrow_mut().insert(key, opened.clone());
        Ok(opened)
    }

    /// What consumers may read up to. Standalone: the log end. Cluster mode, on the leader: the
    /// smallest log end offset over the ISR, never moving back; on a follower: the leader's as
    /// last fetched.
    pub fn high_watermark(&self, topic: &str, partition: i32, handle: &Partition, log_end_offset: i64) -> i64 {
        let Some(cluster) = &self.broker.cluster else { return log_end_offset };
        let me = self.broker.config.broker_id;
        let snapshot = cluster.view.snapshot();
        let mut replication = handle.replication.borrow_mut();
        match snapshot.state(topic, partition) {
            Some(state) if state.leader == me => {
                if replication.leader_epoch != Some(state.leader_epoch) {
                    replication.leader_epoch = Some(state.leader_epoch);
                    replication.follower_log_end_offsets.clear();
                    replication.follower_caught_up_ms.clear();
                }
                let lowest_in_sync = state
                    .isr
                    .iter()
                    .filter(|&&member| member != me)
                    .map(|member| replication.follower_log_end_offsets.get(member).copied().unwrap_or(0))
                    .fold(log_end_offset, i64::min);
                replication.high_watermark = replication.high_watermark.max(lowest_in_sync).min(log_end_offset);
                replication.high_watermark
            }
            _ => replication.high_watermark.min(log_end_offset),
        }
    }

    /// Cluster mode, under the log's write lock before an append: keeps the epoch the log stamps
    /// into batches in line with the partition state (this broker's leadership and its epoch).
    pub fn sync_leader_epoch(&self, topic: &str, partition: i32, log: &mut storage::log::Log) {
        let Some(cluster) = &self.broker.cluster else { return };
        let snapshot = cluster.view.snapshot();
        match snapshot.state(topic, partition) {
            Some(state) if state.leader == self.broker.config.broker_id => {
                if log.leader_epoch() != Some(state.leader_epoch) {
                    log.become_leader(state.leader_epoch);
                }
            }
            _ => {
                if log.leader_epoch().is_some() {
                    log.become_follower();
                }
            }
        }
    }

    /// acks=all in cluster mode (produce, and offset commits): returns once the high watermark
    /// covers `end_offset`, that is once every replica in the ISR has the records. Fails when
    /// leadership moves first, or at `timeout_ms` (the caller's request timeout).
    pub async fn wait_for_high_watermark(
        &self,
        topic: &str,
        partition: i32,
        handle: &Partition,
        end_offset: i64,
        timeout_ms: i32,
    ) -> Result<(), HighWatermarkWaitError> {
        /// The ISR can shrink without an append: look again at least this often.
        const RECHECK_MS: u64 = 100;
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(timeout_ms.clamp(1, 300_000) as u64);
        loop {
            let ticket = self.appended.ticket();
            let log_end_offset = handle.log.read().await.expect("partition lock").log_end_offset();
            if self.high_watermark(topic, partition, handle, log_end_offset) >= end_offset {
                return Ok(());
            }
            if let Err(e) = self.broker.check_leader(topic, partition) {
                return Err(HighWatermarkWaitError::LeadershipMoved(e));
            }
            let now = std::time::Instant::now();
            if now >= deadline || self.broker.is_shutting_down() {
                return Err(HighWatermarkWaitError::TimedOut);
            }
            shard::notify::Notify::wait(ticket, (deadline - now).min(std::time::Duration::from_millis(RECHECK_MS))).await;
        }
    }

    /// The partition if this shard has it open; never opens one.
    pub fn open_partition(&self, topic: &str, partition: i32) -> Option<Rc<Partition>> {
        self.partitions.borrow().get(&(topic.to_string(), partition)).cloned()
    }

    /// Opens every partition this shard owns that exists on disk (recovery runs at start, not at
    /// the first request).
    pub async fn open_existing_partitions(&self) {
        let existing = match self.broker.log_dirs.existing_partitions() {
            Ok(found) => found,
            Err(e) => {
                tracing::error!(error = %e, "listing log dirs");
                return;
            }
        };
        for (topic, partition, _) in existing {
            if self.owner_of(&topic, partition) == self.id() {
                if let Err(e) = self.get_or_open(&topic, partition).await {
                    tracing::error!(topic, partition, error = ?e, "partition left offline");
                }
            }
        }
    }

    /// Closes and deletes this shard's partitions of `topic` (topic deletion).
    pub async fn delete_topic_partitions(&self, topic: &str) {
        let doomed: Vec<(TopicPartition, Rc<Partition>)> = {
            let mut partitions = self.partitions.borrow_mut();
            let keys: Vec<TopicPartition> = partitions.keys().filter(|(t, _)| t == topic).cloned().collect();
            keys.into_iter().filter_map(|k| partitions.remove(&k).map(|p| (k, p))).collect()
        };
        for ((topic, partition), handle) in doomed {
            let log = handle.log.write().await.expect("partition lock");
            let dir = log.dir().to_path_buf();
            drop(log);
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(topic, partition, error = %e, "deleting partition dir");
            }
        }
        // Partitions never opened here but present on disk.
        if let Ok(existing) = self.broker.log_dirs.existing_partitions() {
            for (t, partition, dir) in existing {
                if t == topic && self.owner_of(&t, partition) == self.id() {
                    let _ = std::fs::remove_dir_all(dir);
                }
            }
        }
    }

    /// Cluster mode: deletes this shard's replicas of topics the cluster no longer has: deleted
    /// by the controller, possibly while this broker was down. (A log dir joins only the cluster
    /// named in its meta.properties, so every topic on it is this cluster's.)
    pub async fn delete_topics_gone_from_cluster(&self, snapshot: &zk::ClusterSnapshot) {
        if !snapshot.complete {
            return; // the placeholder before the first read: absence means nothing yet
        }
        let mut gone: std::collections::BTreeSet<String> =
            self.partitions.borrow().keys().map(|(topic, _)| topic.clone()).filter(|t| !snapshot.topics.contains_key(t)).collect();
        if let Ok(existing) = self.broker.log_dirs.existing_partitions() {
            gone.extend(
                existing
                    .into_iter()
                    .filter(|(topic, partition, _)| self.owner_of(topic, *partition) == self.id() && !snapshot.topics.contains_key(topic))
                    .map(|(topic, _, _)| topic),
            );
        }
        for topic in gone {
            tracing::warn!(shard = self.id(), topic, "deleting this broker's replicas: the topic is no longer in the cluster");
            // Out of the table first, so nothing opens the partitions again meanwhile.
            let _ = self.broker.topics.write().unwrap().remove(&topic);
            self.delete_topic_partitions(&topic).await;
        }
    }

    /// Applies new topic overrides to this shard's open partitions of `topic`.
    pub async fn reconfigure_topic(&self, topic: &str) {
        let overrides = match self.broker.topics.read().unwrap().get(topic) {
            Some(info) => info.overrides.clone(),
            None => return,
        };
        let Ok(config) = log_config_for(&self.broker.config, &overrides) else { return };
        let handles: Vec<Rc<Partition>> =
            self.partitions.borrow().iter().filter(|((t, _), _)| t == topic).map(|(_, p)| p.clone()).collect();
        for handle in handles {
            handle.log.write().await.expect("partition lock").set_config(config.clone());
        }
    }

    pub fn open_partitions(&self) -> Vec<(TopicPartition, Rc<Partition>)> {
        self.partitions.borrow().iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Flushes and closes every partition (graceful shutdown).
    pub async fn close_all(&self) -> bool {
        let mut all_clean = true;
        let partitions: Vec<_> = self.partitions.borrow_mut().drain().collect();
        for ((topic, partition), handle) in partitions {
            let mut log = handle.log.write().await.expect("partition lock");
            if let Err(e) = log.checkpoint().await {
                tracing::error!(topic, partition, error = %e, "flush at shutdown failed");
                all_clean = false;
            }
        }
        all_clean
    }
}
