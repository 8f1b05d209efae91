//! The ZooKeeper coordinator (cluster mode): one dedicated thread holds the ZooKeeper session and
//! does everything that talks to ZooKeeper (broker registration, the cluster id, controller
//! election with epochs), in Kafka's ZooKeeper layout (`paths`). The shards never block on it:
//! they read the `ClusterView` (atomics, no lock) and send commands over a channel.
//!
//! Why a thread of its own and not a shard task: `zookeeper-client` runs on tokio (one
//! current-thread runtime here), and a ZooKeeper round trip must never sit on a shard's core
//! between two Kafka requests.

pub mod cluster;
pub mod controller;
pub mod paths;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use zookeeper_client::{Acls, AddWatchMode, Client, CreateMode, CreateOptions, Error as ZkError, SessionState};

pub use cluster::{BrokerInfo, ClusterSnapshot, PartitionState, TopicState};
pub use controller::{CreateTopicError, TopicChangeError};
use controller::{ControllerFence, ReconcileError};

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
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
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
}

impl ClusterView {
    fn new() -> ClusterView {
        ClusterView {
            controller_id: AtomicI32::new(-1),
            controller_epoch: AtomicI32::new(0),
            snapshot: RwLock::new(Arc::new(ClusterSnapshot::default())),
        }
    }

    /// The cluster as last read from ZooKeeper (brokers, topics, partition states).
    pub fn snapshot(&self) -> Arc<ClusterSnapshot> {
        self.snapshot.read().unwrap().clone()
    }

    fn set_snapshot(&self, snapshot: Arc<ClusterSnapshot>) {
        *self.snapshot.write().unwrap() = snapshot;
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
}

/// Called on the coordinator thread with every new snapshot (keep it short: no I/O).
pub type OnChange = Arc<dyn Fn(&Arc<ClusterSnapshot>) + Send + Sync>;

pub struct CoordinatorOptions {
    /// `unclean.leader.election.enable`
    pub unclean_leader_election: bool,
    pub on_change: OnChange,
}

/// What the shards hold: the view, and a way to ask the coordinator thread for work.
#[derive(Clone)]
pub struct CoordinatorHandle {
    commands: tokio::sync::mpsc::UnboundedSender<Command>,
    pub view: Arc<ClusterView>,
}

impl CoordinatorHandle {
    /// Writes a new topic's config and replica assignment; the controller then elects leaders.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        config: BTreeMap<String, String>,
        topic_id: [u8; 16],
    ) -> Result<Vec<Vec<i32>>, CreateTopicError> {
        let (reply, answer) = futures_channel::oneshot::channel();
        let command = Command::CreateTopic { name: name.to_string(), partitions, replication_factor, config, topic_id, reply };
        self.commands.send(command).map_err(|_| CreateTopicError::ZooKeeper("the ZooKeeper thread has stopped".into()))?;
        answer.await.map_err(|_| CreateTopicError::ZooKeeper("the ZooKeeper thread has stopped".into()))?
    }
}

