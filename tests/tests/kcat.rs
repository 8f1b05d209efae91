//! Debian's kcat (librdkafka 2.0.2) against the broker: keyed records over several partitions,
//! every compression codec, 1 and 4 shards, graceful restart and kill -9.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use tests::{assert_stored_compressed, run_with_timeout, Broker, TempDir};

const KEYS: usize = 17;

fn kcat_produce(broker: &Broker, topic: &str, records: std::ops::Range<usize>, compression: &str) {
    let output = tests::kcat_produce(
        &broker.bootstrap(),
        &["-t", topic, "-K", ":", "-z", compression, "-X", "acks=all", "-X", "linger.ms=5"],
        records.map(|i| format!("key-{}:value-{i:06}", i % KEYS)),
    );
    assert!(output.status.success(), "kcat -P failed: {}\n{}", String::from_utf8_lossy(&output.stderr), broker.log());
}

/// Every record as (partition, offset, key, value).
fn kcat_consume(broker: &Broker, topic: &str) -> Vec<(i32, i64, String, String)> {
    let (ok, stdout, stderr) = run_with_timeout(
        Command::new("kcat").args(["-b", &broker.bootstrap(), "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%p %o %k %s\n"]),
        Duration::from_secs(60),
    );
    assert!(ok, "kcat -C failed: {stderr}\n{}", broker.log());
    stdout
        .lines()
        .map(|line| {
            let mut parts = line.splitn(4, ' ');
            let partition = parts.next().unwrap().parse().unwrap();
            let offset = parts.next().unwrap().parse().unwrap();
            (partition, offset, parts.next().unwrap().to_string(), parts.next().unwrap_or("").to_string())
        })
        .collect()
}

/// Exactly `count` records, each once, contiguous offsets per partition, one partition per key,
/// and per key the values in the order produced.
fn check(records: &[(i32, i64, String, String)], count: usize, partitions: i32) {
    assert_eq!(records.len(), count, "record count");
    let mut by_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    let mut partition_of_key: BTreeMap<&str, i32> = BTreeMap::new();
    let mut last_value_of_key: BTreeMap<&str, usize> = BTreeMap::new();
    let mut seen = vec![false; count];
    for (partition, offset, key, value) in records {
        assert!((0..partitions).contains(partition));
        by_partition.entry(*partition).or_default().push(*offset);
        assert_eq!(*partition_of_key.entry(key).or_insert(*partition), *partition, "key {key} on two partitions");
        let i: usize = value.strip_prefix("value-").unwrap().parse().unwrap();
        assert_eq!(key, &format!("key-{}", i % KEYS), "value {value} under the wrong key");
        assert!(!seen[i], "value {i} twice");
        seen[i] = true;
        if let Some(last) = last_value_of_key.insert(key, i) {
            assert!(last < i, "key {key}: value {i} after {last}");
        }
    }
    assert!(by_partition.len() > 1, "keys spread over partitions");
    for (partition, offsets) in by_partition {
        let expected: Vec<i64> = (0..offsets.len() as i64).collect();
        assert_eq!(offsets, expected, "partition {partition} offsets");
    }
}

fn round_trip(shards: usize) {
    let dir = TempDir::new("kcat");
    let mut broker = Broker::start(&dir.0, shards, &["num.partitions=3"]);
    kcat_produce(&broker, "events", 0..300, "none");
    check(&kcat_consume(&broker, "events"), 300, 3);
    assert_eq!(broker.stop(), 0, "clean exit on SIGTERM:\n{}", broker.log());
}

#[test]
fn keyed_round_trip_one_shard() {
    round_trip(1);
}

#[test]
fn keyed_round_trip_four_shards() {
    round_trip(4);
}

#[test]
fn every_compression_codec_is_stored_as_sent() {
    let dir = TempDir::new("codecs");
    let broker = Broker::start(&dir.0, 4, &["num.partitions=3"]);
    for (codec, codec_id) in [("gzip", 1), ("snappy", 2), ("lz4", 3), ("zstd", 4)] {
        let topic = format!("codec-{codec}");
        kcat_produce(&broker, &topic, 0..200, codec);
        check(&kcat_consume(&broker, &topic), 200, 3);
        // librdkafka 2.0.2 compresses gzip, snappy and lz4 only for brokers that advertise
        // Produce v0 and v2 and Fetch v2: the broker does, so the batches arrive compressed.
        assert_stored_compressed(&dir, &topic, codec_id);
    }
}

#[test]
fn records_survive_a_graceful_restart_and_a_kill_9() {
    let dir = TempDir::new("restart");
    let mut broker = Broker::start(&dir.0, 4, &["num.partitions=3"]);
    kcat_produce(&broker, "durable", 0..200, "none");
    assert_eq!(broker.stop(), 0);
    assert!(dir.0.join("logs/.kafka_cleanshutdown").exists(), "clean shutdown marker written");
    broker.restart();
    check(&kcat_consume(&broker, "durable"), 200, 3);
    kcat_produce(&broker, "durable", 200..400, "lz4");
    broker.kill_9();
    broker.restart();
    assert!(broker.log().contains("clean_shutdown=false"), "the restart after kill -9 ran recovery");
    // acks=all on one node: every acknowledged record is in the page cache, which kill -9 keeps.
    check(&kcat_consume(&broker, "durable"), 400, 3);
    assert_eq!(broker.stop(), 0);
}

#[test]
fn a_second_broker_on_the_same_port_or_data_dir_is_refused() {
    let dir = TempDir::new("second");
    let broker = Broker::start(&dir.0, 2, &[]);
    let other_dir = TempDir::new("second-other");
    let (ok, _, stderr) = run_with_timeout(
        Command::new(tests::broker_binary())
            .args(["--shards", "1", "--override", &format!("listeners=PLAINTEXT://{}", broker.bootstrap())])
            .args(["--override", &format!("log.dirs={}", other_dir.0.display())]),
        Duration::from_secs(20),
    );
    assert!(!ok && stderr.contains("Address already in use"), "same port: {stderr}");
    let (ok, _, stderr) = run_with_timeout(
        Command::new(tests::broker_binary())
            .args(["--shards", "1", "--override", &format!("listeners=PLAINTEXT://127.0.0.1:{}", tests::free_port())])
            .args(["--override", &format!("log.dirs={}", dir.0.join("logs").display())]),
        Duration::from_secs(20),
    );
    assert!(!ok && stderr.contains("in use by another broker"), "same data dir: {stderr}");
}
