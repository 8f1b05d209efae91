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
//!
//! Topic ids (KIP-516, Fetch v13+): the request names topics by id, resolved to names once per
//! request (`BrokerState::topic_ids`); an unknown id is answered UNKNOWN_TOPIC_ID per partition,
//! and a session's partition whose topic name now has another id (deleted and created again)
//! INCONSISTENT_TOPIC_ID, never read. v15 moves the replica id into `replica_state`; v16 adds
//! KIP-951's `current_leader` and the leaders' `node_endpoints` beside NOT_LEADER_OR_FOLLOWER
//! (cluster mode: the ZooKeeper snapshot's leader on the fetch's listener); v17's replica
//! directory id (KIP-853, KRaft) is not used. Our own replica fetcher still fetches by name
//! (v11, `replication/follower.rs`).

use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::FetchRequest;
use kafka_protocol::ResponseError;
use shard::notify::Notify;

use super::fetch_framing::{NodeEndpoint, PartitionFrame, Records, RecordsLength, SessionFields, TopicFrame};
use crate::fetch_session::{Answered, FetchContext, FetchParams, FetchSessionCache, SessionKey, TopicRef, Wanted, FINAL_EPOCH, INVALID_SESSION_ID};
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
    /// KIP-951 (v16+): the leader and its epoch, beside NOT_LEADER_OR_FOLLOWER.
    current_leader: Option<(i32, i32)>,
    records: Vec<Records>,
}

impl Fetched {
    /// What a fetch session keeps of this answer.
    fn answered(&self) -> Answered {
        Answered {
            error_code: self.error_code,
            high_watermark: self.high_watermark,
            last_stable_offset: self.last_stable_offset,
            log_start_offset: self.log_start_offset,
            has_records: self.records.iter().any(|r| r.length_bytes() > 0),
        }
    }

    fn failed(error_code: i16, high_watermark: i64, log_start_offset: i64) -> Fetched {
        Fetched {
            error_code,
            high_watermark,
            last_stable_offset: -1,
            log_start_offset,
            aborted_transactions: None,
            current_leader: None,
            records: Vec::new(),
        }
    }
}

/// What the connection frames: the session fields and the topics (framed by `fetch_framing`:
/// records are not encoded by kafka-protocol).
pub struct FetchAnswer {
    pub session: SessionFields,
    pub topics: Vec<TopicFrame<Records>>,
    /// KIP-951 (v16+): the addresses of the leaders named in `current_leader`s.
    pub node_endpoints: Vec<NodeEndpoint>,
}

