//! Log compaction with the real broker and real clients: a compacted topic shrinks to the latest
//! value per key, a keyless record is refused (INVALID_RECORD), kill -9 during cleaning loses
//! nothing that should stay and leaves no `.cleaned`/`.swap` file, and `__consumer_offsets`
//! stays small under continuous commits (20,000 of them); tombstones go after `delete.retention.ms`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use tests::{admin, kcat_produce, python, run_python, run_with_timeout, Broker, TempDir};

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
    const COMMITS: usize = 20_000;
    // 16 KiB segments: the ~2 MB the commits write roll the segment over a hundred times.
    const SEGMENT_BYTES: u64 = 16 * 1024;
    // The cleaned part (grouped up to the segment size), the segments the last clean rewrote (each
    // its own group: Kafka groups by the sizes before cleaning, so a clean of many full dirty
    // segments leaves as many small ones until the next clean) and the active one.
    const MAX_SEGMENTS: usize = 5;
    let dir = TempDir::new("compaction-offsets");
    let mut overrides = FAST_CLEANER.to_vec();
    let segment_override = format!("offsets.topic.segment.bytes={SEGMENT_BYTES}");
    overrides.extend(["offsets.topic.num.partitions=1", segment_override.as_str(), "group.initial.rebalance.delay.ms=0"]);
    let mut broker = Broker::start(&dir.0, 1, &overrides);
    let bootstrap = broker.bootstrap();
    let output = kcat_produce(&bootstrap, &["-t", "committed", "-p", "0"], ["x".to_string()]);
    assert!(output.status.success());
    let offsets_dir = dir.0.join("logs/__consumer_offsets-0");
    let started = Instant::now();
    // A storm of asynchronous commits, pipelined by librdkafka (one OffsetCommit request each),
    // with a synchronous one every 1000 so the queue stays bounded; then the last TRICKLE
    // synchronous, 10 ms apart, as a group committing steadily: the cleaner (a low-priority task,
    // starved while the storm keeps the shard busy) catches up and each clean regroups the
    // segments the previous one left small.
    const TRICKLE: usize = 300;
    let peak = run_python(&format!(
        "import os, time\n\
         from confluent_kafka import Consumer, TopicPartition\n\
         c = Consumer({{'bootstrap.servers': '{bootstrap}', 'group.id': 'busy', 'enable.auto.commit': False}})\n\
         peak = 0\n\
         for i in range({COMMITS}):\n\
         \x20   trickle = i >= {COMMITS} - {TRICKLE}\n\
         \x20   c.commit(offsets=[TopicPartition('committed', 0, i)], asynchronous=not trickle and i % 1000 != 999)\n\
         \x20   if trickle:\n\
         \x20       time.sleep(0.01)\n\
         \x20   if i % 1000 == 999:\n\
         \x20       peak = max(peak, len([n for n in os.listdir('{dir}') if n.endswith('.log')]))\n\
         c.close()\n\
         print(peak)\n",
        dir = offsets_dir.display()
    ));
    let committed_in = started.elapsed();
    let wait_started = Instant::now();
    let (bytes, segments) = loop {
        let bytes = log_bytes(&offsets_dir);
        let segments = file_names(&offsets_dir).iter().filter(|n| n.ends_with(".log")).count();
        if (bytes < 4 * SEGMENT_BYTES && segments <= MAX_SEGMENTS) || wait_started.elapsed() > Duration::from_secs(20) {
            break (bytes, segments);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let cleans = broker.log().matches("cleaned a log").count();
    println!(
        "__consumer_offsets after {COMMITS} commits in {committed_in:?}: {bytes} bytes in {segments} segments ({} files), \
         at most {} segments seen while committing, {cleans} cleans",
        file_names(&offsets_dir).len(),
        peak.trim()
    );
    assert!(segments <= MAX_SEGMENTS, "{COMMITS} commits leave a few segments: {segments}");
    assert!(bytes < 4 * SEGMENT_BYTES, "{COMMITS} commits (~2 MB written) leave a bounded log: {bytes} bytes");
    assert!(cleans >= 10, "the log rolled and was cleaned many times: {cleans} cleans");
    // The group's offset survives cleaning and a restart.
    assert_eq!(broker.stop(), 0);
    broker.restart();
    let committed = run_python(&format!(
        "from confluent_kafka import Consumer, TopicPartition\n\
         c = Consumer({{'bootstrap.servers': '{bootstrap}', 'group.id': 'busy'}})\n\
         print(c.committed([TopicPartition('committed', 0)], timeout=10)[0].offset)\n\
         c.close()\n"
    ));
    assert_eq!(committed.trim(), (COMMITS - 1).to_string());
    assert_eq!(broker.stop(), 0);
}

/// Tombstones with a real client (confluent-kafka): once their segment was cleaned they stay for
/// `delete.retention.ms`, then a later clean removes them; a consumer reading from the beginning
/// sees only the latest value of each live key, nothing of a deleted key, and offsets that
/// strictly increase with gaps.
#[test]
fn tombstoned_keys_are_gone_after_delete_retention() {
    const DELETE_RETENTION_MS: u64 = 3000;
    let dir = TempDir::new("compaction-tombstones");
    let mut broker = Broker::start(&dir.0, 1, FAST_CLEANER);
    let bootstrap = broker.bootstrap();
    let result = run_python(&format!(
        r#"{TXN_COMPACTION_HELPERS}
from confluent_kafka.admin import AdminClient, NewTopic
topic = 'tombstones'
admin = AdminClient({{'bootstrap.servers': '{bootstrap}'}})
[f.result() for f in admin.create_topics([NewTopic(topic, 1, 1, config={{
    'cleanup.policy': 'compact', 'segment.bytes': '4096', 'min.cleanable.dirty.ratio': '0.01',
    'delete.retention.ms': '{DELETE_RETENTION_MS}'}})]).values()]
producer = Producer({{'bootstrap.servers': '{bootstrap}', 'linger.ms': 5}})
expected = {{}}
fillers = 0
def produce(pairs):
    for key, value in pairs:
        producer.produce(topic, key=key, value=value, partition=0)
        if value is None:
            expected.pop(key, None)
        else:
            expected[key] = value
    assert producer.flush(30) == 0
def fill(count):
    # Keys written once each: new dirty data (so the cleaner runs again) and segment rolls,
    # without a second version of any key in the uncleaned active segment.
    global fillers
    produce([('filler-%d' % (fillers + i), 'f' * 80) for i in range(count)])
    fillers += count
for r in range(10):
    produce([('key-%d' % k, 'value-%d-%d-%s' % (r, k, 'v' * 40)) for k in range(50)])
deleted = {{'key-%d' % k for k in range(20)}}
produce([(key, None) for key in sorted(deleted)])
tombstoned_at = time.time()
fill(60)

tombstone_alone_seen = False
deadline = time.time() + 40
while True:
    records = read_all('{bootstrap}', 'read_uncommitted')
    keys = [k for _, k, _ in records]
    tombstones = [k for _, k, v in records if v is None]
    if tombstones and all(keys.count(k) == 1 for k in tombstones):
        tombstone_alone_seen = True  # cleaned: the deleted keys' values gone, their tombstones kept
    if not tombstones and len(keys) == len(set(keys)) and set(keys) == set(expected):
        break
    assert time.time() < deadline, (len(records), len(tombstones), len(keys) - len(set(keys)))
    time.sleep(0.3)
    fill(45)
gone_after = time.time() - tombstoned_at
offsets = [o for o, _, _ in records]
assert all(a < b for a, b in zip(offsets, offsets[1:])), 'offsets strictly increase'
assert any(b - a > 1 for a, b in zip(offsets, offsets[1:])), 'cleaning left gaps'
assert {{k: v for _, k, v in records}} == expected, 'only the latest value of each live key'
assert not deleted & set(keys), 'no deleted key is left'
assert gone_after * 1000 >= {DELETE_RETENTION_MS}, gone_after
print(tombstone_alone_seen, round(gone_after, 1), len(records), offsets[-1] + 1)
"#
    ));
    println!("tombstone seen alone after a clean, gone after s, records read, log end: {}", result.trim());
    assert!(result.starts_with("True "), "a cleaned segment kept its tombstones until the horizon: {result}");
    assert!(broker.log().contains("cleaned a log"), "{}", broker.log());
    assert_eq!(broker.stop(), 0);
}

/// Python helpers of the compaction tests (`topic` is the script's global): a reader at either isolation level and a
/// DumpLogSegments-like count of the markers in the partition's segment files on disk.
const TXN_COMPACTION_HELPERS: &str = r#"
import json, os, time
from confluent_kafka import Consumer, Producer, TopicPartition, OFFSET_BEGINNING
topic = 'txn-compacted'

def read_all(bootstrap, isolation):
    c = Consumer({'bootstrap.servers': bootstrap, 'group.id': 'reader', 'enable.partition.eof': True,
                  'enable.auto.commit': False, 'isolation.level': isolation})
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    records = []
    while True:
        m = c.poll(10)
        assert m is not None, 'no EOF within 10 s'
        if m.error():
            assert m.error().code() == -191, m.error()  # _PARTITION_EOF
            break
        records.append((m.offset(), m.key().decode(), None if m.value() is None else m.value().decode()))
    c.close()
    return records

def latest(records):
    view = {}
    for _, k, v in records:
        if v is None:
            view.pop(k, None)
        else:
            view[k] = v
    return view

def watermarks(bootstrap, isolation):
    c = Consumer({'bootstrap.servers': bootstrap, 'group.id': 'wm', 'isolation.level': isolation})
    low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False)
    c.close()
    return high

