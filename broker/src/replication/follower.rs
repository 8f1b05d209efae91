//! Cluster mode, follower side: for every partition this shard owns where this broker is a
//! follower, a task fetches from the leader with the Fetch API (replica id set, from this log's
//! end) and appends what comes back unchanged through the partition's door
//! (`Partition::append` with `AppendOrigin::Replication`: the leader's offsets and CRCs; it
//! records producer state and wakes fetches waiting on this replica like any append). The leader learns this broker's log end offset from the fetch offset, which is what
//! moves its high watermark.
//!
//! Before fetching from a new leader it cuts its log back to what that leader confirms
//! (OffsetForLeaderEpoch, `truncate_to_leader`).
//!
//! Hand-written around kafka-protocol's client side (Fetch v11: no sessions, no tagged fields):
//! glommio has no Kafka client, and one request in flight per partition is all a follower needs.

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use kafka_protocol::ResponseError;

use super::leader;
use crate::partition::AppendOrigin;
use crate::shard_context::Shard;
use crate::topic_admin;

/// How often a shard looks for a new cluster snapshot (work happens only when it changed): the
/// delay between a leader change in ZooKeeper and followers fetching from the new leader.
const ROLE_CHECK_INTERVAL_MS: u64 = 20;
const FETCH_VERSION: i16 = 11;
const OFFSET_FOR_LEADER_EPOCH_VERSION: i16 = 3;
const FETCH_MAX_WAIT_MS: i32 = 500;
const PARTITION_MAX_BYTES: i32 = 1024 * 1024;
/// A response larger than this is refused (the leader sends at most one partition's worth).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
const RETRY_BACKOFF_MS: u64 = 500;

/// (leader id, leader epoch, stop flag) per followed partition.
type Followed = HashMap<(String, i32), (i32, i32, Rc<Cell<bool>>)>;

/// Runs for the shard's life: starts and stops one fetcher per followed partition; on the same
/// beat, the leader side's ISR check and the deletion of replicas whose topic left the cluster.
pub async fn follow_leaders(shard: Rc<Shard>) {
    let Some(cluster) = shard.broker.cluster.clone() else { return };
    let me = shard.broker.config.broker_id;
    let mut followed: Followed = HashMap::new();
    let mut seen: Option<Arc<zk::ClusterSnapshot>> = None;
    let mut last_isr_check = std::time::Instant::now();
    while !shard.broker.is_shutting_down() {
        let snapshot = cluster.view.snapshot();
        if last_isr_check.elapsed() >= Duration::from_millis(leader::ISR_CHECK_INTERVAL_MS) {
            last_isr_check = std::time::Instant::now();
            leader::shrink_isrs(&shard, &snapshot, me);
        }
        if seen.as_ref().is_some_and(|seen| Arc::ptr_eq(seen, &snapshot)) {
            glommio::timer::sleep(Duration::from_millis(ROLE_CHECK_INTERVAL_MS)).await;
            continue;
        }
        seen = Some(snapshot.clone());
        topic_admin::delete_topics_gone_from_cluster(&shard, &snapshot).await;
        let mut wanted: HashMap<(String, i32), (i32, i32)> = HashMap::new();
        for (topic, state) in &snapshot.topics {
            for (index, replicas) in state.replicas.iter().enumerate() {
                let partition = index as i32;
                let Some(partition_state) = snapshot.state(topic, partition) else { continue };
                let leader = partition_state.leader;
                if replicas.contains(&me)
                    && leader >= 0
                    && leader != me
                    && snapshot.brokers.contains_key(&leader)
                    && shard.owner_of(topic, partition) == shard.id()
                {
                    wanted.insert((topic.clone(), partition), (leader, partition_state.leader_epoch));
                }
            }
        }
        followed.retain(|key, (leader, epoch, stop)| {
            let keep = wanted.get(key) == Some(&(*leader, *epoch));
            if !keep {
                stop.set(true);
            }
            keep
        });
        for (key, (leader, epoch)) in wanted {
            if followed.contains_key(&key) {
                continue;
            }
            let Some(address) = snapshot.brokers.get(&leader).map(|b| format!("{}:{}", b.host, b.port)) else { continue };
            let stop = Rc::new(Cell::new(false));
            followed.insert(key.clone(), (leader, epoch, stop.clone()));
            tracing::info!(topic = key.0, partition = key.1, leader, epoch, "following the leader");
            glommio::spawn_local(fetch_from_leader(shard.clone(), key.0, key.1, address, me, epoch, stop)).detach();
        }
        glommio::timer::sleep(Duration::from_millis(ROLE_CHECK_INTERVAL_MS)).await;
    }
    for (_, (_, _, stop)) in followed {
        stop.set(true);
    }
}

/// One followed partition, as the fetcher's steps need it.
#[derive(Clone, Copy)]
struct Follower<'a> {
    shard: &'a Rc<Shard>,
    topic: &'a str,
    partition: i32,
    /// This broker's id (the fetch's replica id).
    me: i32,
    /// The leader's epoch this fetcher follows.
    leader_epoch: i32,
    /// Set when a newer fetcher replaces this one (a new leader or epoch).
    stop: &'a Cell<bool>,
}

