//! The controller's work and topic creation.
//!
//! The controller writes partition state znodes: it elects a leader for every partition that has
//! none or whose leader is gone, from the live brokers in the ISR (`unclean.leader.election.enable`
//! lets it take any live replica). Every write it makes is fenced by its epoch: a ZooKeeper multi
//! that checks `/controller_epoch` still has the version this controller wrote, so a deposed
//! controller's writes fail.
//!
//! A new partition's ISR is its leader alone; followers join it once they have caught up (the
//! leader writes that). When the leader dies, the next leader comes from the live ISR.
//!
//! Topic deletion: an admin's DeleteTopics writes `/admin/delete_topics/<topic>`; the controller
//! removes the topic's znodes and then that request. Brokers delete their replicas when the topic
//! leaves the snapshot (Kafka's controller sent StopReplica and waited for every replica; here a
//! broker that is down at the time deletes its replicas when it comes back and finds the topic
//! gone).

use std::collections::BTreeMap;

use futures_util::StreamExt;
use zookeeper_client::{Client, Error as ZkError};

use crate::cluster::ClusterSnapshot;
use crate::paths::{self, persistent};

/// What this broker holds while it is the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControllerFence {
    pub epoch: i32,
    /// The version of `/controller_epoch` after this controller's increment.
    pub epoch_zk_version: i32,
}

#[derive(Debug)]
pub enum ReconcileError {
    /// Another controller bumped the epoch: stop acting as controller.
    Fenced,
    ZooKeeper(ZkError),
}

/// Partition state writes in flight at once: pipelined on the session's connection, as Kafka's
/// controller sends its ZooKeeper requests asynchronously in batches (`KafkaZkClient`'s
/// `retryRequestsUntilConnected`), bounded like the reads.
const WRITES_IN_FLIGHT: usize = 1024;

/// One partition state the controller writes.
struct StateWrite<'a> {
    topic: &'a str,
    partition: i32,
    leader: i32,
    leader_epoch: i32,
    isr: Vec<i32>,
    /// None: the state znode is new.
    expected_version: Option<i32>,
}

/// Brings every partition state in line with the live brokers. Returns how many it wrote.
/// The writes go out together (issue 21: one round trip after another, the 3,000 states of a
/// new topic set took seconds, each write waking every broker's read).
pub async fn reconcile(
    client: &Client,
    snapshot: &ClusterSnapshot,
    fence: ControllerFence,
    unclean_leader_election: bool,
) -> Result<usize, ReconcileError> {
    let mut written = 0;
    for topic in &snapshot.topics_being_deleted {
        delete_topic(client, snapshot, topic, fence).await?;
        written += 1;
    }
    let writes = plan_states(snapshot, unclean_leader_election);
    // Parents are plain persistent nodes; only the state itself is the controller's.
    let new_parents = writes.iter().filter(|w| w.expected_version.is_none()).map(|w| paths::partition_path(w.topic, w.partition));
    let made: Vec<Result<(), ZkError>> = futures_util::stream::iter(new_parents)
        .map(|path| async move { client.mkdir(&path, &persistent()).await })
        .buffer_unordered(WRITES_IN_FLIGHT)
        .collect()
        .await;
    if let Some(Err(e)) = made.into_iter().find(|made| !matches!(made, Ok(()) | Err(ZkError::NodeExists))) {
        return Err(ReconcileError::ZooKeeper(e));
    }
    let mut results = futures_util::stream::iter(writes).map(|write| write_state(client, fence, write)).buffer_unordered(WRITES_IN_FLIGHT);
    let mut first_error = None;
    while let Some(result) = results.next().await {
        match result {
            Ok(true) => written += 1,
            Ok(false) => {}
            Err(ReconcileError::Fenced) => return Err(ReconcileError::Fenced),
            Err(e) => first_error = first_error.or(Some(e)),
        }
    }
    if written > 0 {
        tracing::info!(written, "controller: partition states written");
    }
    first_error.map_or(Ok(written), Err)
}

