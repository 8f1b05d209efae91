//! Fetch sessions (KIP-227), as Kafka 3.9's `FetchSession.scala`: a fetcher that follows many
//! partitions sends them once (a full fetch, epoch 0), the broker keeps them in a session, and
//! later fetches (incremental, epoch 1, 2, ...) carry only the partitions whose fetch position
//! changed plus those to forget; the answer carries only partitions with new records, a changed
//! high watermark or log start offset, or an error.
//!
//! Where a session lives: in the cache of the shard whose connection the fetch arrived on (one
//! `FetchSessionCache` per shard, in `Shard`). A fetcher keeps one connection per broker and sends
//! every fetch of its session on it, so its session is always found on that shard, read and
//! written by that shard's thread alone: no lock, no sharing across cores. Kafka 3.9 shards its
//! cache too (`FetchSessionCacheShard`, KAFKA-9401) with the same split of the id space: shard k
//! of n hands out ids in [max(1, k * (i32::MAX / n)), (k + 1) * (i32::MAX / n)), so an id is
//! unique on the broker and names its shard. A fetcher whose connection is replaced and lands on
//! another shard is answered FETCH_SESSION_ID_NOT_FOUND there and starts a new session with a
//! full fetch, as after any session error (the old one is removed through the router, or ages out).
//!
//! Slots (`max.incremental.fetch.session.cache.slots`, 0 disables sessions) are divided among
//! the shards as Kafka divides them among its cache shards (rounded down). When the cache is
//! full, a new session may evict, as Kafka's `tryEvict`: the least recently used session if idle
//! for more than `EVICTION_MS`; else the least valuable evictable one if it is worth less than the
//! new one (followers' sessions are privileged, then more partitions is worth more); a session
//! is evictable by consumers only once it has lived `EVICTION_MS`. No slot: the fetch is answered
//! with session id 0 and the fetcher goes on with full fetches.
//!
//! Topic ids (KIP-516, Fetch v13+): a session made by a v13+ fetch names its partitions by topic
//! id, one made by an older fetch by name, and a fetch of the other kind is refused
//! (FETCH_SESSION_TOPIC_ID_ERROR), as Kafka's `FetchManager.newContext`. A cached partition keeps
//! the topic name its id resolved to when first seen (an id not known then is resolved again at
//! each fetch, Kafka's `maybeResolveUnknownName`); the handler checks that name's current id, so
//! a topic deleted and created again under the same name is never served from the old session
//! (INCONSISTENT_TOPIC_ID, as Kafka's `ReplicaManager.readFromLog`).
//!
//! Bounds: sessions per shard (the slots), partitions per session (those of the fetches that built
//! it: a request's partitions are bounded by `socket.request.max.bytes`).

pub mod client;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::rc::Rc;

/// Kafka's `MIN_INCREMENTAL_FETCH_SESSION_EVICTION_MS`: a session is not evicted for being idle,
/// and not by a consumer for being small, before this.
pub const EVICTION_MS: i64 = 120_000;

/// FetchRequest's session ids and epochs (Kafka's `FetchMetadata`).
pub const INVALID_SESSION_ID: i32 = 0;
pub const INITIAL_EPOCH: i32 = 0;
pub const FINAL_EPOCH: i32 = -1;

const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
const INVALID_FETCH_SESSION_EPOCH: i16 = 71;
const FETCH_SESSION_TOPIC_ID_ERROR: i16 = 106;

/// The epoch after `epoch`: 1, 2, ... wrapping to 1, never 0 (full) or -1 (final).
pub fn next_epoch(epoch: i32) -> i32 {
    if epoch < 0 {
        FINAL_EPOCH
    } else if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

/// A partition by topic name: the replica fetcher's side of a session (`client`), which fetches
/// by name.
pub type PartitionKey = (String, i32);

/// A topic as a fetch names it: by name (Fetch v4-v12) or by id (v13+, KIP-516). Kafka's
/// `TopicIdPartition` with a zero or a non-zero id, whose equality is by id when it has one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TopicRef {
    Name(String),
    Id([u8; 16]),
}

/// A partition of a fetch, as the fetch names it: what a session is keyed by.
pub type SessionKey = (TopicRef, i32);

/// One partition a fetch reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    pub key: SessionKey,
    /// The topic's name: the key's own, or the one its id resolved to; None for an id this
    /// broker does not know (answered UNKNOWN_TOPIC_ID).
    pub topic: Option<String>,
    pub params: FetchParams,
}