impl CoordinatorHandle {
    /// Asks the controller to delete the topic (`/admin/delete_topics/<name>`, as Kafka's admin
    /// tools did); returns once asked, not once deleted: the topic leaves the snapshot then.
    pub async fn delete_topic(&self, name: &str) -> Result<(), TopicChangeError> {
        let (reply, answer) = futures_channel::oneshot::channel();
        let stopped = || TopicChangeError::ZooKeeper("the ZooKeeper thread has stopped".into());
        self.commands.send(Command::DeleteTopic { name: name.to_string(), reply }).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Grows the topic to `total` partitions; returns the new partitions' replicas.
    pub async fn add_partitions(&self, name: &str, total: i32) -> Result<Vec<Vec<i32>>, TopicChangeError> {
        let (reply, answer) = futures_channel::oneshot::channel();
        let stopped = || TopicChangeError::ZooKeeper("the ZooKeeper thread has stopped".into());
        self.commands.send(Command::AddPartitions { name: name.to_string(), total, reply }).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// Producer ids a broker takes from ZooKeeper at a time (Kafka's block size).
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

impl CoordinatorHandle {
    /// Takes the next block of producer ids from `/latest_producer_id_block`; returns its start.
    pub async fn allocate_producer_id_block(&self, broker_id: i32) -> Result<i64, String> {
        let (reply, answer) = futures_channel::oneshot::channel();
        self.commands.send(Command::ProducerIdBlock { broker_id, reply }).map_err(|_| "the ZooKeeper thread has stopped".to_string())?;
        answer.await.map_err(|_| "the ZooKeeper thread has stopped".to_string())?
    }

    /// A partition leader changes its ISR (Kafka's leaders did this in ZooKeeper themselves, before
    /// AlterIsr): a write conditional on the state znode's version, so it fails if the controller
    /// (or anyone) changed the state since `expected` was read.
    pub async fn update_isr(&self, topic: &str, partition: i32, isr: Vec<i32>, expected: PartitionState) -> Result<(), String> {
        let (reply, answer) = futures_channel::oneshot::channel();
        let command = Command::UpdateIsr { topic: topic.to_string(), partition, isr, expected, reply };
        self.commands.send(command).map_err(|_| "the ZooKeeper thread has stopped".to_string())?;
        answer.await.map_err(|_| "the ZooKeeper thread has stopped".to_string())?
    }
}

/// The coordinator thread's owner. Dropping it (or `shutdown`) closes the session, which deletes
/// this broker's ephemeral znodes at once instead of after the session timeout.
pub struct Coordinator {
    commands: tokio::sync::mpsc::UnboundedSender<Command>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub view: Arc<ClusterView>,
}

impl Coordinator {
    pub fn handle(&self) -> CoordinatorHandle {
        CoordinatorHandle { commands: self.commands.clone(), view: self.view.clone() }
    }

    /// Connects, agrees on the cluster id (`/cluster/id`, created from `proposed_cluster_id` if
    /// absent), obtains a broker id if -1, registers `/brokers/ids/<id>` and starts taking part in
    /// controller elections. Returns once registered.
    pub fn start(
        config: ZkConfig,
        endpoint: BrokerEndpoint,
        proposed_cluster_id: String,
        options: CoordinatorOptions,
    ) -> Result<(Coordinator, Joined), String> {
        let (commands, receiver) = tokio::sync::mpsc::unbounded_channel();
        let (joined_sender, joined_receiver) = std::sync::mpsc::channel();
        let view = Arc::new(ClusterView::new());
        let thread_view = view.clone();
        let thread = std::thread::Builder::new()
            .name("zk-coordinator".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = joined_sender.send(Err(format!("starting the ZooKeeper thread's runtime: {e}")));
                        return;
                    }
                };
                runtime.block_on(run(config, endpoint, proposed_cluster_id, options, thread_view, joined_sender, receiver));
            })
            .map_err(|e| format!("starting the ZooKeeper thread: {e}"))?;
        let joined = joined_receiver.recv().map_err(|_| "the ZooKeeper thread stopped while joining".to_string())??;
        Ok((Coordinator { commands, thread: Some(thread), view }, joined))
    }

    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.commands.send(Command::Shutdown);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(crate) fn persistent() -> CreateOptions<'static> {
    CreateMode::Persistent.with_acls(Acls::anyone_all())
}

fn ephemeral() -> CreateOptions<'static> {
    CreateMode::Ephemeral.with_acls(Acls::anyone_all())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Splits `host:port,host:port/chroot` into the servers and the chroot ("" for none).
pub fn split_chroot(connect: &str) -> (&str, &str) {
    match connect.find('/') {
        Some(slash) => (&connect[..slash], connect[slash..].trim_end_matches('/')),
        None => (connect, ""),
    }
}

