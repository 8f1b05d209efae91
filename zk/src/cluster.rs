//! What the cluster looks like in ZooKeeper: live brokers, topics with their replica assignment,
//! partition states and config. Read whole after every change under `/brokers` (one persistent
//! recursive watch): simple and always consistent with one ZooKeeper view, at a cost linear in the
//! number of partitions per change. Kafka's controller pushes deltas instead; that is the step to
//! take when clusters grow past a few thousand partitions.

use std::collections::{BTreeMap, BTreeSet};

use zookeeper_client::{Client, Error as ZkError};

use crate::paths;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub id: i32,
    /// One per listener.
    pub endpoints: Vec<crate::ListenerEndpoint>,
    pub rack: Option<String>,
}

impl BrokerInfo {
    /// The broker's address on `listener` (None: it has no such listener, and Kafka leaves it
    /// out of what clients of that listener are told).
    pub fn endpoint(&self, listener: &str) -> Option<&crate::ListenerEndpoint> {
        self.endpoints.iter().find(|e| e.listener == listener)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    /// -1: no leader (offline).
    pub leader: i32,
    pub leader_epoch: i32,
    pub isr: Vec<i32>,
    pub controller_epoch: i32,
    /// The state znode's version: updates are conditional on it.
    pub zk_version: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicState {
    pub topic_id: [u8; 16],
    /// Replicas by partition; the first is the preferred leader.
    pub replicas: Vec<Vec<i32>>,
    /// By partition; None until the controller has written it.
    pub states: Vec<Option<PartitionState>>,
    pub config: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterSnapshot {
    /// False only for the empty placeholder before the first read: nothing may be concluded from
    /// a topic's absence until this is true.
    pub complete: bool,
    pub brokers: BTreeMap<i32, BrokerInfo>,
    pub topics: BTreeMap<String, TopicState>,
    /// Children of `/admin/delete_topics`: deletion asked for, not yet done by the controller.
    pub topics_being_deleted: BTreeSet<String>,
    /// Replicas in failed log dirs: topic -> partition -> brokers (`log_dir_events.rs`).
    pub offline_replicas: BTreeMap<String, BTreeMap<i32, Vec<i32>>>,
}

impl ClusterSnapshot {
    pub fn state(&self, topic: &str, partition: i32) -> Option<&PartitionState> {
        self.topics.get(topic)?.states.get(usize::try_from(partition).ok()?)?.as_ref()
    }

    pub fn leader(&self, topic: &str, partition: i32) -> Option<i32> {
        self.state(topic, partition).map(|s| s.leader).filter(|&l| l >= 0)
    }

    /// Whether `broker`'s copy of the partition sits in a log dir that failed.
    pub fn replica_offline(&self, broker: i32, topic: &str, partition: i32) -> bool {
        self.offline_replicas.get(topic).and_then(|p| p.get(&partition)).is_some_and(|brokers| brokers.contains(&broker))
    }

    /// Whether `broker` is registered and its copy of the partition can serve: what the
    /// controller elects leaders and keeps ISRs from.
    pub fn replica_online(&self, broker: i32, topic: &str, partition: i32) -> bool {
        self.brokers.contains_key(&broker) && !self.replica_offline(broker, topic, partition)
    }
}

/// Reads the whole cluster state. A znode deleted between listing and reading is skipped.
pub async fn read(client: &Client) -> Result<ClusterSnapshot, ZkError> {
    let mut snapshot = ClusterSnapshot { complete: true, ..ClusterSnapshot::default() };
    snapshot.topics_being_deleted = match client.list_children(paths::DELETE_TOPICS).await {
        Ok(children) => children.into_iter().collect(),
        Err(ZkError::NoNode) => BTreeSet::new(),
        Err(e) => return Err(e),
    };
    snapshot.offline_replicas = crate::log_dir_events::read_offline(client).await?;
    for child in client.list_children(paths::BROKER_IDS).await? {
        let Ok(id) = child.parse::<i32>() else { continue };
        match client.get_data(&paths::broker_path(id)).await {
            Ok((data, _)) => {
                if let Some((endpoints, rack)) = paths::parse_broker_json(&data) {
                    snapshot.brokers.insert(id, BrokerInfo { id, endpoints, rack });
                }
            }
            Err(ZkError::NoNode) => {}
            Err(e) => return Err(e),
        }
    }
    for topic in client.list_children(paths::BROKER_TOPICS).await? {
        let (topic_id, replicas) = match client.get_data(&paths::topic_path(&topic)).await {
            Ok((data, _)) => match paths::parse_topic_json(&data) {
                Some(parsed) => parsed,
                None => {
                    tracing::warn!(topic, "unparsable topic znode; skipped");
                    continue;
                }
            },
            Err(ZkError::NoNode) => continue,
            Err(e) => return Err(e),
        };
        let mut states = Vec::with_capacity(replicas.len());
        for partition in 0..replicas.len() as i32 {
            states.push(match client.get_data(&paths::partition_state_path(&topic, partition)).await {
                Ok((data, stat)) => paths::parse_partition_state_json(&data).map(|(leader, leader_epoch, isr, controller_epoch)| {
                    PartitionState { leader, leader_epoch, isr, controller_epoch, zk_version: stat.version }
                }),
                Err(ZkError::NoNode) => None,
                Err(e) => return Err(e),
            });
        }
        let config = match client.get_data(&paths::topic_config_path(&topic)).await {
            Ok((data, _)) => paths::parse_topic_config_json(&data),
            Err(ZkError::NoNode) => BTreeMap::new(),
            Err(e) => return Err(e),
        };
        snapshot.topics.insert(topic, TopicState { topic_id, replicas, states, config });
    }
    Ok(snapshot)
}
