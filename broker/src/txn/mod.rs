//! The transaction coordinator (KIP-98, KIP-360), Kafka's design on our shards: a
//! transactional id lives on the shard that owns its `__transaction_state` partition
//! (`abs(java_hash(id)) % transaction.state.log.num.partitions`, as Kafka), so its state and its
//! log sit together, as a consumer group's do (see `groups/`). `txn_router.rs` names that shard
//! and the transaction handlers route there.
//!
//! Cluster mode: the coordinator of an id is the leader of its `__transaction_state` partition.
//! The owning shard loads the partition's ids when this broker gains leadership (the
//! partition's leader epoch is the coordinator epoch the markers carry) and drops them when it
//! moves (`loader::follow_leadership`); NOT_COORDINATOR elsewhere, COORDINATOR_LOAD_IN_PROGRESS
//! while loading.
//!
//! A transaction: InitProducerId (epoch bump, fencing) -> AddPartitionsToTxn / AddOffsetsToTxn
//! (Ongoing) -> EndTxn: PrepareCommit / PrepareAbort written (durable; the client is answered),
//! then the COMMIT/ABORT markers go to every partition of the transaction (`MarkerJob`s, taken
//! by `txn_router::deliver_markers`: directly to the owning shard standalone, WriteTxnMarkers to
//! the leader in cluster mode), then CompleteCommit / CompleteAbort is written.
//!
//! Layout: `state` (one id's metadata and Kafka's transition graph, pure and unit-tested),
//! `log_format` (Kafka's record formats), `coordinator` (a shard's `TxnCoordinator`: the
//! operations, the writes, the marker jobs), `loader` (loading and following leadership).
//!
//! Never: like `groups/`, this module imports nothing of the shard's context, the handlers,
//! the routers or `groups/`; the shard holds a `TxnCoordinator` built with what it needs.

pub mod coordinator;
pub mod loader;
pub mod log_format;
pub mod state;

use crate::state::BrokerState;

pub use coordinator::{MarkerJob, TxnCoordinator};

pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";

/// `abs(java_hash(id)) % partition_count`, as Kafka's TransactionStateManager.partitionFor.
pub fn partition_for_transactional_id(transactional_id: &str, partition_count: i32) -> i32 {
    let hash = transactional_id.encode_utf16().fold(0i32, |hash, unit| hash.wrapping_mul(31).wrapping_add(unit as i32));
    // Kafka's Utils.abs masks the sign bit (i32::MIN maps to 0).
    (hash & 0x7fff_ffff) % partition_count.max(1)
}

/// The partition count of `__transaction_state` as it exists (it wins over the config once made).
pub fn transaction_state_partition_count(broker: &BrokerState) -> i32 {
    if let Some(cluster) = &broker.cluster {
        if let Some(topic) = cluster.view.snapshot().topics.get(TRANSACTION_STATE_TOPIC) {
            return topic.replicas.len() as i32;
        }
    }
    match broker.topics.read().unwrap().get(TRANSACTION_STATE_TOPIC) {
        Some(info) => info.partitions,
        None => broker.config.transaction_state_log_num_partitions,
    }
}

/// Cluster mode: the broker coordinating `transactional_id`, the leader of its
/// `__transaction_state` partition; None while the topic or that leader does not exist.
pub fn coordinator_broker(broker: &BrokerState, transactional_id: &str) -> Option<zk::BrokerInfo> {
    let snapshot = broker.cluster.as_ref()?.view.snapshot();
    let partitions = snapshot.topics.get(TRANSACTION_STATE_TOPIC)?.replicas.len() as i32;
    let leader = snapshot.leader(TRANSACTION_STATE_TOPIC, partition_for_transactional_id(transactional_id, partitions))?;
    snapshot.brokers.get(&leader).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_matches_kafka() {
        assert_eq!(partition_for_transactional_id("a", 50), 47);
        assert_eq!(partition_for_transactional_id("polygenelubricants", 50), 0);
        assert_eq!(partition_for_transactional_id("", 50), 0);
    }
}
