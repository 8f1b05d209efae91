//! The topic table: every topic's partition count, id and config overrides. Shared by all shards
//! behind a std RwLock: reads are many and short (metadata, routing), writes are rare (admin APIs).
//! Persisted as one properties file per topic under `<first log dir>/.topics/`, so topics and
//! their configs survive restarts even before any partition holds data.
//!
//! Changes are made in memory under the lock and written by `save_blocking` (on a shard through
//! `BrokerState::save_topics`) after it is released: the write replaces a file with a rename, which evicts the old
//! inode and may sleep in the kernel, so on a shard it runs on glommio's blocking thread (see
//! `storage::file_deletion`) and never under the table lock other shards wait on.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use storage::LogConfig;

use crate::config::{parse_cleanup_policy, parse_timestamp_type, validate_log_config, BrokerConfig};

pub const MAX_TOPIC_NAME_LENGTH: usize = 249;
pub const CONSUMER_OFFSETS_TOPIC: &str = "__consumer_offsets";

#[derive(Debug, Clone)]
pub struct TopicInfo {
    pub name: String,
    pub partitions: i32,
    pub topic_id: [u8; 16],
    /// Topic-level overrides, by Kafka topic config name.
    pub overrides: BTreeMap<String, String>,
}

impl TopicInfo {
    pub fn is_internal(&self) -> bool {
        self.name == CONSUMER_OFFSETS_TOPIC
    }
}

/// Topic config keys, their broker-level default (as text) and whether we act on them.
pub fn topic_config_defaults(broker: &BrokerConfig) -> Vec<(&'static str, String)> {
    let log = &broker.log_defaults;
    vec![
        ("cleanup.policy", broker.cleanup_policy.clone()),
        ("compression.type", broker.compression_type.clone()),
        ("compression.gzip.level", "-1".into()),
        ("compression.lz4.level", "9".into()),
        ("compression.zstd.level", "3".into()),
        ("delete.retention.ms", log.delete_retention_ms.to_string()),
        ("file.delete.delay.ms", log.file_delete_delay_ms.to_string()),
        ("flush.messages", log.flush_messages.to_string()),
        ("flush.ms", log.flush_ms.to_string()),
        ("index.interval.bytes", log.index_interval_bytes.to_string()),
        ("max.message.bytes", log.max_message_bytes.to_string()),
        ("message.timestamp.type", match log.timestamp_type {
            storage::batch::TimestampType::CreateTime => "CreateTime".into(),
            storage::batch::TimestampType::LogAppendTime => "LogAppendTime".into(),
        }),
        ("max.compaction.lag.ms", log.max_compaction_lag_ms.to_string()),
        ("min.cleanable.dirty.ratio", log.min_cleanable_dirty_ratio.to_string()),
        ("min.compaction.lag.ms", log.min_compaction_lag_ms.to_string()),
        ("min.insync.replicas", broker.min_insync_replicas.to_string()),
        ("preallocate", "false".into()),
        ("retention.bytes", log.retention_bytes.to_string()),
        ("retention.ms", log.retention_ms.to_string()),
        ("segment.bytes", log.segment_bytes.to_string()),
        ("segment.index.bytes", log.segment_index_bytes.to_string()),
        ("segment.ms", log.segment_ms.to_string()),
        ("unclean.leader.election.enable", "false".into()),
    ]
}

