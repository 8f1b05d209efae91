//! Prometheus text exposition format 0.0.4: `# HELP`, `# TYPE`, then `name{labels} value` lines,
//! each family's samples together. Written by hand: the format is a few lines of `format!`,
//! and the `prometheus` crates would bring their own registry (atomics, locks) beside ours.

use std::fmt::Write;

use hdrhistogram::Histogram;
use kafka_protocol::messages::ApiKey;

use super::gather::{BrokerReport, ShardReport};
use crate::metrics::registry::{self, ShardMetrics};

/// Kafka's histogram percentiles (its JMX `50thPercentile` ... `999thPercentile`).
const QUANTILES: [f64; 6] = [0.5, 0.75, 0.95, 0.98, 0.99, 0.999];
const GROUP_STATES: [&str; 5] = ["PreparingRebalance", "CompletingRebalance", "Stable", "Dead", "Empty"];

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

struct Text(String);

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{label}=\"{}\"", escape(value));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// A whole family of one value (a broker-wide gauge or counter).
    fn single(&mut self, name: &str, kind: &str, help: &str, value: u64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// A summary in milliseconds from a histogram in microseconds.
    fn summary(&mut self, name: &str, labels: &[(&str, &str)], histogram: &Histogram<u64>) {
        for quantile in QUANTILES {
            let q = quantile.to_string();
            let mut with_quantile = labels.to_vec();
            with_quantile.push(("quantile", &q));
            self.sample(name, &with_quantile, millis(histogram.value_at_quantile(quantile)));
        }
        let sum_us = histogram.mean() * histogram.len() as f64;
        self.sample(&format!("{name}_sum"), labels, sum_us / 1000.0);
        self.sample(&format!("{name}_count"), labels, histogram.len());
    }
}

fn millis(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// Label values escape backslash, double quote and newline (the format's rule).
fn escape(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return value.into();
    }
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n").into()
}

/// Kafka's request name for an API key (its `ApiKeys.name`: `Produce`, `Fetch`, `ListOffsets`...).
fn request_name(api_key: usize) -> Option<String> {
    match api_key {
        registry::FETCH_CONSUMER_SLOT => return Some("FetchConsumer".into()),
        registry::FETCH_FOLLOWER_SLOT => return Some("FetchFollower".into()),
        _ => {}
    }
    let key = ApiKey::try_from(i16::try_from(api_key).ok()?).ok()?;
    Some(format!("{key:?}"))
}

