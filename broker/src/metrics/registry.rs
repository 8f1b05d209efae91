//! One shard's counters: a thread-local, written only by its shard's thread with plain integer
//! adds (no atomics, no lock), copied out when the endpoint asks (`snapshot`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Instant;

use hdrhistogram::Histogram;

/// Histograms cover 1 us to 60 s with 2 significant digits (1% error, about 27 KiB each): enough
/// for percentiles in milliseconds, small enough to copy per scrape.
const HISTOGRAM_MAX_US: u64 = 60_000_000;
const HISTOGRAM_DIGITS: u8 = 2;
/// API keys are small numbers (Kafka's highest is under 100): a request's stats are an index away.
const API_KEY_SLOTS: usize = 128;
/// Kafka splits Fetch's request metrics by who fetched (its `RequestMetrics.consumerFetchMetricName`
/// and `followFetchMetricName`): `FetchConsumer` and `FetchFollower`, counted beside `Fetch`.
pub const FETCH_CONSUMER_SLOT: usize = API_KEY_SLOTS;
pub const FETCH_FOLLOWER_SLOT: usize = API_KEY_SLOTS + 1;
const REQUEST_SLOTS: usize = API_KEY_SLOTS + 2;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, HISTOGRAM_DIGITS).expect("valid histogram bounds")
}

/// Values past the top count as the top: a 2-minute request still counts, as 60 s.
pub fn record(histogram: &mut Histogram<u64>, micros: u64) {
    histogram.saturating_record(micros.max(1));
}

#[derive(Clone, Default)]
pub struct TopicCounters {
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub messages_in: u64,
}

/// One listener's connections on this shard (Kafka's socket-server-metrics per network processor).
#[derive(Clone, Default)]
pub struct ListenerConnections {
    pub open: u64,
    pub created: u64,
    pub closed: u64,
    /// Closed at once over `max.connections.per.ip`.
    pub refused: u64,
}

/// Request versions counted one by one (Kafka's highest is under 20); higher ones are not.
pub const VERSION_SLOTS: usize = 32;

#[derive(Clone)]
pub struct RequestStats {
    pub count: u64,
    /// By request version (Kafka's `RequestsPerSec` carries a `version` tag): which versions
    /// clients negotiate.
    pub by_version: [u64; VERSION_SLOTS],
    pub total_us: Histogram<u64>,
    pub local_us: Histogram<u64>,
    pub response_send_us: Histogram<u64>,
}

impl RequestStats {
    fn new() -> RequestStats {
        RequestStats {
            count: 0,
            by_version: [0; VERSION_SLOTS],
            total_us: new_histogram(),
            local_us: new_histogram(),
            response_send_us: new_histogram(),
        }
    }

    pub fn merge(&mut self, other: &RequestStats) {
        self.count += other.count;
        for (mine, theirs) in self.by_version.iter_mut().zip(&other.by_version) {
            *mine += theirs;
        }
        let _ = self.total_us.add(&other.total_us);
        let _ = self.local_us.add(&other.local_us);
        let _ = self.response_send_us.add(&other.response_send_us);
    }
}

#[derive(Clone)]
pub struct ShardMetrics {
    /// Kept after a topic is deleted (as a counter must not go back); a restart forgets it.
    pub topics: HashMap<String, TopicCounters>,
    /// Indexed by API key; allocated on an API's first request.
    pub requests: Vec<Option<Box<RequestStats>>>,
    pub isr_shrinks: u64,
    pub isr_expands: u64,
    pub fetch_zero_copy_bytes: u64,
    pub fetch_copied_bytes: u64,
    pub log_flush_us: Histogram<u64>,
    /// Fetch sessions evicted to make room (IncrementalFetchSessionEvictionsPerSec).
    pub fetch_session_evictions: u64,
    /// Incremental fetch answers, and the partitions they carried (ours: what sessions save).
    pub incremental_fetch_responses: u64,
    pub incremental_fetch_response_partitions: u64,
    /// By listener name.
    pub connections: std::collections::BTreeMap<String, ListenerConnections>,
}

impl Default for ShardMetrics {
    fn default() -> ShardMetrics {
        ShardMetrics {
            topics: HashMap::new(),
            requests: vec![None; REQUEST_SLOTS],
            isr_shrinks: 0,
            isr_expands: 0,
            fetch_zero_copy_bytes: 0,
            fetch_copied_bytes: 0,
            log_flush_us: new_histogram(),
            fetch_session_evictions: 0,
            incremental_fetch_responses: 0,
            incremental_fetch_response_partitions: 0,
            connections: Default::default(),
        }
    }
}

impl ShardMetrics {
    pub fn topic(&mut self, topic: &str) -> &mut TopicCounters {
        if !self.topics.contains_key(topic) {
            self.topics.insert(topic.to_string(), TopicCounters::default());
        }
        self.topics.get_mut(topic).expect("inserted above")
    }

    fn request(&mut self, api_key: usize) -> &mut RequestStats {
        self.requests[api_key].get_or_insert_with(|| Box::new(RequestStats::new()))
    }

