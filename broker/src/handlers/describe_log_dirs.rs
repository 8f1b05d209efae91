//! DescribeLogDirs (kafka-log-dirs.sh, AdminClient.describeLogDirs): each log dir, the partitions
//! stored in it with their sizes, and (v4+) the file system's total and usable bytes. Every shard
//! reports the partitions it owns from memory (they are all open: recovery opens them at start),
//! so no directory is listed per request.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::describe_log_dirs_response::{DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::shard_context::Shard;
use crate::security::acl::model::Operation;
use crate::security::session::Session;

/// (log dir, topic, partition, size in bytes) of one partition.
type Stored = (String, String, i32, i64);

pub async fn handle(shard: &Rc<Shard>, request: DescribeLogDirsRequest, session: &Session) -> DescribeLogDirsResponse {
    // Kafka: DESCRIBE on the cluster, else no directories (and the error, v3+).
    if !session.authorize_cluster(Operation::Describe) {
        return DescribeLogDirsResponse::default().with_error_code(kafka_protocol::ResponseError::ClusterAuthorizationFailed.code());
    }
    // None: every partition.
    let wanted: Option<BTreeMap<String, Vec<i32>>> =
        request.topics.map(|topics| topics.into_iter().map(|t| (t.topic.0.to_string(), t.partitions)).collect());
    let mut stored: Vec<Stored> = Vec::new();
    for owner in 0..shard.router.shard_count() {
        stored.extend(shard.router.call(owner, |owner| async move { stored_here(&owner).await }).await);
    }
    let mut by_dir: BTreeMap<String, BTreeMap<String, Vec<DescribeLogDirsPartition>>> =
        shard.broker.log_dirs.dirs().iter().map(|dir| (dir.display().to_string(), BTreeMap::new())).collect();
    for (dir, topic, partition, size_bytes) in stored {
        if wanted.as_ref().is_some_and(|w| !w.get(&topic).is_some_and(|partitions| partitions.contains(&partition))) {
            continue;
        }
        by_dir.entry(dir).or_default().entry(topic).or_default().push(
            DescribeLogDirsPartition::default().with_partition_index(partition).with_partition_size(size_bytes).with_offset_lag(0),
        );
    }
    let offline = storage::log_manager::offline_dirs();
    let results = by_dir
        .into_iter()
        .map(|(dir, topics)| {
            if offline.iter().any(|d| d.as_os_str() == dir.as_str()) {
                // As Kafka answers for a failed dir: the error, no sizes, no partitions.
                return DescribeLogDirsResult::default()
                    .with_error_code(ResponseError::KafkaStorageError.code())
                    .with_log_dir(str_bytes(&dir))
                    .with_total_bytes(-1)
                    .with_usable_bytes(-1);
            }
            let (total_bytes, usable_bytes) = file_system_bytes(&dir).unwrap_or((-1, -1));
            DescribeLogDirsResult::default()
                .with_log_dir(str_bytes(&dir))
                .with_total_bytes(total_bytes)
                .with_usable_bytes(usable_bytes)
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(name, mut partitions)| {
                            partitions.sort_by_key(|p| p.partition_index);
                            DescribeLogDirsTopic::default().with_name(TopicName(str_bytes(&name))).with_partitions(partitions)
                        })
                        .collect(),
                )
        })
        .collect();
    DescribeLogDirsResponse::default().with_results(results)
}

/// Runs on each shard: its partitions, where they are stored and how large they are.
async fn stored_here(shard: &Shard) -> Vec<Stored> {
    let mut stored = Vec::new();
    for partition in shard.partitions.all_open() {
        let log = partition.log.read().await.expect("partition lock");
        let dir = log.dir().parent().map(|d| d.display().to_string()).unwrap_or_default();
        stored.push((dir, partition.topic.clone(), partition.index, log.size_bytes() as i64));
    }
    stored
}

/// (total, usable) bytes of the file system holding `dir` (statvfs: answered from the
/// superblock in memory, it does not wait on the disk).
fn file_system_bytes(dir: &str) -> Option<(i64, i64)> {
    let path = std::ffi::CString::new(dir).ok()?;
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a statvfs struct to fill.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stats) } != 0 {
        return None;
    }
    let fragment = stats.f_frsize as i64;
    Some((stats.f_blocks as i64 * fragment, stats.f_bavail as i64 * fragment))
}