/// What a fetcher asks of one partition: kept in its session between fetches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchParams {
    pub fetch_offset: i64,
    pub max_bytes: u64,
    /// The fetching replica's log start offset (a follower's; -1 for consumers).
    pub log_start_offset: i64,
}

/// What the last answer told the fetcher about a partition: an incremental answer leaves the
/// partition out while these stay the same and no records come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answered {
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    pub has_records: bool,
}

struct CachedPartition {
    /// The topic's name: for a partition keyed by id, the one the id resolved to (None: not yet).
    topic: Option<String>,
    params: FetchParams,
    /// -1 until answered, and after an error: the next answer always includes the partition.
    high_watermark: i64,
    last_stable_offset: i64,
    log_start_offset: i64,
    /// Position in `Session::order`.
    position: u64,
}

impl CachedPartition {
    /// Kafka's `maybeUpdateResponseData`: must the answer include the partition? Updates what
    /// the fetcher was told.
    fn must_respond(&mut self, answer: &Answered) -> bool {
        let mut respond = answer.has_records;
        if self.high_watermark != answer.high_watermark {
            respond = true;
            self.high_watermark = answer.high_watermark;
        }
        // Kafka does not compare the last stable offset (it moves only with a marker, which is
        // an append that moves the high watermark too); compared here all the same, as a
        // read_committed fetcher must learn it.
        if self.last_stable_offset != answer.last_stable_offset {
            respond = true;
            self.last_stable_offset = answer.last_stable_offset;
        }
        if self.log_start_offset != answer.log_start_offset {
            respond = true;
            self.log_start_offset = answer.log_start_offset;
        }
        if answer.error_code != 0 {
            self.high_watermark = -1;
            respond = true;
        }
        respond
    }
}

/// One fetcher's session.
pub struct Session {
    pub id: i32,
    /// A follower's (Kafka: privileged): evicted only by another follower's, or when stale.
    privileged: bool,
    /// Made by a Fetch v13+: its partitions are keyed by topic id, and only v13+ fetches may use it.
    uses_topic_ids: bool,
    created_ms: i64,
    last_used_ms: i64,
    /// The epoch the next fetch must carry.
    epoch: i32,
    partitions: HashMap<SessionKey, CachedPartition>,
    /// The order partitions are read in; a partition that got records moves to the end, so the
    /// response's byte budget goes round (Kafka's `ImplicitLinkedHashCollection` order).
    order: BTreeMap<u64, SessionKey>,
    next_position: u64,
}

