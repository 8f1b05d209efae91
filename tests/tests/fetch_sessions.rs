//! Fetch sessions (KIP-227) with real clients. kafka-python 3.0 fetches in sessions by default
//! (its `FetchSessionHandler`); librdkafka (confluent-kafka 2.16) does not (it sends session id 0,
//! epoch -1: sessionless), nor kafka-python with `enable_incremental_fetch_sessions=False`: both
//! must go on working. What a session saves is read from the broker's metrics
//! (`kafka_server_fetchsessioncache_*`, `broker_incremental_fetch_response_partitions_total`).
//! The wire-level rules (error codes, forgotten partitions) are in tests/fetch.rs; Apache Kafka's
//! Java consumer (sessions by default) in tests/java `FetchSessionTest`; followers' sessions here
//! and in every cluster test (tests/cluster.rs, tests/failover.rs).

use tests::{free_port, run_python, Broker, TempDir};

/// Python helpers the scripts share: `scrape()` reads the broker's /metrics into a dict.
fn script(bootstrap: &str, metrics: &str, body: &str) -> String {
    format!(
        r#"
import time, urllib.request
from confluent_kafka import Producer, Consumer, TopicPartition as CTopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer, TopicPartition
BOOTSTRAP = '{bootstrap}'
def scrape():
    text = urllib.request.urlopen('http://{metrics}/metrics', timeout=10).read().decode()
    values = {{}}
    for line in text.splitlines():
        if line and not line.startswith('#'):
            name, value = line.rsplit(' ', 1)
            values[name] = float(value)
    return values
def create(topic, partitions):
    admin = AdminClient({{'bootstrap.servers': BOOTSTRAP}})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result()
def produce(topic, partitions, per_partition):
    producer = Producer({{'bootstrap.servers': BOOTSTRAP}})
    for p in partitions:
        for i in range(per_partition):
            producer.produce(topic, value=b'%s-%d-%d' % (topic.encode(), p, i), partition=p)
    assert producer.flush(30) == 0
def kafka_python_consumer(topic, partitions, sessions=True):
    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False, fetch_max_wait_ms=200,
                             enable_incremental_fetch_sessions=sessions)
    tps = [TopicPartition(topic, p) for p in partitions]
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, 0)
    return consumer
def drain(consumer, expected, seconds=60):
    got = set()
    deadline = time.time() + seconds
    while len(got) < len(expected) and time.time() < deadline:
        for records in consumer.poll(timeout_ms=200).values():
            got.update(r.value for r in records)
    assert got == expected, (len(got), len(expected))
{body}
"#
    )
}

/// A kafka-python consumer (sessions) following 1,200 partitions of which three get records:
/// once its session holds them all, its incremental fetches come back empty while idle and with
/// those three partitions only when records come. A librdkafka consumer (sessionless) and a
/// kafka-python one with sessions off read the same records.
#[test]
fn a_consumer_of_1200_partitions_gets_only_what_changed() {
    let dir = TempDir::new("fetch-sessions-wide");
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut broker = Broker::start(&dir.0, 2, &[&format!("metrics.listener=http://{metrics}")]);
    let out = run_python(&script(
        &broker.bootstrap(),
        &metrics,
        r#"
N = 1200
create('wide', N)
consumer = kafka_python_consumer('wide', range(N))
deadline = time.time() + 60
while time.time() < deadline:
    consumer.poll(timeout_ms=200)
    m = scrape()
    if m.get('kafka_server_fetchsessioncache_numincrementalfetchpartitionscached', 0) >= N and m.get('broker_incremental_fetch_responses_total', 0) >= 2:
        break
assert m['kafka_server_fetchsessioncache_numincrementalfetchsessions'] >= 1, m
assert m['kafka_server_fetchsessioncache_numincrementalfetchpartitionscached'] >= N, m
before = scrape()
# Idle: incremental answers carry no partition.
end = time.time() + 2
while time.time() < end:
    consumer.poll(timeout_ms=200)
idle = scrape()
idle_responses = idle['broker_incremental_fetch_responses_total'] - before['broker_incremental_fetch_responses_total']
idle_partitions = idle['broker_incremental_fetch_response_partitions_total'] - before['broker_incremental_fetch_response_partitions_total']
assert idle_responses >= 3, idle_responses
assert idle_partitions == 0, idle_partitions
# Records on three partitions: only they come back.
busy = [7, 600, 1199]
produce('wide', busy, 5)
expected = set(b'wide-%d-%d' % (p, i) for p in busy for i in range(5))
drain(consumer, expected)
after = scrape()
partitions = after['broker_incremental_fetch_response_partitions_total'] - idle['broker_incremental_fetch_response_partitions_total']
responses = after['broker_incremental_fetch_responses_total'] - idle['broker_incremental_fetch_responses_total']
assert 3 <= partitions <= 12, partitions
assert after['kafka_network_requestmetrics_requests_total{request="FetchConsumer"}'] >= responses, after
assert after.get('kafka_network_requestmetrics_requests_total{request="FetchFollower"}', 0) == 0, after
print('idle responses', idle_responses, 'partitions answered for records', partitions, 'in', responses, 'responses')
consumer.close()
# Sessionless clients read the same records.
drain(kafka_python_consumer('wide', busy, sessions=False), expected)
c = Consumer({'bootstrap.servers': BOOTSTRAP, 'group.id': 'unused', 'enable.auto.commit': False})
c.assign([CTopicPartition('wide', p, 0) for p in busy])
got = set()
deadline = time.time() + 60
while len(got) < len(expected) and time.time() < deadline:
    msg = c.poll(0.2)
    if msg is not None and not msg.error():
        got.add(msg.value())
assert got == expected, len(got)
c.close()
print('ok')
"#,
    ));
    assert!(out.contains("ok"), "{out}");
    eprintln!("{out}");
    assert_eq!(broker.stop(), 0);
}

