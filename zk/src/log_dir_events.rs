//! A failed log dir told to the controller, as Kafka's ZooKeeper mode does it, and what the
//! controller does with it.
//!
//! Kafka (`ReplicaManager.handleLogDirFailure` -> `KafkaZkClient.propagateLogDirEvent`): the broker
//! writes a sequential `/log_dir_event_notification/log_dir_event_<seq>` holding
//! `{"version":1,"broker":N,"event":1}`; the controller (`processLogDirEventNotification`) reads and
//! deletes every one, then re-sends LeaderAndIsr for all that broker's replicas, and the broker
//! answers KAFKA_STORAGE_ERROR for each replica in an offline dir; those replicas go offline
//! (`onReplicasBecomeOffline`): new leaders from the rest of the ISR, and out of every ISR.
//!
//! Ours has no LeaderAndIsr (brokers follow partition states in ZooKeeper themselves), so the
//! broker also says which replicas are offline: before the notification it writes the ephemeral
//! `/log_dir_offline_replicas/<broker id>` (ours, not Kafka's:
//! `{"version":1,"log_dirs":[..],"partitions":{"topic":[0,1]}}`). Every broker reads it into
//! `ClusterSnapshot::offline_replicas` with the rest of the cluster, so the controller treats those
//! replicas as not live (`ClusterSnapshot::replica_online`) on every pass, also a controller
//! elected later (Kafka's new controller learns them again from LeaderAndIsr answers), and
//! Metadata lists them as offline. Ephemeral because Kafka forgets a broker's offline replicas
//! when it restarts: a broker that comes back with the dir repaired serves those replicas again.
//! The notification is still written and consumed (Kafka's own tools and controllers expect it);
//! the data znode's watch is what makes every broker re-read.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use zookeeper_client::{Acls, Client, CreateMode, Error as ZkError};

use crate::controller::{ControllerFence, ReconcileError};
use crate::paths::persistent;
use crate::ClusterView;

/// Kafka's `LogDirEventNotificationZNode`.
pub const NOTIFICATIONS: &str = "/log_dir_event_notification";
/// Kafka's `LogDirEventNotificationSequenceZNode.SequenceNumberPrefix`.
const NOTIFICATION_PREFIX: &str = "log_dir_event_";
/// Kafka's `LogDirFailureEvent`, the only event there is.
const LOG_DIR_FAILURE_EVENT: i64 = 1;
/// Ours: one ephemeral child per broker with offline replicas (see the module doc).
pub const OFFLINE_REPLICAS: &str = "/log_dir_offline_replicas";

/// A broker's replicas in failed log dirs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OfflineReplicas {
    /// The failed dirs, for operators reading the znode.
    pub log_dirs: Vec<String>,
    /// Topic -> partitions.
    pub partitions: BTreeMap<String, BTreeSet<i32>>,
}

pub fn notification_json(broker_id: i32) -> String {
    serde_json::json!({ "version": 1, "broker": broker_id, "event": LOG_DIR_FAILURE_EVENT }).to_string()
}

/// The broker a notification names (Kafka's `LogDirEventNotificationSequenceZNode.decode`).
pub fn parse_notification(data: &[u8]) -> Option<i32> {
    let value: serde_json::Value = serde_json::from_slice(data).ok()?;
    value.get("broker")?.as_i64().and_then(|b| i32::try_from(b).ok())
}

pub fn offline_json(offline: &OfflineReplicas) -> String {
    serde_json::json!({ "version": 1, "log_dirs": offline.log_dirs, "partitions": offline.partitions }).to_string()
}

pub fn parse_offline(data: &[u8]) -> Option<OfflineReplicas> {
    let value: serde_json::Value = serde_json::from_slice(data).ok()?;
    let log_dirs = value.get("log_dirs")?.as_array()?.iter().filter_map(|d| Some(d.as_str()?.to_string())).collect();
    let mut partitions = BTreeMap::new();
    for (topic, list) in value.get("partitions")?.as_object()? {
        let list: BTreeSet<i32> = list.as_array()?.iter().filter_map(|p| i32::try_from(p.as_i64()?).ok()).collect();
        partitions.insert(topic.clone(), list);
    }
    Some(OfflineReplicas { log_dirs, partitions })
}

