//! Cluster mode, follower side: for every leader broker this shard follows partitions from, one
//! task (`LeaderFetcher`) fetches them all with the Fetch API over one connection (replica id
//! set, each from its log's end) and appends what comes back unchanged through the partition's door
//! (`Partition::append` with `AppendOrigin::Replication`: the leader's offsets and CRCs; it
//! records producer state and wakes fetches waiting on this replica like any append). The leader learns this broker's log end offset from the fetch offset, which is what
//! moves its high watermark.
//!
//! Before fetching from a new leader it cuts its log back to what that leader confirms
//! (OffsetForLeaderEpoch, `truncate_to_leader`).
//!
//! Each fetcher keeps a fetch session with its leader (KIP-227, `fetch_session::client`): a full
//! fetch first, then incremental ones carrying only the partitions whose fetch offset or log start
//! moved and those it stopped following; the leader answers only partitions with something new.
//! A session error or a lost connection starts over with a full fetch, as Kafka's
//! `FetchSessionHandler`. The fetches that find where to truncate are sessionless.
//!
//! Hand-written around kafka-protocol's client side (Fetch v11: no tagged fields): glommio has
//! no Kafka client, and one request in flight per leader is all a follower needs. The connection
//! (the leader's inter-broker listener, with its TLS and SASL) comes from `security::client`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::leader;
use crate::fetch_session::client::{NextFetch, SessionHandler};
use crate::fetch_session::{FetchParams, PartitionKey, FINAL_EPOCH, INVALID_SESSION_ID};
use crate::partition::AppendOrigin;
use crate::security::client::Connection;
use crate::shard_context::Shard;
use crate::topic_admin;

/// How often a shard looks for a new cluster snapshot (work happens only when it changed): the
/// delay between a leader change in ZooKeeper and followers fetching from the new leader.
const ROLE_CHECK_INTERVAL_MS: u64 = 20;
const FETCH_VERSION: i16 = 11;
const OFFSET_FOR_LEADER_EPOCH_VERSION: i16 = 3;
const FETCH_MAX_WAIT_MS: i32 = 500;
/// Kafka's `replica.fetch.max.bytes` default: per partition in one fetch.
const PARTITION_MAX_BYTES: i32 = 1024 * 1024;
/// Kafka's `replica.fetch.response.max.bytes` default: the whole response.
const RESPONSE_MAX_BYTES: i32 = 10 * 1024 * 1024;
const RETRY_BACKOFF_MS: u64 = 500;
/// Partitions in one Fetch, at most (a bound on the request; more wait for the next round).
const MAX_PARTITIONS_PER_FETCH: usize = 10_000;
/// Replicas this task asks the partition table to open at once (the table bounds all of a
/// shard's opens again).
const OPENS_AT_ONCE: usize = 32;

/// What one fetcher knows of one partition it fetches.
struct FetchState {
    /// The leader's epoch this broker follows the partition in.
    leader_epoch: i32,
    /// Cut back to what the leader confirms (`truncate_to_leader`): required before the first
    /// fetch from a leader in an epoch.
    truncated: bool,
    /// After a partition error, not asked for again before this.
    retry_at: Option<Instant>,
}

/// The fetcher of one shard from one leader broker: every partition this shard follows from
/// that broker goes in the same Fetch over one connection, as Kafka's replica fetcher threads
/// do, rather than a connection and a loop per partition (issue 21: 3,000 followed partitions
/// were 3,000 connections).
struct LeaderFetcher {
    leader: i32,
    address: String,
    partitions: RefCell<HashMap<(String, i32), FetchState>>,
    /// Set when the leader left the cluster, moved, or leads nothing this shard follows.
    stop: Cell<bool>,
    /// This fetcher's fetch session with the leader.
    session: RefCell<SessionHandler>,
}

