//! What every shard shares: the configuration, the topic table, the producer id allocator and
//! the shutdown flag. Everything here is Send + Sync and changes rarely.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use storage::log_manager::LogDirs;

use crate::config::BrokerConfig;
use crate::topics::TopicTable;

/// Producer ids are handed out in blocks; the file remembers the end of the last block, so ids
/// are never reused after a restart (or a crash: the next start begins a fresh block).
const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

pub struct BrokerState {
    pub config: BrokerConfig,
    pub log_dirs: LogDirs,
    pub topics: RwLock<TopicTable>,
    pub cluster_id: String,
    /// Logs were closed cleanly at the last stop: recovery may trust index files.
    pub clean_shutdown: bool,
    /// Set by SIGTERM/SIGINT (signal-hook writes it from the handler).
    pub shutting_down: Arc<AtomicBool>,
    /// Shards that have bound the listener; the last one logs that the broker is ready.
    pub shards_listening: std::sync::atomic::AtomicUsize,
    /// Why the broker could not start serving (a listener that cannot bind): the process's exit
    /// reason, instead of the flush failure a false `serve_until_shutdown` otherwise means.
    pub start_failure: std::sync::OnceLock<String>,
    /// Cluster mode: the ZooKeeper coordinator's view and commands. None when standalone.
    pub cluster: Option<zk::CoordinatorHandle>,
    /// Cluster mode: the producer id block this broker took from `/latest_producer_id_block`
    /// (next, end inclusive).
    cluster_producer_ids: Mutex<(i64, i64)>,
    next_producer_id: AtomicI64,
    producer_id_block_end: Mutex<i64>,
    producer_id_file: PathBuf,
    /// Listeners' TLS and SASL settings and the SCRAM credentials (security/).
    pub security: crate::security::session::Security,
    /// `max.connections`, per listener and per IP, counted across shards.
    pub connection_quotas: Arc<crate::connection_quotas::ConnectionQuotas>,
}

impl BrokerState {
    pub fn new(
        config: BrokerConfig,
        log_dirs: LogDirs,
        topics: TopicTable,
        cluster_id: String,
        clean_shutdown: bool,
        cluster: Option<zk::CoordinatorHandle>,
    ) -> Result<BrokerState, String> {
        let producer_id_file = log_dirs.dirs()[0].join("producer-id-block");
        let start = std::fs::read_to_string(&producer_id_file).ok().and_then(|t| t.trim().parse::<i64>().ok()).unwrap_or(0);
        let security = crate::security::session::Security::build(
            &config.listeners,
            &config.security_properties,
            config.fetch_zero_copy,
            log_dirs.dirs()[0].join("scram-credentials"),
            config.zookeeper_connect.as_ref().map(|_| &config.listeners[config.inter_broker_listener]),
            cluster.as_ref().map(|c| c.view.clone()),
            log_dirs.dirs()[0].join("acls.json"),
            cluster.clone(),
        )?;
        let connection_quotas = Arc::new(crate::connection_quotas::ConnectionQuotas::new(
            config.max_connections,
            config.listener_max_connections.clone(),
            config.inter_broker_listener,
            config.connection_limits.clone(),
        ));
        let state = BrokerState {
            connection_quotas,
            security,
            config,
            log_dirs,
            topics: RwLock::new(topics),
            cluster_id,
            clean_shutdown,
            shutting_down: Arc::new(AtomicBool::new(false)),
            shards_listening: std::sync::atomic::AtomicUsize::new(0),
            start_failure: std::sync::OnceLock::new(),
            cluster,
            cluster_producer_ids: Mutex::new((0, -1)),
            next_producer_id: AtomicI64::new(start),
            producer_id_block_end: Mutex::new(start),
            producer_id_file,
        };
        Ok(state)
    }

    /// Cluster mode: this broker is one of the partition's replicas (leader or follower).
    pub fn holds_replica(&self, topic: &str, partition: i32) -> bool {
        let Some(cluster) = &self.cluster else { return false };
        let snapshot = cluster.view.snapshot();
        let replicas = snapshot.topics.get(topic).and_then(|t| t.replicas.get(partition as usize).cloned());
        replicas.is_some_and(|replicas| replicas.contains(&self.config.broker_id))
    }

    /// The topic's partition count as clients see it: the cluster's (ZooKeeper) in cluster mode,
    /// where this broker's table holds only topics it has replicas of.
    pub fn partition_count(&self, topic: &str) -> Option<i32> {
        match &self.cluster {
            Some(cluster) => cluster.view.snapshot().topics.get(topic).map(|t| t.replicas.len() as i32),
            None => self.topics.read().unwrap().get(topic).map(|info| info.partitions),
        }
    }

