//! Loading transactional ids from `__transaction_state`, exactly as `groups/loader.rs` loads
//! consumer groups: standalone at start (every partition this shard owns), in cluster mode when
//! this broker gains a partition's leadership (its leader epoch becomes the coordinator epoch),
//! dropping the ids when leadership moves.
//!
//! Contract: a partition's ids are served only once its whole log has been applied (requests
//! meanwhile get COORDINATOR_LOAD_IN_PROGRESS); the latest record for an id wins, a tombstone
//! removes it. Transactions found in PrepareCommit / PrepareAbort get their markers sent again
//! (the previous coordinator may have died between the markers); Ongoing ones are aborted by the
//! timeout task when their time is up.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use kafka_protocol::records::RecordBatchDecoder;

use crate::partition::replay::replay;

use super::coordinator::{Held, PartitionLoad, TxnCoordinator};
use super::log_format;
use super::state::{TxnMetadata, TxnState};
use super::{partition_for_transactional_id, TRANSACTION_STATE_TOPIC};

/// How often a shard looks for a new cluster snapshot to follow leadership.
const LEADERSHIP_CHECK_INTERVAL_MS: u64 = 20;

/// Standalone: loads this shard's partitions of `__transaction_state` (if the topic exists),
/// then serves. Cluster mode: follows leadership for the shard's life.
pub async fn run(coordinator: Rc<TxnCoordinator>) {
    if coordinator.broker.cluster.is_some() {
        return follow_leadership(coordinator).await;
    }
    let count = coordinator.broker.topics.read().unwrap().get(TRANSACTION_STATE_TOPIC).map(|t| t.partitions);
    for partition in (0..count.unwrap_or(0)).filter(|p| coordinator.partitions.owns(TRANSACTION_STATE_TOPIC, *p)) {
        load_partition(&coordinator, partition, count.unwrap_or(0)).await;
    }
    coordinator.loaded.set(true);
    resend_markers(&coordinator, None);
}

async fn follow_leadership(coordinator: Rc<TxnCoordinator>) {
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
        let count = snapshot.topics.get(TRANSACTION_STATE_TOPIC).map(|t| t.replicas.len() as i32).unwrap_or(0);
        // (partition, leader epoch) of those this shard owns and this broker leads.
        let led: Vec<(i32, i32)> = (0..count)
            .filter(|&p| coordinator.partitions.owns(TRANSACTION_STATE_TOPIC, p))
            .filter_map(|p| snapshot.state(TRANSACTION_STATE_TOPIC, p).filter(|s| s.leader == me).map(|s| (p, s.leader_epoch)))
            .collect();
        let held: Vec<(i32, i32)> = coordinator.held.borrow().iter().map(|(&p, h)| (p, h.coordinator_epoch)).collect();
        // A partition led at a new epoch counts as lost and gained again (its jobs stop).
        for &(partition, _) in held.iter().filter(|h| !led.contains(h)) {
            unload_partition(&coordinator, partition, count);
        }
        for &(partition, epoch) in led.iter().filter(|l| !held.contains(l)) {
            coordinator.held.borrow_mut().insert(partition, Held { load: PartitionLoad::Loading, coordinator_epoch: epoch });
            load_partition(&coordinator, partition, count).await;
            if let Some(held) = coordinator.held.borrow_mut().get_mut(&partition) {
                held.load = PartitionLoad::Loaded;
            }
            resend_markers(&coordinator, Some((partition, count)));
        }
        glommio::timer::sleep(Duration::from_millis(LEADERSHIP_CHECK_INTERVAL_MS)).await;
    }
}

fn unload_partition(coordinator: &TxnCoordinator, partition: i32, partition_count: i32) {
    coordinator.held.borrow_mut().remove(&partition);
    let mut txns = coordinator.txns.borrow_mut();
    let before = txns.len();
    txns.retain(|id, _| partition_for_transactional_id(id, partition_count) != partition);
    tracing::info!(shard = coordinator.shard_id, partition, ids = before - txns.len(), "no longer coordinating a __transaction_state partition");
}

/// Queues the markers of every loaded transaction left in a Prepare state (of one partition, or
/// of all).
fn resend_markers(coordinator: &TxnCoordinator, only: Option<(i32, i32)>) {
    let preparing: Vec<(String, super::state::Transit)> = coordinator
        .txns
        .borrow()
        .values()
        .filter(|m| matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort) && m.pending.is_none())
        .filter(|m| only.is_none_or(|(p, count)| partition_for_transactional_id(&m.transactional_id, count) == p))
        .map(|m| (m.transactional_id.clone(), m.snapshot()))
        .collect();
    for (transactional_id, transit) in preparing {
        tracing::info!(transactional_id, state = ?transit.state, "resending the markers of a transaction loaded half-ended");
        coordinator.queue_markers(&transactional_id, &transit);
    }
}

/// Reads one partition from its start and applies every record.
async fn load_partition(coordinator: &TxnCoordinator, partition: i32, partition_count: i32) {
    let started = Instant::now();
    let mut records_read = 0usize;
    let loaded = replay(&coordinator.partitions, TRANSACTION_STATE_TOPIC, partition, |mut bytes| {
        while bytes.has_remaining() {
            let batch = match RecordBatchDecoder::decode(&mut bytes) {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::error!(partition, error = %e, "skipping undecodable __transaction_state bytes");
                    break;
                }
            };
            for record in batch.records.into_iter().filter(|r| !r.control) {
                let Some(key) = record.key else { continue };
                records_read += 1;
                apply(coordinator, partition, partition_count, key, record.value);
            }
        }
    })
    .await;
    let elapsed_ms = started.elapsed().as_millis() as u64;
    if loaded && (records_read > 0 || coordinator.broker.cluster.is_some()) {
        tracing::info!(shard = coordinator.shard_id, partition, records_read, elapsed_ms, "transactions loaded from __transaction_state");
    }
}

fn apply(coordinator: &TxnCoordinator, partition: i32, partition_count: i32, key: Bytes, value: Option<Bytes>) {
    let (transactional_id, stored) = match log_format::decode_key(key).and_then(|id| Ok((id, log_format::decode_value(value)?))) {
        Ok(decoded) => decoded,
        Err(e) => {
            tracing::warn!(partition, error = e, "skipping an unreadable __transaction_state record");
            return;
        }
    };
    if partition_for_transactional_id(&transactional_id, partition_count) != partition {
        tracing::warn!(partition, transactional_id, "skipping a record of another partition's transactional id");
        return;
    }
    let mut txns = coordinator.txns.borrow_mut();
    match stored {
        None => {
            txns.remove(&transactional_id);
        }
        Some(stored) if stored.state == TxnState::Dead => {
            txns.remove(&transactional_id);
        }
        Some(stored) => {
            txns.insert(transactional_id.clone(), TxnMetadata::from_transit(&transactional_id, stored));
        }
    }
}