async fn fetch_from_leader(
    shard: Rc<Shard>,
    topic: String,
    partition: i32,
    leader_address: String,
    me: i32,
    leader_epoch: i32,
    stop: Rc<Cell<bool>>,
) {
    let mut correlation_id = 0;
    // Before taking anything from a new leader, cut this log back to what the leader confirms
    // (see `truncate_to_leader`).
    let mut truncated = false;
    while !stop.get() && !shard.broker.is_shutting_down() {
        let mut stream = match TcpStream::connect(leader_address.as_str()).await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(topic, partition, leader_address, error = %e, "connecting to the leader");
                glommio::timer::sleep(Duration::from_millis(RETRY_BACKOFF_MS)).await;
                continue;
            }
        };
        while !stop.get() && !shard.broker.is_shutting_down() {
            correlation_id += 1;
            let follower = Follower { shard: &shard, topic: &topic, partition, me, leader_epoch, stop: &stop };
            let step = if truncated {
                fetch_once(follower, &mut stream, correlation_id).await
            } else {
                let step = truncate_to_leader(follower, &mut stream, correlation_id).await;
                truncated = matches!(step, Ok(true));
                step
            };
            match step {
                Ok(true) => {}
                Ok(false) => glommio::timer::sleep(Duration::from_millis(RETRY_BACKOFF_MS)).await,
                Err(e) => {
                    tracing::warn!(topic, partition, leader_address, error = %e, "replica fetch failed; reconnecting");
                    glommio::timer::sleep(Duration::from_millis(RETRY_BACKOFF_MS)).await;
                    break;
                }
            }
        }
    }
    tracing::info!(topic, partition, leader_address, "stopped following");
}

/// One request and its response over the connection to the leader (kafka-protocol's client side).
pub(crate) async fn round_trip<Q: Encodable + HeaderVersion, R: Decodable + HeaderVersion>(
    stream: &mut TcpStream,
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    me: i32,
    request: &Q,
) -> Result<R, String> {
    let header = RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_string(format!("replica-fetcher-{me}"))));
    let mut body = BytesMut::new();
    body.extend_from_slice(&[0; 4]);
    header.encode(&mut body, Q::header_version(version)).map_err(|e| e.to_string())?;
    request.encode(&mut body, version).map_err(|e| e.to_string())?;
    let length = (body.len() - 4) as i32;
    body[..4].copy_from_slice(&length.to_be_bytes());
    stream.write_all(&body).await.map_err(|e| e.to_string())?;

    let mut size = [0u8; 4];
    stream.read_exact(&mut size).await.map_err(|e| e.to_string())?;
    let size = i32::from_be_bytes(size);
    if size < 0 || size as usize > MAX_RESPONSE_BYTES {
        return Err(format!("response of {size} bytes"));
    }
    let mut frame = vec![0u8; size as usize];
    stream.read_exact(&mut frame).await.map_err(|e| e.to_string())?;
    let mut frame = Bytes::from(frame);
    let response_header = ResponseHeader::decode(&mut frame, R::header_version(version)).map_err(|e| e.to_string())?;
    if response_header.correlation_id != correlation_id {
        return Err("correlation id mismatch".into());
    }
    R::decode(&mut frame, version).map_err(|e| e.to_string())
}