impl Session {
    fn new(id: i32, privileged: bool, uses_topic_ids: bool, now_ms: i64) -> Session {
        Session {
            id,
            privileged,
            uses_topic_ids,
            created_ms: now_ms,
            last_used_ms: now_ms,
            epoch: next_epoch(INITIAL_EPOCH),
            partitions: HashMap::new(),
            order: BTreeMap::new(),
            next_position: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.partitions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.partitions.is_empty()
    }

    fn push(&mut self, wanted: &Wanted) {
        let position = self.next_position;
        self.next_position += 1;
        self.order.insert(position, wanted.key.clone());
        let cached = CachedPartition {
            topic: wanted.topic.clone(),
            params: wanted.params,
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
            position,
        };
        self.partitions.insert(wanted.key.clone(), cached);
    }

    /// Kafka's `FetchSession.update`: the request's partitions are added or take their new
    /// parameters; the forgotten ones leave. A cached partition keeps the topic name it was
    /// resolved to (Kafka's `updateRequestParams`), or takes one if it had none.
    fn update(&mut self, changed: &[Wanted], forgotten: &[SessionKey]) {
        for wanted in changed {
            match self.partitions.get_mut(&wanted.key) {
                Some(cached) => {
                    cached.params = wanted.params;
                    if cached.topic.is_none() {
                        cached.topic = wanted.topic.clone();
                    }
                }
                None => self.push(wanted),
            }
        }
        for key in forgotten {
            if let Some(cached) = self.partitions.remove(key) {
                self.order.remove(&cached.position);
            }
        }
        debug_assert_eq!(self.order.len(), self.partitions.len());
    }

    /// Every partition of the session with what to fetch, in reading order.
    pub fn wanted(&self) -> Vec<Wanted> {
        self.order
            .values()
            .map(|key| {
                let cached = &self.partitions[key];
                Wanted { key: key.clone(), topic: cached.topic.clone(), params: cached.params }
            })
            .collect()
    }

    /// The topic ids of partitions whose name is not known yet (their topic did not exist here
    /// when the session took them in).
    pub fn unresolved_ids(&self) -> std::collections::HashSet<[u8; 16]> {
        self.partitions
            .iter()
            .filter(|(_, cached)| cached.topic.is_none())
            .filter_map(|((topic, _), _)| if let TopicRef::Id(id) = topic { Some(*id) } else { None })
            .collect()
    }

    /// Names for the ids `unresolved_ids` gave (Kafka's `maybeResolveUnknownName`).
    pub fn resolve(&mut self, names: &HashMap<[u8; 16], String>) {
        for ((topic, _), cached) in self.partitions.iter_mut().filter(|(_, cached)| cached.topic.is_none()) {
            if let TopicRef::Id(id) = topic {
                cached.topic = names.get(id).cloned();
            }
        }
    }

    /// Kafka's `IncrementalFetchContext.updateAndGenerateResponseData`: for each partition read
    /// (in `wanted` order), whether the answer includes it; those that got records move to the
    /// end of the reading order.
    pub fn answer(&mut self, answered: &[(SessionKey, Answered)]) -> Vec<bool> {
        let mut include = Vec::with_capacity(answered.len());
        for (key, answer) in answered {
            let Some(cached) = self.partitions.get_mut(key) else {
                include.push(true);
                continue;
            };
            let respond = cached.must_respond(answer);
            if respond && answer.has_records {
                self.order.remove(&cached.position);
                cached.position = self.next_position;
                self.next_position += 1;
                self.order.insert(cached.position, key.clone());
            }
            include.push(respond);
        }
        include
    }
}

/// How a fetch is served, from its session id and epoch (Kafka's `FetchManager.newContext`).
pub enum FetchContext {
    /// No session: every partition asked, every one answered (kafka-python, Fetch v4-v6, epoch -1).
    Sessionless,
    /// Every partition asked and answered; a new session is made for them if a slot is found.
    Full,
    /// The session's partitions are read; the answer leaves out those with nothing new.
    Incremental(Rc<RefCell<Session>>),
    /// The answer is this error and no partitions (FETCH_SESSION_ID_NOT_FOUND,
    /// INVALID_FETCH_SESSION_EPOCH, FETCH_SESSION_TOPIC_ID_ERROR).
    Error(i16),
}

/// One shard's sessions.
pub struct FetchSessionCache {
    /// This shard's part of the slots.
    max_sessions: usize,
    /// Ids handed out here: [first_id, end_id).
    first_id: i32,
    end_id: i32,
    sessions: RefCell<HashMap<i32, Rc<RefCell<Session>>>>,
}

impl FetchSessionCache {
    pub fn new(slots: usize, shard: usize, shard_count: usize) -> FetchSessionCache {
        assert!(shard < shard_count, "shard {shard} of {shard_count}");
        let range = i32::MAX / shard_count as i32;
        FetchSessionCache {
            max_sessions: slots / shard_count,
            first_id: (shard as i32 * range).max(1),
            end_id: (shard as i32 + 1) * range,
            sessions: RefCell::new(HashMap::new()),
        }
    }

    /// Which shard hands out `session_id` (None for ids no shard would).
    pub fn shard_of(session_id: i32, shard_count: usize) -> Option<usize> {
        let range = i32::MAX / shard_count as i32;
        (session_id > 0).then(|| ((session_id / range) as usize).min(shard_count - 1))
    }

    /// Sessions held and the partitions they cache (NumIncrementalFetchSessions,
    /// NumIncrementalFetchPartitionsCached).
    pub fn sizes(&self) -> (u64, u64) {
        let sessions = self.sessions.borrow();
        (sessions.len() as u64, sessions.values().map(|s| s.borrow().len() as u64).sum())
    }

    /// Kafka's `FetchManager.newContext`. `changed`: the request's partitions; for an
    /// incremental fetch, the session's partitions to read are then `Session::wanted`.
    /// `uses_topic_ids`: the fetch is v13+ (names its topics by id).
    pub fn new_context(
        &self,
        session_id: i32,
        epoch: i32,
        uses_topic_ids: bool,
        changed: &[Wanted],
        forgotten: &[SessionKey],
        now_ms: i64,
    ) -> FetchContext {
        if epoch == INITIAL_EPOCH || epoch == FINAL_EPOCH {
            // A full fetch closes the session it names.
            if session_id != INVALID_SESSION_ID {
                self.remove(session_id);
            }
            return if epoch == FINAL_EPOCH { FetchContext::Sessionless } else { FetchContext::Full };
        }
        let Some(session) = self.sessions.borrow().get(&session_id).cloned() else {
            return FetchContext::Error(FETCH_SESSION_ID_NOT_FOUND);
        };
        let mut held = session.borrow_mut();
        if held.epoch != epoch {
            return FetchContext::Error(INVALID_FETCH_SESSION_EPOCH);
        }
        if held.uses_topic_ids != uses_topic_ids {
            // A session keyed by ids cannot be read by names, nor the other way round.
            return FetchContext::Error(FETCH_SESSION_TOPIC_ID_ERROR);
        }
        held.update(changed, forgotten);
        if held.is_empty() {
            drop(held);
            self.remove(session_id);
            return FetchContext::Sessionless;
        }
        held.last_used_ms = now_ms;
        held.epoch = next_epoch(held.epoch);
        drop(held);
        FetchContext::Incremental(session)
    }

