//! Topic administration, for the handlers (CreateTopics, CreatePartitions, DeleteTopics,
//! AlterConfigs, Metadata's auto-creation) and for the internal topics (`__consumer_offsets` on
//! a group's first request) alike. Standalone it changes the local topic table and opens or
//! deletes partitions on their owning shards; in cluster mode it asks the ZooKeeper coordinator
//! and waits until the change shows in the cluster snapshot, as Kafka's admin requests do.
//!
//! Never: this module does not import `handlers` or `groups`. Errors are (Kafka error code,
//! message), for the handlers to put in their responses.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::ResponseError;

use crate::shard_context::Shard;
use crate::topics::{TopicInfo, CONSUMER_OFFSETS_TOPIC};
use crate::txn::TRANSACTION_STATE_TOPIC;

/// Most partitions one topic may have: a bound on what one request can make us open.
pub const MAX_PARTITIONS_PER_TOPIC: i32 = 10_000;

/// How long CreateTopics waits at most for the controller to elect the new partitions' leaders.
pub const MAX_LEADER_WAIT_MS: i32 = 10_000;

/// Cluster mode (`replication_factor` already resolved from -1 to the default): writes the
/// topic to ZooKeeper through the coordinator (which assigns replicas
/// over the live brokers), then waits up to `wait_ms` until every partition has a leader, so a
/// client's next Metadata finds them (Kafka's CreateTopics waits the same way).
pub async fn create_topic_in_cluster(
    shard: &Rc<Shard>,
    name: &str,
    partitions: i32,
    replication_factor: i16,
    assignment: Option<Vec<Vec<i32>>>,
    overrides: BTreeMap<String, String>,
    wait_ms: u64,
) -> Result<[u8; 16], (i16, String)> {
    let cluster = shard.broker.cluster.as_ref().expect("cluster mode");
    let topic_id = crate::topics::new_topic_id(name);
    cluster.create_topic(name, partitions, replication_factor, assignment, overrides, topic_id).await.map_err(|e| match e {
        zk::CreateTopicError::AlreadyExists => (ResponseError::TopicAlreadyExists.code(), format!("Topic '{name}' already exists.")),
        zk::CreateTopicError::InvalidReplicationFactor(message) => (ResponseError::InvalidReplicationFactor.code(), message),
        zk::CreateTopicError::InvalidReplicaAssignment(message) => (ResponseError::InvalidReplicaAssignment.code(), message),
        zk::CreateTopicError::ZooKeeper(message) => (ResponseError::UnknownServerError.code(), message),
    })?;
    // Not having every leader within `wait_ms` is no error: the topic exists.
    wait_for_snapshot(cluster, wait_ms, |snapshot| (0..partitions).all(|p| snapshot.leader(name, p).is_some())).await;
    tracing::info!(topic = name, partitions, replication_factor, "created topic in the cluster");
    Ok(topic_id)
}

/// Adds the topic and opens its partitions on their owners. Errors are (code, message).
pub async fn create_topic_here(
    shard: &Rc<Shard>,
    name: &str,
    partitions: i32,
    overrides: BTreeMap<String, String>,
) -> Result<TopicInfo, (i16, String)> {
    let info = {
        let mut topics = shard.broker.topics.write().unwrap();
        if topics.get(name).is_some() {
            return Err((ResponseError::TopicAlreadyExists.code(), format!("Topic '{name}' already exists.")));
        }
        topics.create(name, partitions, overrides).map_err(|e| (ResponseError::KafkaStorageError.code(), e))?
    };
    shard.broker.save_topics().await.map_err(|e| (ResponseError::KafkaStorageError.code(), e))?;
    open_partitions(shard, name, 0..partitions).await;
    tracing::info!(topic = name, partitions, "created topic");
    Ok(info)
}

/// Opens the given partitions of `topic` on their owning shards (creating their directories),
/// several at once: each open is mostly waits, and one by one a topic of 100 partitions took
/// 0.4 s (each owner bounds its own opens in flight, `PartitionTable`).
pub async fn open_partitions(shard: &Rc<Shard>, topic: &str, partitions: std::ops::Range<i32>) {
    use futures_util::stream::{self, StreamExt};
    const OPENS_IN_FLIGHT: usize = 64;
    stream::iter(partitions)
        .for_each_concurrent(OPENS_IN_FLIGHT, |partition| async move {
            let owner = shard.owner_of(topic, partition);
            let topic = topic.to_string();
            let opened = shard
                .router
                .call(owner, move |owner| async move { owner.partition(&topic, partition).await.map(|_| ()).map_err(|e| format!("{e:?}")) })
                .await;
            if let Err(e) = opened {
                tracing::error!(partition, error = e, "opening a new partition");
            }
        })
        .await;
}
/// The shape Kafka requires of a client's replica assignment (`validateReplicaAssignment`): no
/// empty replica list, no broker twice in one, the same factor for every partition. Which
/// brokers exist is checked where they are known (`check_brokers_here`, or the ZooKeeper thread
/// against the live brokers).
pub fn check_replica_lists(assignment: &[Vec<i32>]) -> Result<(), (ResponseError, String)> {
    for replicas in assignment {
        if replicas.is_empty() {
            return Err((ResponseError::InvalidReplicaAssignment, "Replica assignment is empty".into()));
        }
        let distinct: std::collections::BTreeSet<i32> = replicas.iter().copied().collect();
        if distinct.len() != replicas.len() {
            return Err((ResponseError::InvalidReplicaAssignment, format!("Duplicate replica assignment found: {replicas:?}")));
        }
        if replicas.len() != assignment[0].len() {
            return Err((ResponseError::InvalidReplicaAssignment, "All partitions should have the same number of replicas".into()));
        }
    }
    Ok(())
}