/// Runs for the shard's life: keeps one fetcher per leader broker with the partitions followed
/// from it; on the same beat, the leader side's ISR check and the deletion of replicas whose
/// topic left the cluster.
pub async fn follow_leaders(shard: Rc<Shard>) {
    let Some(cluster) = shard.broker.cluster.clone() else { return };
    let me = shard.broker.config.broker_id;
    let mut fetchers: HashMap<i32, Rc<LeaderFetcher>> = HashMap::new();
    let mut seen: Option<Arc<zk::ClusterSnapshot>> = None;
    let mut last_isr_check = Instant::now();
    // An `open_replicas` task is running.
    let opening = Rc::new(Cell::new(false));
    while !shard.broker.is_shutting_down() {
        let snapshot = cluster.view.snapshot();
        if last_isr_check.elapsed() >= Duration::from_millis(leader::ISR_CHECK_INTERVAL_MS) {
            last_isr_check = Instant::now();
            leader::shrink_isrs(&shard, &snapshot, me);
        }
        if seen.as_ref().is_some_and(|seen| Arc::ptr_eq(seen, &snapshot)) {
            glommio::timer::sleep(Duration::from_millis(ROLE_CHECK_INTERVAL_MS)).await;
            continue;
        }
        seen = Some(snapshot.clone());
        topic_admin::delete_topics_gone_from_cluster(&shard, &snapshot).await;
        let mut wanted: HashMap<(String, i32), (i32, i32)> = HashMap::new();
        let mut to_open: Vec<(String, i32)> = Vec::new();
        for (topic, state) in &snapshot.topics {
            for (index, replicas) in state.replicas.iter().enumerate() {
                let partition = index as i32;
                let Some(partition_state) = snapshot.state(topic, partition) else { continue };
                let leader = partition_state.leader;
                if !replicas.contains(&me) || leader < 0 || shard.owner_of(topic, partition) != shard.id() {
                    continue;
                }
                // Its log dir failed: neither opened nor fetched, as Kafka's handleLogDirFailure removes
                // its fetchers.
                let offline = storage::log_manager::partition_offline(topic, partition);
                if !offline && shard.partitions.if_open(topic, partition).is_none() && !snapshot.topics_being_deleted.contains(topic) {
                    to_open.push((topic.clone(), partition));
                }
                if !offline && leader != me && snapshot.brokers.contains_key(&leader) {
                    wanted.insert((topic.clone(), partition), (leader, partition_state.leader_epoch));
                }
            }
        }
        if !to_open.is_empty() && !opening.replace(true) {
            glommio::spawn_local(open_replicas(shard.clone(), to_open, opening.clone())).detach();
        }
        // A fetcher whose leader moved to another address starts over under the new one.
        fetchers.retain(|leader, fetcher| {
            let keep = inter_broker_address(&shard, &snapshot, *leader).as_deref() == Some(fetcher.address.as_str());
            if !keep {
                fetcher.stop.set(true);
            }
            keep
        });
        for fetcher in fetchers.values() {
            fetcher.partitions.borrow_mut().retain(|key, state| {
                let keep = wanted.get(key) == Some(&(fetcher.leader, state.leader_epoch));
                if !keep {
                    tracing::info!(topic = key.0, partition = key.1, leader = fetcher.leader, "stopped following");
                }
                keep
            });
        }
        for (key, (leader, epoch)) in wanted {
            let fetcher = match fetchers.get(&leader) {
                Some(fetcher) => fetcher.clone(),
                None => {
                    let Some(address) = inter_broker_address(&shard, &snapshot, leader) else { continue };
                    let fetcher =
                        Rc::new(LeaderFetcher {
                        leader,
                        address,
                        partitions: RefCell::new(HashMap::new()),
                        stop: Cell::new(false),
                        session: RefCell::new(SessionHandler::default()),
                    });
                    fetchers.insert(leader, fetcher.clone());
                    glommio::spawn_local(fetch_from_leader(shard.clone(), fetcher.clone(), me)).detach();
                    fetcher
                }
            };
            let mut partitions = fetcher.partitions.borrow_mut();
            if !partitions.contains_key(&key) {
                tracing::info!(topic = key.0, partition = key.1, leader, epoch, "following the leader");
                partitions.insert(key, FetchState { leader_epoch: epoch, truncated: false, retry_at: None });
            }
        }
        fetchers.retain(|_, fetcher| {
            let keep = !fetcher.partitions.borrow().is_empty();
            if !keep {
                fetcher.stop.set(true);
            }
            keep
        });
        glommio::timer::sleep(Duration::from_millis(ROLE_CHECK_INTERVAL_MS)).await;
    }
    for fetcher in fetchers.values() {
        fetcher.stop.set(true);
    }
}