/// The first step with a new leader: cut this log back to what the leader confirms, so the logs
/// never diverge. Records past that point may exist here that the leader never had (appended
/// under an earlier leader, never acknowledged).
///
/// With leader epochs (Kafka's KIP-101/279): ask the leader where this log's latest epoch ends
/// (OffsetForLeaderEpoch); cut to the smaller of that and where the answered epoch ends here.
/// Everything both logs share is kept, also past the high watermark. Without epochs (a log
/// from before they were stamped, or an empty one), fall back to the high watermark: the
/// smaller of the leader's and our own (0 after a restart, when the whole log is fetched again).
///
/// Ok(true): truncated, fetching can start. Ok(false): the leader refused (retry later).
async fn truncate_to_leader(follower: Follower<'_>, stream: &mut TcpStream, correlation_id: i32) -> Result<bool, String> {
    let Follower { shard, topic, partition, me, leader_epoch, .. } = follower;
    let handle = shard.partitions.replica(topic, partition).await.map_err(|e| format!("{e:?}"))?;
    let (latest_epoch, log_start_offset) = {
        let log = handle.log.read().await.expect("partition lock");
        (log.latest_epoch(), log.log_start_offset())
    };
    if let Some(latest_epoch) = latest_epoch {
        let request = OffsetForLeaderEpochRequest::default().with_replica_id(BrokerId(me)).with_topics(vec![OffsetForLeaderTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![OffsetForLeaderPartition::default()
                .with_partition(partition)
                .with_current_leader_epoch(leader_epoch)
                .with_leader_epoch(latest_epoch)])]);
        let response: OffsetForLeaderEpochResponse =
            round_trip(stream, ApiKey::OffsetForLeaderEpoch, OFFSET_FOR_LEADER_EPOCH_VERSION, correlation_id, me, &request).await?;
        let Some(answer) = response.topics.iter().flat_map(|t| t.partitions.iter()).find(|p| p.partition == partition) else {
            return Err("the OffsetForLeaderEpoch response lacks the partition".into());
        };
        if answer.error_code != 0 {
            tracing::debug!(topic, partition, error = ?ResponseError::try_from_code(answer.error_code), "OffsetForLeaderEpoch refused");
            return Ok(false);
        }
        if answer.leader_epoch >= 0 {
            let mut log = handle.log.write().await.expect("partition lock");
            let (_, own_end) = log.end_offset_for_epoch(answer.leader_epoch);
            let own_end = if own_end >= 0 { own_end } else { log.log_end_offset() };
            let target = answer.end_offset.min(own_end);
            if log.log_end_offset() > target {
                tracing::info!(topic, partition, from = log.log_end_offset(), to = target, epoch = answer.leader_epoch, "truncating to the leader's epoch end");
            }
            // Also when no record goes: epochs of ours starting at the target are dropped.
            handle.truncate_to(&mut log, target).await.map_err(|e| e.to_string())?;
            return Ok(true);
        }
    }
    // No epochs to go by: a fetch from our log start tells the leader's high watermark without
    // claiming our log end (the leader takes a fetch offset for it).
    let response = fetch(follower, stream, log_start_offset, log_start_offset, correlation_id).await?;
    let Some(data) = response.responses.iter().flat_map(|t| t.partitions.iter()).find(|p| p.partition_index == partition) else {
        return Err("the response lacks the partition".into());
    };
    if data.error_code != 0 || data.high_watermark < 0 {
        return Ok(false);
    }
    let own_high_watermark = handle.replication.borrow().high_watermark;
    let target = data.high_watermark.min(own_high_watermark);
    let mut log = handle.log.write().await.expect("partition lock");
    if log.log_end_offset() > target {
        tracing::info!(topic, partition, from = log.log_end_offset(), to = target, "truncating to the high watermark");
        handle.truncate_to(&mut log, target).await.map_err(|e| e.to_string())?;
    }
    Ok(true)
}

async fn fetch(follower: Follower<'_>, stream: &mut TcpStream, fetch_offset: i64, log_start_offset: i64, correlation_id: i32) -> Result<FetchResponse, String> {
    let Follower { topic, partition, me, leader_epoch, .. } = follower;
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(me))
        .with_max_wait_ms(FETCH_MAX_WAIT_MS)
        .with_min_bytes(1)
        .with_max_bytes(PARTITION_MAX_BYTES)
        .with_topics(vec![FetchTopic::default().with_topic(TopicName(StrBytes::from_string(topic.to_string()))).with_partitions(vec![
            FetchPartition::default()
                .with_partition(partition)
                .with_current_leader_epoch(leader_epoch)
                .with_fetch_offset(fetch_offset)
                .with_log_start_offset(log_start_offset)
                .with_partition_max_bytes(PARTITION_MAX_BYTES),
        ])]);
    round_trip(stream, ApiKey::Fetch, FETCH_VERSION, correlation_id, me, &request).await
}

/// One Fetch round trip from this log's end, appending what the leader sends. Ok(false): the
/// leader answered with a partition error (retry later).
async fn fetch_once(follower: Follower<'_>, stream: &mut TcpStream, correlation_id: i32) -> Result<bool, String> {
    let Follower { shard, topic, partition, stop, .. } = follower;
    let handle = shard.partitions.replica(topic, partition).await.map_err(|e| format!("{e:?}"))?;
    let (log_end_offset, log_start_offset) = {
        let log = handle.log.read().await.expect("partition lock");
        (log.log_end_offset(), log.log_start_offset())
    };
    let response = fetch(follower, stream, log_end_offset, log_start_offset, correlation_id).await?;
    let Some(data) = response.responses.iter().flat_map(|t| t.partitions.iter()).find(|p| p.partition_index == partition) else {
        return Err("the response lacks the partition".into());
    };
    if data.error_code != 0 {
        let error = ResponseError::try_from_code(data.error_code);
        tracing::debug!(topic, partition, ?error, "the leader refused a replica fetch");
        return Ok(false);
    }
    if stop.get() {
        // Replaced while this fetch was in flight: the new fetcher appends from here on, and
        // this answer may repeat what it appended already.
        return Ok(false);
    }
    if let Some(records) = data.records.as_ref().filter(|r| !r.is_empty()) {
        handle.append(records, AppendOrigin::Replication).await.map_err(|e| e.to_string())?;
    }
    handle.follow_high_watermark(data.high_watermark);
    if data.log_start_offset > log_start_offset {
        // DeleteRecords on the leader: ours follows (and says so in our next fetch).
        handle.follow_log_start_offset(data.log_start_offset).await.map_err(|e| e.to_string())?;
    }
    Ok(true)
}

