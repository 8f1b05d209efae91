//! The coordinator thread: one ZooKeeper session after another (a new one when the last expires),
//! and within each, election, following the cluster and serving the shards' commands side by side.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use zookeeper_client::{AddWatchMode, Client, Error as ZkError, SessionState};

use crate::controller::{ControllerFence, ReconcileError};
use crate::election::elect;
use crate::paths::persistent;
use crate::session::{connect, join};
use crate::{
    cluster, controller, paths, user_configs, BrokerEndpoint, ClusterView, Command, CoordinatorHandle, CoordinatorOptions, Joined,
    TopicChangeError, ZkConfig, COMMAND_QUEUE_CAPACITY, PRODUCER_ID_BLOCK_SIZE,
};

/// The coordinator thread's owner. Dropping it (or `shutdown`) closes the session, which deletes
/// this broker's ephemeral znodes at once instead of after the session timeout.
pub struct Coordinator {
    commands: tokio::sync::mpsc::Sender<Command>,
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
        let (commands, receiver) = tokio::sync::mpsc::channel(COMMAND_QUEUE_CAPACITY);
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
        // Blocks while the queue is full, as Shutdown waits behind the queued commands anyway;
        // fine here: this runs on the broker's main thread, not inside any async runtime.
        let _ = self.commands.blocking_send(Command::Shutdown);
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

async fn run(
    config: ZkConfig,
    mut endpoint: BrokerEndpoint,
    proposed_cluster_id: String,
    options: CoordinatorOptions,
    view: Arc<ClusterView>,
    joined_sender: std::sync::mpsc::Sender<Result<Joined, String>>,
    mut commands: tokio::sync::mpsc::Receiver<Command>,
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
        // SCRAM users are needed from the first connection on.
        if let Err(e) = user_configs::publish(&client, &view).await {
            tracing::error!(error = %e, "reading {}", user_configs::USERS);
        }
        if let Some(sender) = joined_sender.take() {
            let _ = sender.send(Ok(joined));
        }
        let mut states = client.state_watcher();
        let expired = async {
            // Said once per loss and once per recovery, not per reconnection attempt.
            let mut lost = false;
            loop {
                match states.changed().await {
                    SessionState::Expired => return,
                    SessionState::Disconnected if !lost => {
                        lost = true;
                        tracing::warn!(
                            session_timeout_ms = config.session_timeout_ms,
                            "ZooKeeper connection lost: reconnecting; the session (registration, controllership) lasts until its timeout"
                        );
                    }
                    state @ (SessionState::SyncConnected | SessionState::ConnectedReadOnly) if lost => {
                        lost = false;
                        tracing::info!(?state, "ZooKeeper connection regained: the session survived");
                    }
                    state => tracing::debug!(?state, "ZooKeeper session state"),
                }
            }
        };
        let fence: Cell<Option<ControllerFence>> = Cell::new(None);
        let wake = tokio::sync::Notify::new();
        let publish_acls = |resources| view.set_acls(resources);
        let shutdown = tokio::select! {
            _ = elect(&client, endpoint.broker_id, &view, &fence, &wake) => false,
            _ = follow(&client, &view, &fence, &wake, &options) => false,
            _ = user_configs::follow(&client, &view) => false,
            _ = crate::acls::follow(&client, &publish_acls) => false,
            _ = crate::log_dir_events::publish(&client, endpoint.broker_id, &view) => false,
            _ = crate::change_purge::follow(&client, options.change_notification_expiration_ms) => false,
            _ = expired => false,
            _ = serve(&client, &view, &mut commands) => true,
        };
        if !shutdown {
            tracing::warn!("ZooKeeper session lost (expired): registering again with a new session");
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

/// Follows the cluster: persistent recursive watches on `/brokers` and `/admin/delete_topics`;
/// after each batch of changes (every event already queued, so a burst of thousands of writes
/// costs a few reads, not one each), reads what the events name (`cluster::refresh`),
/// publishes it, and if this broker is the controller brings partition states in line. Loops
/// until the session ends.
async fn follow(
    client: &Client,
    view: &ClusterView,
    fence: &Cell<Option<ControllerFence>>,
    wake: &tokio::sync::Notify,
    options: &CoordinatorOptions,
) {
    let mut watcher = watch_recursively(client, "/brokers").await;
    let mut deletions = watch_recursively(client, paths::DELETE_TOPICS).await;
    let mut log_dir_events = watch_recursively(client, crate::log_dir_events::NOTIFICATIONS).await;
    let mut offline_replicas = watch_recursively(client, crate::log_dir_events::OFFLINE_REPLICAS).await;
    // The watches are in place before the first read: nothing written after it is missed.
    let mut changes = cluster::Changes::everything();
    let mut current: Option<Arc<cluster::ClusterSnapshot>> = None;
    loop {
        for watch in [&mut watcher, &mut deletions, &mut log_dir_events, &mut offline_replicas] {
            if !take_queued_events(watch, &mut changes) {
                return; // the session ended: the coordinator registers again
            }
        }
        let began = std::time::Instant::now();
        let read = match &current {
            Some(previous) => cluster::refresh(client, previous, &changes).await,
            None => cluster::read(client).await,
        };
        tracing::debug!(
            everything = changes.everything || current.is_none(),
            topics = changes.topics.len(),
            states = changes.states.len(),
            read_ms = began.elapsed().as_millis() as u64,
            "cluster state read"
        );
        match read {
            Ok(snapshot) => {
                changes = cluster::Changes::default();
                let snapshot = Arc::new(snapshot);
                current = Some(snapshot.clone());
                if *snapshot != *view.snapshot() {
                    // The hook first: what it records (the broker's topic table) is in place
                    // before any shard sees the snapshot that needs it.
                    (options.on_change)(&snapshot);
                    view.set_snapshot(snapshot.clone());
                }
                if let Some(current) = fence.get() {
                    let reconciled = controller::reconcile(client, &snapshot, current, options.unclean_leader_election).await;
                    let reconciled = match reconciled {
                        Ok(_) => crate::log_dir_events::consume_notifications(client, current).await.map(|()| 0),
                        failed => failed,
                    };
                    match reconciled {
                        Ok(_) => {}
                        Err(ReconcileError::Fenced) => {
                            tracing::warn!(epoch = current.epoch, "a newer controller epoch exists: this broker's controller writes stop");
                            fence.set(None);
                        }
                        Err(ReconcileError::ZooKeeper(e)) => tracing::error!(error = %e, "controller: writing partition states"),
                    }
                }
            }
            Err(e) => {
                // What failed may be half read: read everything again, after a pause.
                tracing::error!(error = %e, "reading the cluster state");
                changes = cluster::Changes::everything();
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        let event = tokio::select! {
            event = watcher.changed() => Some(event),
            event = deletions.changed() => Some(event),
            event = log_dir_events.changed() => Some(event),
            event = offline_replicas.changed() => Some(event),
            _ = wake.notified() => None,
        };
        match event {
            Some(event) if session_ended(&event) => return,
            Some(event) => changes.note(&event),
            // Became controller: its first pass starts from a whole read.
            None => changes = cluster::Changes::everything(),
        }
    }
}

/// Notes every event already queued on `watch` (at most `MAX_EVENTS_PER_READ`: the rest go in
/// the next read). False when the session ended (the watch must not be polled again).
fn take_queued_events(watch: &mut zookeeper_client::PersistentWatcher, changes: &mut cluster::Changes) -> bool {
    use futures_util::FutureExt;
    const MAX_EVENTS_PER_READ: usize = 100_000;
    for _ in 0..MAX_EVENTS_PER_READ {
        // Polled once: the receiver is a channel, so a pending poll dropped loses nothing.
        let Some(event) = watch.changed().now_or_never() else { break };
        if session_ended(&event) {
            return false;
        }
        changes.note(&event);
    }
    true
}

/// A watch delivers the session's terminal state once and panics if asked again.
fn session_ended(event: &zookeeper_client::WatchedEvent) -> bool {
    event.event_type == zookeeper_client::EventType::Session
        && matches!(event.session_state, SessionState::Expired | SessionState::Closed | SessionState::AuthFailed)
}

/// A persistent recursive watch on `path`, retried each second until ZooKeeper takes it.
pub(crate) async fn watch_recursively(client: &Client, path: &str) -> zookeeper_client::PersistentWatcher {
    loop {
        match client.watch(path, AddWatchMode::PersistentRecursive).await {
            Ok(watcher) => break watcher,
            Err(e) => {
                tracing::error!(error = %e, "watching {path}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Serves the shards' commands until told to shut down (or every handle is gone). ISR changes
/// queued together are written together (`write_isrs`); the rest one at a time, in order.
async fn serve(client: &Client, view: &ClusterView, commands: &mut tokio::sync::mpsc::Receiver<Command>) {
    let mut next = None;
    loop {
        let command = match next.take() {
            Some(command) => command,
            None => match commands.recv().await {
                Some(command) => command,
                None => return,
            },
        };
        let command = match command {
            update @ Command::UpdateIsr { .. } => {
                let mut batch = vec![update];
                while batch.len() < COMMAND_QUEUE_CAPACITY {
                    match commands.try_recv() {
                        Ok(update @ Command::UpdateIsr { .. }) => batch.push(update),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                write_isrs(client, batch).await;
                continue;
            }
            other => other,
        };
        match command {
            Command::Shutdown => return,
            Command::CreateTopic { name, partitions, replication_factor, assignment, config, topic_id, reply } => {
                let live = live_brokers(client, view).await;
                let created =
                    controller::create_topic(client, &live, &name, partitions, replication_factor, assignment, &config, topic_id).await;
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
            Command::AddPartitions { name, total, assignment, reply } => {
                let live = live_brokers(client, view).await;
                let added = controller::add_partitions(client, &live, &name, total, assignment).await;
                if let Ok(replicas) = &added {
                    tracing::info!(topic = name, total, ?replicas, "added partitions in ZooKeeper");
                }
                let _ = reply.send(added);
            }
            Command::ProducerIdBlock { broker_id, reply } => {
                let _ = reply.send(take_producer_id_block(client, broker_id).await);
            }
            Command::UpdateIsr { .. } => unreachable!("ISR changes are served in batches above"),
            Command::AlterUserConfig { user, set, remove, reply } => {
                let mut altered = user_configs::alter(client, &user, &set, &remove).await;
                if altered.is_ok() {
                    tracing::info!(user, set = ?set.keys().collect::<Vec<_>>(), ?remove, "user config changed");
                    altered = user_configs::publish(client, view).await.map_err(|e| format!("reading {}: {e}", user_configs::USERS));
                }
                let _ = reply.send(altered);
            }
            Command::UpdateAcls { resource, remove, reply } => {
                let _ = reply.send(crate::acls::update(client, &resource, &remove).await);
            }
        }
    }
}

/// Leaders' ISR changes (Kafka's leaders wrote them to ZooKeeper themselves before AlterIsr),
/// each conditional on the state znode's version, all in flight at once: a leader of a thousand
/// partitions whose followers all caught up at once waits one round trip, not a thousand
/// (Kafka 3.9's AlterPartition likewise carries every partition a leader changes in one request).
async fn write_isrs(client: &Client, batch: Vec<Command>) {
    let writes = batch.into_iter().map(|command| async move {
        let Command::UpdateIsr { topic, partition, isr, expected, reply } = command else { unreachable!("a batch holds ISR changes only") };
        let data = paths::partition_state_json(expected.leader, expected.leader_epoch, &isr, expected.controller_epoch);
        let path = paths::partition_state_path(&topic, partition);
        let written = client.set_data(&path, data.as_bytes(), Some(expected.zk_version)).await;
        if written.is_ok() {
            tracing::info!(topic, partition, ?isr, previous = ?expected.isr, "ISR changed");
        }
        let _ = reply.send(written.map(|_| ()).map_err(|e| e.to_string()));
    });
    let (count, began) = (writes.len(), std::time::Instant::now());
    futures_util::future::join_all(writes).await;
    tracing::debug!(count, write_ms = began.elapsed().as_millis() as u64, "ISR changes written");
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