/// Opens (creates) this shard's replicas a new snapshot names, leaders' and followers' alike, as
/// Kafka's `makeLeaders`/`makeFollowers` create a replica's log when told of it: not at the first
/// fetch, where a leader opening a thousand new partitions one by one held its followers' first
/// fetch for seconds (issue 21). Then `opening` clears; replicas still closed (a failed open, or
/// named by a later snapshot meanwhile) are opened at the next snapshot or on first use.
async fn open_replicas(shard: Rc<Shard>, keys: Vec<(String, i32)>, opening: Rc<Cell<bool>>) {
    let count = keys.len();
    let began = Instant::now();
    let opened = futures_util::stream::iter(keys.iter().map(|(topic, partition)| shard.partitions.replica(topic, *partition)))
        .buffer_unordered(OPENS_AT_ONCE)
        .filter(|opened| std::future::ready(opened.is_ok()))
        .count()
        .await;
    tracing::debug!(count, opened, open_ms = began.elapsed().as_millis() as u64, "replicas opened");
    opening.set(false);
}

/// The leader's address on the inter-broker listener, as `host:port`.
fn inter_broker_address(shard: &Shard, snapshot: &zk::ClusterSnapshot, leader: i32) -> Option<String> {
    let client = shard.broker.security.inter_broker.as_ref().expect("cluster mode builds the inter-broker client");
    client.address(snapshot, leader).ok().map(|(host, port)| format!("{host}:{port}"))
}

/// One partition's place in a multi-partition fetch.
struct Fetching {
    key: (String, i32),
    leader_epoch: i32,
    fetch_offset: i64,
    log_start_offset: i64,
    handle: Rc<crate::partition::Partition>,
}

async fn fetch_from_leader(shard: Rc<Shard>, fetcher: Rc<LeaderFetcher>, me: i32) {
    let mut round: usize = 0;
    let running = || !fetcher.stop.get() && !shard.broker.is_shutting_down();
    // A refused login or certificate is worth a warning; a leader that is down (its fetchers
    // stop once the controller moves leadership) retries every 500 ms: said once per outage.
    let mut failing = false;
    while running() {
        let client = shard.broker.security.inter_broker.as_ref().expect("cluster mode builds the inter-broker client");
        let snapshot = shard.broker.cluster.as_ref().expect("cluster mode").view.snapshot();
        let mut stream = match client.connect(&snapshot, fetcher.leader, me).await {
            Ok(stream) => {
                failing = false;
                stream
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(leader = fetcher.leader, address = fetcher.address, error = %e, "connecting to the leader (retrying every 500 ms)");
                }
                failing = true;
                glommio::timer::sleep(Duration::from_millis(RETRY_BACKOFF_MS)).await;
                continue;
            }
        };
        while running() {
            round = round.wrapping_add(1);
            match fetch_round(&shard, &fetcher, &mut stream, me, round).await {
                Ok(true) => {}
                Ok(false) => glommio::timer::sleep(Duration::from_millis(ROLE_CHECK_INTERVAL_MS)).await,
                Err(e) => {
                    fetcher.session.borrow_mut().reset();
                    tracing::warn!(leader = fetcher.leader, address = fetcher.address, error = %e, "replica fetch failed; reconnecting");
                    glommio::timer::sleep(Duration::from_millis(RETRY_BACKOFF_MS)).await;
                    break;
                }
            }
        }
    }
    tracing::info!(leader = fetcher.leader, address = fetcher.address, "fetcher stopped");
}

