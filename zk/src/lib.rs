//! The ZooKeeper coordinator (cluster mode): one dedicated thread holds the ZooKeeper session and
//! does everything that talks to ZooKeeper (broker registration, the cluster id, controller
//! election with epochs), in Kafka's ZooKeeper layout (`paths`). The shards never block on it:
//! they read the `ClusterView` (atomics, no lock) and send commands over a channel.
//!
//! Why a thread of its own and not a shard task: `zookeeper-client` runs on tokio (one
//! current-thread runtime here), and a ZooKeeper round trip must never sit on a shard's core
//! between two Kafka requests.
//!
//! Where things are:
//! - `lib.rs`: the public API: settings, the `ClusterView` the shards read, the
//!   `CoordinatorHandle` they send commands with.
//! - `coordinator.rs`: the thread: start and shutdown, its run loop (a new session after one
//!   expires), serving the commands, following the cluster state.
//! - `session.rs`: connecting and joining: the cluster id, a broker id, the ephemeral registration.
//! - `election.rs`: controller election and the controller epoch.
//! - `controller.rs`: the controller's work (partition leaders, topic creation and deletion, new
//!   partitions).
//! - `cluster.rs`: reading the cluster state into a `ClusterSnapshot`.
//! - `paths.rs`: Kafka's ZooKeeper layout: paths, JSON shapes, znode modes.
//! - `log_dir_events.rs`: a failed log dir told to the controller, and the controller's side.
//! - `change_purge.rs`: old change notifications deleted, as Kafka's brokers do.

pub mod acls;
pub mod change_purge;
pub mod cluster;
pub mod controller;
mod coordinator;
mod election;
pub mod log_dir_events;
pub mod paths;
mod session;
pub mod user_configs;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

pub use cluster::{BrokerInfo, ClusterSnapshot, PartitionState, TopicState};
pub use controller::{CreateTopicError, TopicChangeError};
pub use coordinator::Coordinator;
pub use election::bump_controller_epoch;
pub use session::split_chroot;

/// `zookeeper.*` settings.
#[derive(Debug, Clone)]
pub struct ZkConfig {
    /// `zookeeper.connect`: `host:port[,host:port...][/chroot]`.
    pub connect: String,
    pub session_timeout_ms: u64,
    pub connection_timeout_ms: u64,
}

/// What this broker registers.
#[derive(Debug, Clone)]
pub struct BrokerEndpoint {
    /// -1: ask ZooKeeper for one (`/brokers/seqid`), as Kafka does.
    pub broker_id: i32,
    /// Every listener's advertised address.
    pub endpoints: Vec<ListenerEndpoint>,
    pub rack: Option<String>,
}

/// One listener of a broker as registered in `/brokers/ids/<id>`: clients are told the addresses
/// of the listener they connected on, brokers use the inter-broker listener's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerEndpoint {
    /// Upper case, as Kafka normalises listener names.
    pub listener: String,
    /// PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.
    pub protocol: String,
    pub host: String,
    pub port: u16,
}

/// The result of joining the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub broker_id: i32,
    pub cluster_id: String,
}

/// What the coordinator last saw. The controller id and epoch are atomics; the cluster snapshot
/// is an `Arc` swapped under a lock held only for the swap or the clone, so a shard never waits on
/// ZooKeeper.
#[derive(Debug)]
pub struct ClusterView {
    /// -1 while no controller is known.
    controller_id: AtomicI32,
    /// The epoch of the controller in `controller_id`; only grows.
    controller_epoch: AtomicI32,
    snapshot: RwLock<Arc<ClusterSnapshot>>,
    /// `/config/users` (user_configs.rs): swapped whole, like the snapshot.
    user_configs: RwLock<Arc<user_configs::UserConfigs>>,
    /// Every ACL znode as last read (`acls.rs`), and a count of the reads that changed it: the
    /// broker's authorizer compares the count with the one it built its set from.
    acls: RwLock<Arc<Vec<acls::AclResource>>>,
    acl_generation: AtomicU64,
    /// This broker's offline replicas, reported by a shard, written by the coordinator thread.
    offline_report: log_dir_events::Report,
}

impl ClusterView {
    fn new() -> ClusterView {
        ClusterView {
            controller_id: AtomicI32::new(-1),
            controller_epoch: AtomicI32::new(0),
            snapshot: RwLock::new(Arc::new(ClusterSnapshot::default())),
            user_configs: RwLock::new(Arc::new(user_configs::UserConfigs::new())),
            acls: RwLock::new(Arc::new(Vec::new())),
            acl_generation: AtomicU64::new(0),
            offline_report: log_dir_events::Report::default(),
        }
    }