/// `may_splice`: false on a TLS connection, whose bytes must pass through the encryption.
///
/// Sessions (KIP-227, `fetch_session`): the request's session id and epoch pick how it is
/// served. A full fetch reads the partitions it names and may open a session on this shard (the
/// connection's); an incremental one reads all of its session's partitions, with the offsets
/// the session holds, and answers only those with something new. Either way the reads, the long
/// poll and the zero-copy record path are the ones below.
pub async fn handle(shard: &Rc<Shard>, request: FetchRequest, version: i16, may_splice: bool, session: &Session) -> FetchAnswer {
    // A follower broker's fetch (replica id >= 0) reads up to the log end and reports its own;
    // its session is privileged (evicted only by another follower's, or when stale).
    let replica_id = if version >= 15 { request.replica_state.replica_id.0 } else { request.replica_id.0 };
    let uses_topic_ids = version >= 13;
    let topic_ref = |name: &kafka_protocol::messages::TopicName, id: &uuid::Uuid| {
        if uses_topic_ids {
            TopicRef::Id(*id.as_bytes())
        } else {
            TopicRef::Name(name.0.to_string())
        }
    };
    // v13+: the request's ids resolved to names once, in one pass over the topics.
    let names = if uses_topic_ids {
        shard.broker.topic_ids().names_of(&request.topics.iter().map(|t| *t.topic_id.as_bytes()).collect())
    } else {
        HashMap::new()
    };
    let requested: Vec<Wanted> = request
        .topics
        .iter()
        .flat_map(|t| {
            let topic = topic_ref(&t.topic, &t.topic_id);
            let name = match &topic {
                TopicRef::Name(name) => Some(name.clone()),
                TopicRef::Id(id) => names.get(id).cloned(),
            };
            t.partitions.iter().map(move |p| Wanted {
                key: (topic.clone(), p.partition),
                topic: name.clone(),
                params: FetchParams { fetch_offset: p.fetch_offset, max_bytes: p.partition_max_bytes.max(0) as u64, log_start_offset: p.log_start_offset },
            })
        })
        .collect();
    // Fetch v4-v6 have no session fields: sessionless, as Kafka's `FetchMetadata.LEGACY`.
    let (session_id, epoch) = if version >= 7 { (request.session_id, request.session_epoch) } else { (INVALID_SESSION_ID, FINAL_EPOCH) };
    let forgotten: Vec<SessionKey> = request
        .forgotten_topics_data
        .iter()
        .flat_map(|t| {
            let topic = topic_ref(&t.topic, &t.topic_id);
            t.partitions.iter().map(move |p| (topic.clone(), *p))
        })
        .collect();
    let now_ms = crate::clock::now_ms();
    let context = shard.fetch_sessions.new_context(session_id, epoch, uses_topic_ids, &requested, &forgotten, now_ms);
    if matches!(context, FetchContext::Full | FetchContext::Sessionless) && session_id != INVALID_SESSION_ID {
        close_elsewhere(shard, session_id);
    }
    let wanted = match &context {
        FetchContext::Error(error_code) => {
            return FetchAnswer {
                session: SessionFields { error_code: *error_code, session_id: INVALID_SESSION_ID },
                topics: Vec::new(),
                node_endpoints: Vec::new(),
            }
        }
        FetchContext::Incremental(session) => {
            let mut held = session.borrow_mut();
            let unresolved = held.unresolved_ids();
            if !unresolved.is_empty() {
                held.resolve(&shard.broker.topic_ids().names_of(&unresolved));
            }
            held.wanted()
        }
        FetchContext::Full | FetchContext::Sessionless => requested,
    };
    // Names just resolved from this request's ids are consistent by construction; those a
    // session kept from earlier fetches are checked against the topics' current ids.
    let from_session = matches!(context, FetchContext::Incremental(_));
    let early = answered_unread(shard, &wanted, replica_id, session, from_session);
    let mut results = read_all(shard, &request, version, replica_id, may_splice, &wanted, &early).await;
    let node_endpoints = if version >= 16 { current_leaders(shard, session, &wanted, &mut results) } else { Vec::new() };
    let answered = || wanted.iter().zip(&results).map(|(wanted, fetched)| (wanted.key.clone(), fetched.answered()));
    let (session, include) = match context {
        FetchContext::Error(_) => unreachable!("answered above"),
        FetchContext::Sessionless => (SessionFields::default(), None),
        FetchContext::Full => {
            let created: Vec<_> = wanted.iter().cloned().zip(answered().map(|(_, answer)| answer)).collect();
            let session_id = shard.fetch_sessions.maybe_create_session(replica_id >= 0, uses_topic_ids, crate::clock::now_ms(), &created);
            (SessionFields { error_code: 0, session_id }, None)
        }
        FetchContext::Incremental(session) => {
            let answered: Vec<_> = answered().collect();
            let include = session.borrow_mut().answer(&answered);
            crate::metrics::incremental_fetch_answered(include.iter().filter(|i| **i).count());
            let session_id = session.borrow().id;
            (SessionFields { error_code: 0, session_id }, Some(include))
        }
    };
    FetchAnswer { session, topics: frames(&wanted, results, include.as_deref()), node_endpoints }
}

