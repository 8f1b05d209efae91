//! Fetch: each partition is located on its owning shard, within the response's byte budget; when
//! fewer than `min_bytes` are ready the request waits (long poll) until an owner appends or
//! `max_wait_ms` passes. The owner answers with where the batches lie (file regions, kept alive
//! against segment deletion) and the connection's shard splices them to the socket, so no payload
//! byte is read or copied across shards. With `fetch.zero.copy=false` (or no splice ring on the
//! connection's shard) the owner reads the bytes instead: the copy path, kept to compare.
//!
//! Isolation (KIP-98): a read_committed fetch (isolation_level 1) reads up to the last stable
//! offset and gets the aborted transactions overlapping its records; every answer carries the
//! last stable offset, as Kafka's.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::FetchRequest;
use shard::notify::Notify;

use super::fetch_framing::{PartitionFrame, Records, RecordsLength, TopicFrame};
use super::{partition_error_code, storage_error_code};
use crate::partition::{PartitionError, ReadBound};
use crate::replication::leader;
use crate::security::acl::model::{Operation, ResourceType};
use crate::security::session::Session;
use crate::shard_context::Shard;

/// Upper bound on how long a fetch may wait, whatever the client asks.
const MAX_WAIT_LIMIT_MS: u64 = 30_000;
/// FetchRequest's isolation_level for read_committed.
const READ_COMMITTED: i8 = 1;

struct Fetched {
    error_code: i16,
    high_watermark: i64,
    last_stable_offset: i64,
    log_start_offset: i64,
    aborted_transactions: Option<Vec<(i64, i64)>>,
    records: Vec<Records>,
}

impl Fetched {
    fn failed(error_code: i16, high_watermark: i64, log_start_offset: i64) -> Fetched {
        Fetched { error_code, high_watermark, last_stable_offset: -1, log_start_offset, aborted_transactions: None, records: Vec::new() }
    }
}

/// The response's topics, framed by `fetch_framing` (records are not encoded by kafka-protocol).
/// `may_splice`: false on a TLS connection, whose bytes must pass through the encryption.
pub async fn handle(shard: &Rc<Shard>, request: FetchRequest, version: i16, may_splice: bool, session: &Session) -> Vec<TopicFrame<Records>> {
    let zero_copy = shard.splice_sender.is_some() && may_splice;
    let deadline = Instant::now() + Duration::from_millis((request.max_wait_ms.max(0) as u64).min(MAX_WAIT_LIMIT_MS));
    let min_bytes = request.min_bytes.max(0) as u64;
    let max_bytes = if version >= 3 { request.max_bytes.max(0) as u64 } else { u64::MAX };
    // A follower broker's fetch (replica id >= 0) reads up to the log end and reports its own.
    let replica_id = request.replica_id.0;
    let consumer_bound = if version >= 4 && request.isolation_level == READ_COMMITTED { ReadBound::LastStable } else { ReadBound::HighWatermark };
    // (topic, partition, fetch offset, max bytes, the fetching replica's log start offset)
    let wanted: Vec<(String, i32, i64, u64, i64)> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.topic.0.to_string(), p.partition, p.fetch_offset, p.partition_max_bytes.max(0) as u64, p.log_start_offset))
        })
        .collect();
    // Kafka: a follower's fetch needs CLUSTER_ACTION, a consumer's READ on each topic.
    let follower_allowed = replica_id < 0 || session.authorize_cluster(Operation::ClusterAction);
    let denied: Vec<bool> =
        wanted.iter().map(|(topic, ..)| !follower_allowed || (replica_id < 0 && !session.authorize(Operation::Read, ResourceType::Topic, topic))).collect();
    loop {
        let mut results = Vec::with_capacity(wanted.len());
        let mut total = 0u64;
        let mut any_error = false;
        for ((topic, partition, offset, partition_max_bytes, replica_log_start_offset), denied) in wanted.iter().zip(&denied) {
            if *denied {
                // Not an error that ends the wait: the other partitions wait as Kafka's do.
                results.push(Fetched::failed(kafka_protocol::ResponseError::TopicAuthorizationFailed.code(), -1, -1));
                continue;
            }
            let budget = (*partition_max_bytes).min(max_bytes.saturating_sub(total));
            let min_one_batch = total == 0;
            let owner = shard.owner_of(topic, *partition);
            let (topic, partition, offset, replica_log_start_offset) = (topic.clone(), *partition, *offset, *replica_log_start_offset);
            let fetched = shard
                .router
                .call(owner, move |owner| async move {
                    let replica = (replica_id >= 0).then_some((replica_id, replica_log_start_offset));
                    read(&owner, &topic, partition, offset, budget, min_one_batch, zero_copy, replica, consumer_bound, version).await
                })
                .await;
            total += fetched.records.iter().map(RecordsLength::length_bytes).sum::<u64>();
            any_error |= fetched.error_code != 0;
            results.push(fetched);
        }
        let now = Instant::now();
        // No partitions (a consumer closing its fetch session sends such a fetch and waits for
        // the answer: Kafka Connect's stores pay it at every stop): answered at once, as Kafka's
        // ReplicaManager.fetchMessages does, not after max_wait_ms.
        if wanted.is_empty() || denied.iter().all(|d| *d) || total >= min_bytes || any_error || now >= deadline || shard.broker.is_shutting_down() {
            return response(&request, results);
        }
        let bound = if replica_id >= 0 { ReadBound::LogEnd } else { consumer_bound };
        wait_for_appends(shard, &wanted, deadline - now, bound).await;
    }
}

