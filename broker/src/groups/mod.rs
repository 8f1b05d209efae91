//! Consumer groups: Kafka's classic group protocol (JoinGroup, SyncGroup, Heartbeat, LeaveGroup)
//! and committed offsets kept in the internal topic `__consumer_offsets`.
//!
//! Where a group lives: as in Kafka, group -> `__consumer_offsets` partition is
//! `abs(java_hash(group_id)) % offsets.topic.num.partitions`, and the shard that owns that
//! partition (shards_table) coordinates the group. So a group's state and its offsets log sit on
//! one shard, and the handlers route every group request there with `Router::call`.
//!
//! Cluster mode: `__consumer_offsets` is a replicated topic in ZooKeeper like any other, and a
//! group's coordinator is the leader of its partition. The owning shard loads the partition's
//! groups when this broker becomes its leader and drops them when leadership moves
//! (`coordinator::follow_leadership`); requests for groups not loaded here get NOT_COORDINATOR,
//! and clients ask FindCoordinator again.

pub mod coordinator;
pub mod group;
pub mod offsets_topic;

use std::collections::BTreeMap;
use std::rc::Rc;

use crate::handlers::create_topics;
use crate::shard_context::Shard;
use crate::state::BrokerState;
use crate::topics::CONSUMER_OFFSETS_TOPIC;

pub use coordinator::GroupCoordinator;

/// Java's `String.hashCode` over UTF-16 code units, so a group maps to the same
/// `__consumer_offsets` partition as in Apache Kafka.
pub fn java_string_hash(text: &str) -> i32 {
    text.encode_utf16().fold(0i32, |hash, unit| hash.wrapping_mul(31).wrapping_add(unit as i32))
}

pub fn partition_for_group(group_id: &str, partition_count: i32) -> i32 {
    // Kafka's Utils.abs: masks the sign bit (so i32::MIN maps to 0, not to itself).
    (java_string_hash(group_id) & 0x7fff_ffff) % partition_count.max(1)
}

/// The partition count of `__consumer_offsets` as it exists (it wins over the config once made).
pub fn offsets_partition_count(broker: &BrokerState) -> i32 {
    if let Some(cluster) = &broker.cluster {
        if let Some(topic) = cluster.view.snapshot().topics.get(CONSUMER_OFFSETS_TOPIC) {
            return topic.replicas.len() as i32;
        }
    }
    match broker.topics.read().unwrap().get(CONSUMER_OFFSETS_TOPIC) {
        Some(info) => info.partitions,
        None => broker.config.offsets_topic_num_partitions,
    }
}

/// Cluster mode: the broker coordinating `group_id`, the leader of its `__consumer_offsets`
/// partition; None while the topic or that leader does not exist.
pub fn coordinator_broker(broker: &BrokerState, group_id: &str) -> Option<zk::BrokerInfo> {
    let snapshot = broker.cluster.as_ref()?.view.snapshot();
    let partitions = snapshot.topics.get(CONSUMER_OFFSETS_TOPIC)?.replicas.len() as i32;
    let leader = snapshot.leader(CONSUMER_OFFSETS_TOPIC, partition_for_group(group_id, partitions))?;
    snapshot.brokers.get(&leader).cloned()
}

/// The shard coordinating `group_id`.
pub fn shard_for_group(shard: &Shard, group_id: &str) -> usize {
    shard.owner_of(CONSUMER_OFFSETS_TOPIC, partition_for_group(group_id, offsets_partition_count(&shard.broker)))
}

/// Cluster mode: how long the first FindCoordinator waits for the offsets topic's leaders.
const OFFSETS_TOPIC_LEADER_WAIT_MS: u64 = 5_000;

/// Creates `__consumer_offsets` on first use (Kafka does it on the first FindCoordinator):
/// compacted, never deleted by time, with `offsets.topic.segment.bytes` segments.
pub async fn ensure_offsets_topic(shard: &Rc<Shard>) {
    let exists = match &shard.broker.cluster {
        Some(cluster) => cluster.view.snapshot().topics.contains_key(CONSUMER_OFFSETS_TOPIC),
        None => shard.broker.topics.read().unwrap().get(CONSUMER_OFFSETS_TOPIC).is_some(),
    };
    if exists {
        return;
    }
    let config = &shard.broker.config;
    let overrides = BTreeMap::from([
        ("cleanup.policy".to_string(), "compact".to_string()),
        ("segment.bytes".to_string(), config.offsets_topic_segment_bytes.to_string()),
        ("compression.type".to_string(), "producer".to_string()),
    ]);
    let partitions = config.offsets_topic_num_partitions;
    let created = match &shard.broker.cluster {
        Some(_) => {
            let replication_factor = config.offsets_topic_replication_factor;
            create_topics::create_topic_in_cluster(shard, CONSUMER_OFFSETS_TOPIC, partitions, replication_factor, overrides, OFFSETS_TOPIC_LEADER_WAIT_MS)
                .await
        }
        None => create_topics::create_topic(shard, CONSUMER_OFFSETS_TOPIC, partitions, overrides).await.map(|_| ()),
    };
    match created {
        Ok(_) => {}
        Err((code, _)) if code == kafka_protocol::ResponseError::TopicAlreadyExists.code() => {}
        Err((_, message)) => tracing::error!(error = message, "cannot create __consumer_offsets"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_partition_matches_kafka() {
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("ab"), 97 * 31 + 98);
        assert_eq!(partition_for_group("a", 50), 47);
        // Overflow wraps as in Java, and the sign bit is masked, never negated.
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
        assert_eq!(partition_for_group("polygenelubricants", 50), 0);
    }
}