    /// Adds another shard's counters into these (the broker's totals).
    pub fn merge(&mut self, other: &ShardMetrics) {
        for (topic, counters) in &other.topics {
            let mine = self.topic(topic);
            mine.bytes_in += counters.bytes_in;
            mine.bytes_out += counters.bytes_out;
            mine.messages_in += counters.messages_in;
        }
        for (api_key, stats) in other.requests.iter().enumerate() {
            if let Some(stats) = stats {
                self.request(api_key).merge(stats);
            }
        }
        self.isr_shrinks += other.isr_shrinks;
        self.isr_expands += other.isr_expands;
        self.fetch_zero_copy_bytes += other.fetch_zero_copy_bytes;
        self.fetch_copied_bytes += other.fetch_copied_bytes;
        let _ = self.log_flush_us.add(&other.log_flush_us);
        self.fetch_session_evictions += other.fetch_session_evictions;
        self.incremental_fetch_responses += other.incremental_fetch_responses;
        self.incremental_fetch_response_partitions += other.incremental_fetch_response_partitions;
        for (listener, counters) in &other.connections {
            let mine = self.connections.entry(listener.clone()).or_default();
            mine.open += counters.open;
            mine.created += counters.created;
            mine.closed += counters.closed;
            mine.refused += counters.refused;
        }
    }
}

thread_local! {
    static SHARD: RefCell<ShardMetrics> = RefCell::new(ShardMetrics::default());
}

pub fn with<R>(update: impl FnOnce(&mut ShardMetrics) -> R) -> R {
    SHARD.with(|metrics| update(&mut metrics.borrow_mut()))
}

/// A copy of this thread's (shard's) counters.
pub fn snapshot() -> ShardMetrics {
    SHARD.with(|metrics| metrics.borrow().clone())
}

/// Times one request: from its frame read to its response written. Recorded when dropped, so a
/// request whose connection ends mid-way counts too. `connection.rs` holds one per request.
pub struct RequestTimer {
    api_key: Option<usize>,
    version: Option<usize>,
    /// A Fetch's second series: FETCH_CONSUMER_SLOT or FETCH_FOLLOWER_SLOT.
    fetch_slot: Option<usize>,
    started: Instant,
    handled: Option<Instant>,
}

impl RequestTimer {
    /// Reads the API key from the frame's first two bytes; a frame too short or with an unknown
    /// key is not counted (the connection closes on it anyway).
    pub fn start(frame: &[u8]) -> RequestTimer {
        let api_key = match frame {
            [high, low, ..] => Some(i16::from_be_bytes([*high, *low])),
            _ => None,
        };
        let api_key = api_key
            .filter(|key| kafka_protocol::messages::ApiKey::try_from(*key).is_ok())
            .and_then(|key| usize::try_from(key).ok())
            .filter(|key| *key < API_KEY_SLOTS);
        let fetch_slot = match api_key {
            Some(1) => fetch_replica_id(frame).map(|replica_id| if replica_id >= 0 { FETCH_FOLLOWER_SLOT } else { FETCH_CONSUMER_SLOT }),
            _ => None,
        };
        let version = match frame {
            [_, _, high, low, ..] => usize::try_from(i16::from_be_bytes([*high, *low])).ok().filter(|v| *v < VERSION_SLOTS),
            _ => None,
        };
        RequestTimer { api_key, version, fetch_slot, started: Instant::now(), handled: None }
    }

    /// The handler has answered; what follows is sending the response.
    pub fn handled(&mut self) {
        self.handled = Some(Instant::now());
    }
}

impl Drop for RequestTimer {
    fn drop(&mut self) {
        let Some(api_key) = self.api_key else { return };
        let now = Instant::now();
        let handled = self.handled.unwrap_or(now);
        let (started, micros) = (self.started, |from: Instant, to: Instant| to.saturating_duration_since(from).as_micros() as u64);
        with(|m| {
            if let Some(version) = self.version {
                m.request(api_key).by_version[version] += 1;
            }
            for slot in std::iter::once(api_key).chain(self.fetch_slot) {
                let stats = m.request(slot);
                stats.count += 1;
                record(&mut stats.total_us, micros(started, now));
                record(&mut stats.local_us, micros(started, handled));
                record(&mut stats.response_send_us, micros(handled, now));
            }
        });
    }
}

/// A Fetch frame's replica id (the body's first field, v4-v14), read past the request header
/// (key, version, correlation id, client id, and from v12 its tagged fields) without decoding
/// the request: the timer starts before the handler decodes it. None if the frame is cut short.
/// v15+ carry it in `replica_state`, a tagged field after the whole body: those count as
/// consumers' (Kafka's followers send it; ours fetch with v11, the clients with -1).
fn fetch_replica_id(frame: &[u8]) -> Option<i32> {
    let version = i16::from_be_bytes([*frame.get(2)?, *frame.get(3)?]);
    if version >= 15 {
        return Some(-1);
    }
    let client_id_length = i16::from_be_bytes([*frame.get(8)?, *frame.get(9)?]);
    let mut at = 10 + client_id_length.max(0) as usize;
    if version >= 12 {
        let read_varint = |at: &mut usize| -> Option<u64> {
            let mut value = 0u64;
            for shift in (0..35).step_by(7) {
                let byte = *frame.get(*at)?;
                *at += 1;
                value |= u64::from(byte & 0x7f) << shift;
                if byte & 0x80 == 0 {
                    return Some(value);
                }
            }
            None
        };
        let tags = read_varint(&mut at)?;
        for _ in 0..tags.min(64) {
            read_varint(&mut at)?;
            let size = read_varint(&mut at)?;
            at = at.checked_add(size as usize)?;
        }
    }
    Some(i32::from_be_bytes(frame.get(at..at + 4)?.try_into().ok()?))
}