/// Standalone: an assignment may name this broker only.
pub fn check_brokers_here(shard: &Shard, assignment: &[Vec<i32>]) -> Result<(), (ResponseError, String)> {
    let me = shard.broker.config.broker_id;
    let unknown: std::collections::BTreeSet<i32> = assignment.iter().flatten().copied().filter(|&b| b != me).collect();
    if unknown.is_empty() {
        return Ok(());
    }
    let list = unknown.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(", ");
    Err((ResponseError::InvalidReplicaAssignment, format!("Unknown broker(s) in replica assignment: {list}.")))
}

/// Standalone: grows the topic to `total` partitions and opens the new ones.
pub async fn add_partitions_here(shard: &Rc<Shard>, name: &str, current: i32, total: i32) -> Result<(), (ResponseError, String)> {
    shard.broker.topics.write().unwrap().set_partitions(name, total).map_err(|e| (ResponseError::KafkaStorageError, e))?;
    shard.broker.save_topics().await.map_err(|e| (ResponseError::KafkaStorageError, e))?;
    open_partitions(shard, name, current..total).await;
    tracing::info!(topic = name, partitions = total, "added partitions");
    Ok(())
}

/// Cluster mode: the coordinator extends the assignment in ZooKeeper; the controller elects the
/// new partitions' leaders, and the answer waits for them (at most the request's timeout), so
/// the client's next Metadata finds them. Each broker opens its new replicas when it sees them.
pub async fn add_partitions_in_cluster(
    shard: &Rc<Shard>,
    name: &str,
    current: i32,
    total: i32,
    assignment: Option<Vec<Vec<i32>>>,
    timeout_ms: i32,
) -> Result<(), (ResponseError, String)> {
    let cluster = shard.broker.cluster.as_ref().expect("cluster mode");
    cluster.add_partitions(name, total, assignment).await.map_err(|e| match e {
        zk::TopicChangeError::InvalidReplicaAssignment(message) => (ResponseError::InvalidReplicaAssignment, message),
        zk::TopicChangeError::UnknownTopic => (ResponseError::UnknownTopicOrPartition, format!("The topic '{name}' does not exist.")),
        zk::TopicChangeError::InvalidPartitions(message) => (ResponseError::InvalidPartitions, message),
        zk::TopicChangeError::InvalidReplicationFactor(message) => (ResponseError::InvalidReplicationFactor, message),
        zk::TopicChangeError::ZooKeeper(message) => (ResponseError::UnknownServerError, message),
    })?;
    let timeout_ms = timeout_ms.clamp(0, 60_000) as u64;
    if !wait_for_snapshot(cluster, timeout_ms, |snapshot| (current..total).all(|p| snapshot.leader(name, p).is_some())).await {
        return Err((ResponseError::RequestTimedOut, "the new partitions have no leader yet".into()));
    }
    tracing::info!(topic = name, partitions = total, "added partitions in the cluster");
    Ok(())
}
pub async fn delete_topic_here(shard: &Rc<Shard>, name: &str) -> Result<(), String> {
    shard.broker.topics.write().unwrap().remove(name)?;
    shard.broker.save_topics().await?;
    for owner in 0..shard.router.shard_count() {
        let topic = name.to_string();
        shard.router.call(owner, move |owner| async move { owner.partitions.delete_topic(&topic).await }).await;
    }
    tracing::info!(topic = name, "deleted topic");
    Ok(())
}