async fn connect(config: &ZkConfig) -> Result<Client, String> {
    let (servers, chroot) = split_chroot(&config.connect);
    let connector = || {
        Client::connector()
            .with_session_timeout(Duration::from_millis(config.session_timeout_ms))
            .with_connection_timeout(Duration::from_millis(config.connection_timeout_ms))
    };
    let client = connector().connect(servers).await.map_err(|e| format!("connecting to ZooKeeper at {servers}: {e}"))?;
    if chroot.is_empty() {
        return Ok(client);
    }
    // The chroot must exist before a chrooted session can use it (Kafka creates it too).
    match client.mkdir(chroot, &persistent()).await {
        Ok(()) | Err(ZkError::NodeExists) => {}
        Err(e) => return Err(format!("creating the chroot {chroot}: {e}")),
    }
    client.chroot(chroot.to_string()).map_err(|_| format!("invalid chroot {chroot:?} in zookeeper.connect"))
}

async fn join(client: &Client, endpoint: &BrokerEndpoint, proposed_cluster_id: &str) -> Result<Joined, String> {
    for path in paths::PERSISTENT_PATHS {
        match client.mkdir(path, &persistent()).await {
            Ok(()) | Err(ZkError::NodeExists) => {}
            Err(e) => return Err(format!("creating {path}: {e}")),
        }
    }
    let cluster_id = cluster_id(client, proposed_cluster_id).await?;
    let broker_id = if endpoint.broker_id >= 0 { endpoint.broker_id } else { generate_broker_id(client).await? };
    register(client, endpoint, broker_id).await?;
    Ok(Joined { broker_id, cluster_id })
}

async fn cluster_id(client: &Client, proposed: &str) -> Result<String, String> {
    loop {
        match client.get_data(paths::CLUSTER_ID).await {
            Ok((data, _)) => {
                return paths::parse_cluster_id_json(&data).ok_or_else(|| format!("{} holds no cluster id", paths::CLUSTER_ID))
            }
            Err(ZkError::NoNode) => {}
            Err(e) => return Err(format!("reading {}: {e}", paths::CLUSTER_ID)),
        }
        let _ = client.mkdir("/cluster", &persistent()).await;
        match client.create(paths::CLUSTER_ID, paths::cluster_id_json(proposed).as_bytes(), &persistent()).await {
            Ok(_) => return Ok(proposed.to_string()),
            Err(ZkError::NodeExists) => continue, // another broker was first: read its id
            Err(e) => return Err(format!("creating {}: {e}", paths::CLUSTER_ID)),
        }
    }
}

/// Kafka's scheme: every write to `/brokers/seqid` bumps its version, which is unique.
async fn generate_broker_id(client: &Client) -> Result<i32, String> {
    loop {
        match client.set_data(paths::BROKER_SEQUENCE_ID, b"", None).await {
            Ok(stat) => return Ok(stat.version + paths::RESERVED_BROKER_MAX_ID),
            Err(ZkError::NoNode) => match client.create(paths::BROKER_SEQUENCE_ID, b"", &persistent()).await {
                Ok(_) | Err(ZkError::NodeExists) => continue,
                Err(e) => return Err(format!("creating {}: {e}", paths::BROKER_SEQUENCE_ID)),
            },
            Err(e) => return Err(format!("writing {}: {e}", paths::BROKER_SEQUENCE_ID)),
        }
    }
}