/// The partition states to write: a leader for every partition without a live one, and the
/// dead brokers out of the ISRs. Pure: what the snapshot says, nothing read.
fn plan_states(snapshot: &ClusterSnapshot, unclean_leader_election: bool) -> Vec<StateWrite<'_>> {
    let mut writes = Vec::new();
    for (topic, state) in &snapshot.topics {
        if snapshot.topics_being_deleted.contains(topic) {
            continue; // no leaders for a topic on its way out
        }
        for (index, replicas) in state.replicas.iter().enumerate() {
            let partition = index as i32;
            // A replica in a failed log dir counts as dead for this partition (log_dir_events.rs).
            let live = |b: &i32| snapshot.replica_online(*b, topic, partition);
            let live_replicas: Vec<i32> = replicas.iter().copied().filter(live).collect();
            let current = state.states.get(index).cloned().flatten();
            let (leader, leader_epoch, isr, expected_version) = match &current {
                None => {
                    let Some(&leader) = live_replicas.first() else { continue };
                    (leader, 0, vec![leader], None)
                }
                // The leader lives: only drop dead brokers from its ISR (Kafka's controller does so
                // when a broker's session ends, without waiting for the leader's lag timeout).
                Some(s) if s.leader >= 0 && live(&s.leader) => {
                    let isr: Vec<i32> = s.isr.iter().copied().filter(live).collect();
                    if isr.len() == s.isr.len() {
                        continue;
                    }
                    (s.leader, s.leader_epoch + 1, isr, Some(s.zk_version))
                }
                Some(s) => {
                    let from_isr = s.isr.iter().copied().find(|b| live(b));
                    let unclean = if unclean_leader_election { live_replicas.first().copied() } else { None };
                    match from_isr.or(unclean) {
                        Some(leader) => {
                            let isr = if from_isr.is_some() {
                                // The live rest of the ISR stays in it: they have every committed
                                // record, so acks=all keeps working at once.
                                let mut isr = vec![leader];
                                isr.extend(s.isr.iter().copied().filter(|b| *b != leader && live(b)));
                                isr
                            } else {
                                tracing::warn!(topic, partition, leader, "unclean leader election: records may be lost");
                                vec![leader]
                            };
                            (leader, s.leader_epoch + 1, isr, Some(s.zk_version))
                        }
                        // Offline; Kafka keeps the last ISR so the last leader can take over again.
                        None if s.leader == -1 => continue,
                        None => (-1, s.leader_epoch + 1, s.isr.clone(), Some(s.zk_version)),
                    }
                }
            };
            writes.push(StateWrite { topic, partition, leader, leader_epoch, isr, expected_version });
        }
    }
    writes
}

/// One partition state, in a multi that checks the controller epoch. Ok(false): someone changed
/// it meanwhile (the watch brings the next round).
async fn write_state(client: &Client, fence: ControllerFence, write: StateWrite<'_>) -> Result<bool, ReconcileError> {
    let StateWrite { topic, partition, leader, leader_epoch, isr, expected_version } = write;
    let data = paths::partition_state_json(leader, leader_epoch, &isr, fence.epoch);
    let path = paths::partition_state_path(topic, partition);
    let mut writer =
        client.new_check_writer(paths::CONTROLLER_EPOCH, Some(fence.epoch_zk_version)).map_err(ReconcileError::ZooKeeper)?;
    let added = match expected_version {
        None => writer.add_create(&path, data.as_bytes(), &persistent()),
        Some(version) => writer.add_set_data(&path, data.as_bytes(), Some(version)),
    };
    added.map_err(ReconcileError::ZooKeeper)?;
    match writer.commit().await {
        Ok(_) => {
            // A new partition's first state is routine (thousands per topic set); a change of
            // leader or ISR is what an operator looks for.
            if expected_version.is_some() {
                tracing::info!(topic, partition, leader, leader_epoch, ?isr, "partition state written");
            } else {
                tracing::debug!(topic, partition, leader, leader_epoch, ?isr, "partition state written");
            }
            Ok(true)
        }
        Err(zookeeper_client::CheckWriteError::CheckFailed { .. }) => Err(ReconcileError::Fenced),
        Err(zookeeper_client::CheckWriteError::OperationFailed { source: ZkError::NodeExists | ZkError::BadVersion, .. }) => Ok(false),
        Err(e) => Err(ReconcileError::ZooKeeper(e.into())),
    }
}