    /// Kafka's `FullFetchContext.updateAndGenerateResponseData`: a session for the partitions a
    /// full fetch asked, as answered, if a slot is free or can be freed. Returns its id, or 0.
    pub fn maybe_create_session(&self, privileged: bool, uses_topic_ids: bool, now_ms: i64, answered: &[(Wanted, Answered)]) -> i32 {
        if self.max_sessions == 0 {
            return INVALID_SESSION_ID;
        }
        if self.sessions.borrow().len() >= self.max_sessions && !self.try_evict(privileged, answered.len(), now_ms) {
            return INVALID_SESSION_ID;
        }
        let id = self.new_session_id();
        let mut session = Session::new(id, privileged, uses_topic_ids, now_ms);
        for (wanted, answer) in answered {
            session.push(wanted);
            // Created with the answer just sent: the next fetch leaves the partition out unless it changed.
            session.answer(&[(wanted.key.clone(), *answer)]);
        }
        self.sessions.borrow_mut().insert(id, Rc::new(RefCell::new(session)));
        id
    }

    pub fn remove(&self, session_id: i32) -> bool {
        self.sessions.borrow_mut().remove(&session_id).is_some()
    }

    /// Kafka's `tryEvict`. A session's evictability is judged at its last use (as Kafka files it
    /// in its evictable trees when touched).
    fn try_evict(&self, privileged: bool, size: usize, now_ms: i64) -> bool {
        let mut sessions = self.sessions.borrow_mut();
        let stale = sessions.values().map(|s| s.borrow()).min_by_key(|s| (s.last_used_ms, s.id)).map(|s| (s.id, s.last_used_ms));
        let Some((stale_id, last_used_ms)) = stale else { return false };
        let victim = if now_ms - last_used_ms > EVICTION_MS {
            Some(stale_id)
        } else {
            // The least valuable evictable session: (privileged, size, id) ascending.
            let evictable = sessions
                .values()
                .map(|s| s.borrow())
                .filter(|s| {
                    let old = s.last_used_ms - s.created_ms > EVICTION_MS;
                    if privileged {
                        !s.privileged || old
                    } else {
                        old
                    }
                })
                .map(|s| (s.privileged, s.len(), s.id))
                .min();
            // The new session (id 0) is worth at least as much: it evicts.
            evictable.filter(|least| (privileged, size, 0) >= *least).map(|(_, _, id)| id)
        };
        let Some(victim) = victim else { return false };
        sessions.remove(&victim);
        crate::metrics::fetch_session_evicted();
        true
    }