fn response(request: &FetchRequest, results: Vec<Fetched>) -> Vec<TopicFrame<Records>> {
    let mut results = results.into_iter();
    request
        .topics
        .iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let fetched = results.next().expect("one result per partition");
                    PartitionFrame {
                        partition_index: p.partition,
                        error_code: fetched.error_code,
                        high_watermark: fetched.high_watermark,
                        last_stable_offset: fetched.last_stable_offset,
                        log_start_offset: fetched.log_start_offset,
                        aborted_transactions: fetched.aborted_transactions,
                        records: fetched.records,
                    }
                })
                .collect();
            TopicFrame { name: topic.topic.0.clone().into_bytes(), partitions }
        })
        .collect()
}

/// Runs on the owning shard.
#[allow(clippy::too_many_arguments)]
async fn read(
    shard: &Shard,
    topic: &str,
    partition: i32,
    offset: i64,
    budget: u64,
    min_one_batch: bool,
    zero_copy: bool,
    // A follower broker's fetch: its id and log start offset.
    replica: Option<(i32, i64)>,
    // A consumer's: the high watermark (read_uncommitted) or the last stable offset.
    consumer_bound: ReadBound,
    version: i16,
) -> Fetched {
    let found = match shard.partition(topic, partition).await {
        // Kafka serves consumers' Fetch v11+ (which carry client metadata, KIP-392) from any
        // replica, up to that replica's high watermark; older versions and followers only from
        // the leader.
        Err(PartitionError::NotLeaderOrFollower) if version >= 11 && replica.is_none() && shard.broker.holds_replica(topic, partition) => {
            shard.partitions.replica(topic, partition).await
        }
        found => found,
    };
    let handle = match found {
        Ok(p) => p,
        Err(e) => return Fetched::failed(partition_error_code(&e), -1, -1),
    };
    // A follower reads up to the log end, once the leader has taken note of its fetch.
    let followed = match replica {
        Some((replica_id, replica_log_start_offset)) => leader::on_follower_fetch(shard, &handle, replica_id, offset, replica_log_start_offset).await,
        None => false,
    };
    let bound = if followed {
        ReadBound::LogEnd
    } else {
        consumer_bound
    };
    let read = match handle.read(offset, budget, min_one_batch, bound).await {
        Ok(read) => read,
        Err((e, high_watermark, log_start_offset)) => return Fetched::failed(storage_error_code(&e), high_watermark, log_start_offset),
    };
    let mut records = Vec::with_capacity(read.slices.len());
    for slice in &read.slices {
        // Out of descriptors for the duplicate a region needs: this slice goes by copy instead.
        let region = if zero_copy { slice.region().map_err(|e| warn_descriptors_exhausted(&e)).ok() } else { None };
        if let Some(region) = region {
            records.push(Records::InFile(region));
        } else {
            match slice.read_bytes().await {
                Ok(bytes) => records.push(Records::InMemory(Bytes::from(bytes))),
                Err(e) => return Fetched::failed(storage_error_code(&e), read.high_watermark, read.log_start_offset),
            }
        }
    }
    crate::metrics::fetched(topic, &read.slices, zero_copy);
    Fetched {
        error_code: 0,
        high_watermark: read.high_watermark,
        last_stable_offset: read.last_stable_offset,
        log_start_offset: read.log_start_offset,
        aborted_transactions: read.aborted_txns.map(|list| list.iter().map(|t| (t.producer_id, t.first_offset)).collect()),
        records,
    }
}

