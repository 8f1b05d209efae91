//! What the cluster looks like in ZooKeeper: live brokers, topics with their replica assignment,
//! partition states and config. Read whole at the start of a session (`read`), then after each
//! batch of changes under `/brokers` (one persistent recursive watch) only the znodes the events
//! name (`refresh`): a leader or ISR write costs one read per broker, not one per partition of the
//! cluster. Every read is pipelined (many requests in flight on the session's connection).

use std::collections::{BTreeMap, BTreeSet};

use futures_util::{StreamExt, TryStreamExt};
use zookeeper_client::{Client, Error as ZkError, EventType, WatchedEvent};

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

/// ZooKeeper reads in flight at once during a read: pipelined on the session's one connection
/// (one round trip for many znodes instead of one each), bounded so a cluster of 100,000
/// partitions does not queue 100,000 requests at once.
const READS_IN_FLIGHT: usize = 1024;

/// What changed since the last read, gathered from the watch events: the next read re-reads only
/// these (issue 21: reading all 3,000 partition states after each of the thousands of ISR and
/// leader writes a topic creation brings made every broker's view minutes late; Kafka's brokers
/// get only what changed too, from the controller's LeaderAndIsr and UpdateMetadata).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Changes {
    /// Re-read everything: the first read, the controller's first pass, and after a session
    /// event (ZooKeeper may not deliver events made while disconnected: ZOOKEEPER-4698).
    pub everything: bool,
    pub brokers: bool,
    pub deletions: bool,
    /// `/log_dir_offline_replicas` changed: a broker's log dir failed, or its session ended.
    pub offline_replicas: bool,
    /// Topics whose assignment znode changed (created, grown, deleted): read whole.
    pub topics: BTreeSet<String>,
    /// Partition state znodes written (by the controller or a leader).
    pub states: BTreeSet<(String, i32)>,
}

impl Changes {
    pub fn everything() -> Changes {
        Changes { everything: true, ..Changes::default() }
    }

    /// Notes one event of the watches on `/brokers`, `/admin/delete_topics` and the log dir
    /// failure paths (`log_dir_events`; a notification itself only wakes the controller's pass). Paths are
    /// relative to the chroot.
    pub fn note(&mut self, event: &WatchedEvent) {
        if event.event_type == EventType::Session {
            self.everything = true;
            return;
        }
        let path = event.path.as_str();
        if path == paths::BROKER_IDS || path.starts_with(&format!("{}/", paths::BROKER_IDS)) {
            self.brokers = true;
        } else if path == paths::DELETE_TOPICS || path.starts_with(&format!("{}/", paths::DELETE_TOPICS)) {
            self.deletions = true;
        } else if path == crate::log_dir_events::OFFLINE_REPLICAS
            || path.starts_with(&format!("{}/", crate::log_dir_events::OFFLINE_REPLICAS))
        {
            self.offline_replicas = true;
        } else if let Some(rest) = path.strip_prefix(paths::BROKER_TOPICS).and_then(|rest| rest.strip_prefix('/')) {
            let parts: Vec<&str> = rest.split('/').collect();
            match parts.as_slice() {
                [topic] => {
                    self.topics.insert(topic.to_string());
                }
                [topic, "partitions", partition, "state"] => match partition.parse::<i32>() {
                    Ok(partition) => {
                        self.states.insert((topic.to_string(), partition));
                    }
                    Err(_) => self.everything = true,
                },
                // `partitions` and `partitions/<n>` are plain parents; their state's own event follows.
                _ => {}
            }
        }
        // Anything else (`/brokers/seqid`, `/brokers/topics` itself) changes nothing we publish.
    }
}

/// Reads the whole cluster state. A znode deleted between listing and reading is skipped.
pub async fn read(client: &Client) -> Result<ClusterSnapshot, ZkError> {
    let mut snapshot = ClusterSnapshot { complete: true, ..ClusterSnapshot::default() };
    snapshot.topics_being_deleted = read_deletions(client).await?;
    snapshot.brokers = read_brokers(client).await?;
    snapshot.offline_replicas = crate::log_dir_events::read_offline(client).await?;
    let names = client.list_children(paths::BROKER_TOPICS).await?;
    for (name, topic) in read_topics(client, &names).await? {
        if let Some(topic) = topic {
            snapshot.topics.insert(name, topic);
        }
    }
    Ok(snapshot)
}

