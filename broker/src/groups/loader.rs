//! Loading groups from `__consumer_offsets`: the start-up load (standalone), following the
//! partitions' leadership (cluster mode: load a partition's groups when this broker becomes its
//! leader, drop them when leadership moves), and applying stored records to the group map.
//!
//! Contract: a partition's groups are served only once its whole log has been applied (requests
//! meanwhile get COORDINATOR_LOAD_IN_PROGRESS, before any load NOT_COORDINATOR); the latest
//! record for a key wins, as in Kafka's compacted topic. Members come back with a fresh session.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::partition::replay::replay;

use super::coordinator::{GroupCoordinator, PartitionLoad};
use super::group::{Group, GroupState, Member};
use super::membership::fail_waiting_members;
use super::offsets_topic::{self, LoggedBatch, StoredRecord};
use super::txn_offsets;
use super::partition_for_group;
use crate::clock::now_ms;
use crate::topics::CONSUMER_OFFSETS_TOPIC;

/// Standalone: rebuilds this shard's groups and offsets from its `__consumer_offsets`
/// partitions, at start. (Cluster mode loads a partition when this broker becomes its leader:
/// `follow_leadership`.)
pub async fn load(coordinator: &GroupCoordinator) {
    if coordinator.broker.cluster.is_some() {
        return;
    }
    let count = match coordinator.broker.topics.read().unwrap().get(CONSUMER_OFFSETS_TOPIC) {
        Some(info) => info.partitions,
        None => return,
    };
    for partition in (0..count).filter(|p| coordinator.partitions.owns(CONSUMER_OFFSETS_TOPIC, *p)) {
        load_partition(coordinator, partition).await;
    }
}

/// How often a shard looks for a new cluster snapshot to follow `__consumer_offsets`
/// leadership (work happens only when it changed).
const LEADERSHIP_CHECK_INTERVAL_MS: u64 = 20;

/// Cluster mode, for the shard's life: this shard coordinates the groups of exactly the
/// `__consumer_offsets` partitions it owns and this broker leads. Gaining a partition loads its
/// groups from the log (requests meanwhile get COORDINATOR_LOAD_IN_PROGRESS); losing it drops
/// them (NOT_COORDINATOR from then on, and to every JoinGroup and SyncGroup waiting).
pub async fn follow_leadership(coordinator: Rc<GroupCoordinator>) {
    let Some(cluster) = coordinator.broker.cluster.clone() else { return };
    let me = coordinator.broker.config.broker_id;
    let mut seen: Option<std::sync::Arc<zk::ClusterSnapshot>> = None;
    while !coordinator.broker.is_shutting_down() {
        let snapshot = cluster.view.snapshot();
        if seen.as_ref().is_some_and(|seen| std::sync::Arc::ptr_eq(seen, &snapshot)) {
            glommio::timer::sleep(Duration::from_millis(LEADERSHIP_CHECK_INTERVAL_MS)).await;
            continue;
        }
        seen = Some(snapshot.clone());
        let count = snapshot.topics.get(CONSUMER_OFFSETS_TOPIC).map(|t| t.replicas.len() as i32).unwrap_or(0);
        let led: Vec<i32> = (0..count)
            .filter(|&p| coordinator.partitions.owns(CONSUMER_OFFSETS_TOPIC, p))
            .filter(|&p| snapshot.leader(CONSUMER_OFFSETS_TOPIC, p) == Some(me))
            .collect();
        let held: Vec<i32> = coordinator.held_partitions.borrow().keys().copied().collect();
        for &partition in held.iter().filter(|p| !led.contains(p)) {
            unload_partition(&coordinator, partition, count);
        }
        for &partition in led.iter().filter(|p| !held.contains(p)) {
            coordinator.held_partitions.borrow_mut().insert(partition, PartitionLoad::Loading);
            load_partition(&coordinator, partition).await;
            coordinator.held_partitions.borrow_mut().insert(partition, PartitionLoad::Loaded);
        }
        glommio::timer::sleep(Duration::from_millis(LEADERSHIP_CHECK_INTERVAL_MS)).await;
    }
}