    /// Cluster mode, acks=all: Kafka refuses the append (NOT_ENOUGH_REPLICAS) while the ISR is
    /// smaller than `min.insync.replicas`. Returns the reason when it must be refused.
    pub fn not_enough_replicas(&self, topic: &str, partition: i32, acks: i16) -> Option<String> {
        let cluster = self.cluster.as_ref()?;
        if acks != -1 {
            return None;
        }
        let snapshot = cluster.view.snapshot();
        let state = snapshot.state(topic, partition)?;
        if state.leader != self.config.broker_id {
            return None; // refused as NOT_LEADER_OR_FOLLOWER by the owner
        }
        let config = &snapshot.topics.get(topic)?.config;
        let min_insync = config.get("min.insync.replicas").and_then(|v| v.parse().ok()).unwrap_or(self.config.min_insync_replicas);
        (state.isr.len() < min_insync as usize).then(|| {
            format!(
                "The size of the current ISR {:?} is insufficient to satisfy the min.isr requirement of {min_insync} for partition {topic}-{partition}",
                state.isr
            )
        })
    }

    /// Cluster mode: mirrors into the local topic table every topic that has a replica here, so
    /// partitions this broker leads can be opened with the topic's config.
    pub fn apply_cluster_snapshot(&self, snapshot: &zk::ClusterSnapshot) {
        let me = self.config.broker_id;
        let mut topics = self.topics.write().unwrap();
        for (name, state) in &snapshot.topics {
            if !state.replicas.iter().any(|replicas| replicas.contains(&me)) {
                continue;
            }
            let partitions = state.replicas.len() as i32;
            let result = match topics.get(name) {
                None => topics.create_with_id(name, partitions, state.config.clone(), state.topic_id).map(|_| ()),
                Some(info) if info.partitions < partitions => topics.set_partitions(name, partitions),
                Some(info) if info.overrides != state.config => topics.set_overrides(name, state.config.clone()),
                Some(_) => Ok(()),
            };
            if let Err(e) = result {
                tracing::error!(topic = name, error = %e, "recording a cluster topic locally");
            }
        }
        drop(topics);
        // The ZooKeeper coordinator's thread, not a shard: it may block.
        if let Err(e) = crate::topics::save_blocking(&self.topics) {
            tracing::error!(error = %e, "recording cluster topics locally");
        }
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Cluster mode: a producer id no broker of the cluster handed out before, from blocks taken
    /// in ZooKeeper as Kafka's ZooKeeper-mode ProducerIdManager does.
    pub async fn allocate_producer_id_in_cluster(&self) -> Result<i64, String> {
        let cluster = self.cluster.as_ref().expect("cluster mode");
        {
            let mut block = self.cluster_producer_ids.lock().unwrap();
            if block.0 <= block.1 {
                block.0 += 1;
                return Ok(block.0 - 1);
            }
        }
        let start = cluster.allocate_producer_id_block(self.config.broker_id).await?;
        let mut block = self.cluster_producer_ids.lock().unwrap();
        *block = (start + 1, start + zk::PRODUCER_ID_BLOCK_SIZE - 1);
        Ok(start)
    }

    /// Writes the topic table's unsaved changes (`topics::save_blocking`) on glommio's blocking
    /// thread: a shard never replaces a file itself (see `storage::file_deletion`).
    pub async fn save_topics(self: &Arc<Self>) -> Result<(), String> {
        let broker = self.clone();
        storage::file_deletion::on_blocking_thread(move || crate::topics::save_blocking(&broker.topics)).await
    }

    /// A producer id never handed out before, by this broker or an earlier run of it. Taking a
    /// new block writes (renames over) the block file: on glommio's blocking thread, never the
    /// shard's (see `storage::file_deletion`).
    pub async fn allocate_producer_id(self: &Arc<Self>) -> Result<i64, String> {
        let id = self.next_producer_id.fetch_add(1, Ordering::AcqRel);
        let broker = self.clone();
        storage::file_deletion::on_blocking_thread(move || broker.take_producer_id_block_for(id)).await
    }

    /// Blocking: makes sure the durable block end is past `id`.
    fn take_producer_id_block_for(&self, id: i64) -> Result<i64, String> {
        let mut end = self.producer_id_block_end.lock().unwrap();
        if id >= *end {
            let new_end = id + PRODUCER_ID_BLOCK_SIZE;
            let tmp = self.producer_id_file.with_extension("tmp");
            std::fs::write(&tmp, new_end.to_string()).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
            std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| e.to_string())?;
            std::fs::rename(&tmp, &self.producer_id_file).map_err(|e| e.to_string())?;
            *end = new_end;
        }
        Ok(id)
    }
}