/// Removes a topic asked for deletion: the partition znodes first (only the controller creates
/// them), then, in one multi fenced by the controller epoch, the topic's assignment and the
/// deletion request; its config last. A controller deposed half-way leaves the request in
/// place, and the next controller finishes the job.
async fn delete_topic(client: &Client, snapshot: &ClusterSnapshot, topic: &str, fence: ControllerFence) -> Result<(), ReconcileError> {
    let ignore_missing = |result: Result<(), ZkError>| match result {
        Ok(()) | Err(ZkError::NoNode) => Ok(()),
        Err(e) => Err(ReconcileError::ZooKeeper(e)),
    };
    let partitions = snapshot.topics.get(topic).map(|t| t.replicas.len() as i32).unwrap_or(0);
    for partition in 0..partitions {
        ignore_missing(client.delete(&paths::partition_state_path(topic, partition), None).await)?;
        ignore_missing(client.delete(&paths::partition_path(topic, partition), None).await)?;
    }
    ignore_missing(client.delete(&paths::partitions_path(topic), None).await)?;
    let mut writer =
        client.new_check_writer(paths::CONTROLLER_EPOCH, Some(fence.epoch_zk_version)).map_err(ReconcileError::ZooKeeper)?;
    if snapshot.topics.contains_key(topic) {
        writer.add_delete(&paths::topic_path(topic), None).map_err(ReconcileError::ZooKeeper)?;
    }
    writer.add_delete(&paths::delete_topic_path(topic), None).map_err(ReconcileError::ZooKeeper)?;
    match writer.commit().await {
        Ok(_) => {}
        Err(zookeeper_client::CheckWriteError::CheckFailed { .. }) => return Err(ReconcileError::Fenced),
        // Changed meanwhile (another round did it): the watch brings the next round.
        Err(zookeeper_client::CheckWriteError::OperationFailed { source: ZkError::NoNode | ZkError::NotEmpty, .. }) => return Ok(()),
        Err(e) => return Err(ReconcileError::ZooKeeper(e.into())),
    }
    ignore_missing(client.delete(&paths::topic_config_path(topic), None).await)?;
    tracing::info!(topic, partitions, "topic deleted");
    Ok(())
}

/// Why a topic could not be deleted or grown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicChangeError {
    UnknownTopic,
    InvalidPartitions(String),
    InvalidReplicationFactor(String),
    InvalidReplicaAssignment(String),
    ZooKeeper(String),
}

/// CreatePartitions: extends the topic's replica assignment to `total` partitions (written
/// conditionally on the znode version, as Kafka's admin client did); the controller then elects
/// the new partitions' leaders. New replicas are spread as if the topic had been created with
/// `total` partitions.
pub async fn add_partitions(
    client: &Client,
    live_brokers: &[i32],
    name: &str,
    total: i32,
    assignment: Option<Vec<Vec<i32>>>,
) -> Result<Vec<Vec<i32>>, TopicChangeError> {
    if let Some(assignment) = &assignment {
        unknown_brokers(assignment, live_brokers).map_err(TopicChangeError::InvalidReplicaAssignment)?;
    }
    let zk = |e: ZkError| TopicChangeError::ZooKeeper(e.to_string());
    loop {
        let (data, stat) = match client.get_data(&paths::topic_path(name)).await {
            Ok(found) => found,
            Err(ZkError::NoNode) => return Err(TopicChangeError::UnknownTopic),
            Err(e) => return Err(zk(e)),
        };
        let (topic_id, mut replicas) =
            paths::parse_topic_json(&data).ok_or_else(|| TopicChangeError::ZooKeeper(format!("unparsable {}", paths::topic_path(name))))?;
        let current = replicas.len() as i32;
        if total <= current {
            return Err(TopicChangeError::InvalidPartitions(format!(
                "Topic currently has {current} partitions, which is higher than the requested {total}."
            )));
        }
        let factor = replicas.first().map_or(1, |r| r.len());
        if let Some(assignment) = &assignment {
            if assignment.len() as i32 != total - current {
                return Err(TopicChangeError::InvalidReplicaAssignment(format!(
                    "Increasing the number of partitions by {} but {} assignments provided.",
                    total - current,
                    assignment.len()
                )));
            }
            if let Some(other) = assignment.iter().find(|r| r.len() != factor) {
                return Err(TopicChangeError::InvalidReplicaAssignment(format!(
                    "Inconsistent replication factor between partitions, partition 0 has {factor} while partitions [{}] have replication factors [{}], respectively.",
                    current,
                    other.len()
                )));
            }
        }
        if assignment.is_none() && (live_brokers.is_empty() || factor > live_brokers.len()) {
            return Err(TopicChangeError::InvalidReplicationFactor(format!(
                "Replication factor: {factor} larger than available brokers: {}.",
                live_brokers.len()
            )));
        }
        let added: Vec<Vec<i32>> = match &assignment {
            Some(assignment) => assignment.clone(),
            None => assign_replicas(live_brokers, total, factor, (topic_id[0] as usize) % live_brokers.len()).split_off(current as usize),
        };
        replicas.extend(added.iter().cloned());
        match client.set_data(&paths::topic_path(name), paths::topic_json(&topic_id, &replicas).as_bytes(), Some(stat.version)).await {
            Ok(_) => return Ok(added),
            Err(ZkError::BadVersion) => continue, // changed meanwhile: read it again
            Err(e) => return Err(zk(e)),
        }
    }
}