/// `previous` with what `changes` names read again: the same result as `read` once every event
/// up to now is in `changes`, at a cost linear in the changes, not in the cluster.
pub(crate) async fn refresh(client: &Client, previous: &ClusterSnapshot, changes: &Changes) -> Result<ClusterSnapshot, ZkError> {
    if changes.everything || !previous.complete {
        return read(client).await;
    }
    let mut snapshot = previous.clone();
    if changes.deletions {
        snapshot.topics_being_deleted = read_deletions(client).await?;
    }
    if changes.brokers {
        snapshot.brokers = read_brokers(client).await?;
    }
    if changes.offline_replicas {
        snapshot.offline_replicas = crate::log_dir_events::read_offline(client).await?;
    }
    // A state of a topic we do not know, or past its known partitions, comes with the topic's
    // own change (created or grown): read such topics whole.
    let mut whole: BTreeSet<String> = changes.topics.clone();
    for (topic, partition) in &changes.states {
        if snapshot.topics.get(topic).is_none_or(|t| *partition < 0 || *partition as usize >= t.replicas.len()) {
            whole.insert(topic.clone());
        }
    }
    let names: Vec<String> = whole.iter().cloned().collect();
    for (name, topic) in read_topics(client, &names).await? {
        match topic {
            Some(topic) => snapshot.topics.insert(name, topic),
            None => snapshot.topics.remove(&name),
        };
    }
    let states: Vec<&(String, i32)> = changes.states.iter().filter(|(topic, _)| !whole.contains(topic)).collect();
    let read = get_all(client, states.iter().map(|(topic, partition)| paths::partition_state_path(topic, *partition))).await?;
    for ((topic, partition), found) in states.into_iter().zip(read) {
        let topic = snapshot.topics.get_mut(topic).expect("topics not known were read whole");
        topic.states[*partition as usize] = found.as_ref().and_then(parse_state);
    }
    Ok(snapshot)
}

async fn read_deletions(client: &Client) -> Result<BTreeSet<String>, ZkError> {
    match client.list_children(paths::DELETE_TOPICS).await {
        Ok(children) => Ok(children.into_iter().collect()),
        Err(ZkError::NoNode) => Ok(BTreeSet::new()),
        Err(e) => Err(e),
    }
}

async fn read_brokers(client: &Client) -> Result<BTreeMap<i32, BrokerInfo>, ZkError> {
    let ids: Vec<i32> = client.list_children(paths::BROKER_IDS).await?.iter().filter_map(|child| child.parse().ok()).collect();
    let read = get_all(client, ids.iter().map(|&id| paths::broker_path(id))).await?;
    let mut brokers = BTreeMap::new();
    for (id, found) in ids.into_iter().zip(read) {
        if let Some((endpoints, rack)) = found.and_then(|(data, _)| paths::parse_broker_json(&data)) {
            brokers.insert(id, BrokerInfo { id, endpoints, rack });
        }
    }
    Ok(brokers)
}

/// Each topic's assignment, config and partition states (None: the topic is gone or unparsable),
/// in three pipelined steps whatever the number of topics.
async fn read_topics(client: &Client, names: &[String]) -> Result<Vec<(String, Option<TopicState>)>, ZkError> {
    let assignments = get_all(client, names.iter().map(|name| paths::topic_path(name))).await?;
    let configs = get_all(client, names.iter().map(|name| paths::topic_config_path(name))).await?;
    let mut topics: Vec<(String, Option<([u8; 16], Vec<Vec<i32>>)>, BTreeMap<String, String>)> = Vec::with_capacity(names.len());
    for ((name, assignment), config) in names.iter().zip(assignments).zip(configs) {
        let parsed = assignment.and_then(|(data, _)| {
            let parsed = paths::parse_topic_json(&data);
            if parsed.is_none() {
                tracing::warn!(topic = name, "unparsable topic znode; skipped");
            }
            parsed
        });
        let config = config.map(|(data, _)| paths::parse_topic_config_json(&data)).unwrap_or_default();
        topics.push((name.clone(), parsed, config));
    }
    let state_paths = topics.iter().flat_map(|(name, parsed, _)| {
        let partitions = parsed.as_ref().map_or(0, |(_, replicas)| replicas.len() as i32);
        (0..partitions).map(move |partition| paths::partition_state_path(name, partition))
    });
    let mut states = get_all(client, state_paths).await?.into_iter();
    Ok(topics
        .into_iter()
        .map(|(name, parsed, config)| {
            let topic = parsed.map(|(topic_id, replicas)| {
                let states = states.by_ref().take(replicas.len()).map(|found| found.as_ref().and_then(parse_state)).collect();
                TopicState { topic_id, replicas, states, config }
            });
            (name, topic)
        })
        .collect())
}

fn parse_state((data, stat): &(Vec<u8>, zookeeper_client::Stat)) -> Option<PartitionState> {
    paths::parse_partition_state_json(data)
        .map(|(leader, leader_epoch, isr, controller_epoch)| PartitionState { leader, leader_epoch, isr, controller_epoch, zk_version: stat.version })
}

/// Reads every path, pipelined (`READS_IN_FLIGHT` at a time), in order; None for a znode that
/// does not exist.
async fn get_all(client: &Client, paths: impl Iterator<Item = String>) -> Result<Vec<Option<(Vec<u8>, zookeeper_client::Stat)>>, ZkError> {
    futures_util::stream::iter(paths)
        .map(|path| async move {
            match client.get_data(&path).await {
                Ok(found) => Ok(Some(found)),
                Err(ZkError::NoNode) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .buffered(READS_IN_FLIGHT)
        .try_collect()
        .await
}