    /// The cluster as last read from ZooKeeper (brokers, topics, partition states).
    pub fn snapshot(&self) -> Arc<ClusterSnapshot> {
        self.snapshot.read().unwrap().clone()
    }

    fn set_snapshot(&self, snapshot: Arc<ClusterSnapshot>) {
        *self.snapshot.write().unwrap() = snapshot;
    }

    /// Every user's configs in `/config/users` as last read (SCRAM credentials among them).
    pub fn user_configs(&self) -> Arc<user_configs::UserConfigs> {
        self.user_configs.read().unwrap().clone()
    }

    fn set_user_configs(&self, users: Arc<user_configs::UserConfigs>) {
        *self.user_configs.write().unwrap() = users;
    }

    /// The ACL znodes as last read, and their generation (0: not read yet).
    pub fn acls(&self) -> (u64, Arc<Vec<acls::AclResource>>) {
        let acls = self.acls.read().unwrap();
        (self.acl_generation.load(Ordering::Acquire), acls.clone())
    }

    pub fn acl_generation(&self) -> u64 {
        self.acl_generation.load(Ordering::Acquire)
    }

    fn set_acls(&self, resources: Vec<acls::AclResource>) {
        let mut acls = self.acls.write().unwrap();
        if **acls != resources || self.acl_generation.load(Ordering::Acquire) == 0 {
            *acls = Arc::new(resources);
            // Under the lock: a reader taking both sees a generation no newer than the set.
            self.acl_generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    pub fn controller_id(&self) -> i32 {
        self.controller_id.load(Ordering::Acquire)
    }

    pub fn controller_epoch(&self) -> i32 {
        self.controller_epoch.load(Ordering::Acquire)
    }

    fn set_controller(&self, broker_id: i32, epoch: i32) {
        let previous = self.controller_epoch.fetch_max(epoch, Ordering::AcqRel);
        if epoch >= previous {
            self.controller_id.store(broker_id, Ordering::Release);
        }
    }
}

enum Command {
    Shutdown,
    CreateTopic {
        name: String,
        partitions: i32,
        replication_factor: i16,
        /// The replicas of each partition as the client chose them (CreateTopics' assignments).
        assignment: Option<Vec<Vec<i32>>>,
        config: BTreeMap<String, String>,
        topic_id: [u8; 16],
        reply: futures_channel::oneshot::Sender<Result<Vec<Vec<i32>>, CreateTopicError>>,
    },
    DeleteTopic {
        name: String,
        reply: futures_channel::oneshot::Sender<Result<(), TopicChangeError>>,
    },
    AddPartitions {
        name: String,
        total: i32,
        /// The new partitions' replicas as the client chose them.
        assignment: Option<Vec<Vec<i32>>>,
        reply: futures_channel::oneshot::Sender<Result<Vec<Vec<i32>>, TopicChangeError>>,
    },
    ProducerIdBlock {
        broker_id: i32,
        reply: futures_channel::oneshot::Sender<Result<i64, String>>,
    },
    UpdateIsr {
        topic: String,
        partition: i32,
        isr: Vec<i32>,
        /// The state this leader read: the write is conditional on it.
        expected: PartitionState,
        reply: futures_channel::oneshot::Sender<Result<(), String>>,
    },
    AlterUserConfig {
        user: String,
        set: BTreeMap<String, String>,
        remove: Vec<String>,
        reply: futures_channel::oneshot::Sender<Result<(), String>>,
    },
    /// Adds `resource.entries` to one ACL znode and removes `remove` from it (`acls::update`).
    UpdateAcls {
        resource: acls::AclResource,
        remove: Vec<acls::AclEntry>,
        reply: futures_channel::oneshot::Sender<Result<(), String>>,
    },
}

/// Called on the coordinator thread with every new snapshot (keep it short: no I/O).
pub type OnChange = Arc<dyn Fn(&Arc<ClusterSnapshot>) + Send + Sync>;

pub struct CoordinatorOptions {
    /// `unclean.leader.election.enable`
    pub unclean_leader_election: bool,
    pub on_change: OnChange,
    /// How old a change notification must be to be purged (`change_purge.rs`; Kafka: 15 minutes).
    pub change_notification_expiration_ms: u64,
}

/// How many commands may wait for the coordinator thread; a shard that finds the queue full waits
/// for room (the handle's methods are async) instead of piling up memory while ZooKeeper is slow.
/// A leader has at most one ISR change in flight per partition and admin requests are rare, so
/// 1024 lets a broker that leads about a thousand partitions shrink every ISR at once (a peer
/// died) without waiting, while a stalled ZooKeeper holds at most a few hundred KiB of commands.
const COMMAND_QUEUE_CAPACITY: usize = 1024;

/// What the shards hold: the view, and a way to ask the coordinator thread for work.
#[derive(Clone)]
pub struct CoordinatorHandle {
    commands: tokio::sync::mpsc::Sender<Command>,
    pub view: Arc<ClusterView>,
}

impl CoordinatorHandle {
    /// Writes a new topic's config and replica assignment (`assignment`, or spread over the live
    /// brokers); the controller then elects leaders.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        assignment: Option<Vec<Vec<i32>>>,
        config: BTreeMap<String, String>,
        topic_id: [u8; 16],
    ) -> Result<Vec<Vec<i32>>, CreateTopicError> {
        let (reply, answer) = futures_channel::oneshot::channel();
        let command = Command::CreateTopic { name: name.to_string(), partitions, replication_factor, assignment, config, topic_id, reply };
        self.commands.send(command).await.map_err(|_| CreateTopicError::ZooKeeper("the ZooKeeper thread has stopped".into()))?;
        answer.await.map_err(|_| CreateTopicError::ZooKeeper("the ZooKeeper thread has stopped".into()))?
    }
}

impl CoordinatorHandle {
    /// Asks the controller to delete the topic (`/admin/delete_topics/<name>`, as Kafka's admin
    /// tools did); returns once asked, not once deleted: the topic leaves the snapshot then.
    pub async fn delete_topic(&self, name: &str) -> Result<(), TopicChangeError> {
        let (reply, answer) = futures_channel::oneshot::channel();
        let stopped = || TopicChangeError::ZooKeeper("the ZooKeeper thread has stopped".into());
        self.commands.send(Command::DeleteTopic { name: name.to_string(), reply }).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Grows the topic to `total` partitions (their replicas `assignment`, or spread); returns the
    /// new partitions' replicas.
    pub async fn add_partitions(&self, name: &str, total: i32, assignment: Option<Vec<Vec<i32>>>) -> Result<Vec<Vec<i32>>, TopicChangeError> {
        let (reply, answer) = futures_channel::oneshot::channel();
        let stopped = || TopicChangeError::ZooKeeper("the ZooKeeper thread has stopped".into());
        self.commands.send(Command::AddPartitions { name: name.to_string(), total, assignment, reply }).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// Producer ids a broker takes from ZooKeeper at a time (Kafka's block size).
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

impl CoordinatorHandle {
    /// Takes the next block of producer ids from `/latest_producer_id_block`; returns its start.
    pub async fn allocate_producer_id_block(&self, broker_id: i32) -> Result<i64, String> {
        let (reply, answer) = futures_channel::oneshot::channel();
        self.commands.send(Command::ProducerIdBlock { broker_id, reply }).await.map_err(|_| "the ZooKeeper thread has stopped".to_string())?;
        answer.await.map_err(|_| "the ZooKeeper thread has stopped".to_string())?
    }

    /// A partition leader changes its ISR (Kafka's leaders did this in ZooKeeper themselves, before
    /// AlterIsr): a write conditional on the state znode's version, so it fails if the controller
    /// (or anyone) changed the state since `expected` was read.
    pub async fn update_isr(&self, topic: &str, partition: i32, isr: Vec<i32>, expected: PartitionState) -> Result<(), String> {
        let (reply, answer) = futures_channel::oneshot::channel();
        let command = Command::UpdateIsr { topic: topic.to_string(), partition, isr, expected, reply };
        self.commands.send(command).await.map_err(|_| "the ZooKeeper thread has stopped".to_string())?;
        answer.await.map_err(|_| "the ZooKeeper thread has stopped".to_string())?
    }
}

impl CoordinatorHandle {
    /// Sets and removes keys of `/config/users/<user>` (user_configs.rs) and notifies the other
    /// brokers; returns once this broker's view holds the change.
    pub async fn alter_user_config(&self, user: &str, set: BTreeMap<String, String>, remove: Vec<String>) -> Result<(), String> {
        let (reply, answer) = futures_channel::oneshot::channel();
        let command = Command::AlterUserConfig { user: user.to_string(), set, remove, reply };
        self.commands.send(command).await.map_err(|_| "the ZooKeeper thread has stopped".to_string())?;
        answer.await.map_err(|_| "the ZooKeeper thread has stopped".to_string())?
    }

    /// Adds `resource.entries` to the resource pattern's ACL znode and removes `remove`, then
    /// writes Kafka's change notification; every broker (this one too) re-reads within moments.
    pub async fn update_acls(&self, resource: acls::AclResource, remove: Vec<acls::AclEntry>) -> Result<(), String> {
        let (reply, answer) = futures_channel::oneshot::channel();
        self.commands.send(Command::UpdateAcls { resource, remove, reply }).await.map_err(|_| "the ZooKeeper thread has stopped".to_string())?;
        answer.await.map_err(|_| "the ZooKeeper thread has stopped".to_string())?
    }
}
