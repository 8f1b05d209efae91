//! Broker configuration with Kafka's property names: `--config server.properties` plus
//! `--override key=value`, as kafka-server-start.sh takes them. An unknown key or a bad value is
//! an error at start; Kafka keys that only tune parts of Kafka we do not have are accepted and
//! logged as ignored, so an existing server.properties works unchanged.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use storage::batch::TimestampType;
use storage::LogConfig;

#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub broker_id: i32,
    /// The first listener's address (the port checked free at start).
    pub listener: SocketAddr,
    /// The inter-broker listener's advertised address: what this broker registers in ZooKeeper.
    pub advertised_host: String,
    pub advertised_port: u16,
    /// Every listener (`listeners`, `advertised.listeners`, `listener.security.protocol.map`).
    pub listeners: Vec<crate::security::Listener>,
    /// Index in `listeners` of `inter.broker.listener.name` / `security.inter.broker.protocol`.
    pub inter_broker_listener: usize,
    /// `ssl.*`, `sasl.*`, `listener.name.*` keys as given: security/ reads them per listener.
    pub security_properties: BTreeMap<String, String>,
    pub log_dirs: Vec<PathBuf>,
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub auto_create_topics_enable: bool,
    pub delete_topic_enable: bool,
    pub message_max_bytes: usize,
    pub socket_request_max_bytes: usize,
    pub log_retention_check_interval_ms: u64,
    pub log_flush_scheduler_interval_ms: u64,
    /// How often each log's recovery point file and index files are written (Kafka's
    /// `log.flush.offset.checkpoint.interval.ms`); flushes themselves only fdatasync the data.
    pub log_flush_offset_checkpoint_interval_ms: u64,
    pub max_connections: usize,
    /// `max.incremental.fetch.session.cache.slots` (Kafka's default 1000; 0: no fetch sessions),
    /// divided among the shards (`fetch_session`).
    pub max_incremental_fetch_session_cache_slots: usize,
    /// Connection limits (`connection_quotas.rs`): `max.connections.per.ip` and its overrides.
    pub connection_limits: crate::connection_quotas::ConnectionLimits,
    /// `listener.name.<l>.max.connections`, one per entry of `listeners` (UNLIMITED if unset).
    pub listener_max_connections: Vec<usize>,
    /// `connections.max.idle.ms`: a connection with no request for this long is closed.
    pub connections_max_idle_ms: u64,
    pub zookeeper_connect: Option<String>,
    /// Kafka's defaults: 18 s session; the connection timeout defaults to the session's.
    pub zookeeper_session_timeout_ms: u64,
    pub zookeeper_connection_timeout_ms: Option<u64>,
    /// Ours, not Kafka's (Kafka hard-codes 15 minutes): how old a change notification must be
    /// to be purged, `zookeeper.change.notification.expiration.ms`; for tests (zk's change_purge.rs).
    pub zookeeper_change_notification_expiration_ms: u64,
    /// `replica.lag.time.max.ms`: a follower not caught up for this long leaves the ISR.
    pub replica_lag_time_max_ms: i64,
    /// `unclean.leader.election.enable` (default false, as Kafka since 0.11).
    pub unclean_leader_election_enable: bool,
    /// `broker.rack`, registered with the broker in cluster mode.
    pub broker_rack: Option<String>,
    /// Ours, not Kafka's: `fetch.zero.copy=false` serves fetches by reading record bytes and
    /// writing them (the copy path) instead of splicing them from the segment files; to compare.
    pub fetch_zero_copy: bool,
    /// Ours: the shards that accept client connections (`listener.shards=0`); None: every shard.
    /// With `partition.shards`, lets a benchmark make every request land on the owner, or on the
    /// wrong shard (tuning.md, cross-shard routing).
    pub listener_shards: Option<Vec<usize>>,
    /// Ours: the shards that own partitions (`partition.shards=0`); None: every shard.
    pub partition_shards: Option<Vec<usize>>,
    /// Ours: `metrics.listener=http://HOST:PORT` serves Prometheus text at `/metrics` (metrics/);
    /// None (the default): no endpoint.
    pub metrics_listener: Option<SocketAddr>,
    /// Ours: `log.segment.fd.cache.size`, closed segments' files each shard keeps open at most
    /// (storage::segment_file). None (the default): half the descriptor limit over the shards.
    pub log_segment_fd_cache_size: Option<usize>,
    /// Topic defaults from the `log.*` keys; topic configs override them.
    pub log_defaults: LogConfig,
    pub cleanup_policy: String,
    /// `compression.type` as configured (the topics' default; `log_defaults` holds its codec).
    pub compression_type: String,
    pub min_insync_replicas: i32,
    /// Consumer groups: Kafka's `group.*`, `offsets.*` and `offset.metadata.max.bytes`.
    pub group_initial_rebalance_delay_ms: u64,
    pub group_min_session_timeout_ms: i32,
    pub group_max_session_timeout_ms: i32,
    pub group_max_size: usize,
    pub offset_metadata_max_bytes: usize,
    pub offsets_topic_num_partitions: i32,
    pub offsets_topic_segment_bytes: u64,
    /// Cluster mode: replicas of each `__consumer_offsets` partition. As in Kafka, the topic is
    /// not created (FindCoordinator answers COORDINATOR_NOT_AVAILABLE) until that many brokers
    /// are live. Standalone ignores it.
    pub offsets_topic_replication_factor: i16,
    pub offsets_retention_ms: i64,
    pub offsets_retention_check_interval_ms: u64,
    /// `log.cleaner.enable`: compacted topics are cleaned (one cleaner per shard).
    pub log_cleaner_enable: bool,
    /// `log.cleaner.threads`: accepted; the shard count is the cleaner's parallelism here.
    pub log_cleaner_threads: i32,
    /// `log.cleaner.io.max.bytes.per.second`: shared by the shards' cleaners (Kafka's throttler is one for all its cleaner threads).
    pub log_cleaner_io_max_bytes_per_second: f64,
    /// `log.cleaner.dedupe.buffer.size`: shared by the shards' cleaners.
    pub log_cleaner_dedupe_buffer_size: u64,
    /// `log.cleaner.io.buffer.load.factor`.
    pub log_cleaner_io_buffer_load_factor: f64,
    /// `log.cleaner.backoff.ms`: a cleaner's sleep when no log needs cleaning.
    pub log_cleaner_backoff_ms: u64,
    /// The transaction coordinator's log (`__transaction_state`) and limits, Kafka's names and
    /// defaults. Standalone ignores the replication factor and min ISR (one replica).
    pub transaction_state_log_num_partitions: i32,
    pub transaction_state_log_replication_factor: i16,
    pub transaction_state_log_min_isr: i32,
    pub transaction_state_log_segment_bytes: u64,
    pub transaction_max_timeout_ms: i64,
    pub transactional_id_expiration_ms: i64,
    pub transaction_abort_timed_out_transaction_cleanup_interval_ms: u64,
    pub transaction_remove_expired_transaction_cleanup_interval_ms: u64,
}