/// Creates `/brokers/ids/<id>`. If it exists, it may be our own previous session's (a broker
/// restarted right after kill -9): that session expires within its timeout, so wait that long
/// before giving up, where Kafka would refuse to start at once.
async fn register(client: &Client, endpoint: &BrokerEndpoint, broker_id: i32) -> Result<(), String> {
    let path = paths::broker_path(broker_id);
    let deadline = tokio::time::Instant::now() + client.session_timeout() + Duration::from_secs(2);
    loop {
        let data = paths::broker_registration_json(&endpoint.host, endpoint.port, endpoint.rack.as_deref(), now_ms());
        match client.create(&path, data.as_bytes(), &ephemeral()).await {
            Ok(_) => return Ok(()),
            Err(ZkError::NodeExists) if tokio::time::Instant::now() < deadline => {
                tracing::info!(path, "broker id still registered by an earlier session; waiting for it to expire");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(ZkError::NodeExists) => {
                return Err(format!("broker.id {broker_id} is registered by a live broker ({path} exists)"))
            }
            Err(e) => return Err(format!("registering {path}: {e}")),
        }
    }
}

async fn run(
    config: ZkConfig,
    mut endpoint: BrokerEndpoint,
    proposed_cluster_id: String,
    options: CoordinatorOptions,
    view: Arc<ClusterView>,
    joined_sender: std::sync::mpsc::Sender<Result<Joined, String>>,
    mut commands: tokio::sync::mpsc::UnboundedReceiver<Command>,
) {
    let mut joined_sender = Some(joined_sender);
    loop {
        let session = async {
            let client = connect(&config).await?;
            let joined = join(&client, &endpoint, &proposed_cluster_id).await?;
            Ok::<_, String>((client, joined))
        };
        let (client, joined) = match session.await {
            Ok(ok) => ok,
            Err(e) => match joined_sender.take() {
                Some(sender) => {
                    let _ = sender.send(Err(e));
                    return;
                }
                None => {
                    tracing::error!(error = %e, "rejoining the cluster failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        tracing::info!(broker_id = joined.broker_id, cluster_id = %joined.cluster_id, "registered in ZooKeeper");
        endpoint.broker_id = joined.broker_id;
        if let Some(sender) = joined_sender.take() {
            let _ = sender.send(Ok(joined));
        }
        let mut states = client.state_watcher();
        let expired = async {
            loop {
                match states.changed().await {
                    SessionState::Expired => return,
                    state => tracing::debug!(?state, "ZooKeeper session state"),
                }
            }
        };
        let fence: Cell<Option<ControllerFence>> = Cell::new(None);
        let wake = tokio::sync::Notify::new();
        let shutdown = tokio::select! {
            _ = elect(&client, endpoint.broker_id, &view, &fence, &wake) => false,
            _ = follow(&client, &view, &fence, &wake, &options) => false,
            _ = expired => false,
            _ = serve(&client, &view, &mut commands) => true,
        };
        if !shutdown {
            tracing::warn!("ZooKeeper session expired: registering again with a new session");
            view.set_controller(-1, view.controller_epoch());
            continue;
        }
        // Dropping the last client makes the session task send CloseSession: our ephemeral
        // znodes (registration, controllership) go now, not a session timeout later. Wait for it.
        drop(client);
        let closed = async {
            while !matches!(states.changed().await, SessionState::Closed | SessionState::Expired) {}
        };
        if tokio::time::timeout(Duration::from_secs(2), closed).await.is_err() {
            tracing::warn!("the ZooKeeper session did not close within 2 s; it will expire instead");
        }
        return;
    }
}

/// Controller election (Kafka's): whoever creates the ephemeral `/controller` is the controller
/// and bumps `/controller_epoch` with a conditional write; everyone watches `/controller` and runs
/// again when it goes away. Loops until the session ends.
async fn elect(client: &Client, broker_id: i32, view: &ClusterView, fence: &Cell<Option<ControllerFence>>, wake: &tokio::sync::Notify) {
    loop {
        let data = paths::controller_json(broker_id, now_ms());
        match client.create(paths::CONTROLLER, data.as_bytes(), &ephemeral()).await {
            Ok(_) => match bump_controller_epoch(client).await {
                Ok(won) => {
                    view.set_controller(broker_id, won.epoch);
                    fence.set(Some(won));
                    wake.notify_one(); // the controller's first pass over every partition
                    tracing::info!(broker_id, epoch = won.epoch, "became the controller");
                }
                Err(e) => {
                    // Not safe to act as controller without a fresh epoch: resign.
                    tracing::error!(error = %e, "bumping the controller epoch failed; resigning");
                    let _ = client.delete(paths::CONTROLLER, None).await;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            Err(ZkError::NodeExists) => {}
            Err(e) => {
                tracing::error!(error = %e, "controller election failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        let (data, _, watcher) = match client.get_and_watch_data(paths::CONTROLLER).await {
            Ok(found) => found,
            Err(ZkError::NoNode) => continue, // gone already: elect again
            Err(e) => {
                tracing::error!(error = %e, "watching {}", paths::CONTROLLER);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Some(controller) = paths::parse_controller_json(&data) {
            if controller != broker_id {
                if fence.take().is_some() {
                    tracing::warn!(controller, "no longer the controller");
                }
                let epoch = read_controller_epoch(client).await.unwrap_or(view.controller_epoch());
                view.set_controller(controller, epoch);
                tracing::info!(controller, epoch, "controller is elsewhere");
            }
        }
        watcher.changed().await;
    }
}

/// Follows the cluster: persistent recursive watches on `/brokers` and `/admin/delete_topics`;
/// after each change, reads the
/// whole state, publishes it, and if this broker is the controller brings partition states in
/// line. Loops until the session ends.
async fn follow(
    client: &Client,
    view: &ClusterView,
    fence: &Cell<Option<ControllerFence>>,
    wake: &tokio::sync::Notify,
    options: &CoordinatorOptions,
) {
    let watch = |path: &'static str| async move {
        loop {
            match client.watch(path, AddWatchMode::PersistentRecursive).await {
                Ok(watcher) => break watcher,
                Err(e) => {
                    tracing::error!(error = %e, "watching {path}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    };
    let mut watcher = watch("/brokers").await;
    let mut deletions = watch(paths::DELETE_TOPICS).await;
    loop {
        match cluster::read(client).await {
            Ok(snapshot) => {
                let snapshot = Arc::new(snapshot);
                if *snapshot != *view.snapshot() {
                    view.set_snapshot(snapshot.clone());
                    (options.on_change)(&snapshot);
                }
                if let Some(current) = fence.get() {
                    match controller::reconcile(client, &snapshot, current, options.unclean_leader_election).await {
                        Ok(_) => {}
                        Err(ReconcileError::Fenced) => {
                            tracing::warn!(epoch = current.epoch, "a newer controller epoch exists: this broker's controller writes stop");
                            fence.set(None);
                        }
                        Err(ReconcileError::ZooKeeper(e)) => tracing::error!(error = %e, "controller: writing partition states"),
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "reading the cluster state"),
        }
        tokio::select! {
            _ = watcher.changed() => {}
            _ = deletions.changed() => {}
            _ = wake.notified() => {}
        }
    }
}

/// Serves the shards' commands until told to shut down (or every handle is gone).
async fn serve(client: &Client, view: &ClusterView, commands: &mut tokio::sync::mpsc::UnboundedReceiver<Command>) {
    while let Some(command) = commands.recv().await {
        match command {
            Command::Shutdown => return,
            Command::CreateTopic { name, partitions, replication_factor, config, topic_id, reply } => {
                let live = live_brokers(client, view).await;
                let created =
                    controller::create_topic(client, &live, &name, partitions, replication_factor, &config, topic_id).await;
                if let Ok(replicas) = &created {
                    tracing::info!(topic = name, ?replicas, "created topic in ZooKeeper");
                }
                let _ = reply.send(created);
            }
            Command::DeleteTopic { name, reply } => {
                let asked = match client.check_stat(&paths::topic_path(&name)).await {
                    Ok(None) => Err(TopicChangeError::UnknownTopic),
                    Ok(Some(_)) => match client.create(&paths::delete_topic_path(&name), b"", &persistent()).await {
                        Ok(_) | Err(ZkError::NodeExists) => Ok(()),
                        Err(e) => Err(TopicChangeError::ZooKeeper(e.to_string())),
                    },
                    Err(e) => Err(TopicChangeError::ZooKeeper(e.to_string())),
                };
                if asked.is_ok() {
                    tracing::info!(topic = name, "topic deletion requested");
                }
                let _ = reply.send(asked);
            }
            Command::AddPartitions { name, total, reply } => {
                let live = live_brokers(client, view).await;
                let added = controller::add_partitions(client, &live, &name, total).await;
                if let Ok(replicas) = &added {
                    tracing::info!(topic = name, total, ?replicas, "added partitions in ZooKeeper");
                }
                let _ = reply.send(added);
            }
            Command::ProducerIdBlock { broker_id, reply } => {
                let _ = reply.send(take_producer_id_block(client, broker_id).await);
            }
            Command::UpdateIsr { topic, partition, isr, expected, reply } => {
                let data = paths::partition_state_json(expected.leader, expected.leader_epoch, &isr, expected.controller_epoch);
                let path = paths::partition_state_path(&topic, partition);
                let written = client.set_data(&path, data.as_bytes(), Some(expected.zk_version)).await;
                if written.is_ok() {
                    tracing::info!(topic, partition, ?isr, previous = ?expected.isr, "ISR changed");
                }
                let _ = reply.send(written.map(|_| ()).map_err(|e| e.to_string()));
            }
        }
    }
}

/// The registered brokers, sorted (the snapshot's if ZooKeeper cannot be asked).
async fn live_brokers(client: &Client, view: &ClusterView) -> Vec<i32> {
    match client.list_children(paths::BROKER_IDS).await {
        Ok(ids) => {
            let mut ids: Vec<i32> = ids.iter().filter_map(|id| id.parse().ok()).collect();
            ids.sort_unstable();
            ids
        }
        Err(_) => view.snapshot().brokers.keys().copied().collect(),
    }
}

/// `/latest_producer_id_block` holds the last block handed out; the next one is written with a
/// conditional write, so two brokers never take the same block.
async fn take_producer_id_block(client: &Client, broker_id: i32) -> Result<i64, String> {
    const PATH: &str = "/latest_producer_id_block";
    loop {
        let (data, stat) = match client.get_data(PATH).await {
            Ok(found) => found,
            Err(ZkError::NoNode) => {
                let _ = client.create(PATH, b"", &persistent()).await;
                continue;
            }
            Err(e) => return Err(e.to_string()),
        };
        let last_end: i64 = serde_json::from_slice::<serde_json::Value>(&data)
            .ok()
            .and_then(|v| v.get("block_end")?.as_str()?.parse().ok())
            .unwrap_or(-1);
        let start = last_end + 1;
        let block = serde_json::json!({
            "version": 1,
            "broker": broker_id,
            "block_start": start.to_string(),
            "block_end": (start + PRODUCER_ID_BLOCK_SIZE - 1).to_string(),
        })
        .to_string();
        match client.set_data(PATH, block.as_bytes(), Some(stat.version)).await {
            Ok(_) => return Ok(start),
            Err(ZkError::BadVersion) => continue,
            Err(e) => return Err(e.to_string()),
        }
    }
}

async fn read_controller_epoch(client: &Client) -> Result<i32, String> {
    let (data, _) = client.get_data(paths::CONTROLLER_EPOCH).await.map_err(|e| e.to_string())?;
    std::str::from_utf8(&data).ok().and_then(|s| s.trim().parse().ok()).ok_or_else(|| "unparsable controller epoch".into())
}

/// Increments `/controller_epoch` conditionally on the version read, so two controllers can never
/// both believe they hold the same epoch. Returns the epoch and the znode version that fence this
/// controller's writes.
pub async fn bump_controller_epoch(client: &Client) -> Result<ControllerFence, String> {
    loop {
        match client.get_data(paths::CONTROLLER_EPOCH).await {
            Ok((data, stat)) => {
                let epoch: i32 = std::str::from_utf8(&data).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
                let next = epoch + 1;
                match client.set_data(paths::CONTROLLER_EPOCH, next.to_string().as_bytes(), Some(stat.version)).await {
                    Ok(stat) => return Ok(ControllerFence { epoch: next, epoch_zk_version: stat.version }),
                    Err(ZkError::BadVersion) => continue,
                    Err(e) => return Err(e.to_string()),
                }
            }
            Err(ZkError::NoNode) => match client.create(paths::CONTROLLER_EPOCH, b"1", &persistent()).await {
                Ok((stat, _)) => return Ok(ControllerFence { epoch: 1, epoch_zk_version: stat.version }),
                Err(ZkError::NodeExists) => continue,
                Err(e) => return Err(e.to_string()),
            },
            Err(e) => return Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chroot_is_split_off() {
        assert_eq!(split_chroot("127.0.0.1:2181/kafka"), ("127.0.0.1:2181", "/kafka"));
        assert_eq!(split_chroot("a:1,b:2/x/y/"), ("a:1,b:2", "/x/y"));
        assert_eq!(split_chroot("a:1"), ("a:1", ""));
    }
}
