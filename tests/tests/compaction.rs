//! Log compaction with the real broker and real clients: a compacted topic shrinks to the latest
//! value per key, a keyless record is refused (INVALID_RECORD), kill -9 during cleaning loses
//! nothing that should stay and leaves no `.cleaned`/`.swap` file, and `__consumer_offsets`
//! stays small under continuous commits.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use tests::{admin, kcat_produce, run_python, Broker, TempDir};

/// Cleaner settings that make a test's cleaning happen within seconds.
const FAST_CLEANER: &[&str] = &["log.cleaner.backoff.ms=50", "log.cleaner.min.cleanable.ratio=0.01", "log.segment.delete.delay.ms=100"];

fn create_compacted(bootstrap: &str, topic: &str) {
    admin(bootstrap, &format!(
        "f = admin.create_topics([NewTopic('{topic}', 1, 1, config={{'cleanup.policy': 'compact', 'segment.bytes': '4096', 'min.cleanable.dirty.ratio': '0.01', 'delete.retention.ms': '100'}})])\n\
         [v.result() for v in f.values()]\n"
    ));
}

/// key -> its last value, as a consumer reading the topic from the start sees it; and how many
/// records it read.
fn consume_latest(bootstrap: &str, topic: &str) -> (BTreeMap<String, String>, usize) {
    let output = std::process::Command::new("kcat")
        .args(["-b", bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%k=%s\n"])
        .output()
        .expect("kcat");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if text.is_empty() {
        eprintln!("kcat read nothing: {}", String::from_utf8_lossy(&output.stderr));
    }
    let mut latest = BTreeMap::new();
    let mut count = 0;
    for line in text.lines() {
        count += 1;
        if let Some((key, value)) = line.split_once('=') {
            latest.insert(key.to_string(), value.to_string());
        }
    }
    (latest, count)
}

fn file_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir).map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default()
}

fn log_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".log")).map(|e| e.metadata().unwrap().len()).sum()
}

