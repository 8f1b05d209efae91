//! Leader side of replication: what a follower's fetch tells (its log end offset, whether it is
//! caught up), the ISR growing when a follower reaches the high watermark and shrinking when one
//! lags for `replica.lag.time.max.ms`, and the ZooKeeper writes of both (conditional on the
//! state znode's version, as Kafka's leaders did before AlterIsr).
//!
//! The high watermark itself is the partition's (`Partition::high_watermark`): the smallest log
//! end over the ISR, never moving back, waking waiters when it moves.

use std::rc::Rc;
use std::time::Duration;

use crate::clock::now_ms;
use crate::partition::Partition;
use crate::shard_context::Shard;

/// How often the ISR is checked for followers that fell behind.
pub const ISR_CHECK_INTERVAL_MS: u64 = 200;
/// How long an ISR write waits to show in the snapshot before the next change may start.
const ISR_CHANGE_VISIBLE_WAIT_MS: u64 = 2_000;
const ISR_CHANGE_POLL_MS: u64 = 20;

/// A follower's fetch reached this leader: its fetch offset is its log end offset, and it says its
/// log start offset (DeleteRecords' low watermark is the smallest over the replicas). Returns
/// false when the offset is past our log end (a diverged log, which truncates on our answer):
/// that counts for nothing and is served as a consumer's read.
pub async fn on_follower_fetch(shard: &Shard, handle: &Rc<Partition>, follower: i32, fetch_offset: i64, follower_log_start_offset: i64) -> bool {
    let log_end_offset = handle.log.read().await.expect("partition lock").log_end_offset();
    if fetch_offset > log_end_offset {
        return false;
    }
    {
        let mut replication = handle.replication.borrow_mut();
        replication.follower_log_end_offsets.insert(follower, fetch_offset);
        if follower_log_start_offset >= 0 {
            replication.follower_log_start_offsets.insert(follower, follower_log_start_offset);
        }
        if fetch_offset >= log_end_offset {
            replication.follower_caught_up_ms.insert(follower, now_ms());
        }
    }
    let high_watermark = handle.high_watermark(log_end_offset);
    maybe_expand_isr(shard, handle, follower, fetch_offset, high_watermark);
    true
}

/// A follower that fetched from at least the high watermark joins the ISR (Kafka's rule).
fn maybe_expand_isr(shard: &Shard, handle: &Rc<Partition>, follower: i32, follower_log_end_offset: i64, high_watermark: i64) {
    let Some(cluster) = shard.broker.cluster.clone() else { return };
    let snapshot = cluster.view.snapshot();
    let Some(state) = snapshot.state(&handle.topic, handle.index).cloned() else { return };
    let is_replica = snapshot
        .topics
        .get(&handle.topic)
        .and_then(|t| t.replicas.get(handle.index as usize))
        .is_some_and(|replicas| replicas.contains(&follower));
    let offline = snapshot.replica_offline(follower, &handle.topic, handle.index);
    if state.leader != shard.broker.config.broker_id || state.isr.contains(&follower) || !is_replica || offline {
        return;
    }
    if follower_log_end_offset < high_watermark {
        return;
    }
    let mut isr = state.isr.clone();
    isr.push(follower);
    change_isr(cluster, isr, state, handle);
}

/// Followers that have not been caught up for `replica.lag.time.max.ms` leave the ISR. Runs on
/// the follower task's beat, for the partitions this shard has open and leads.
pub fn shrink_isrs(shard: &Rc<Shard>, snapshot: &zk::ClusterSnapshot, me: i32) {
    let Some(cluster) = shard.broker.cluster.clone() else { return };
    let now = now_ms();
    let lag_max_ms = shard.broker.config.replica_lag_time_max_ms;
    for handle in shard.partitions.all_open() {
        let Some(state) = snapshot.state(&handle.topic, handle.index) else { continue };
        if state.leader != me {
            continue;
        }
        let isr: Vec<i32> = {
            let mut replication = handle.replication.borrow_mut();
            state
                .isr
                .iter()
                .copied()
                .filter(|&member| {
                    // A member never seen since this broker became leader gets the full lag time.
                    member == me || now - *replication.follower_caught_up_ms.entry(member).or_insert(now) <= lag_max_ms
                })
                .collect()
        };
        assert!(isr.contains(&me), "a leader never leaves its own ISR: the ISR is never empty while it serves");
        // Logged once per write: while one is pending (a busy ZooKeeper), each beat would
        // log the same shrink again (issue 21's 3,000-partition cluster logged it every 200 ms).
        if isr.len() < state.isr.len() && !handle.replication.borrow().isr_change_pending {
            tracing::warn!(topic = handle.topic, partition = handle.index, ?isr, previous = ?state.isr, "followers fell behind: shrinking the ISR");
            change_isr(cluster.clone(), isr, state.clone(), &handle);
        }
    }
}

/// Writes an ISR change in the background, one at a time per partition; the flag clears once the
/// snapshot shows the write (or it failed), so the next change starts from the new state.
fn change_isr(cluster: zk::CoordinatorHandle, isr: Vec<i32>, expected: zk::PartitionState, handle: &Rc<Partition>) {
    if std::mem::replace(&mut handle.replication.borrow_mut().isr_change_pending, true) {
        return;
    }
    let (handle, shrank) = (handle.clone(), isr.len() < expected.isr.len());
    glommio::spawn_local(async move {
        let (topic, partition) = (handle.topic.as_str(), handle.index);
        let expected_version = expected.zk_version;
        match cluster.update_isr(topic, partition, isr, expected).await {
            Ok(()) => {
                crate::metrics::isr_changed(shrank);
                for _ in 0..ISR_CHANGE_VISIBLE_WAIT_MS / ISR_CHANGE_POLL_MS {
                    let seen = cluster.view.snapshot().state(topic, partition).map(|s| s.zk_version);
                    if seen != Some(expected_version) {
                        break;
                    }
                    glommio::timer::sleep(Duration::from_millis(ISR_CHANGE_POLL_MS)).await;
                }
            }
            Err(e) => tracing::info!(topic, partition, error = %e, "ISR change not written (the state moved on)"),
        }
        handle.replication.borrow_mut().isr_change_pending = false;
    })
    .detach();
}