/// Returns when an owner of one of the partitions has data past the fetch offset, or after `wait`.
async fn wait_for_appends(shard: &Rc<Shard>, wanted: &[(String, i32, i64, u64, i64)], wait: Duration, bound: ReadBound) {
    let mut by_owner: std::collections::BTreeMap<usize, Vec<(String, i32, i64)>> = Default::default();
    for (topic, partition, offset, _, _) in wanted {
        by_owner.entry(shard.owner_of(topic, *partition)).or_default().push((topic.clone(), *partition, *offset));
    }
    let woken = Rc::new(Notify::default());
    let ticket = woken.ticket();
    for (owner, positions) in by_owner {
        let (router, woken) = (shard.router.clone(), woken.clone());
        glommio::spawn_local(async move {
            router.call(owner, move |owner| async move { wait_on_owner(&owner, positions, wait, bound).await }).await;
            woken.notify_all();
        })
        .detach();
    }
    Notify::wait(ticket, wait).await;
}

/// Runs on the owning shard: waits for an append (or a high watermark or last stable offset
/// that moved: a marker is an append) unless one of the partitions already has data up to `bound`
/// (the high watermark or last stable offset for consumers, the log end for followers).
async fn wait_on_owner(shard: &Shard, positions: Vec<(String, i32, i64)>, wait: Duration, bound: ReadBound) {
    let ticket = shard.partitions.appended.ticket();
    for (topic, partition, offset) in &positions {
        if let Some(handle) = shard.partitions.if_open(topic, *partition) {
            if handle.readable_end(bound).await > *offset {
                return;
            }
        }
    }
    Notify::wait(ticket, wait).await;
}

/// Fetch v0-v3 (before KIP-98) carry message sets v0/v1, and we store only RecordBatch v2.
/// Kafka with `message.downconversion.enable=false` answers such fetches with UNSUPPORTED_VERSION
/// per partition; so do we. Hand-written: kafka-protocol 0.18 has no schema before v4. Returns
/// `Close` for a frame that does not parse.
pub fn answer_pre_v4(mut body: Bytes, version: i16, correlation_id: i32) -> super::Outcome {
    use bytes::{Buf, BufMut, BytesMut};
    fn take_string(body: &mut Bytes) -> Option<Bytes> {
        if body.remaining() < 2 {
            return None;
        }
        let length = body.get_i16();
        if length < 0 || body.remaining() < length as usize {
            return None;
        }
        Some(body.split_to(length as usize))
    }
    let fixed_bytes = if version >= 3 { 16 } else { 12 }; // replica, max wait, min bytes[, max bytes]
    let mut topics: Vec<(Bytes, Vec<i32>)> = Vec::new();
    let parsed = (|| {
        if body.remaining() < fixed_bytes + 4 {
            return None;
        }
        body.advance(fixed_bytes);
        let topic_count = body.get_i32();
        for _ in 0..topic_count.max(0) {
            let name = take_string(&mut body)?;
            if body.remaining() < 4 {
                return None;
            }
            let partition_count = body.get_i32();
            let mut partitions = Vec::new();
            for _ in 0..partition_count.max(0) {
                if body.remaining() < 16 {
                    return None; // partition i32, fetch offset i64, partition max bytes i32
                }
                partitions.push(body.get_i32());
                body.advance(12);
            }
            topics.push((name, partitions));
        }
        Some(())
    })();
    if parsed.is_none() {
        return super::Outcome::Close(format!("bad Fetch v{version} request"));
    }
    let mut response = BytesMut::new();
    response.put_i32(0); // length, filled in below
    response.put_i32(correlation_id);
    if version >= 1 {
        response.put_i32(0); // throttle_time_ms
    }
    response.put_i32(topics.len() as i32);
    for (name, partitions) in topics {
        response.put_i16(name.len() as i16);
        response.put_slice(&name);
        response.put_i32(partitions.len() as i32);
        for partition in partitions {
            response.put_i32(partition);
            response.put_i16(kafka_protocol::ResponseError::UnsupportedVersion.code());
            response.put_i64(-1); // high watermark
            response.put_i32(0); // no records
        }
    }
    super::respond_with_length(response)
}

/// Once a minute at most: running out of descriptors is an operator's problem (raise
/// `ulimit -n`), not a per-request one.
fn warn_descriptors_exhausted(error: &storage::StorageError) {
    static LAST_WARNED_MS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(i64::MIN);
    let now_ms = crate::clock::now_ms();
    let last_ms = LAST_WARNED_MS.load(std::sync::atomic::Ordering::Relaxed);
    if now_ms.saturating_sub(last_ms) >= 60_000
        && LAST_WARNED_MS.compare_exchange(last_ms, now_ms, std::sync::atomic::Ordering::Relaxed, std::sync::atomic::Ordering::Relaxed).is_ok()
    {
        tracing::warn!(%error, "descriptor budget exhausted: fetches fall back to copying (raise the process's RLIMIT_NOFILE)");
    }
}