def markers_on_disk(partition_dir):
    """(control batches with their record, bare control batches) in the segment files (`dump`)."""
    for _ in range(20):
        try:
            batches = dump(partition_dir)
        except FileNotFoundError:
            time.sleep(0.05)  # a clean swapped a segment while we listed
            continue
        markers = sum(1 for b in batches if b[2] & 0x20 and b[3] > 0)
        return markers, sum(1 for b in batches if b[2] & 0x20) - markers
    raise AssertionError('the segment files kept changing')

def marker_offsets(partition_dir):
    """The base offsets of the control batches with their record in the segment files."""
    for _ in range(20):
        try:
            return {b[1] for b in dump(partition_dir) if b[2] & 0x20 and b[3] > 0}
        except FileNotFoundError:
            time.sleep(0.05)  # a clean swapped a segment while we listed
    raise AssertionError('the segment files kept changing')

def dump(partition_dir):
    """Every batch in the segment files, read raw (DumpLogSegments-like): (file, base offset,
    attributes, record count, producer id, base timestamp), from the v2 header's byte positions."""
    out = []
    for name in sorted(n for n in os.listdir(partition_dir) if n.endswith('.log')):
        data = open(os.path.join(partition_dir, name), 'rb').read()
        pos = 0
        while pos + 61 <= len(data):
            length = int.from_bytes(data[pos + 8:pos + 12], 'big', signed=True)
            if length <= 0 or pos + 12 + length > len(data):
                break
            field = lambda at, size: int.from_bytes(data[pos + at:pos + at + size], 'big', signed=True)
            out.append((name, field(0, 8), field(21, 2), field(57, 4), field(43, 8), field(27, 8)))
            pos += 12 + length
    return out
