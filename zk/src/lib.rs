//! The ZooKeeper coordinator shard (cluster mode): broker registration, controller election and
//! partition state in Kafka's ZooKeeper layout. Arrives with the cluster-mode issue.