/// Truncates the partitions new to this leader (or epoch), then one Fetch for every partition
/// ready to fetch. Ok(false): nothing was ready. Err: the connection failed (reconnect).
async fn fetch_round(
    shard: &Rc<Shard>,
    fetcher: &LeaderFetcher,
    stream: &mut Connection,
    me: i32,
    round: usize,
) -> Result<bool, String> {
    let now = Instant::now();
    let began = now;
    let due = |state: &FetchState| state.retry_at.is_none_or(|at| at <= now);
    let mut to_truncate: Vec<((String, i32), i32)> = fetcher
        .partitions
        .borrow()
        .iter()
        .filter(|(_, state)| !state.truncated && due(state))
        .map(|(key, state)| (key.clone(), state.leader_epoch))
        .collect();
    to_truncate.truncate(MAX_PARTITIONS_PER_FETCH);
    let truncating = to_truncate.len();
    if !to_truncate.is_empty() {
        let outcomes = truncate_to_leader(shard, stream, me, &to_truncate).await?;
        let mut partitions = fetcher.partitions.borrow_mut();
        for ((key, leader_epoch), truncated) in to_truncate.into_iter().zip(outcomes) {
            if let Some(state) = partitions.get_mut(&key).filter(|s| s.leader_epoch == leader_epoch) {
                state.truncated = truncated;
                state.retry_at = (!truncated).then(|| Instant::now() + Duration::from_millis(RETRY_BACKOFF_MS));
            }
        }
    }

    let mut ready: Vec<((String, i32), i32)> = fetcher
        .partitions
        .borrow()
        .iter()
        .filter(|(_, state)| state.truncated && due(state))
        .map(|(key, state)| (key.clone(), state.leader_epoch))
        .collect();
    if ready.is_empty() {
        return Ok(false);
    }
    // The leader fills a response in request order up to its byte budget: start each round
    // elsewhere so no partition waits behind busier ones for long.
    ready.sort_unstable();
    let len = ready.len();
    ready.rotate_left(round % len);
    ready.truncate(MAX_PARTITIONS_PER_FETCH);
    let mut fetching = Vec::with_capacity(ready.len());
    for (key, leader_epoch) in ready {
        let handle = match shard.partitions.replica(&key.0, key.1).await {
            Ok(handle) => handle,
            Err(e) => {
                // This partition only (e.g. out of descriptors): the others fetch on.
                tracing::warn!(topic = key.0, partition = key.1, error = ?e, "a followed partition cannot be opened; retrying it later");
                if let Some(state) = fetcher.partitions.borrow_mut().get_mut(&key) {
                    state.retry_at = Some(Instant::now() + Duration::from_millis(RETRY_BACKOFF_MS));
                }
                continue;
            }
        };
        let (fetch_offset, log_start_offset) = {
            let log = handle.log.read().await.expect("partition lock");
            (log.log_end_offset(), log.log_start_offset())
        };
        fetching.push(Fetching { key, leader_epoch, fetch_offset, log_start_offset, handle });
    }
    if fetching.is_empty() {
        return Ok(false);
    }
    let wanted: Vec<(PartitionKey, FetchParams)> = fetching
        .iter()
        .map(|p| (p.key.clone(), FetchParams { fetch_offset: p.fetch_offset, max_bytes: PARTITION_MAX_BYTES as u64, log_start_offset: p.log_start_offset }))
        .collect();
    let next = fetcher.session.borrow_mut().build(&wanted);
    let epochs: HashMap<&PartitionKey, i32> = fetching.iter().map(|p| (&p.key, p.leader_epoch)).collect();
    let prepared = began.elapsed();
    let response = fetch(stream, me, &next, &epochs).await?;
    let fetched = began.elapsed();
    if !fetcher.session.borrow_mut().on_response(&next, response.error_code, response.session_id) {
        tracing::debug!(leader = fetcher.leader, error = ?ResponseError::try_from_code(response.error_code), "fetch session error; a full fetch follows");
        return Ok(true);
    }
    let mut answers: HashMap<(&str, i32), &kafka_protocol::messages::fetch_response::PartitionData> = HashMap::new();
    for topic in &response.responses {
        for data in &topic.partitions {
            answers.insert((topic.topic.0.as_str(), data.partition_index), data);
        }
    }
    for asked in &fetching {
        let (topic, partition) = (&asked.key.0, asked.key.1);
        // Replaced while the fetch was in flight (a new leader or epoch): the answer may repeat
        // or contradict what the new leader sends; its next round fetches again.
        let still_followed = fetcher.partitions.borrow().get(&asked.key).is_some_and(|s| s.leader_epoch == asked.leader_epoch);
        if !still_followed {
            continue;
        }
        let Some(data) = answers.get(&(topic.as_str(), partition)) else { continue };
        if let Err(error) = apply_fetched(asked, data).await {
            tracing::debug!(topic, partition, error, "replica fetch of a partition refused or failed; retrying it later");
            if let Some(state) = fetcher.partitions.borrow_mut().get_mut(&asked.key) {
                state.retry_at = Some(Instant::now() + Duration::from_millis(RETRY_BACKOFF_MS));
            }
        }
    }
    tracing::debug!(
        leader = fetcher.leader,
        truncating,
        partitions = fetching.len(),
        sent = next.send.len(),
        answered = answers.len(),
        prepare_ms = prepared.as_millis() as u64,
        fetch_ms = (fetched - prepared).as_millis() as u64,
        apply_ms = (began.elapsed() - fetched).as_millis() as u64,
        "replica fetch round"
    );
    Ok(true)
}