"#;

/// Transaction markers with a real transactional client (confluent-kafka) on a compacted topic
/// with small segments and a short `delete.retention.ms`: 12 transactions over the same 10 keys
/// (every third aborted, the last one with a tombstone), plain records between cleans. Once
/// cleaned, read_committed and read_uncommitted both see only the committed latest values, the
/// markers are gone from the segment files but the last committed transaction's (its data is
/// the latest), and the aborts' `.txnindex` went with their data. Then kill -9 and restart: the
/// producer state (from snapshots, its markers gone) leaves the last stable offset at the high
/// watermark, an open transaction holds it at its first offset until its commit, and the
/// transactional producers go on.
#[test]
fn transaction_markers_go_after_their_data_and_delete_retention() {
    const DELETE_RETENTION_MS: u64 = 2000;
    let dir = TempDir::new("compaction-markers");
    let mut broker = Broker::start(&dir.0, 1, FAST_CLEANER);
    let bootstrap = broker.bootstrap();
    let partition_dir = dir.0.join("logs/txn-compacted-0");
    let script = format!(
        r#"{TXN_COMPACTION_HELPERS}
from confluent_kafka.admin import AdminClient, NewTopic
bootstrap = '{bootstrap}'
admin = AdminClient({{'bootstrap.servers': bootstrap}})
[f.result() for f in admin.create_topics([NewTopic(topic, 1, 1, config={{
    'cleanup.policy': 'compact', 'segment.bytes': '4096', 'min.cleanable.dirty.ratio': '0.01',
    'delete.retention.ms': '{DELETE_RETENTION_MS}'}})]).values()]
txn = Producer({{'bootstrap.servers': bootstrap, 'transactional.id': 'compacting', 'linger.ms': 5}})
txn.init_transactions(30)
plain = Producer({{'bootstrap.servers': bootstrap, 'linger.ms': 5}})
expected = {{}}
fillers = 0
seen_markers = set()
def fill(count):
    global fillers
    for i in range(count):
        key = 'filler-%d' % (fillers + i)
        plain.produce(topic, key=key, value='f' * 80, partition=0)
        expected[key] = 'f' * 80
    fillers += count
    assert plain.flush(30) == 0
for r in range(12):
    commit = r % 3 != 1
    txn.begin_transaction()
    for k in range(10):
        value = None if (r == 11 and k == 9) else 'txn-%d-%d-%s' % (r, k, 'v' * 60)
        txn.produce(topic, key='key-%d' % k, value=value, partition=0)
        if commit:
            if value is None:
                expected.pop('key-%d' % k, None)
            else:
                expected['key-%d' % k] = value
    # Sent before the end: librdkafka purges what an abort finds unsent (then no data, no marker).
    assert txn.flush(30) == 0
    if commit:
        txn.commit_transaction(30)
    else:
        txn.abort_transaction(30)
    fill(10)
    # Sampled after each transaction: the cleaner (running meanwhile) may already remove an early
    # marker whose data later transactions replaced, delete.retention.ms after stamping it.
    seen_markers |= marker_offsets('{partition_dir}')
fill(45)
seen_markers |= marker_offsets('{partition_dir}')
markers_written = len(seen_markers)
deadline = time.time() + 50
while True:
    committed, uncommitted = read_all(bootstrap, 'read_committed'), read_all(bootstrap, 'read_uncommitted')
    markers, bare = markers_on_disk('{partition_dir}')
    print('markers', markers, 'bare', bare, 'read_committed', len(committed), 'read_uncommitted', len(uncommitted),
          'expected', len(expected), latest(committed) == expected, latest(uncommitted) == expected, flush=True)
    done = (latest(committed) == expected and latest(uncommitted) == expected and len(uncommitted) == len(expected)
            and markers == 1)
    if done:
        break
    if time.time() > deadline:
        for line in dump('{partition_dir}'):
            if line[4] >= 0:
                print(line)
        raise AssertionError((markers, bare, len(committed), len(uncommitted), len(expected),
                              sorted(set(latest(uncommitted).items()) ^ set(expected.items()))[:5]))
    time.sleep(0.5)
    fill(45)
for records in (committed, uncommitted):
    offsets = [o for o, _, _ in records]
    assert all(a < b for a, b in zip(offsets, offsets[1:])), 'offsets strictly increase'
assert not any(v is None for _, _, v in uncommitted), 'the tombstone went after delete.retention.ms'
high = watermarks(bootstrap, 'read_uncommitted')
assert watermarks(bootstrap, 'read_committed') == high, 'no transaction open: the LSO is the high watermark'
print(json.dumps({{'expected': expected, 'markers_written': markers_written, 'bare': bare, 'high': high}}))
"#,
        partition_dir = partition_dir.display()
    );
    let (ok, expected, stderr) = run_with_timeout(std::process::Command::new(python()).arg("-c").arg(&script), Duration::from_secs(90));
    let cleaner_lines: Vec<String> = broker.log().lines().filter(|l| l.contains("clean")).map(String::from).collect();
    assert!(ok, "{expected}\n{stderr}\nthe cleaner's log lines:\n{}", cleaner_lines.join("\n"));
    let first: serde_json::Value = serde_json::from_str(expected.trim().lines().last().unwrap()).unwrap();
    println!("markers written, bare control headers left, high watermark: {} {} {}", first["markers_written"], first["bare"], first["high"]);
    assert!(first["markers_written"].as_u64().unwrap() >= 12, "every transaction's marker was on disk: {first}");
    let txn_indexes: Vec<String> = file_names(&partition_dir).into_iter().filter(|n| n.ends_with(".txnindex")).collect();
    for name in &txn_indexes {
        let len = std::fs::metadata(partition_dir.join(name)).map(|m| m.len()).unwrap_or(0);
        assert_eq!(len, 0, "no aborted transaction's data is left, nor its .txnindex entry: {name}");
    }
    assert!(broker.log().contains("cleaned a log"), "{}", broker.log());

    // kill -9: the producer state comes back from snapshots and the headers after them.
    broker.kill_9();
    broker.restart();
    let bootstrap = broker.bootstrap();
    let result = run_python(&format!(
        r#"{TXN_COMPACTION_HELPERS}
bootstrap = '{bootstrap}'
expected = json.loads('''{expected}''')
high = watermarks(bootstrap, 'read_uncommitted')
assert high == {high}, (high, {high})
assert watermarks(bootstrap, 'read_committed') == high, 'after the restart no transaction is left open by the removed markers'
assert latest(read_all(bootstrap, 'read_committed')) == expected
# The transactional producer goes on: a committed transaction, then one left open holds the LSO.
txn = Producer({{'bootstrap.servers': bootstrap, 'transactional.id': 'compacting', 'linger.ms': 5}})
txn.init_transactions(30)
txn.begin_transaction()
txn.produce(topic, key='key-0', value='after-restart', partition=0)
txn.commit_transaction(30)
expected['key-0'] = 'after-restart'
other = Producer({{'bootstrap.servers': bootstrap, 'transactional.id': 'open-one', 'linger.ms': 0}})
other.init_transactions(30)
other.begin_transaction()
other.produce(topic, key='key-1', value='open', partition=0)
assert other.flush(30) == 0
high_open = watermarks(bootstrap, 'read_uncommitted')
lso_open = watermarks(bootstrap, 'read_committed')
assert lso_open == high_open - 1, ('an open transaction holds the LSO at its first offset', lso_open, high_open)
assert latest(read_all(bootstrap, 'read_committed')) == expected
other.commit_transaction(30)
expected['key-1'] = 'open'
deadline = time.time() + 10
while watermarks(bootstrap, 'read_committed') != watermarks(bootstrap, 'read_uncommitted'):
    assert time.time() < deadline, 'the commit released the LSO'
    time.sleep(0.1)
assert latest(read_all(bootstrap, 'read_committed')) == expected
assert latest(read_all(bootstrap, 'read_uncommitted')) == expected
print(high, lso_open, high_open)
"#,
        expected = serde_json::to_string(&first["expected"]).unwrap(),
        high = first["high"]
    ));
    println!("after kill -9: high watermark, LSO and high watermark with a transaction open: {}", result.trim());
    assert_eq!(broker.stop(), 0);
}