/// Drops the groups of `partition` (leadership moved away): their members' waiting requests
/// get NOT_COORDINATOR and find the new coordinator.
fn unload_partition(coordinator: &GroupCoordinator, partition: i32, partition_count: i32) {
    coordinator.held_partitions.borrow_mut().remove(&partition);
    txn_offsets::drop_partition(coordinator, partition);
    let mut groups = coordinator.groups.borrow_mut();
    let leaving: Vec<String> =
        groups.keys().filter(|id| partition_for_group(id, partition_count) == partition).cloned().collect();
    for group_id in &leaving {
        if let Some(mut group) = groups.remove(group_id) {
            fail_waiting_members(&mut group);
        }
    }
    tracing::info!(shard = coordinator.shard_id, partition, groups = leaving.len(), "no longer coordinating a __consumer_offsets partition");
}

/// Reads one `__consumer_offsets` partition from its start and applies every record to the
/// shard's groups.
async fn load_partition(coordinator: &GroupCoordinator, partition: i32) {
    let started = Instant::now();
    let mut records_read = 0usize;
    let loaded = replay(&coordinator.partitions, CONSUMER_OFFSETS_TOPIC, partition, |bytes| match offsets_topic::decode_logged_batches(bytes) {
        Ok(batches) => {
            for batch in batches {
                match batch {
                    LoggedBatch::Records { producer_id: None, records } => {
                        records_read += records.len();
                        for (key, value) in records {
                            apply_stored(coordinator, key, value);
                        }
                    }
                    // Transactional offsets wait for their marker (txn_offsets.rs).
                    LoggedBatch::Records { producer_id: Some(producer_id), records } => {
                        records_read += records.len();
                        txn_offsets::load_pending(coordinator, partition, producer_id, records);
                    }
                    LoggedBatch::Marker { producer_id, commit } => txn_offsets::complete(coordinator, partition, producer_id, commit),
                }
            }
        }
        Err(e) => tracing::error!(partition, error = e, "skipping undecodable __consumer_offsets batch"),
    })
    .await;
    if loaded && (records_read > 0 || coordinator.broker.cluster.is_some()) {
        let elapsed_ms = started.elapsed().as_millis() as u64;
        tracing::info!(shard = coordinator.shard_id, partition, records_read, elapsed_ms, "groups loaded from __consumer_offsets");
    }
}

fn apply_stored(coordinator: &GroupCoordinator, key: Bytes, value: Option<Bytes>) {
    let record = match offsets_topic::decode_record(key, value) {
        Ok(record) => record,
        Err(e) => {
            tracing::warn!(error = e, "skipping an unreadable __consumer_offsets record");
            return;
        }
    };
    let now = Instant::now();
    let mut groups = coordinator.groups.borrow_mut();
    match record {
        StoredRecord::Offset { group_id, topic, partition, value } => match value {
            Some(value) => {
                let group = groups.entry(group_id.clone()).or_insert_with(|| Group::new(&group_id, value.commit_timestamp_ms));
                group.offsets.insert((topic, partition), value);
            }
            None => {
                if let Some(group) = groups.get_mut(&group_id) {
                    group.offsets.remove(&(topic, partition));
                }
            }
        },
        StoredRecord::Group { group_id, value: None } => {
            groups.remove(&group_id);
        }
        StoredRecord::Group { group_id, value: Some(stored) } => {
            let group = groups.entry(group_id.clone()).or_insert_with(|| Group::new(&group_id, now_ms()));
            group.protocol_type = Some(stored.protocol_type).filter(|t| !t.is_empty());
            group.generation_id = stored.generation_id;
            group.protocol_name = stored.protocol_name.clone();
            group.leader_id = stored.leader_id;
            group.state_since_ms = if stored.state_timestamp_ms >= 0 { stored.state_timestamp_ms } else { now_ms() };
            let protocol = stored.protocol_name.unwrap_or_default();
            // Members come back with a fresh session: those still alive carry on without a
            // rebalance, the others expire after their session timeout.
            group.members = stored
                .members
                .into_iter()
                .map(|m| {
                    let mut member = Member {
                        member_id: m.member_id,
                        group_instance_id: m.group_instance_id,
                        client_id: m.client_id,
                        client_host: m.client_host,
                        rebalance_timeout_ms: m.rebalance_timeout_ms,
                        session_timeout_ms: m.session_timeout_ms,
                        protocol_type: group.protocol_type.clone().unwrap_or_default(),
                        protocols: vec![(protocol.clone(), m.subscription)],
                        assignment: m.assignment,
                        session_deadline: now,
                        awaiting_join: None,
                        awaiting_sync: None,
                    };
                    member.touch(now);
                    member
                })
                .collect();
            group.state = if group.members.is_empty() { GroupState::Empty } else { GroupState::Stable };
        }
    }
}