/// The partitions answered without being read, and their errors (Kafka's `erroneous` in
/// `KafkaApis.handleFetchRequest`): a follower's fetch needs CLUSTER_ACTION, a consumer's READ on
/// each topic; a topic id this broker does not know is UNKNOWN_TOPIC_ID; a session's partition
/// whose topic name has another id now is INCONSISTENT_TOPIC_ID (Kafka's
/// `ReplicaManager.readFromLog` check), so a topic deleted and created again under its name is
/// not served from the session of the old one (`from_session`: the names were kept by a
/// session, not resolved for this request). None: read it.
fn answered_unread(shard: &Shard, wanted: &[Wanted], replica_id: i32, session: &Session, from_session: bool) -> Vec<Option<i16>> {
    let follower_allowed = replica_id < 0 || session.authorize_cluster(Operation::ClusterAction);
    let by_id = from_session && wanted.iter().any(|w| matches!(w.key.0, TopicRef::Id(_)));
    let ids = by_id.then(|| shard.broker.topic_ids());
    // Partitions of one topic come together: its checks are made once.
    let mut last: Option<(&TopicRef, Option<i16>)> = None;
    wanted
        .iter()
        .map(|w| {
            if let Some((_, error)) = last.filter(|(topic, _)| *topic == &w.key.0) {
                return error;
            }
            let error = if !follower_allowed {
                Some(ResponseError::TopicAuthorizationFailed.code())
            } else {
                match (&w.topic, &w.key.0) {
                    (None, _) => Some(ResponseError::UnknownTopicId.code()),
                    (Some(name), _) if replica_id < 0 && !session.authorize(Operation::Read, ResourceType::Topic, name) => {
                        Some(ResponseError::TopicAuthorizationFailed.code())
                    }
                    // A name no topic has now is answered by the read (UNKNOWN_TOPIC_OR_PARTITION).
                    (Some(name), TopicRef::Id(id)) => match ids.as_ref().and_then(|ids| ids.id_of(name)) {
                        Some(current) if current != *id => Some(ResponseError::InconsistentTopicId.code()),
                        _ => None,
                    },
                    (Some(_), TopicRef::Name(_)) => None,
                }
            };
            last = Some((&w.key.0, error));
            error
        })
        .collect()
}

/// KIP-951 (Fetch v16+): beside NOT_LEADER_OR_FOLLOWER or FENCED_LEADER_EPOCH, the partition's
/// leader and leader epoch as the ZooKeeper snapshot has them, and that leader's address on the
/// fetch's listener, so the client goes there without a Metadata round first. Standalone there is
/// no other leader to name.
fn current_leaders(shard: &Shard, session: &Session, wanted: &[Wanted], results: &mut [Fetched]) -> Vec<NodeEndpoint> {
    let Some(cluster) = &shard.broker.cluster else { return Vec::new() };
    let moved = [ResponseError::NotLeaderOrFollower.code(), ResponseError::FencedLeaderEpoch.code()];
    if !results.iter().any(|r| moved.contains(&r.error_code)) {
        return Vec::new();
    }
    let snapshot = cluster.view.snapshot();
    let listener = &shard.broker.security.listeners[session.listener].listener.name;
    let mut endpoints: Vec<NodeEndpoint> = Vec::new();
    for (w, fetched) in wanted.iter().zip(results.iter_mut()).filter(|(_, r)| moved.contains(&r.error_code)) {
        let Some(state) = w.topic.as_deref().and_then(|topic| snapshot.state(topic, w.key.1)).filter(|s| s.leader >= 0) else {
            continue;
        };
        fetched.current_leader = Some((state.leader, state.leader_epoch));
        if endpoints.iter().any(|e| e.node_id == state.leader) {
            continue;
        }
        let Some(broker) = snapshot.brokers.get(&state.leader) else { continue };
        if let Some(endpoint) = broker.endpoint(listener) {
            endpoints.push(NodeEndpoint { node_id: state.leader, host: endpoint.host.clone(), port: endpoint.port as i32, rack: broker.rack.clone() });
        }
    }
    endpoints
}

