//! Metrics (issue 21): counters kept per shard, served as Prometheus text at `/metrics` on
//! `metrics.listener=http://HOST:PORT` (off unless configured).
//!
//! Cost on the hot path: each shard is one thread, so its counters are plain integers and
//! hdrhistograms in a thread-local (`registry.rs`): no atomic, no lock, no sharing between cores.
//! The endpoint (`http.rs`, a low-priority task on shard 0) asks every shard for a copy over the
//! shard router when scraped (`gather.rs`) and merges them; gauges (partition, leader and group
//! counts...) are computed then, from state the shards already keep, so they cost nothing between
//! scrapes.
//!
//! Names follow the Prometheus JMX exporter's common Kafka rules (its `kafka-2_0_0.yml`), so
//! dashboards written for Kafka read them unchanged:
//! - `kafka.server<type=BrokerTopicMetrics, name=BytesInPerSec, topic=T><>Count` ->
//!   `kafka_server_brokertopicmetrics_bytesin_total{topic="T"}` (`XPerSec` meters become
//!   `x_total` counters; likewise BytesOut, MessagesIn).
//! - `kafka.network<type=RequestMetrics, name=RequestsPerSec, request=R>` ->
//!   `kafka_network_requestmetrics_requests_total{request="R"}`; the `TotalTimeMs`, `LocalTimeMs`,
//!   `ResponseSendTimeMs` histograms -> summaries `kafka_network_requestmetrics_totaltimems{request,
//!   quantile}` (Kafka's 50th..999thPercentile) with `_count` and `_sum`, in milliseconds.
//!   Our request path has no request queue (a connection's task decodes and handles its request
//!   at once) and no purgatory separate from the handler (acks=all and fetch long-polls wait
//!   inside it), so `RequestQueueTimeMs` and `RemoteTimeMs` are not served: local time includes
//!   what Kafka calls remote time.
//! - `kafka.server<type=ReplicaManager, name=UnderReplicatedPartitions|LeaderCount|PartitionCount|
//!   ProducerIdCount>` -> `kafka_server_replicamanager_underreplicatedpartitions` etc. (gauges);
//!   `IsrShrinksPerSec`, `IsrExpandsPerSec` -> `kafka_server_replicamanager_isrshrinks_total`,
//!   `..._isrexpands_total`.
//! - `kafka.controller<type=KafkaController, name=ActiveControllerCount|OfflinePartitionsCount>` ->
//!   `kafka_controller_kafkacontroller_activecontrollercount`, `..._offlinepartitionscount`
//!   (as Kafka, offline partitions are reported by the controller only).
//! - `kafka.coordinator.group<type=GroupMetadataManager, name=NumGroups|NumGroupsStable|...>` ->
//!   `kafka_coordinator_group_groupmetadatamanager_numgroups` etc.
//! - `kafka.log<type=LogFlushStats, name=LogFlushRateAndTimeMs>` ->
//!   `kafka_log_logflushstats_logflushrateandtimems` (summary, milliseconds).
//! - `kafka.server<type=FetchSessionCache, name=NumIncrementalFetchSessions|
//!   NumIncrementalFetchPartitionsCached|IncrementalFetchSessionEvictionsPerSec>` ->
//!   `kafka_server_fetchsessioncache_numincrementalfetchsessions`,
//!   `..._numincrementalfetchpartitionscached` (gauges), `..._incrementalfetchsessionevictions_total`.
//!   Fetch's request series come three times, as Kafka's: `request="Fetch"`, and split by who
//!   fetched, `request="FetchConsumer"` or `request="FetchFollower"`.
//!
//! Ours, with no Kafka counterpart, under `broker_`: fetch bytes handed to the zero-copy path vs
//! copied (`broker_fetch_bytes_total{path="zero_copy"|"copied"}`), cross-shard calls made by each
//! shard (`broker_cross_shard_calls_total{shard}`), connections per shard
//! (`broker_connections{shard}`), incremental fetch answers and the partitions they carried
//! (`broker_incremental_fetch_responses_total`, `broker_incremental_fetch_response_partitions_total`),
//! requests by API and version (`broker_requests_by_version_total{request, version}`: Kafka's
//! `RequestsPerSec` carries a `version` tag, ours has its own series so `..._requests_total`
//! keeps its one label), and every request counter per shard as well.
//! - `kafka.server<type=socket-server-metrics, listener=L, networkProcessor=N>` connection-count,
//!   connection-creation-total, connection-close-total ->
//!   `kafka_server_socket_server_metrics_connection_count{listener, networkProcessor}` etc.; a
//!   shard is our network processor. Connections closed at once over `max.connections.per.ip`
//!   (Kafka logs them, has no counter): `broker_connections_refused_total{listener}`.
//!
//! The functions below are the hooks other files call, one line each.

