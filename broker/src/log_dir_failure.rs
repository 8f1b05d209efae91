//! Cluster mode: a failed log dir told to the controller (Kafka's `ReplicaManager.handleLogDirFailure`
//! -> `propagateLogDirEvent`). `storage::log_manager` takes the dir offline on the shard that met
//! the I/O error and calls the listener installed here; it hands every offline replica of this
//! broker to the coordinator thread without waiting (zk's `log_dir_events.rs` writes them and
//! Kafka's notification, and the controller moves leadership and ISRs off them). The follower
//! stops fetching offline replicas (`replication/follower.rs`), as Kafka removes their fetchers.

use std::collections::BTreeMap;

/// Installs the listener; called once the coordinator has joined the cluster.
pub fn tell_the_controller(cluster: zk::CoordinatorHandle) {
    storage::log_manager::on_offline_partitions(Box::new(move || {
        let mut offline = zk::log_dir_events::OfflineReplicas {
            log_dirs: storage::log_manager::offline_dirs().iter().map(|d| d.display().to_string()).collect(),
            partitions: BTreeMap::new(),
        };
        for (topic, partition) in storage::log_manager::offline_partitions() {
            offline.partitions.entry(topic).or_default().insert(partition);
        }
        cluster.report_offline_replicas(offline);
    }));
}
