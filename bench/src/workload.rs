//! What one measured run does: the shape of the load, in the spirit of the OpenMessaging
//! Benchmark's workload files, and the presets the README and tuning.md quote.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Producers only, measured from the first send to the last acknowledgement.
    Produce,
    /// Consumers read back from the beginning what a produce run of the same round wrote.
    Consume,
    /// Producers at a fixed rate and consumers at once; the send time travels in the payload.
    EndToEnd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum KeyDistribution {
    /// Null keys: the client spreads batches over partitions (sticky partitioning).
    None,
    /// Keys 0, 1, 2, ... so records cycle over the partitions.
    RoundRobin,
    /// A random key per record.
    Random,
}

#[derive(Clone, Debug, Serialize)]
pub struct Workload {
    pub name: String,
    pub kind: Kind,
    pub message_size_bytes: usize,
    pub topics: usize,
    pub partitions_per_topic: i32,
    pub replication_factor: i32,
    pub producers: usize,
    pub consumers: usize,
    /// librdkafka's `acks`: "0", "1" or "all".
    pub acks: String,
    /// librdkafka's `compression.type`: none, gzip, snappy, lz4, zstd.
    pub compression: String,
    pub linger_ms: u64,
    pub batch_size_bytes: usize,
    /// Messages per second over all producers; 0 sends as fast as the client accepts.
    pub rate_messages_per_second: u64,
    /// Bytes per second each consumer reads at most; 0 reads as fast as it can.
    pub consume_rate_bytes_per_second: u64,
    pub duration_seconds: f64,
    /// Stops a produce run after this many messages (over all producers) if reached first.
    pub message_count: Option<u64>,
    pub key_distribution: KeyDistribution,
    /// Keys are taken modulo this (round-robin or random keys over a fixed key space): a keyed
    /// load that a compacted topic shrinks. None: every key distinct.
    pub key_space: Option<u64>,
    /// librdkafka's `enable.idempotence` (which needs acks=all): sequence numbers per partition.
    pub idempotent: bool,
    /// A transactional producer (`transactional.id`, idempotent): this many records per
    /// transaction, begin/produce/commit in a loop. None: plain sends.
    pub transactional_records: Option<u64>,
}

pub const PRESETS: &[&str] = &["produce-1k", "consume-1k", "e2e-latency", "acks-all", "idempotent-1k", "transactional-1k"];

/// Records per transaction of the transactional-1k preset (`--transactional-records` changes it).
pub const DEFAULT_TRANSACTIONAL_RECORDS: u64 = 100;

impl Workload {
    pub fn preset(name: &str) -> Option<Workload> {
        let produce_1k = Workload {
            name: name.to_string(),
            kind: Kind::Produce,
            message_size_bytes: 1024,
            topics: 1,
            partitions_per_topic: 6,
            replication_factor: 1,
            producers: 1,
            consumers: 1,
            acks: "1".to_string(),
            compression: "none".to_string(),
            // librdkafka's own defaults since 1.5: what an unconfigured client does.
            linger_ms: 5,
            batch_size_bytes: 1_000_000,
            rate_messages_per_second: 0,
            consume_rate_bytes_per_second: 0,
            duration_seconds: 10.0,
            message_count: None,
            key_distribution: KeyDistribution::None,
            key_space: None,
            idempotent: false,
            transactional_records: None,
        };
        let workload = match name {
            "produce-1k" => produce_1k,
            "consume-1k" => Workload { kind: Kind::Consume, ..produce_1k },
            "e2e-latency" => Workload {
                kind: Kind::EndToEnd,
                // A moderate rate (5 MB/s of 1 KiB records): latency, not throughput, is measured.
                rate_messages_per_second: 5_000,
                linger_ms: 1,
                ..produce_1k
            },
            "acks-all" => Workload { acks: "all".to_string(), ..produce_1k },
            // The cost of a transaction (issue 18): idempotent produce is its baseline, as a
            // transactional producer is an idempotent one plus the coordinator's round trips.
            "idempotent-1k" => Workload { acks: "all".to_string(), idempotent: true, ..produce_1k },
            "transactional-1k" => Workload {
                acks: "all".to_string(),
                idempotent: true,
                transactional_records: Some(DEFAULT_TRANSACTIONAL_RECORDS),
                ..produce_1k
            },
            _ => return None,
        };
        Some(workload)
    }

    /// The payload bytes one run is meant to move, for the progress line.
    pub fn describe(&self) -> String {
        let rate = if self.rate_messages_per_second == 0 {
            "max rate".to_string()
        } else {
            format!("{} msg/s", self.rate_messages_per_second)
        };
        let mode = match (self.transactional_records, self.idempotent) {
            (Some(records), _) => format!(", transactional ({records} records per transaction)"),
            (None, true) => ", idempotent".to_string(),
            (None, false) => String::new(),
        };
        format!(
            "{}: {:?}, {} B, {}x{} partitions, {} producer(s), {} consumer(s), acks={}{mode}, compression={}, linger {} ms, {}, {} s",
            self.name,
            self.kind,
            self.message_size_bytes,
            self.topics,
            self.partitions_per_topic,
            self.producers,
            self.consumers,
            self.acks,
            self.compression,
            self.linger_ms,
            rate,
            self.duration_seconds
        )
    }
}