    /// A random id in this shard's range, unused here (Kafka's `newSessionId`). Random from the
    /// standard library's hasher keys (seeded per call from the OS): the broker has no `rand`
    /// dependency and an id needs no more than unpredictability.
    fn new_session_id(&self) -> i32 {
        let sessions = self.sessions.borrow();
        let span = (self.end_id - self.first_id) as u64;
        loop {
            let random = std::hash::RandomState::new().build_hasher().finish();
            let id = self.first_id + (random % span) as i32;
            if id != INVALID_SESSION_ID && !sessions.contains_key(&id) {
                return id;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(partition: i32) -> SessionKey {
        (TopicRef::Name("t".to_string()), partition)
    }

    fn params(offset: i64) -> FetchParams {
        FetchParams { fetch_offset: offset, max_bytes: 1024, log_start_offset: -1 }
    }

    fn quiet(high_watermark: i64) -> Answered {
        Answered { error_code: 0, high_watermark, last_stable_offset: high_watermark, log_start_offset: 0, has_records: false }
    }

    fn full(cache: &FetchSessionCache, privileged: bool, partitions: i32, now_ms: i64) -> i32 {
        let answered: Vec<_> = (0..partitions).map(|p| (Wanted { key: key(p), topic: Some("t".to_string()), params: params(0) }, quiet(0))).collect();
        cache.maybe_create_session(privileged, false, now_ms, &answered)
    }

    #[test]
    fn incremental_answers_only_what_changed() {
        let cache = FetchSessionCache::new(10, 0, 1);
        let id = full(&cache, false, 3, 0);
        assert!(id > 0);
        let FetchContext::Incremental(session) = cache.new_context(id, 1, false, &[], &[], 1) else { panic!("incremental") };
        let wanted = session.borrow().wanted();
        assert_eq!(wanted.len(), 3);
        let mut answers: Vec<_> = wanted.iter().map(|w| (w.key.clone(), quiet(0))).collect();
        answers[1].1 = Answered { has_records: true, high_watermark: 5, ..quiet(5) };
        assert_eq!(session.borrow_mut().answer(&answers), vec![false, true, false]);
        // The partition that got records reads last next time.
        assert_eq!(session.borrow().wanted().last().unwrap().key, key(1));
        // Wrong epoch, unknown id.
        assert!(matches!(cache.new_context(id, 1, false, &[], &[], 2), FetchContext::Error(INVALID_FETCH_SESSION_EPOCH)));
        assert!(matches!(cache.new_context(id + 1, 2, false, &[], &[], 2), FetchContext::Error(FETCH_SESSION_ID_NOT_FOUND)));
        // Forgetting every partition closes the session.
        assert!(matches!(cache.new_context(id, 2, false, &[], &[key(0), key(1), key(2)], 2), FetchContext::Sessionless));
        assert_eq!(cache.sizes(), (0, 0));
    }

    #[test]
    fn sessions_keyed_by_topic_id() {
        let cache = FetchSessionCache::new(10, 0, 1);
        let (known, unknown) = ([1u8; 16], [2u8; 16]);
        let by_id = |id: [u8; 16], topic: Option<&str>| Wanted { key: (TopicRef::Id(id), 0), topic: topic.map(str::to_string), params: params(0) };
        let answered = vec![(by_id(known, Some("t")), quiet(0)), (by_id(unknown, None), quiet(0))];
        let id = cache.maybe_create_session(false, true, 0, &answered);
        assert!(id > 0);
        // A fetch by names cannot use a session keyed by ids.
        assert!(matches!(cache.new_context(id, 1, false, &[], &[], 1), FetchContext::Error(FETCH_SESSION_TOPIC_ID_ERROR)));
        let FetchContext::Incremental(session) = cache.new_context(id, 1, true, &[], &[], 1) else { panic!("incremental") };
        assert_eq!(session.borrow().unresolved_ids().into_iter().collect::<Vec<_>>(), vec![unknown]);
        // The unknown id's topic appeared: its name is kept from now on.
        session.borrow_mut().resolve(&[(unknown, "u".to_string()), (known, "other".to_string())].into_iter().collect());
        let topics: Vec<_> = session.borrow().wanted().into_iter().map(|w| w.topic).collect();
        assert_eq!(topics, vec![Some("t".to_string()), Some("u".to_string())]);
        assert!(session.borrow().unresolved_ids().is_empty());
        // Forgotten by id.
        assert!(matches!(cache.new_context(id, 2, true, &[], &[(TopicRef::Id(known), 0)], 2), FetchContext::Incremental(_)));
        assert_eq!(cache.sizes(), (1, 1));
    }

    #[test]
    fn eviction_follows_kafka() {
        let cache = FetchSessionCache::new(2, 0, 1);
        let a = full(&cache, false, 5, 0);
        let b = full(&cache, false, 10, 0);
        assert!(a > 0 && b > 0);
        // Full, nothing idle long enough and nothing old enough: a consumer gets no session.
        assert_eq!(full(&cache, false, 100, 1000), 0);
        // A follower evicts the smallest consumer session.
        assert!(full(&cache, true, 1, 1000) > 0);
        assert!(cache.sessions.borrow().get(&a).is_none());
        // Idle past EVICTION_MS: anyone evicts it.
        assert!(full(&cache, false, 1, EVICTION_MS + 1001) > 0);
        assert!(cache.sessions.borrow().get(&b).is_none());
        assert_eq!(cache.sizes().0, 2);
    }

    #[test]
    fn ids_name_their_shard() {
        for shard in 0..4 {
            let cache = FetchSessionCache::new(8, shard, 4);
            let id = full(&cache, false, 1, 0);
            assert_eq!(FetchSessionCache::shard_of(id, 4), Some(shard));
        }
        assert_eq!(FetchSessionCache::new(1, 0, 2).max_sessions, 0, "slots are divided as Kafka does, rounded down");
    }
}