/// Keys of Apache Kafka's broker config that tune machinery this broker does not have (threads
/// pools, JVM-side buffers, security we do not offer yet). Accepted and ignored with a log line.
const IGNORED_KAFKA_KEYS: &[&str] = &[
    "num.network.threads", "num.io.threads", "socket.send.buffer.bytes", "socket.receive.buffer.bytes",
    "num.recovery.threads.per.data.dir",
    "log.cleaner.io.buffer.size",
    "num.replica.fetchers",
    "queued.max.requests", "background.threads",
    "log.preallocate",
    "confluent.support.metrics.enable", "log.message.format.version", "inter.broker.protocol.version",
];

/// KIP-390's per-codec levels, with Kafka's ranges. Accepted and checked; batches are compressed
/// at the codecs' default levels (kafka-protocol's encoder takes no level).
pub fn check_compression_level(key: &str, value: &str) -> Result<(), String> {
    let level: i32 = value.trim().parse().map_err(|_| format!("{key}={value}: expected a number"))?;
    let valid = match key {
        "compression.gzip.level" => level == -1 || (1..=9).contains(&level),
        "compression.lz4.level" => (1..=17).contains(&level),
        _ => (-131_072..=22).contains(&level),
    };
    if valid {
        Ok(())
    } else {
        Err(format!("{key}={value}: out of range"))
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{key}={value}: expected true or false")),
    }
}

fn parse_number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, String> {
    value.trim().parse::<T>().map_err(|_| format!("{key}={value}: expected a number"))
}

