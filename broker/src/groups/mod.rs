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
//! (`loader::follow_leadership`); requests for groups not loaded here get NOT_COORDINATOR,
//! and clients ask FindCoordinator again.
//!
//! Layout: `coordinator` (a shard's `GroupCoordinator`: the state the operations share),
//! `membership` (JoinGroup, SyncGroup, Heartbeat, LeaveGroup, rebalances, member timers),
//! `offsets` (OffsetCommit, OffsetFetch, OffsetDelete, retention), `admin` (DescribeGroups,
//! ListGroups, DeleteGroups), `offsets_writer` (the ordered, bounded queue of writes to
//! `__consumer_offsets` and its writer task), `loader` (loading groups from the log), `group` (one
//! group's state), `offsets_topic` (Kafka's record formats), `txn_offsets` (TxnOffsetCommit:
//! offsets pending until their transaction's marker).
//!
//! Never: this module imports nothing of the shard's context, the handlers or the group router;
//! the shard holds a `GroupCoordinator`, built with what it needs (broker state, partition table,
//! shard id), and the handlers route to it.

pub mod admin;
pub mod coordinator;
pub mod group;
pub mod loader;
pub mod membership;
pub mod offsets;
pub mod offsets_topic;
pub mod offsets_writer;
pub mod txn_offsets;

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