/// `max.incremental.fetch.session.cache.slots=2` (one per shard) and three session-using
/// consumers: a young consumer session cannot be evicted by another consumer (Kafka's rule), so
/// the third fetcher is answered without a session and fetches in full; all three read every
/// record, and the cache never holds more than its slots.
#[test]
fn three_consumers_share_two_slots() {
    let dir = TempDir::new("fetch-sessions-slots");
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut broker = Broker::start(&dir.0, 2, &[&format!("metrics.listener=http://{metrics}"), "max.incremental.fetch.session.cache.slots=2"]);
    let out = run_python(&script(
        &broker.bootstrap(),
        &metrics,
        r#"
consumers = []
for n in range(3):
    topic = 'slots%d' % n
    create(topic, 8)
    consumers.append((topic, kafka_python_consumer(topic, range(8))))
for round in range(2):
    for topic, consumer in consumers:
        produce(topic, range(8), 3)
    for topic, consumer in consumers:
        drain(consumer, set(b'%s-%d-%d' % (topic.encode(), p, i) for p in range(8) for i in range(3)))
    m = scrape()
    assert m['kafka_server_fetchsessioncache_numincrementalfetchsessions'] <= 2, m
    # The same records again: the consumers go back to the start.
    for topic, consumer in consumers:
        for p in range(8):
            consumer.seek(TopicPartition(topic, p), 0)
print('sessions', m['kafka_server_fetchsessioncache_numincrementalfetchsessions'], 'evictions', m['kafka_server_fetchsessioncache_incrementalfetchsessionevictions_total'])
print('ok')
"#,
    ));
    assert!(out.contains("ok"), "{out}");
    eprintln!("{out}");
    assert_eq!(broker.stop(), 0);
}

/// GET /metrics from a broker's metrics listener, as (series -> value).
fn scrape(address: &str) -> std::collections::BTreeMap<String, f64> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("connect to metrics.listener");
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {address}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body).unwrap_or_default();
    body.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' ').and_then(|(name, value)| Some((name.to_string(), value.parse().ok()?))))
        .collect()
}

/// Followers fetch in sessions: two brokers, 40 partitions of RF 2, so each broker's replica
/// fetcher follows 20 partitions from the other in one session (privileged); its fetches count as
/// FetchFollower, and once idle the leader's incremental answers carry no partition. Records
/// produced with acks=all reach both replicas (the session's fetch offsets move).
#[test]
fn followers_fetch_in_sessions() {
    use tests::zookeeper::ZooKeeper;
    let zookeeper = ZooKeeper::start();
    let dirs: Vec<TempDir> = (0..2).map(|i| TempDir::new(&format!("fetch-sessions-cluster-{i}"))).collect();
    let metrics: Vec<String> = (0..2).map(|_| format!("127.0.0.1:{}", free_port())).collect();
    let connect = format!("zookeeper.connect={}", zookeeper.connect("/kafka"));
    let mut brokers: Vec<Broker> = (0..2)
        .map(|i| {
            let id = format!("broker.id={}", i + 1);
            let listener = format!("metrics.listener=http://{}", metrics[i]);
            Broker::start(&dirs[i].0, 2, &[&connect, &id, &listener, "zookeeper.session.timeout.ms=4000"])
        })
        .collect();
    let out = run_python(&script(
        &brokers[0].bootstrap(),
        &metrics[0],
        r#"
admin = AdminClient({'bootstrap.servers': BOOTSTRAP})
admin.create_topics([NewTopic('replicated', 40, 2)])['replicated'].result(30)
producer = Producer({'bootstrap.servers': BOOTSTRAP, 'acks': 'all'})
for i in range(400):
    producer.produce('replicated', value=b'v%d' % i, partition=i % 40)
assert producer.flush(60) == 0
print('ok')
"#,
    ));
    assert!(out.contains("ok"), "{out}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let series = |m: &std::collections::BTreeMap<String, f64>, name: &str| m.get(name).copied().unwrap_or(0.0);
    loop {
        let both: Vec<_> = metrics.iter().map(|address| scrape(address)).collect();
        let ready = both.iter().all(|m| {
            series(m, "kafka_server_fetchsessioncache_numincrementalfetchsessions") >= 1.0
                && series(m, "kafka_server_fetchsessioncache_numincrementalfetchpartitionscached") >= 1.0
                && series(m, "broker_incremental_fetch_responses_total") >= 3.0
                && series(m, "kafka_network_requestmetrics_requests_total{request=\"FetchFollower\"}") >= 3.0
        });
        if ready {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "followers' sessions: {both:#?}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // Idle: the followers' incremental fetches come back without partitions.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let before: Vec<_> = metrics.iter().map(|address| scrape(address)).collect();
    std::thread::sleep(std::time::Duration::from_secs(3));
    let after: Vec<_> = metrics.iter().map(|address| scrape(address)).collect();
    for (before, after) in before.iter().zip(&after) {
        let delta = |name: &str| series(after, name) - series(before, name);
        assert!(delta("broker_incremental_fetch_responses_total") >= 3.0, "idle follower fetches go on: {after:#?}");
        assert_eq!(delta("broker_incremental_fetch_response_partitions_total"), 0.0, "idle answers carry no partition");
    }
    for broker in &mut brokers {
        assert_eq!(broker.stop(), 0);
    }
}