/// Parses Java properties text: `key=value` or `key: value`, `#`/`!` comments, blank lines.
pub fn parse_properties(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut map = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let Some(split) = line.find(['=', ':']) else {
            return Err(format!("line {}: {line:?} is not key=value", number + 1));
        };
        map.insert(line[..split].trim().to_string(), line[split + 1..].trim().to_string());
    }
    Ok(map)
}

impl BrokerConfig {
    /// Checks the shard lists against the number of shards, known only once placement is read.
    pub fn check_shard_lists(&self, shard_count: usize) -> Result<(), String> {
        for (key, list) in [("listener.shards", &self.listener_shards), ("partition.shards", &self.partition_shards)] {
            if let Some(bad) = list.iter().flatten().find(|shard| **shard >= shard_count) {
                return Err(format!("{key} names shard {bad}, but there are {shard_count} shards (0-{})", shard_count - 1));
            }
        }
        Ok(())
    }

    /// The shard that owns a partition, of `shard_count`: the shard table's pure function, over
    /// `partition.shards` when that knob is set. Every shard computes it alike, without a lock.
    pub fn owner_shard(&self, topic: &str, partition: i32, shard_count: usize) -> usize {
        match &self.partition_shards {
            None => shard::shards_table::shard_for_partition(topic, partition, shard_count),
            Some(owners) => owners[shard::shards_table::shard_for_partition(topic, partition, owners.len())],
        }
    }

    pub fn accepts_on(&self, shard: usize) -> bool {
        self.listener_shards.as_ref().map_or(true, |shards| shards.contains(&shard))
    }

    /// How many shards accept connections, of `shard_count`.
    pub fn listening_shard_count(&self, shard_count: usize) -> usize {
        self.listener_shards.as_ref().map_or(shard_count, Vec::len)
    }