/// A full fetch closes the session it names (Kafka's `newContext`): one this shard does not
/// hold may belong to another shard (the fetcher's connection was replaced and landed here);
/// the shard that handed the id out drops it, so it does not hold a slot until it goes stale.
fn close_elsewhere(shard: &Rc<Shard>, session_id: i32) {
    let Some(owner) = FetchSessionCache::shard_of(session_id, shard.router.shard_count()).filter(|owner| *owner != shard.id()) else {
        return;
    };
    let router = shard.router.clone();
    glommio::spawn_local(async move {
        router.call(owner, move |owner| async move { owner.fetch_sessions.remove(session_id) }).await;
    })
    .detach();
}

/// Reads every wanted partition on its owner within the response's byte budget; when fewer than
/// `min_bytes` are ready, waits (long poll) until an owner appends or `max_wait_ms` passes.
/// `early[i]`: `wanted[i]` is answered with this error and not read (`answered_unread`; not an
/// error that ends the wait: the other partitions wait, as Kafka's do).
async fn read_all(
    shard: &Rc<Shard>,
    request: &FetchRequest,
    version: i16,
    replica_id: i32,
    may_splice: bool,
    wanted: &[Wanted],
    early: &[Option<i16>],
) -> Vec<Fetched> {
    let zero_copy = shard.splice_sender.is_some() && may_splice;
    let deadline = Instant::now() + Duration::from_millis((request.max_wait_ms.max(0) as u64).min(MAX_WAIT_LIMIT_MS));
    let min_bytes = request.min_bytes.max(0) as u64;
    let max_bytes = if version >= 3 { request.max_bytes.max(0) as u64 } else { u64::MAX };
    let consumer_bound = if version >= 4 && request.isolation_level == READ_COMMITTED { ReadBound::LastStable } else { ReadBound::HighWatermark };
    // The partitions read: (index in `wanted`, topic name, partition, what to fetch).
    let reads: Vec<(usize, &str, i32, FetchParams)> = wanted
        .iter()
        .enumerate()
        .filter(|(index, _)| early[*index].is_none())
        .map(|(index, w)| (index, w.topic.as_deref().expect("a partition read has a topic name"), w.key.1, w.params))
        .collect();
    // One call per owning shard carrying all of its partitions, not one per partition: a
    // cross-shard call costs a wake-up of the other core (tens of microseconds here), and an idle
    // fetcher following 3,000 partitions paid it 1,500 times per fetch. Owners are visited in
    // the order of their first partition in `wanted`, each reading its partitions in `wanted`
    // order, so the byte budget is spent in that order within an owner; the answer keeps
    // `wanted` order.
    let mut by_owner: Vec<(usize, Vec<usize>)> = Vec::new();
    for (at, (_, topic, partition, _)) in reads.iter().enumerate() {
        let owner = shard.owner_of(topic, *partition);
        match by_owner.iter_mut().find(|(o, _)| *o == owner) {
            Some((_, ats)) => ats.push(at),
            None => by_owner.push((owner, vec![at])),
        }
    }
    loop {
        let mut results: Vec<Option<Fetched>> = early.iter().map(|error| error.map(|code| Fetched::failed(code, -1, -1))).collect();
        let mut total = 0u64;
        let mut any_error = false;
        for (owner, ats) in &by_owner {
            let asked: Vec<(usize, String, i32, FetchParams)> =
                ats.iter().map(|&at| (reads[at].0, reads[at].1.to_string(), reads[at].2, reads[at].3)).collect();
            let read_before = total;
            let fetched = shard
                .router
                .call(*owner, move |owner| async move {
                    let mut total = read_before;
                    let mut fetched = Vec::with_capacity(asked.len());
                    for (index, topic, partition, params) in asked {
                        let budget = params.max_bytes.min(max_bytes.saturating_sub(total));
                        let replica = (replica_id >= 0).then_some((replica_id, params.log_start_offset));
                        let one = read(&owner, &topic, partition, params.fetch_offset, budget, total == 0, zero_copy, replica, consumer_bound, version).await;
                        total += one.records.iter().map(RecordsLength::length_bytes).sum::<u64>();
                        fetched.push((index, one));
                    }
                    fetched
                })
                .await;
            for (index, one) in fetched {
                total += one.records.iter().map(RecordsLength::length_bytes).sum::<u64>();
                any_error |= one.error_code != 0;
                results[index] = Some(one);
            }
        }
        let results: Vec<Fetched> = results.into_iter().map(|r| r.expect("every partition read")).collect();
        let now = Instant::now();
        // No partitions to read (a consumer closing its fetch session sends such a fetch and
        // waits for the answer: Kafka Connect's stores pay it at every stop): answered at once,
        // as Kafka's ReplicaManager.fetchMessages does, not after max_wait_ms.
        if reads.is_empty() || total >= min_bytes || any_error || now >= deadline || shard.broker.is_shutting_down() {
            return results;
        }
        let bound = if replica_id >= 0 { ReadBound::LogEnd } else { consumer_bound };
        let positions = reads.iter().map(|&(_, topic, partition, params)| (topic, partition, params.fetch_offset));
        wait_for_appends(shard, positions, deadline - now, bound).await;
    }
}