/// Appends one partition's answer through the partition's door and follows the leader's high
/// watermark and log start offset.
async fn apply_fetched(asked: &Fetching, data: &kafka_protocol::messages::fetch_response::PartitionData) -> Result<(), String> {
    if data.error_code != 0 {
        return Err(format!("{:?}", ResponseError::try_from_code(data.error_code)));
    }
    let handle = &asked.handle;
    if let Some(records) = data.records.as_ref().filter(|r| !r.is_empty()) {
        handle.append(records, AppendOrigin::Replication).await.map_err(|e| e.to_string())?;
    }
    handle.follow_high_watermark(data.high_watermark);
    if data.log_start_offset > asked.log_start_offset {
        // DeleteRecords on the leader: ours follows (and says so in our next fetch).
        handle.follow_log_start_offset(data.log_start_offset).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The first step with a new leader: cut this log back to what the leader confirms, so the logs
/// never diverge. Records past that point may exist here that the leader never had (appended
/// under an earlier leader, never acknowledged).
///
/// With leader epochs (Kafka's KIP-101/279): ask the leader where this log's latest epoch ends
/// (OffsetForLeaderEpoch); cut to the smaller of that and where the answered epoch ends here.
/// Everything both logs share is kept, also past the high watermark. Without epochs (a log
/// from before they were stamped), fall back to the high watermark: the smaller of the
/// leader's and our own (0 after a restart, when the whole log is fetched again). An empty log
/// without epochs has nothing to cut.
///
/// All of `partitions` (key, leader epoch) at once, as Kafka's fetcher threads do
/// (`AbstractFetcherThread.maybeTruncate`): one OffsetForLeaderEpoch and at most one Fetch for
/// them all (issue 21: one request per partition, each Fetch waiting out its max wait on an empty
/// partition, kept a follower of a thousand new partitions from fetching for minutes). Returns,
/// per partition: truncated (fetching can start), or not (refused or not openable: retry later).
/// Err: the connection failed.
async fn truncate_to_leader(shard: &Rc<Shard>, stream: &mut Connection, me: i32, partitions: &[((String, i32), i32)]) -> Result<Vec<bool>, String> {
    let mut outcomes = vec![false; partitions.len()];
    // (index in `partitions`, handle, latest epoch, log start offset)
    let mut by_epoch = Vec::new();
    let mut by_high_watermark = Vec::new();
    // New partitions are opened (created) together, not one after another: an open waits on
    // the disk and the blocking thread, and the table bounds how many run at once.
    let opened: Vec<_> = futures_util::stream::iter(partitions.iter().map(|(key, _)| shard.partitions.replica(&key.0, key.1)))
        .buffered(OPENS_AT_ONCE)
        .collect()
        .await;
    for (index, ((key, _), opened)) in partitions.iter().zip(opened).enumerate() {
        let handle = match opened {
            Ok(handle) => handle,
            Err(e) => {
                tracing::warn!(topic = key.0, partition = key.1, error = ?e, "a followed partition cannot be opened; retrying it later");
                continue;
            }
        };
        let (latest_epoch, log_start_offset, empty) = {
            let log = handle.log.read().await.expect("partition lock");
            (log.latest_epoch(), log.log_start_offset(), log.log_end_offset() == log.log_start_offset())
        };
        match latest_epoch {
            Some(latest_epoch) => by_epoch.push((index, handle, latest_epoch, log_start_offset)),
            None if empty => outcomes[index] = true,
            None => by_high_watermark.push((index, handle, log_start_offset)),
        }
    }
    if !by_epoch.is_empty() {
        let mut topics: Vec<OffsetForLeaderTopic> = Vec::new();
        for (index, _, latest_epoch, _) in &by_epoch {
            let ((topic, partition), leader_epoch) = &partitions[*index];
            let entry = OffsetForLeaderPartition::default()
                .with_partition(*partition)
                .with_current_leader_epoch(*leader_epoch)
                .with_leader_epoch(*latest_epoch);
            match topics.last_mut() {
                Some(last) if last.topic.0.as_str() == topic => last.partitions.push(entry),
                _ => topics.push(OffsetForLeaderTopic::default().with_topic(TopicName(StrBytes::from_string(topic.clone()))).with_partitions(vec![entry])),
            }
        }
        let request = OffsetForLeaderEpochRequest::default().with_replica_id(BrokerId(me)).with_topics(topics);
        let response: OffsetForLeaderEpochResponse =
            stream.call(ApiKey::OffsetForLeaderEpoch, OFFSET_FOR_LEADER_EPOCH_VERSION, &request).await?;
        let answers: HashMap<(&str, i32), _> =
            response.topics.iter().flat_map(|t| t.partitions.iter().map(move |p| ((t.topic.0.as_str(), p.partition), p))).collect();
        for (index, handle, _, log_start_offset) in by_epoch {
            let (topic, partition) = (&partitions[index].0 .0, partitions[index].0 .1);
            let Some(answer) = answers.get(&(topic.as_str(), partition)) else {
                tracing::debug!(topic, partition, "the OffsetForLeaderEpoch response lacks the partition");
                continue;
            };
            if answer.error_code != 0 {
                tracing::debug!(topic, partition, error = ?ResponseError::try_from_code(answer.error_code), "OffsetForLeaderEpoch refused");
                continue;
            }
            if answer.leader_epoch < 0 {
                // The leader knows no epoch of ours: go by the high watermark.
                by_high_watermark.push((index, handle, log_start_offset));
                continue;
            }
            let mut log = handle.log.write().await.expect("partition lock");
            let (_, own_end) = log.end_offset_for_epoch(answer.leader_epoch);
            let own_end = if own_end >= 0 { own_end } else { log.log_end_offset() };
            let target = answer.end_offset.min(own_end);
            if log.log_end_offset() > target {
                tracing::info!(topic, partition, from = log.log_end_offset(), to = target, epoch = answer.leader_epoch, "truncating to the leader's epoch end");
            }
            // Also when no record goes: epochs of ours starting at the target are dropped.
            handle.truncate_to(&mut log, target).await.map_err(|e| e.to_string())?;
            outcomes[index] = true;
        }
    }
    if !by_high_watermark.is_empty() {
        // A fetch from our log start tells the leader's high watermark without claiming our log
        // end (the leader takes a fetch offset for it); no wait: only the watermark is wanted.
        let wanted: Vec<(&str, i32, i32, i64, i64)> = by_high_watermark
            .iter()
            .map(|(index, _, log_start_offset)| {
                let ((topic, partition), leader_epoch) = &partitions[*index];
                (topic.as_str(), *partition, *leader_epoch, *log_start_offset, *log_start_offset)
            })
            .collect();
        let sessionless = (INVALID_SESSION_ID, FINAL_EPOCH, Vec::new());
        let response = fetch_offsets(stream, me, &wanted, sessionless, 0).await?;
        let answers: HashMap<(&str, i32), _> = response
            .responses
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| ((t.topic.0.as_str(), p.partition_index), p)))
            .collect();
        for (index, handle, _) in by_high_watermark {
            let (topic, partition) = (&partitions[index].0 .0, partitions[index].0 .1);
            let Some(data) = answers.get(&(topic.as_str(), partition)) else { continue };
            if data.error_code != 0 || data.high_watermark < 0 {
                continue;
            }
            let own_high_watermark = handle.replication.borrow().high_watermark;
            let target = data.high_watermark.min(own_high_watermark);
            let mut log = handle.log.write().await.expect("partition lock");
            if log.log_end_offset() > target {
                tracing::info!(topic, partition, from = log.log_end_offset(), to = target, "truncating to the high watermark");
                handle.truncate_to(&mut log, target).await.map_err(|e| e.to_string())?;
            }
            outcomes[index] = true;
        }
    }
    Ok(outcomes)
}