/// What this broker last reported, waiting for the coordinator thread to write it: the latest
/// report replaces an unwritten one (it holds every offline replica, not a delta), so a shard
/// never waits and nothing queues.
#[derive(Debug, Default)]
pub(crate) struct Report {
    latest: Mutex<Option<OfflineReplicas>>,
    changed: tokio::sync::Notify,
}

impl crate::CoordinatorHandle {
    /// A log dir failed: `offline` is every replica of this broker now in a failed dir. Returns
    /// at once (a shard calls it); the coordinator thread tells the controller.
    pub fn report_offline_replicas(&self, offline: OfflineReplicas) {
        *self.view.offline_report.latest.lock().unwrap() = Some(offline);
        self.view.offline_report.changed.notify_one();
    }
}

/// This broker's side, for the session's life: writes each new report (the data znode, then
/// Kafka's notification), and again in every new session while a dir stays failed.
pub(crate) async fn publish(client: &Client, broker_id: i32, view: &ClusterView) {
    let mut written: Option<OfflineReplicas> = None;
    loop {
        let latest = view.offline_report.latest.lock().unwrap().clone();
        if let Some(offline) = latest.filter(|o| written.as_ref() != Some(o)) {
            match write(client, broker_id, &offline).await {
                Ok(()) => {
                    tracing::warn!(
                        broker_id,
                        log_dirs = ?offline.log_dirs,
                        partitions = offline.partitions.values().map(BTreeSet::len).sum::<usize>(),
                        "told the controller of a failed log dir: its replicas here are offline"
                    );
                    written = Some(offline);
                }
                Err(e) => {
                    tracing::error!(error = %e, "telling the controller of a failed log dir; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        view.offline_report.changed.notified().await;
    }
}

async fn write(client: &Client, broker_id: i32, offline: &OfflineReplicas) -> Result<(), String> {
    let path = format!("{OFFLINE_REPLICAS}/{broker_id}");
    let data = offline_json(offline);
    let ephemeral = CreateMode::Ephemeral.with_acls(Acls::anyone_all());
    match client.mkdir(OFFLINE_REPLICAS, &persistent()).await {
        Ok(()) | Err(ZkError::NodeExists) => {}
        Err(e) => return Err(format!("creating {OFFLINE_REPLICAS}: {e}")),
    }
    loop {
        match client.create(&path, data.as_bytes(), &ephemeral).await {
            Ok(_) => break,
            Err(ZkError::NodeExists) => match client.check_stat(&path).await.map_err(|e| format!("reading {path}: {e}"))? {
                // Ours (an earlier report in this session): replace the data.
                Some(stat) if stat.ephemeral_owner == client.session_id().0 => {
                    client.set_data(&path, data.as_bytes(), None).await.map_err(|e| format!("writing {path}: {e}"))?;
                    break;
                }
                // A previous process's session that has not expired yet: its znode would vanish
                // with it, taking this report along.
                Some(_) => match client.delete(&path, None).await {
                    Ok(()) | Err(ZkError::NoNode) => {}
                    Err(e) => return Err(format!("deleting {path}: {e}")),
                },
                None => {}
            },
            Err(e) => return Err(format!("creating {path}: {e}")),
        }
    }
    let sequential = CreateMode::PersistentSequential.with_acls(Acls::anyone_all());
    client
        .create(&format!("{NOTIFICATIONS}/{NOTIFICATION_PREFIX}"), notification_json(broker_id).as_bytes(), &sequential)
        .await
        .map_err(|e| format!("writing the log dir event notification: {e}"))?;
    Ok(())
}

/// Every broker's offline replicas: topic -> partition -> brokers (cluster.rs reads it with the
/// rest of the cluster).
pub async fn read_offline(client: &Client) -> Result<BTreeMap<String, BTreeMap<i32, Vec<i32>>>, ZkError> {
    let mut by_partition: BTreeMap<String, BTreeMap<i32, Vec<i32>>> = BTreeMap::new();
    let children = match client.list_children(OFFLINE_REPLICAS).await {
        Ok(children) => children,
        Err(ZkError::NoNode) => return Ok(by_partition),
        Err(e) => return Err(e),
    };
    for child in children {
        let Ok(broker) = child.parse::<i32>() else { continue };
        let data = match client.get_data(&format!("{OFFLINE_REPLICAS}/{child}")).await {
            Ok((data, _)) => data,
            Err(ZkError::NoNode) => continue,
            Err(e) => return Err(e),
        };
        let Some(offline) = parse_offline(&data) else {
            tracing::warn!(broker, "unparsable {OFFLINE_REPLICAS}/{child}; skipped");
            continue;
        };
        for (topic, partitions) in offline.partitions {
            let topic = by_partition.entry(topic).or_default();
            for partition in partitions {
                topic.entry(partition).or_default().push(broker);
            }
        }
    }
    Ok(by_partition)
}

/// The controller's side (`KafkaController.processLogDirEventNotification`): reads and deletes
/// every notification, the deletes fenced by the controller epoch. What they announce is already
/// in the snapshot the controller just reconciled (the data znode is written first and watched),
/// so this only logs and clears them.
pub(crate) async fn consume_notifications(client: &Client, fence: ControllerFence) -> Result<(), ReconcileError> {
    let names = match client.list_children(NOTIFICATIONS).await {
        Ok(names) => names,
        Err(ZkError::NoNode) => return Ok(()),
        Err(e) => return Err(ReconcileError::ZooKeeper(e)),
    };
    if names.is_empty() {
        return Ok(());
    }
    let mut writer =
        client.new_check_writer(crate::paths::CONTROLLER_EPOCH, Some(fence.epoch_zk_version)).map_err(ReconcileError::ZooKeeper)?;
    let mut brokers = BTreeSet::new();
    for name in names.iter().filter(|n| n.starts_with(NOTIFICATION_PREFIX)) {
        let path = format!("{NOTIFICATIONS}/{name}");
        match client.get_data(&path).await {
            Ok((data, _)) => match parse_notification(&data) {
                Some(broker) => {
                    brokers.insert(broker);
                }
                None => tracing::warn!(path, "unparsable log dir event notification; deleted"),
            },
            Err(ZkError::NoNode) => continue,
            Err(e) => return Err(ReconcileError::ZooKeeper(e)),
        }
        writer.add_delete(&path, None).map_err(ReconcileError::ZooKeeper)?;
    }
    match writer.commit().await {
        Ok(_) => {}
        Err(zookeeper_client::CheckWriteError::CheckFailed { .. }) => return Err(ReconcileError::Fenced),
        // Deleted meanwhile (by a controller before us): the next pass sees what is left.
        Err(zookeeper_client::CheckWriteError::OperationFailed { source: ZkError::NoNode, .. }) => {}
        Err(e) => return Err(ReconcileError::ZooKeeper(e.into())),
    }
    if !brokers.is_empty() {
        tracing::warn!(?brokers, "controller: log dir failure reported; those brokers' offline replicas leave leadership and ISRs");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_notification_and_our_offline_znode_round_trip() {
        assert_eq!(notification_json(3), r#"{"broker":3,"event":1,"version":1}"#);
        assert_eq!(parse_notification(br#"{"version":1,"broker":7,"event":1}"#), Some(7));
        assert_eq!(parse_notification(b"garbage"), None);
        let offline = OfflineReplicas {
            log_dirs: vec!["/mnt/a".into()],
            partitions: BTreeMap::from([("t".to_string(), BTreeSet::from([0, 2])), ("my-topic".to_string(), BTreeSet::from([5]))]),
        };
        assert_eq!(parse_offline(offline_json(&offline).as_bytes()), Some(offline));
        assert_eq!(parse_offline(b"{}"), None);
    }
}