/// The answer's topics: the partitions read (those `include` keeps, for an incremental fetch),
/// one topic entry per run of the same topic, as Kafka's `FetchResponse.toMessage`.
fn frames(wanted: &[Wanted], results: Vec<Fetched>, include: Option<&[bool]>) -> Vec<TopicFrame<Records>> {
    assert_eq!(wanted.len(), results.len(), "one result per partition");
    let mut topics: Vec<(&TopicRef, TopicFrame<Records>)> = Vec::new();
    for (i, (w, fetched)) in wanted.iter().zip(results).enumerate() {
        if include.is_some_and(|include| !include[i]) {
            continue;
        }
        let frame = PartitionFrame {
            partition_index: w.key.1,
            error_code: fetched.error_code,
            high_watermark: fetched.high_watermark,
            last_stable_offset: fetched.last_stable_offset,
            log_start_offset: fetched.log_start_offset,
            aborted_transactions: fetched.aborted_transactions,
            current_leader: fetched.current_leader,
            records: fetched.records,
        };
        match topics.last_mut() {
            Some((topic, last)) if *topic == &w.key.0 => last.partitions.push(frame),
            _ => {
                // v4-v12 answer by name, v13+ by id: the other field is not encoded.
                let (name, topic_id) = match &w.key.0 {
                    TopicRef::Name(name) => (Bytes::copy_from_slice(name.as_bytes()), [0; 16]),
                    TopicRef::Id(id) => (Bytes::new(), *id),
                };
                topics.push((&w.key.0, TopicFrame { name, topic_id, partitions: vec![frame] }));
            }
        }
    }
    topics.into_iter().map(|(_, frame)| frame).collect()
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
        current_leader: None,
        records,
    }
}

/// Returns when an owner of one of the partitions (topic, partition, fetch offset) has data past
/// the fetch offset, or after `wait`.
async fn wait_for_appends<'a>(shard: &Rc<Shard>, positions: impl Iterator<Item = (&'a str, i32, i64)>, wait: Duration, bound: ReadBound) {
    let mut by_owner: std::collections::BTreeMap<usize, Vec<(String, i32, i64)>> = Default::default();
    for (topic, partition, fetch_offset) in positions {
        by_owner.entry(shard.owner_of(topic, partition)).or_default().push((topic.to_string(), partition, fetch_offset));
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