/// Cluster mode: asks the controller, then waits (at most the request's timeout) until the topic
/// has left this broker's snapshot.
pub async fn delete_topic_in_cluster(shard: &Rc<Shard>, name: &str, timeout_ms: i32) -> Result<(), (i16, String)> {
    let cluster = shard.broker.cluster.as_ref().expect("cluster mode");
    cluster.delete_topic(name).await.map_err(|e| match e {
        zk::TopicChangeError::UnknownTopic => (ResponseError::UnknownTopicOrPartition.code(), format!("The topic '{name}' does not exist.")),
        e => (ResponseError::UnknownServerError.code(), format!("{e:?}")),
    })?;
    let timeout_ms = timeout_ms.clamp(0, 60_000) as u64;
    if !wait_for_snapshot(cluster, timeout_ms, |snapshot| !snapshot.topics.contains_key(name)).await {
        return Err((ResponseError::RequestTimedOut.code(), "the controller has not deleted the topic yet".into()));
    }
    tracing::info!(topic = name, "deleted topic in the cluster");
    Ok(())
}
/// Cluster mode: deletes this shard's replicas of topics the cluster no longer has: deleted
/// by the controller, possibly while this broker was down. (A log dir joins only the cluster
/// named in its meta.properties, so every topic on it is this cluster's.)
pub async fn delete_topics_gone_from_cluster(shard: &Shard, snapshot: &zk::ClusterSnapshot) {
    if !snapshot.complete {
        return; // the placeholder before the first read: absence means nothing yet
    }
    for topic in shard.partitions.topics_held().await.into_iter().filter(|t| !snapshot.topics.contains_key(t)) {
        tracing::info!(shard = shard.id(), topic, "deleting this broker's replicas: the topic is no longer in the cluster");
        // Out of the table first, so nothing opens the partitions again meanwhile.
        let _ = shard.broker.topics.write().unwrap().remove(&topic);
        if let Err(e) = shard.broker.save_topics().await {
            tracing::warn!(topic, error = %e, "removing the topic's file");
        }
        shard.partitions.delete_topic(&topic).await;
    }
}

/// Standalone: the topic's overrides changed; every shard applies them to its open partitions.
pub async fn reconfigure_topic_everywhere(shard: &Rc<Shard>, topic: &str) {
    for owner in 0..shard.router.shard_count() {
        let topic = topic.to_string();
        shard.router.call(owner, move |owner| async move { owner.partitions.reconfigure_topic(&topic).await }).await;
    }
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
            create_topic_in_cluster(shard, CONSUMER_OFFSETS_TOPIC, partitions, replication_factor, None, overrides, OFFSETS_TOPIC_LEADER_WAIT_MS)
                .await
                .map(|_| ())
        }
        None => create_topic_here(shard, CONSUMER_OFFSETS_TOPIC, partitions, overrides).await.map(|_| ()),
    };
    match created {
        Ok(_) => {}
        Err((code, _)) if code == kafka_protocol::ResponseError::TopicAlreadyExists.code() => {}
        Err((_, message)) => tracing::error!(error = message, "cannot create __consumer_offsets"),
    }
}

/// Creates `__transaction_state` on first use (Kafka does it on the first FindCoordinator for a
/// transaction): compacted, uncompressed as Kafka's transaction log, with
/// `transaction.state.log.segment.bytes` segments and (cluster mode) its replication factor and
/// min ISR.
pub async fn ensure_transaction_state_topic(shard: &Rc<Shard>) {
    let exists = match &shard.broker.cluster {
        Some(cluster) => cluster.view.snapshot().topics.contains_key(TRANSACTION_STATE_TOPIC),
        None => shard.broker.topics.read().unwrap().get(TRANSACTION_STATE_TOPIC).is_some(),
    };
    if exists {
        return;
    }
    let config = &shard.broker.config;
    let mut overrides = BTreeMap::from([
        ("cleanup.policy".to_string(), "compact".to_string()),
        ("segment.bytes".to_string(), config.transaction_state_log_segment_bytes.to_string()),
        ("compression.type".to_string(), "uncompressed".to_string()),
    ]);
    let partitions = config.transaction_state_log_num_partitions;
    let created = match &shard.broker.cluster {
        Some(_) => {
            overrides.insert("min.insync.replicas".to_string(), config.transaction_state_log_min_isr.to_string());
            let replication_factor = config.transaction_state_log_replication_factor;
            create_topic_in_cluster(shard, TRANSACTION_STATE_TOPIC, partitions, replication_factor, None, overrides, OFFSETS_TOPIC_LEADER_WAIT_MS)
                .await
                .map(|_| ())
        }
        None => create_topic_here(shard, TRANSACTION_STATE_TOPIC, partitions, overrides).await.map(|_| ()),
    };
    match created {
        Ok(_) => {}
        Err((code, _)) if code == kafka_protocol::ResponseError::TopicAlreadyExists.code() => {}
        Err((_, message)) => tracing::error!(error = message, "cannot create __transaction_state"),
    }
}

/// Cluster mode: waits until `done` holds for the cluster snapshot, looking every 20 ms, for at
/// most `timeout_ms`; returns whether it did. Admin requests answer once their ZooKeeper write
/// shows in the metadata (new leaders elected, a topic gone), as Kafka's do.
pub async fn wait_for_snapshot(cluster: &zk::CoordinatorHandle, timeout_ms: u64, done: impl Fn(&zk::ClusterSnapshot) -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(timeout_ms);
    while !done(&cluster.view.snapshot()) {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
    }
    true
}