pub fn render(shards: &[ShardReport], broker: &BrokerReport) -> String {
    let mut total = ShardMetrics::default();
    for shard in shards {
        total.merge(&shard.metrics);
    }
    let mut text = Text(String::with_capacity(16 * 1024));
    let topic_counters: [(&str, &str, fn(&crate::metrics::registry::TopicCounters) -> u64); 3] = [
        ("kafka_server_brokertopicmetrics_bytesin_total", "Bytes appended by producers and coordinators (BytesInPerSec).", |c| c.bytes_in),
        ("kafka_server_brokertopicmetrics_bytesout_total", "Bytes answered to fetches, consumers and followers (BytesOutPerSec).", |c| c.bytes_out),
        ("kafka_server_brokertopicmetrics_messagesin_total", "Records appended by producers and coordinators (MessagesInPerSec).", |c| c.messages_in),
    ];
    let mut topics: Vec<_> = total.topics.iter().collect();
    topics.sort_by(|a, b| a.0.cmp(b.0));
    for (name, help, value) in topic_counters {
        text.family(name, "counter", help);
        for (topic, counters) in &topics {
            text.sample(name, &[("topic", topic)], value(counters));
        }
    }

    let requests: Vec<(String, &crate::metrics::registry::RequestStats)> = total
        .requests
        .iter()
        .enumerate()
        .filter_map(|(key, stats)| Some((request_name(key)?, stats.as_deref()?)))
        .collect();
    text.family("kafka_network_requestmetrics_requests_total", "counter", "Requests handled, by API (RequestsPerSec).");
    for (request, stats) in &requests {
        text.sample("kafka_network_requestmetrics_requests_total", &[("request", request)], stats.count);
    }
    text.family("broker_requests_by_version_total", "counter", "Requests handled, by API and version (RequestsPerSec's version tag).");
    // Only the API's own slot counts versions (not Fetch's FetchConsumer/FetchFollower split).
    for (request, stats) in &requests {
        for (version, count) in stats.by_version.iter().enumerate().filter(|(_, count)| **count > 0) {
            text.sample("broker_requests_by_version_total", &[("request", request), ("version", &version.to_string())], *count);
        }
    }
    type Pick = fn(&crate::metrics::registry::RequestStats) -> &Histogram<u64>;
    let times: [(&str, &str, Pick); 3] = [
        ("kafka_network_requestmetrics_totaltimems", "From the request read to its response written, ms (TotalTimeMs).", |s| &s.total_us),
        ("kafka_network_requestmetrics_localtimems", "Handling, waits for acks=all and fetch long-polls included, ms (LocalTimeMs).", |s| &s.local_us),
        ("kafka_network_requestmetrics_responsesendtimems", "Writing the response to the socket, ms (ResponseSendTimeMs).", |s| &s.response_send_us),
    ];
    for (name, help, pick) in times {
        text.family(name, "summary", help);
        for (request, stats) in &requests {
            text.summary(name, &[("request", request)], pick(stats));
        }
    }

    let sum = |pick: fn(&ShardReport) -> u64| shards.iter().map(pick).sum::<u64>();
    text.single("kafka_server_replicamanager_partitioncount", "gauge", "Replicas on this broker (PartitionCount).", sum(|s| s.partitions));
    text.single("kafka_server_replicamanager_leadercount", "gauge", "Partitions this broker leads (LeaderCount).", sum(|s| s.leaders));
    text.single(
        "kafka_server_replicamanager_underreplicatedpartitions",
        "gauge",
        "Led partitions whose ISR is smaller than their replicas (UnderReplicatedPartitions).",
        sum(|s| s.under_replicated),
    );
    text.single("kafka_server_replicamanager_isrshrinks_total", "counter", "ISR shrinks written by this leader (IsrShrinksPerSec).", total.isr_shrinks);
    text.single("kafka_server_replicamanager_isrexpands_total", "counter", "ISR expansions written by this leader (IsrExpandsPerSec).", total.isr_expands);
    text.single("kafka_server_replicamanager_produceridcount", "gauge", "Producer ids known to the partitions this broker leads (ProducerIdCount).", sum(|s| s.producer_ids));
    text.single("kafka_controller_kafkacontroller_activecontrollercount", "gauge", "1 on the controller (ActiveControllerCount).", u64::from(broker.active_controller));
    text.single(
        "kafka_controller_kafkacontroller_offlinepartitionscount",
        "gauge",
        "Partitions without a live leader, reported by the controller (OfflinePartitionsCount).",
        broker.offline_partitions,
    );

    let mut groups_by_state = std::collections::BTreeMap::new();
    for shard in shards {
        for (state, count) in &shard.groups_by_state {
            *groups_by_state.entry(state.as_str()).or_insert(0u64) += count;
        }
    }
    text.single("kafka_coordinator_group_groupmetadatamanager_numgroups", "gauge", "Groups this broker coordinates (NumGroups).", groups_by_state.values().sum());
    for state in GROUP_STATES {
        let name = format!("kafka_coordinator_group_groupmetadatamanager_numgroups{}", state.to_lowercase());
        text.single(&name, "gauge", &format!("Groups in state {state} (NumGroups{state})."), groups_by_state.get(state).copied().unwrap_or(0));
    }

    text.family("kafka_log_logflushstats_logflushrateandtimems", "summary", "Log flushes (fdatasync) by the flush policy, ms (LogFlushRateAndTimeMs).");
    text.summary("kafka_log_logflushstats_logflushrateandtimems", &[], &total.log_flush_us);

    text.family("broker_fetch_bytes_total", "counter", "Fetched record bytes by path: spliced from the file (zero_copy) or read and written (copied).");
    text.sample("broker_fetch_bytes_total", &[("path", "zero_copy")], total.fetch_zero_copy_bytes);
    text.sample("broker_fetch_bytes_total", &[("path", "copied")], total.fetch_copied_bytes);

    text.single(
        "kafka_server_fetchsessioncache_numincrementalfetchsessions",
        "gauge",
        "Fetch sessions held, all shards (NumIncrementalFetchSessions).",
        sum(|s| s.fetch_sessions),
    );
    text.single(
        "kafka_server_fetchsessioncache_numincrementalfetchpartitionscached",
        "gauge",
        "Partitions held in fetch sessions (NumIncrementalFetchPartitionsCached).",
        sum(|s| s.fetch_session_partitions),
    );
    text.single(
        "kafka_server_fetchsessioncache_incrementalfetchsessionevictions_total",
        "counter",
        "Fetch sessions evicted to make room for another (IncrementalFetchSessionEvictionsPerSec).",
        total.fetch_session_evictions,
    );
    text.single("broker_incremental_fetch_responses_total", "counter", "Incremental fetch answers (in a fetch session).", total.incremental_fetch_responses);
    text.single(
        "broker_incremental_fetch_response_partitions_total",
        "counter",
        "Partitions carried by incremental fetch answers (those with records, a changed offset or an error).",
        total.incremental_fetch_response_partitions,
    );
    type PickConnections = fn(&crate::metrics::registry::ListenerConnections) -> u64;
    let connections: [(&str, &str, &str, PickConnections); 3] = [
        ("kafka_server_socket_server_metrics_connection_count", "gauge", "Open connections per listener and shard (connection-count).", |c| c.open),
        ("kafka_server_socket_server_metrics_connection_creation_total", "counter", "Connections served (connection-creation-total).", |c| c.created),
        ("kafka_server_socket_server_metrics_connection_close_total", "counter", "Connections ended (connection-close-total).", |c| c.closed),
    ];
    for (name, kind, help, value) in connections {
        text.family(name, kind, help);
        for shard in shards {
            let processor = shard.shard.to_string();
            for (listener, counters) in &shard.metrics.connections {
                text.sample(name, &[("listener", listener), ("networkProcessor", &processor)], value(counters));
            }
        }
    }
    text.family("broker_connections_refused_total", "counter", "Connections closed at once over max.connections.per.ip.");
    for (listener, counters) in &total.connections {
        text.sample("broker_connections_refused_total", &[("listener", listener)], counters.refused);
    }

    let per_shard: [(&str, &str, &str, fn(&ShardReport) -> u64); 4] = [
        ("broker_cross_shard_calls_total", "counter", "Calls this shard sent to another shard's partitions or groups.", |s| s.cross_shard_calls),
        ("broker_connections", "gauge", "Client connections open on this shard.", |s| s.connections),
        ("broker_shard_partitions", "gauge", "Replicas this shard owns.", |s| s.partitions),
        (
            "broker_shard_requests_total",
            "counter",
            "Requests handled by this shard's connections.",
            // Fetch's split series (FetchConsumer, FetchFollower) count the same requests again.
            |s| s.metrics.requests.iter().take(registry::FETCH_CONSUMER_SLOT).flatten().map(|r| r.count).sum(),
        ),
    ];
    for (name, kind, help, value) in per_shard {
        text.family(name, kind, help);
        for shard in shards {
            text.sample(name, &[("shard", &shard.shard.to_string())], value(shard));
        }
    }
    text.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("plain"), "plain");
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn an_empty_broker_renders_every_family_once() {
        let text = render(&[], &BrokerReport { active_controller: true, offline_partitions: 0 });
        let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
        let mut names: Vec<&str> = types.iter().map(|l| l.split(' ').nth(2).unwrap()).collect();
        let count = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), count, "a family declared twice");
        assert!(text.contains("kafka_controller_kafkacontroller_activecontrollercount 1\n"));
    }
}