/// The LogConfig of a topic: broker defaults with the topic's overrides applied. Errors name the
/// offending key (INVALID_CONFIG at the protocol layer).
pub fn log_config_for(broker: &BrokerConfig, overrides: &BTreeMap<String, String>) -> Result<LogConfig, String> {
    let mut log = broker.log_defaults.clone();
    let known: Vec<&str> = topic_config_defaults(broker).iter().map(|(k, _)| *k).collect();
    for (key, value) in overrides {
        let number = |v: &str| v.trim().parse::<i64>().map_err(|_| format!("{key}={v}: expected a number"));
        match key.as_str() {
            "segment.bytes" => log.segment_bytes = number(value)?.max(0) as u64,
            "segment.ms" => log.segment_ms = number(value)?,
            "file.delete.delay.ms" => log.file_delete_delay_ms = number(value)?.max(0) as u64,
            "retention.ms" => log.retention_ms = number(value)?,
            "retention.bytes" => log.retention_bytes = number(value)?,
            "flush.messages" => log.flush_messages = number(value)?,
            "flush.ms" => log.flush_ms = number(value)?,
            "index.interval.bytes" => log.index_interval_bytes = number(value)?.max(0) as u64,
            "max.message.bytes" => log.max_message_bytes = number(value)?.max(0) as usize,
            "message.timestamp.type" => log.timestamp_type = parse_timestamp_type(key, value)?,
            "cleanup.policy" => {
                parse_cleanup_policy(key, value)?;
            }
            "delete.retention.ms" => log.delete_retention_ms = number(value)?,
            "min.compaction.lag.ms" => log.min_compaction_lag_ms = number(value)?,
            "max.compaction.lag.ms" => log.max_compaction_lag_ms = number(value)?,
            "segment.index.bytes" => log.segment_index_bytes = number(value)?.max(0) as u64,
            "min.cleanable.dirty.ratio" => {
                log.min_cleanable_dirty_ratio = value.trim().parse::<f64>().map_err(|_| format!("{key}={value}: expected a number"))?
            }
            "min.insync.replicas" => {
                if number(value)? < 1 {
                    return Err(format!("{key}={value}: must be at least 1"));
                }
            }
            "compression.type" => {
                log.compression_codec = storage::config::parse_compression_type(value)
                    .ok_or_else(|| format!("{key}={value}: expected one of uncompressed, zstd, lz4, snappy, gzip, producer"))?;
            }
            "compression.gzip.level" | "compression.lz4.level" | "compression.zstd.level" => {
                crate::config::check_compression_level(key, value)?;
            }
            other if known.contains(&other) => {}
            other => return Err(format!("unknown topic config {other:?}")),
        }
    }
    let policy = overrides.get("cleanup.policy").unwrap_or(&broker.cleanup_policy);
    log.compact = policy.split(',').any(|p| p.trim() == "compact");
    if !policy.split(',').any(|p| p.trim() == "delete") {
        // A compact-only topic keeps every key's latest value: nothing goes by age or size (the
        // cleaner keeps it small).
        log.retention_ms = -1;
        log.retention_bytes = -1;
    }
    validate_log_config(&log)?;
    Ok(log)
}

/// Kafka's rule: 1-249 characters of [a-zA-Z0-9._-], and not "." or "..".
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(format!("topic name {name:?} is illegal"));
    }
    if name.len() > MAX_TOPIC_NAME_LENGTH {
        return Err(format!("topic name is longer than {MAX_TOPIC_NAME_LENGTH} characters"));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '.' || *c == '_' || *c == '-')) {
        return Err(format!("topic name {name:?} contains {bad:?}; legal characters are [a-zA-Z0-9._-]"));
    }
    Ok(())
}

pub struct TopicTable {
    dir: PathBuf,
    topics: BTreeMap<String, TopicInfo>,
    /// Topics changed (or removed) in memory and not yet written: `save`.
    unsaved: BTreeSet<String>,
}

pub fn new_topic_id(name: &str) -> [u8; 16] {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&(nanos as u64).to_be_bytes());
    id[8..12].copy_from_slice(&crc32c::crc32c(name.as_bytes()).to_be_bytes());
    id[12..16].copy_from_slice(&std::process::id().to_be_bytes());
    id[6] = (id[6] & 0x0f) | 0x40; // UUID version 4 layout
    id[8] = (id[8] & 0x3f) | 0x80;
    id
}