impl BrokerState {
    /// Topic names and ids as this broker knows them now (KIP-516: Fetch v13+ names topics by id).
    pub fn topic_ids(&self) -> TopicIds<'_> {
        match &self.cluster {
            Some(cluster) => TopicIds::Cluster(cluster.view.snapshot()),
            None => TopicIds::Local(self.topics.read().unwrap()),
        }
    }
}

/// A reading of topic ids: ZooKeeper's snapshot in cluster mode, the topic table standalone.
/// Holds the table's read lock standalone: drop it before any await.
pub enum TopicIds<'a> {
    Cluster(Arc<zk::ClusterSnapshot>),
    Local(std::sync::RwLockReadGuard<'a, TopicTable>),
}

impl TopicIds<'_> {
    pub fn id_of(&self, name: &str) -> Option<[u8; 16]> {
        match self {
            TopicIds::Cluster(snapshot) => snapshot.topics.get(name).map(|t| t.topic_id),
            TopicIds::Local(table) => table.get(name).map(|t| t.topic_id),
        }
    }

    /// The names of `ids` that exist, in one pass over the topics (ids are not indexed: a fetch
    /// resolves them once per request, not once per partition).
    pub fn names_of(&self, ids: &std::collections::HashSet<[u8; 16]>) -> std::collections::HashMap<[u8; 16], String> {
        if ids.is_empty() {
            return Default::default();
        }
        let all: Box<dyn Iterator<Item = (&String, &[u8; 16])>> = match self {
            TopicIds::Cluster(snapshot) => Box::new(snapshot.topics.iter().map(|(name, t)| (name, &t.topic_id))),
            TopicIds::Local(table) => Box::new(table.all().map(|t| (&t.name, &t.topic_id))),
        };
        all.filter(|(_, id)| ids.contains(*id)).map(|(name, id)| (*id, name.clone())).collect()
    }
}

/// The broker id stored in `meta.properties`, if any (a broker that got its id from ZooKeeper
/// keeps it across restarts, as Kafka's does).
pub fn stored_broker_id(log_dirs: &LogDirs) -> Option<i32> {
    log_dirs.dirs().iter().find_map(|dir| {
        let text = std::fs::read_to_string(dir.join("meta.properties")).ok()?;
        crate::config::parse_properties(&text).ok()?.get("broker.id")?.parse().ok()
    })
}

/// Kafka's `meta.properties` in each log dir: the cluster id and broker id this data belongs to.
/// In cluster mode `cluster_id_from_zookeeper` is the cluster's: data of another cluster is refused
/// (Kafka's InconsistentClusterIdException).
pub fn load_or_create_meta(log_dirs: &LogDirs, broker_id: i32, cluster_id_from_zookeeper: Option<&str>) -> Result<String, String> {
    let mut cluster_id = None;
    for dir in log_dirs.dirs() {
        let path = dir.join("meta.properties");
        if let Ok(text) = std::fs::read_to_string(&path) {
            let properties = crate::config::parse_properties(&text)?;
            if let Some(stored) = properties.get("broker.id").and_then(|b| b.parse::<i32>().ok()) {
                if stored != broker_id {
                    return Err(format!("{} belongs to broker.id {stored}, this broker is {broker_id}", path.display()));
                }
            }
            if let Some(id) = properties.get("cluster.id") {
                if let Some(expected) = cluster_id_from_zookeeper {
                    if id != expected {
                        return Err(format!(
                            "{} belongs to cluster {id}, but ZooKeeper holds cluster {expected}",
                            path.display()
                        ));
                    }
                }
                cluster_id = Some(id.clone());
            }
        }
    }
    let cluster_id = cluster_id.or(cluster_id_from_zookeeper.map(str::to_string)).unwrap_or_else(new_cluster_id);
    for dir in log_dirs.dirs() {
        let path = dir.join("meta.properties");
        if !path.exists() {
            std::fs::write(&path, format!("version=0\nbroker.id={broker_id}\ncluster.id={cluster_id}\n"))
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
        }
    }
    Ok(cluster_id)
}

/// A fresh cluster id: 16 random bytes in URL-safe base64 without padding, as Kafka's.
pub fn new_cluster_id() -> String {
    zk::paths::base64_url(uuid::Uuid::new_v4().as_bytes())
}