#[test]
fn a_compacted_topic_keeps_the_latest_value_per_key_and_refuses_keyless_records() {
    let dir = TempDir::new("compaction");
    let mut broker = Broker::start(&dir.0, 1, FAST_CLEANER);
    let bootstrap = broker.bootstrap();
    create_compacted(&bootstrap, "latest");
    let lines: Vec<String> = (0..3000).map(|i| format!("key-{}:value-{i}-{}", i % 25, "p".repeat(50))).collect();
    let output = kcat_produce(&bootstrap, &["-t", "latest", "-p", "0", "-K:", "-X", "batch.num.messages=100"], lines.clone());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let mut expected = BTreeMap::new();
    for line in &lines {
        let (key, value) = line.split_once(':').unwrap();
        expected.insert(key.to_string(), value.to_string());
    }
    let partition_dir = dir.0.join("logs/latest-0");
    let written_bytes = log_bytes(&partition_dir);
    let started = Instant::now();
    let (latest, count) = loop {
        let (latest, count) = consume_latest(&bootstrap, "latest");
        assert_eq!(latest, expected, "the latest value of every key is readable");
        if count < 400 || started.elapsed() > Duration::from_secs(20) {
            break (latest, count);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(latest, expected);
    let cleaner_lines: Vec<String> = broker.log().lines().filter(|l| l.contains("clean")).map(String::from).collect();
    assert!(count < 400, "the topic shrank to about the latest value per key: {count} records of 3000 remain\n{}", cleaner_lines.join("\n"));
    println!("compacted: 3000 records, {written_bytes} bytes -> {count} records, {} bytes", log_bytes(&partition_dir));

    // Keyless: refused with INVALID_RECORD (librdkafka: "Broker failed to validate record").
    let output = kcat_produce(&bootstrap, &["-t", "latest", "-p", "0"], ["no key".to_string()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Broker failed to validate record"), "{stderr}");
    assert_eq!(consume_latest(&bootstrap, "latest").0, expected, "nothing of the refused record was stored");
    assert!(broker.log().contains("cleaned a log"), "{}", broker.log());
    assert_eq!(broker.stop(), 0);
}

#[test]
fn kill_9_during_cleaning_loses_nothing_twenty_times() {
    let dir = TempDir::new("compaction-kill");
    let mut broker = Broker::start(&dir.0, 1, FAST_CLEANER);
    let bootstrap = broker.bootstrap();
    create_compacted(&bootstrap, "crashy");
    let partition_dir = dir.0.join("logs/crashy-0");
    let mut expected = BTreeMap::new();
    let mut seed = std::process::id() as u64 | 1;
    for round in 0..20 {
        let lines: Vec<String> = (0..400).map(|i| format!("key-{}:round-{round}-{i}-{}", (i * 7 + round) % 40, "q".repeat(40))).collect();
        let output = kcat_produce(&bootstrap, &["-t", "crashy", "-p", "0", "-K:"], lines.clone());
        assert!(output.status.success(), "round {round}: {}", String::from_utf8_lossy(&output.stderr));
        for line in &lines {
            let (key, value) = line.split_once(':').unwrap();
            expected.insert(key.to_string(), value.to_string());
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(seed % 300));
        broker.kill_9();
        broker.restart();
        let (latest, _) = consume_latest(&bootstrap, "crashy");
        assert_eq!(latest, expected, "round {round}: every key's latest acknowledged value is readable");
    }
    let cleaned = broker.log().matches("cleaned a log").count();
    println!("cleans completed across 20 kill -9 rounds: {cleaned}");
    assert!(cleaned > 0, "{}", broker.log());
    // A last kill, then a start without a cleaner: recovery alone leaves no cleaning file (one
    // started by a running cleaner is legitimately there while it works).
    broker.kill_9();
    let mut recovered = Broker::start(&dir.0, 1, &["log.cleaner.enable=false"]);
    let names = file_names(&partition_dir);
    assert!(!names.iter().any(|n| n.ends_with(".cleaned") || n.ends_with(".swap")), "{names:?}");
    assert_eq!(consume_latest(&recovered.bootstrap(), "crashy").0, expected);
    assert_eq!(recovered.stop(), 0);
}

#[test]
fn consumer_offsets_stays_bounded_under_continuous_commits() {
    let dir = TempDir::new("compaction-offsets");
    let mut overrides = FAST_CLEANER.to_vec();
    overrides.extend(["offsets.topic.num.partitions=1", "offsets.topic.segment.bytes=8192", "group.initial.rebalance.delay.ms=0"]);
    let mut broker = Broker::start(&dir.0, 1, &overrides);
    let bootstrap = broker.bootstrap();
    let output = kcat_produce(&bootstrap, &["-t", "committed", "-p", "0"], ["x".to_string()]);
    assert!(output.status.success());
    run_python(&format!(
        "from confluent_kafka import Consumer, TopicPartition\n\
         c = Consumer({{'bootstrap.servers': '{bootstrap}', 'group.id': 'busy', 'enable.auto.commit': False}})\n\
         for i in range(3000):\n\
         \x20   c.commit(offsets=[TopicPartition('committed', 0, i)], asynchronous=False)\n\
         c.close()\n"
    ));
    let offsets_dir = dir.0.join("logs/__consumer_offsets-0");
    let started = Instant::now();
    let bytes = loop {
        let bytes = log_bytes(&offsets_dir);
        if bytes < 64 * 1024 || started.elapsed() > Duration::from_secs(15) {
            break bytes;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    println!("__consumer_offsets after 3000 commits: {bytes} bytes in {} files", file_names(&offsets_dir).len());
    assert!(bytes < 64 * 1024, "3000 commits (~300 KB written) leave a bounded log: {bytes} bytes");
    // The group's offset survives cleaning and a restart.
    assert_eq!(broker.stop(), 0);
    broker.restart();
    let committed = run_python(&format!(
        "from confluent_kafka import Consumer, TopicPartition\n\
         c = Consumer({{'bootstrap.servers': '{bootstrap}', 'group.id': 'busy'}})\n\
         print(c.committed([TopicPartition('committed', 0)], timeout=10)[0].offset)\n\
         c.close()\n"
    ));
    assert_eq!(committed.trim(), "2999");
    assert_eq!(broker.stop(), 0);
}