pub(crate) mod registry;

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Instant;

pub use registry::RequestTimer;

/// Records appended by a producer or a coordinator (not by replication: Kafka counts those
/// apart, as ReplicationBytesInPerSec).
pub fn appended(topic: &str, bytes: usize, messages: i64) {
    registry::with(|m| {
        let counters = m.topic(topic);
        counters.bytes_in += bytes as u64;
        counters.messages_in += messages.max(0) as u64;
    });
}

/// A fetch answered with these batches: BytesOut per topic, and whether they go out zero-copy
/// (spliced from the file) or copied through memory.
pub fn fetched(topic: &str, slices: &[storage::FileSlice], zero_copy: bool) {
    let bytes: u64 = slices.iter().map(|s| s.length_bytes).sum();
    if bytes == 0 {
        return;
    }
    registry::with(|m| {
        m.topic(topic).bytes_out += bytes;
        if zero_copy {
            m.fetch_zero_copy_bytes += bytes;
        } else {
            m.fetch_copied_bytes += bytes;
        }
    });
}

/// An ISR change this broker (the leader) wrote: `shrank` false for an expansion.
pub fn isr_changed(shrank: bool) {
    registry::with(|m| if shrank { m.isr_shrinks += 1 } else { m.isr_expands += 1 });
}

/// A fetch session was evicted to make room for another (Kafka's
/// `kafka.server:type=FetchSessionCache,name=IncrementalFetchSessionEvictionsPerSec`).
pub fn fetch_session_evicted() {
    registry::with(|m| m.fetch_session_evictions += 1);
}

/// An incremental fetch answered with `partitions` of its session's partitions.
pub fn incremental_fetch_answered(partitions: usize) {
    registry::with(|m| {
        m.incremental_fetch_responses += 1;
        m.incremental_fetch_response_partitions += partitions as u64;
    });
}

/// A connection on `listener` is served (`opened`) or has ended (`closed`), or was closed at
/// once over `max.connections.per.ip` (`refused`).
pub fn connection_opened(listener: &str) {
    registry::with(|m| {
        let counters = m.connections.entry(listener.to_string()).or_default();
        counters.open += 1;
        counters.created += 1;
    });
}

pub fn connection_closed(listener: &str) {
    registry::with(|m| {
        let counters = m.connections.entry(listener.to_string()).or_default();
        counters.open -= 1;
        counters.closed += 1;
    });
}

pub fn connection_refused(listener: &str) {
    registry::with(|m| m.connections.entry(listener.to_string()).or_default().refused += 1);
}

/// An fdatasync of a log that started at `started` has ended.
pub fn log_flushed(started: Instant) {
    let micros = started.elapsed().as_micros() as u64;
    registry::with(|m| registry::record(&mut m.log_flush_us, micros));
}

/// `metrics.listener`: `http://HOST:PORT` (the scheme may be left out).
pub fn parse_listener(key: &str, value: &str) -> Result<SocketAddr, String> {
    let address = value.strip_prefix("http://").unwrap_or(value).trim_end_matches('/');
    if address.contains("://") {
        return Err(format!("{key}={value}: only http:// is served"));
    }
    address
        .to_socket_addrs()
        .map_err(|e| format!("{key}={value}: {e}"))?
        .next()
        .ok_or_else(|| format!("{key}={value}: no address"))
}