    pub fn from_properties(properties: &BTreeMap<String, String>) -> Result<BrokerConfig, String> {
        let mut config = BrokerConfig {
            broker_id: 0,
            listener: "127.0.0.1:9092".parse().unwrap(),
            advertised_host: "127.0.0.1".into(),
            advertised_port: 9092,
            listeners: Vec::new(),
            inter_broker_listener: 0,
            security_properties: BTreeMap::new(),
            log_dirs: vec![PathBuf::from("kafka-logs")],
            num_partitions: 1,
            default_replication_factor: 1,
            auto_create_topics_enable: true,
            delete_topic_enable: true,
            message_max_bytes: storage::config::DEFAULT_MAX_MESSAGE_BYTES,
            socket_request_max_bytes: 100 * 1024 * 1024,
            log_retention_check_interval_ms: 300_000,
            log_flush_scheduler_interval_ms: 1_000,
            log_flush_offset_checkpoint_interval_ms: 60_000,
            max_incremental_fetch_session_cache_slots: 1000,
            max_connections: crate::connection_quotas::UNLIMITED,
            connection_limits: Default::default(),
            listener_max_connections: Vec::new(),
            connections_max_idle_ms: 600_000,
            zookeeper_connect: None,
            zookeeper_session_timeout_ms: 18_000,
            zookeeper_connection_timeout_ms: None,
            zookeeper_change_notification_expiration_ms: zk::change_purge::DEFAULT_EXPIRATION_MS,
            broker_rack: None,
            unclean_leader_election_enable: false,
            replica_lag_time_max_ms: 30_000,
            fetch_zero_copy: true,
            listener_shards: None,
            partition_shards: None,
            metrics_listener: None,
            log_segment_fd_cache_size: None,
            log_defaults: LogConfig::default(),
            cleanup_policy: "delete".into(),
            compression_type: "producer".into(),
            min_insync_replicas: 1,
            group_initial_rebalance_delay_ms: 3_000,
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            group_max_size: i32::MAX as usize,
            offset_metadata_max_bytes: 4096,
            offsets_topic_num_partitions: 50,
            offsets_topic_segment_bytes: 100 * 1024 * 1024,
            offsets_topic_replication_factor: 3,
            offsets_retention_ms: 7 * 24 * 60 * 60 * 1000,
            offsets_retention_check_interval_ms: 600_000,
            log_cleaner_enable: true,
            log_cleaner_threads: 1,
            log_cleaner_io_max_bytes_per_second: f64::MAX,
            log_cleaner_dedupe_buffer_size: 128 * 1024 * 1024,
            log_cleaner_io_buffer_load_factor: 0.9,
            log_cleaner_backoff_ms: 15_000,
            transaction_state_log_num_partitions: 50,
            transaction_state_log_replication_factor: 3,
            transaction_state_log_min_isr: 2,
            transaction_state_log_segment_bytes: 100 * 1024 * 1024,
            transaction_max_timeout_ms: 900_000,
            transactional_id_expiration_ms: 7 * 24 * 60 * 60 * 1000,
            transaction_abort_timed_out_transaction_cleanup_interval_ms: 10_000,
            transaction_remove_expired_transaction_cleanup_interval_ms: 3_600_000,
        };
        let mut listener_keys = crate::security::ListenerKeys::default();
        // Kafka's precedence: ms over minutes over hours.
        let mut retention_hours = None;
        let mut retention_minutes = None;
        let mut retention_ms = None;
        let mut roll_hours = None;
        let mut roll_ms = None;
        for (key, value) in properties {
            let v = value.as_str();
            match key.as_str() {
                "broker.id" | "node.id" => config.broker_id = parse_number(key, v)?,
                "listeners" => listener_keys.listeners = Some(v),
                "advertised.listeners" => listener_keys.advertised = Some(v),
                "listener.security.protocol.map" => listener_keys.protocol_map = Some(v),
                "inter.broker.listener.name" => listener_keys.inter_broker_name = Some(v),
                "security.inter.broker.protocol" => listener_keys.inter_broker_protocol = Some(v),
                security if crate::security::is_security_key(security) => {
                    config.security_properties.insert(key.clone(), value.clone());
                }
                "log.dirs" | "log.dir" => {
                    config.log_dirs = v.split(',').map(str::trim).filter(|d| !d.is_empty()).map(PathBuf::from).collect();
                    if config.log_dirs.is_empty() {
                        return Err(format!("{key}={v}: no directory"));
                    }
                }
                "num.partitions" => config.num_partitions = parse_number(key, v)?,
                "default.replication.factor" => config.default_replication_factor = parse_number(key, v)?,
                "min.insync.replicas" => config.min_insync_replicas = parse_number(key, v)?,
                "auto.create.topics.enable" => config.auto_create_topics_enable = parse_bool(key, v)?,
                "delete.topic.enable" => config.delete_topic_enable = parse_bool(key, v)?,
                "fetch.zero.copy" => config.fetch_zero_copy = parse_bool(key, v)?,
                "listener.shards" => config.listener_shards = Some(shard::cpus::parse_cpu_list(v).map_err(|e| format!("{key}: {e}"))?),
                "metrics.listener" => config.metrics_listener = Some(crate::metrics::parse_listener(key, v)?),
                "log.segment.fd.cache.size" => config.log_segment_fd_cache_size = Some(parse_number(key, v)?),
                "partition.shards" => config.partition_shards = Some(shard::cpus::parse_cpu_list(v).map_err(|e| format!("{key}: {e}"))?),
                "message.max.bytes" => {
                    config.message_max_bytes = parse_number(key, v)?;
                    config.log_defaults.max_message_bytes = config.message_max_bytes;
                }
                "socket.request.max.bytes" => config.socket_request_max_bytes = parse_number(key, v)?,
                "max.connections" => config.max_connections = parse_number(key, v)?,
                "max.incremental.fetch.session.cache.slots" => config.max_incremental_fetch_session_cache_slots = parse_number(key, v)?,
                "max.connections.per.ip" => config.connection_limits.max_per_ip = parse_number(key, v)?,
                "max.connections.per.ip.overrides" => {
                    config.connection_limits.per_ip_overrides = crate::connection_quotas::parse_overrides(key, v)?
                }
                "connections.max.idle.ms" => config.connections_max_idle_ms = parse_number(key, v)?,
                "zookeeper.connect" => config.zookeeper_connect = Some(v.to_string()).filter(|s| !s.is_empty()),
                "zookeeper.session.timeout.ms" => config.zookeeper_session_timeout_ms = parse_number(key, v)?,
                "zookeeper.connection.timeout.ms" => config.zookeeper_connection_timeout_ms = Some(parse_number(key, v)?),
                "zookeeper.change.notification.expiration.ms" => config.zookeeper_change_notification_expiration_ms = parse_number(key, v)?,
                "replica.lag.time.max.ms" => config.replica_lag_time_max_ms = parse_number(key, v)?,
                "unclean.leader.election.enable" => config.unclean_leader_election_enable = parse_bool(key, v)?,
                "broker.rack" => config.broker_rack = Some(v.to_string()).filter(|s| !s.is_empty()),
                "log.segment.bytes" => config.log_defaults.segment_bytes = parse_number(key, v)?,
                "log.segment.delete.delay.ms" => config.log_defaults.file_delete_delay_ms = parse_number(key, v)?,
                "log.roll.ms" => roll_ms = Some(parse_number::<i64>(key, v)?),
                "log.roll.hours" => roll_hours = Some(parse_number::<i64>(key, v)?),
                "log.retention.ms" => retention_ms = Some(parse_number::<i64>(key, v)?),
                "log.retention.minutes" => retention_minutes = Some(parse_number::<i64>(key, v)?),
                "log.retention.hours" => retention_hours = Some(parse_number::<i64>(key, v)?),
                "log.retention.bytes" => config.log_defaults.retention_bytes = parse_number(key, v)?,
                "log.retention.check.interval.ms" => config.log_retention_check_interval_ms = parse_number(key, v)?,
                "log.index.interval.bytes" => config.log_defaults.index_interval_bytes = parse_number(key, v)?,
                "log.flush.interval.messages" => config.log_defaults.flush_messages = parse_number(key, v)?,
                "log.flush.interval.ms" => config.log_defaults.flush_ms = parse_number(key, v)?,
                "log.flush.scheduler.interval.ms" => config.log_flush_scheduler_interval_ms = parse_number(key, v)?,
                "log.flush.offset.checkpoint.interval.ms" => {
                    config.log_flush_offset_checkpoint_interval_ms = parse_number(key, v)?
                }
                "log.cleanup.policy" => {
                    config.cleanup_policy = parse_cleanup_policy(key, v)?;
                    config.log_defaults.compact = config.cleanup_policy.split(',').any(|p| p == "compact");
                }
                "log.cleaner.enable" => config.log_cleaner_enable = parse_bool(key, v)?,
                "log.cleaner.threads" => config.log_cleaner_threads = parse_number(key, v)?,
                "log.cleaner.io.max.bytes.per.second" => config.log_cleaner_io_max_bytes_per_second = parse_number(key, v)?,
                "log.cleaner.dedupe.buffer.size" => config.log_cleaner_dedupe_buffer_size = parse_number(key, v)?,
                "log.cleaner.io.buffer.load.factor" => config.log_cleaner_io_buffer_load_factor = parse_number(key, v)?,
                "log.cleaner.backoff.ms" => config.log_cleaner_backoff_ms = parse_number(key, v)?,
                "log.cleaner.min.cleanable.ratio" => config.log_defaults.min_cleanable_dirty_ratio = parse_number(key, v)?,
                "log.cleaner.min.compaction.lag.ms" => config.log_defaults.min_compaction_lag_ms = parse_number(key, v)?,
                "log.cleaner.max.compaction.lag.ms" => config.log_defaults.max_compaction_lag_ms = parse_number(key, v)?,
                "log.cleaner.delete.retention.ms" => config.log_defaults.delete_retention_ms = parse_number(key, v)?,
                "log.index.size.max.bytes" => config.log_defaults.segment_index_bytes = parse_number(key, v)?,
                "group.initial.rebalance.delay.ms" => config.group_initial_rebalance_delay_ms = parse_number(key, v)?,
                "group.min.session.timeout.ms" => config.group_min_session_timeout_ms = parse_number(key, v)?,
                "group.max.session.timeout.ms" => config.group_max_session_timeout_ms = parse_number(key, v)?,
                "group.max.size" => config.group_max_size = parse_number(key, v)?,
                "offset.metadata.max.bytes" => config.offset_metadata_max_bytes = parse_number(key, v)?,
                "offsets.topic.num.partitions" => config.offsets_topic_num_partitions = parse_number(key, v)?,
                "offsets.topic.segment.bytes" => config.offsets_topic_segment_bytes = parse_number(key, v)?,
                "offsets.topic.replication.factor" => config.offsets_topic_replication_factor = parse_number(key, v)?,
                "offsets.retention.minutes" => config.offsets_retention_ms = parse_number::<i64>(key, v)? * 60_000,
                "offsets.retention.check.interval.ms" => config.offsets_retention_check_interval_ms = parse_number(key, v)?,
                "transaction.state.log.num.partitions" => config.transaction_state_log_num_partitions = parse_number(key, v)?,
                "transaction.state.log.replication.factor" => config.transaction_state_log_replication_factor = parse_number(key, v)?,
                "transaction.state.log.min.isr" => config.transaction_state_log_min_isr = parse_number(key, v)?,
                "transaction.state.log.segment.bytes" => config.transaction_state_log_segment_bytes = parse_number(key, v)?,
                "transaction.max.timeout.ms" => config.transaction_max_timeout_ms = parse_number(key, v)?,
                "transactional.id.expiration.ms" => config.transactional_id_expiration_ms = parse_number(key, v)?,
                "transaction.abort.timed.out.transaction.cleanup.interval.ms" => {
                    config.transaction_abort_timed_out_transaction_cleanup_interval_ms = parse_number(key, v)?
                }
                "transaction.remove.expired.transaction.cleanup.interval.ms" => {
                    config.transaction_remove_expired_transaction_cleanup_interval_ms = parse_number(key, v)?
                }
                "log.message.timestamp.type" => config.log_defaults.timestamp_type = parse_timestamp_type(key, v)?,
                "compression.type" => {
                    config.log_defaults.compression_codec = storage::config::parse_compression_type(v)
                        .ok_or_else(|| format!("{key}={v}: expected one of uncompressed, zstd, lz4, snappy, gzip, producer"))?;
                    config.compression_type = v.to_string();
                }
                "compression.gzip.level" | "compression.lz4.level" | "compression.zstd.level" => check_compression_level(key, v)?,
                ignored if IGNORED_KAFKA_KEYS.contains(&ignored) => {
                    tracing::info!(key, value = v, "Kafka config key accepted and ignored by this broker");
                }
                unknown => return Err(format!("unknown config key {unknown:?}")),
            }
        }
        if let Some(ms) = retention_ms.or(retention_minutes.map(|m| m * 60_000)).or(retention_hours.map(|h| h * 3_600_000)) {
            config.log_defaults.retention_ms = ms;
        }
        if let Some(ms) = roll_ms.or(roll_hours.map(|h| h * 3_600_000)) {
            config.log_defaults.segment_ms = ms;
        }
        let (listeners, inter_broker) = crate::security::parse_listeners(&listener_keys)?;
        config.listener = listeners[0].bind;
        config.advertised_host = listeners[inter_broker].advertised_host.clone();
        config.advertised_port = listeners[inter_broker].advertised_port;
        config.listeners = listeners;
        config.inter_broker_listener = inter_broker;
        // Read here, not in security/: `listener.name.*` keys are kept with the security ones.
        for listener in &config.listeners {
            let key = format!("listener.name.{}.max.connections", listener.name.to_ascii_lowercase());
            let max = config.security_properties.get(&key).map(|v| parse_number(&key, v)).transpose()?;
            config.listener_max_connections.push(max.unwrap_or(crate::connection_quotas::UNLIMITED));
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        // Any protocol between brokers (security/client.rs); its keys are checked when the
        // inter-broker client is built at start.
        if self.broker_id < 0 {
            // Without ZooKeeper there is nobody to hand out ids: a standalone broker is broker 0.
            if self.zookeeper_connect.is_none() {
                return Err("broker.id must be >= 0 without zookeeper.connect".into());
            }
        }
        if self.num_partitions < 1 {
            return Err(format!("num.partitions={} must be at least 1", self.num_partitions));
        }
        validate_log_config(&self.log_defaults)?;
        if self.offsets_topic_replication_factor < 1 {
            return Err("offsets.topic.replication.factor must be at least 1".into());
        }
        if self.offsets_topic_num_partitions < 1 {
            return Err("offsets.topic.num.partitions must be at least 1".into());
        }
        if self.transaction_state_log_num_partitions < 1 || self.transaction_state_log_replication_factor < 1 {
            return Err("transaction.state.log.num.partitions and .replication.factor must be at least 1".into());
        }
        if self.transaction_max_timeout_ms < 1 {
            return Err("transaction.max.timeout.ms must be at least 1".into());
        }
        if self.group_min_session_timeout_ms > self.group_max_session_timeout_ms {
            return Err("group.min.session.timeout.ms must not exceed group.max.session.timeout.ms".into());
        }
        if self.group_max_size < 1 {
            return Err("group.max.size must be at least 1".into());
        }
        if self.connection_limits.max_per_ip == 0 && self.connection_limits.per_ip_overrides.is_empty() {
            // Kafka's rule: a zero default only makes sense with overrides letting someone in.
            return Err("max.connections.per.ip can be set to zero only if max.connections.per.ip.overrides is set".into());
        }
        if self.connections_max_idle_ms == 0 {
            return Err("connections.max.idle.ms must be at least 1".into());
        }
        if self.socket_request_max_bytes < 1024 {
            return Err("socket.request.max.bytes must be at least 1024".into());
        }
        Ok(())
    }
}

pub fn validate_log_config(log: &LogConfig) -> Result<(), String> {
    if log.segment_bytes < 14 || log.segment_bytes > storage::segment::MAX_SEGMENT_BYTES {
        return Err(format!("segment.bytes={} must be between 14 and {}", log.segment_bytes, storage::segment::MAX_SEGMENT_BYTES));
    }
    if log.segment_ms < 1 {
        return Err(format!("segment.ms={} must be at least 1", log.segment_ms));
    }
    if log.index_interval_bytes < 1 {
        return Err("index.interval.bytes must be at least 1".into());
    }
    if log.flush_messages < 1 || log.flush_ms < 0 {
        return Err("flush.messages must be >= 1 and flush.ms >= 0".into());
    }
    if log.max_message_bytes < 1 {
        return Err("max.message.bytes must be at least 1".into());
    }
    if !(0.0..=1.0).contains(&log.min_cleanable_dirty_ratio) {
        return Err(format!("min.cleanable.dirty.ratio={} must be between 0 and 1", log.min_cleanable_dirty_ratio));
    }
    if log.min_compaction_lag_ms < 0 || log.max_compaction_lag_ms < 1 || log.delete_retention_ms < 0 {
        return Err("min.compaction.lag.ms and delete.retention.ms must be >= 0, max.compaction.lag.ms >= 1".into());
    }
    Ok(())
}

pub fn parse_timestamp_type(key: &str, value: &str) -> Result<TimestampType, String> {
    match value.trim() {
        "CreateTime" => Ok(TimestampType::CreateTime),
        "LogAppendTime" => Ok(TimestampType::LogAppendTime),
        _ => Err(format!("{key}={value}: expected CreateTime or LogAppendTime")),
    }
}

pub fn parse_cleanup_policy(key: &str, value: &str) -> Result<String, String> {
    let normalized: Vec<&str> = value.split(',').map(str::trim).collect();
    if normalized.iter().all(|p| *p == "delete" || *p == "compact") && !normalized.is_empty() {
        Ok(normalized.join(","))
    } else {
        Err(format!("{key}={value}: expected delete, compact or both"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Result<BrokerConfig, String> {
        BrokerConfig::from_properties(&parse_properties(text).unwrap())
    }

    #[test]
    fn defaults_without_any_config() {
        let c = config("").unwrap();
        assert_eq!(c.listener, "127.0.0.1:9092".parse().unwrap());
        assert_eq!(c.num_partitions, 1);
        assert!(c.auto_create_topics_enable);
        assert_eq!(c.message_max_bytes, 1_048_588);
        assert_eq!(c.log_defaults.segment_bytes, 1 << 30);
    }

    #[test]
    fn kafka_names_and_precedence() {
        let c = config(
            "# comment\nbroker.id=3\nlisteners=PLAINTEXT://127.0.0.1:19092\nlog.dirs=/a,/b\n\
             log.retention.hours=1\nlog.retention.minutes=2\nnum.partitions=6\nnum.io.threads=8\n",
        )
        .unwrap();
        assert_eq!(c.broker_id, 3);
        assert_eq!(c.listener.port(), 19092);
        assert_eq!(c.log_dirs.len(), 2);
        assert_eq!(c.log_defaults.retention_ms, 120_000, "minutes win over hours");
        assert_eq!(c.num_partitions, 6);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        assert!(config("no.such.key=1").unwrap_err().contains("no.such.key"));
        assert!(config("num.partitions=many").unwrap_err().contains("num.partitions"));
        assert!(config("num.partitions=0").is_err());
        assert!(config("auto.create.topics.enable=yes").is_err());
        assert!(config("listeners=FOO://127.0.0.1:9093").is_err());
    }
}