/// The session's next Fetch: the partitions it sends (all of them when full), each from its
/// offset, and those it forgets.
async fn fetch(stream: &mut Connection, me: i32, next: &NextFetch, leader_epochs: &HashMap<&PartitionKey, i32>) -> Result<FetchResponse, String> {
    let wanted: Vec<(&str, i32, i32, i64, i64)> = next
        .send
        .iter()
        .map(|(key, params)| (key.0.as_str(), key.1, leader_epochs.get(key).copied().unwrap_or(-1), params.fetch_offset, params.log_start_offset))
        .collect();
    let mut forgotten: Vec<ForgottenTopic> = Vec::new();
    for (topic, partition) in &next.forgotten {
        match forgotten.iter_mut().find(|t| t.topic.0.as_str() == topic.as_str()) {
            Some(entry) => entry.partitions.push(*partition),
            None => forgotten.push(ForgottenTopic::default().with_topic(TopicName(StrBytes::from_string(topic.clone()))).with_partitions(vec![*partition])),
        }
    }
    fetch_offsets(stream, me, &wanted, (next.session_id, next.epoch, forgotten), FETCH_MAX_WAIT_MS).await
}

/// One Fetch for (topic, partition, leader epoch, fetch offset, log start offset) each; one
/// FetchTopic per run of the same topic. `session`: id, epoch and forgotten topics.
async fn fetch_offsets(
    stream: &mut Connection,
    me: i32,
    wanted: &[(&str, i32, i32, i64, i64)],
    session: (i32, i32, Vec<ForgottenTopic>),
    max_wait_ms: i32,
) -> Result<FetchResponse, String> {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for &(topic, partition, leader_epoch, fetch_offset, log_start_offset) in wanted {
        let entry = FetchPartition::default()
            .with_partition(partition)
            .with_current_leader_epoch(leader_epoch)
            .with_fetch_offset(fetch_offset)
            .with_log_start_offset(log_start_offset)
            .with_partition_max_bytes(PARTITION_MAX_BYTES);
        match topics.last_mut() {
            Some(last) if last.topic.0.as_str() == topic => last.partitions.push(entry),
            _ => topics.push(FetchTopic::default().with_topic(TopicName(StrBytes::from_string(topic.to_string()))).with_partitions(vec![entry])),
        }
    }
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(me))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(RESPONSE_MAX_BYTES)
        .with_session_id(session.0)
        .with_session_epoch(session.1)
        .with_forgotten_topics_data(session.2)
        .with_topics(topics);
    stream.call(ApiKey::Fetch, FETCH_VERSION, &request).await
}