/// Why a topic could not be created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateTopicError {
    AlreadyExists,
    InvalidReplicationFactor(String),
    InvalidReplicaAssignment(String),
    ZooKeeper(String),
}

/// A client's assignment may only name live brokers (Kafka: "Unknown broker(s) in replica
/// assignment"). Its shape (no empty or duplicated replica lists, one factor) is the broker's check.
fn unknown_brokers(assignment: &[Vec<i32>], live_brokers: &[i32]) -> Result<(), String> {
    let unknown: std::collections::BTreeSet<i32> = assignment.iter().flatten().copied().filter(|b| !live_brokers.contains(b)).collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(format!("Unknown broker(s) in replica assignment: {}.", unknown.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(", ")))
    }
}

/// Spreads replicas over the live brokers as Kafka's rack-unaware assignment does: partition p's
/// leader is broker (start + p) mod n, its followers the next ones with a shift that grows every
/// n partitions, so leaders and followers both spread evenly.
pub fn assign_replicas(brokers: &[i32], partitions: i32, replication_factor: usize, start: usize) -> Vec<Vec<i32>> {
    assert!(!brokers.is_empty() && replication_factor <= brokers.len());
    let n = brokers.len();
    (0..partitions as usize)
        .map(|p| {
            let leader = (start + p) % n;
            let shift = 1 + (p / n) % (n - 1).max(1);
            let mut replicas = vec![brokers[leader]];
            for j in 0..replication_factor.saturating_sub(1) {
                replicas.push(brokers[(leader + if n > 1 { 1 + (shift - 1 + j) % (n - 1) } else { 0 }) % n]);
            }
            replicas
        })
        .collect()
}

/// Writes a new topic: its config and its replica assignment, in one multi so it appears whole.
/// The controller then elects the partitions' leaders.
pub async fn create_topic(
    client: &Client,
    live_brokers: &[i32],
    name: &str,
    partitions: i32,
    replication_factor: i16,
    assignment: Option<Vec<Vec<i32>>>,
    config: &BTreeMap<String, String>,
    topic_id: [u8; 16],
) -> Result<Vec<Vec<i32>>, CreateTopicError> {
    let replicas = match assignment {
        Some(assignment) => {
            unknown_brokers(&assignment, live_brokers).map_err(CreateTopicError::InvalidReplicaAssignment)?;
            assignment
        }
        None => {
            let factor = replication_factor.max(1) as usize;
            if factor > live_brokers.len() {
                return Err(CreateTopicError::InvalidReplicationFactor(format!(
                    "Replication factor: {replication_factor} larger than available brokers: {}.",
                    live_brokers.len()
                )));
            }
            assign_replicas(live_brokers, partitions, factor, (topic_id[0] as usize) % live_brokers.len())
        }
    };
    let mut writer = client.new_multi_writer();
    let zk = |e: ZkError| CreateTopicError::ZooKeeper(e.to_string());
    writer.add_create(&paths::topic_config_path(name), paths::topic_config_json(config).as_bytes(), &persistent()).map_err(zk)?;
    writer.add_create(&paths::topic_path(name), paths::topic_json(&topic_id, &replicas).as_bytes(), &persistent()).map_err(zk)?;
    match writer.commit().await {
        Ok(_) => Ok(replicas),
        Err(zookeeper_client::MultiWriteError::OperationFailed { source: ZkError::NodeExists, .. }) => {
            Err(CreateTopicError::AlreadyExists)
        }
        Err(e) => Err(CreateTopicError::ZooKeeper(format!("{e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_are_distinct_and_leaders_spread() {
        let brokers = [1, 2, 3];
        let replicas = assign_replicas(&brokers, 6, 3, 0);
        for r in &replicas {
            let mut sorted = r.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), 3, "{r:?}");
        }
        let mut leaders: BTreeMap<i32, usize> = BTreeMap::new();
        for r in &replicas {
            *leaders.entry(r[0]).or_default() += 1;
        }
        assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
        assert_eq!(assign_replicas(&[5], 2, 1, 0), vec![vec![5], vec![5]]);
    }
}