impl TopicTable {
    /// Loads the table from `<log dir>/.topics/`, adding topics whose partitions exist on disk
    /// without a file (with as many partitions as found).
    pub fn load(log_dir: &Path, on_disk: &[(String, i32)]) -> Result<TopicTable, String> {
        let dir = log_dir.join(".topics");
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let mut table = TopicTable { dir, topics: BTreeMap::new(), unsaved: BTreeSet::new() };
        for entry in std::fs::read_dir(&table.dir).map_err(|e| format!("listing {}: {e}", table.dir.display()))?.flatten() {
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".properties")) else {
                continue;
            };
            let text = std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
            let mut properties = crate::config::parse_properties(&text)?;
            let partitions = properties.remove("partitions").and_then(|p| p.parse().ok()).unwrap_or(1);
            let topic_id = properties
                .remove("topic.id")
                .and_then(|hex| u128::from_str_radix(&hex, 16).ok())
                .map(|v| v.to_be_bytes())
                .unwrap_or_else(|| new_topic_id(name));
            let overrides = properties.into_iter().filter_map(|(k, v)| k.strip_prefix("config.").map(|k| (k.to_string(), v))).collect();
            table.topics.insert(name.to_string(), TopicInfo { name: name.to_string(), partitions, topic_id, overrides });
        }
        for (topic, partition) in on_disk {
            if !table.topics.contains_key(topic) {
                let info = TopicInfo { name: topic.clone(), partitions: partition + 1, topic_id: new_topic_id(topic), overrides: BTreeMap::new() };
                table.topics.insert(topic.clone(), info);
                write_topic_file(&table.dir, topic, Some(&table.topics[topic]))?;
            } else if let Some(info) = table.topics.get_mut(topic) {
                info.partitions = info.partitions.max(partition + 1);
            }
        }
        Ok(table)
    }

    pub fn get(&self, name: &str) -> Option<&TopicInfo> {
        self.topics.get(name)
    }
    pub fn all(&self) -> impl Iterator<Item = &TopicInfo> {
        self.topics.values()
    }

    pub fn create(&mut self, name: &str, partitions: i32, overrides: BTreeMap<String, String>) -> Result<TopicInfo, String> {
        self.create_with_id(name, partitions, overrides, new_topic_id(name))
    }

    /// A topic whose id was chosen elsewhere (cluster mode: the one in ZooKeeper).
    pub fn create_with_id(
        &mut self,
        name: &str,
        partitions: i32,
        overrides: BTreeMap<String, String>,
        topic_id: [u8; 16],
    ) -> Result<TopicInfo, String> {
        assert!(!self.topics.contains_key(name));
        let info = TopicInfo { name: name.to_string(), partitions, topic_id, overrides };
        self.topics.insert(name.to_string(), info.clone());
        self.unsaved.insert(name.to_string());
        Ok(info)
    }

    pub fn set_partitions(&mut self, name: &str, partitions: i32) -> Result<(), String> {
        let info = self.topics.get_mut(name).expect("topic exists");
        assert!(partitions >= info.partitions, "partitions only grow");
        info.partitions = partitions;
        self.unsaved.insert(name.to_string());
        Ok(())
    }

    pub fn set_overrides(&mut self, name: &str, overrides: BTreeMap<String, String>) -> Result<(), String> {
        self.topics.get_mut(name).expect("topic exists").overrides = overrides;
        self.unsaved.insert(name.to_string());
        Ok(())
    }

    pub fn remove(&mut self, name: &str) -> Result<Option<TopicInfo>, String> {
        let removed = self.topics.remove(name);
        self.unsaved.insert(name.to_string());
        Ok(removed)
    }
}

/// Writes every unsaved change of the table, durably. Blocking: on a shard it runs on the
/// blocking thread (`BrokerState::save_topics`), never under the table lock other shards wait
/// on; the ZooKeeper coordinator's thread calls it directly.
pub fn save_blocking(table: &RwLock<TopicTable>) -> Result<(), String> {
    // One saver at a time, each writing the table as it is when it looks: a later change is
    // marked unsaved again and written by its own save, after this one.
    static ONE_SAVER: Mutex<()> = Mutex::new(());
    let _saver = ONE_SAVER.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if storage::log_manager::is_offline(&table.read().unwrap().dir) {
        // The first log dir failed (said once, by log_manager): the table lives on in memory (and
        // in ZooKeeper in cluster mode) instead of failing again at every cluster change.
        return Ok(());
    }
    let (dir, work): (PathBuf, Vec<(String, Option<TopicInfo>)>) = {
        let mut table = table.write().unwrap();
        let names = std::mem::take(&mut table.unsaved);
        (table.dir.clone(), names.into_iter().map(|name| { let info = table.topics.get(&name).cloned(); (name, info) }).collect())
    };
    let mut result = Ok(());
    for (name, info) in &work {
        if let Err(e) = write_topic_file(&dir, name, info.as_ref()) {
            table.write().unwrap().unsaved.insert(name.clone());
            result = Err(e);
        }
    }
    if !work.is_empty() {
        storage::log_manager::sync_dir(&dir).map_err(|e| e.to_string())?;
    }
    result
}

/// Writes (or, for a removed topic, removes) one topic's file: a temporary file synced, then
/// renamed over the old one, so a crash leaves one or the other. Blocking.
fn write_topic_file(dir: &Path, name: &str, info: Option<&TopicInfo>) -> Result<(), String> {
    let path = dir.join(format!("{name}.properties"));
    let Some(info) = info else {
        return match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("removing {}: {e}", path.display())),
        };
    };
    let mut text = format!("partitions={}\ntopic.id={:032x}\n", info.partitions, u128::from_be_bytes(info.topic_id));
    for (key, value) in &info.overrides {
        text.push_str(&format!("config.{key}={value}\n"));
    }
    let tmp = dir.join(format!("{name}.properties.tmp"));
    std::fs::write(&tmp, text).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| format!("syncing {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("renaming {}: {e}", tmp.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_x-2").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("a b").is_err());
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
    }

    #[test]
    fn overrides_apply_and_unknown_keys_fail() {
        let broker = BrokerConfig::from_properties(&BTreeMap::new()).unwrap();
        let mut overrides = BTreeMap::new();
        overrides.insert("retention.ms".to_string(), "1000".to_string());
        assert_eq!(log_config_for(&broker, &overrides).unwrap().retention_ms, 1000);
        overrides.insert("retention.mss".to_string(), "1".to_string());
        assert!(log_config_for(&broker, &overrides).is_err());
    }
}
