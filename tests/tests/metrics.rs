//! The metrics endpoint (issue 21) and the admin APIs beside it, against the real binary:
//! `metrics.listener` serves Prometheus text that parses, and its counters move by what a real
//! client (confluent-kafka) produced and consumed; DescribeCluster and DescribeLogDirs answer
//! confluent-kafka's and kafka-python's admin clients.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use tests::{admin, free_port, run_python, Broker, TempDir};

const RECORDS: u64 = 200;
const VALUE_BYTES: u64 = 100;

/// A sample's name and labels, e.g. `kafka_server_brokertopicmetrics_bytesin_total{topic="t"}`.
type Series = BTreeMap<String, f64>;

/// GET over plain TCP; returns (status line, body).
fn http_get(address: &str, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(address).expect("connect to metrics.listener");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\nAccept: */*\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("the endpoint answers and closes");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.lines().next().unwrap().to_string();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("Content-Length")
        .parse()
        .unwrap();
    assert_eq!(length, body.len(), "Content-Length matches the body");
    (status, body.to_string())
}

/// Checks `text` against the Prometheus text exposition format 0.0.4 (what promtool's linter and
/// Prometheus' parser accept) and returns its samples. Rules checked: `# HELP`/`# TYPE` lines
/// well formed, a family's TYPE before its samples and given once, a family's samples together,
/// metric and label names from the allowed characters, label values quoted with only `\\`, `\"`
/// and `\n` escapes, every value a float, summaries' samples `name{..quantile=..}`, `name_sum`,
/// `name_count`, no sample given twice.
fn parse_exposition(text: &str) -> Series {
    fn is_name(name: &str, colon: bool) -> bool {
        let mut chars = name.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':'))
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
    }
    assert!(text.ends_with('\n'), "the text ends with a newline");
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut finished_families: Vec<String> = Vec::new();
    let mut current_family: Option<String> = None;
    let mut series = Series::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let (keyword, name) = (parts.next().unwrap(), parts.next().expect("a metric name after HELP/TYPE"));
            assert!(is_name(name, true), "bad metric name in {line:?}");
            match keyword {
                "HELP" => {}
                "TYPE" => {
                    let kind = parts.next().expect("a type");
                    assert!(["counter", "gauge", "summary", "histogram", "untyped"].contains(&kind), "{line:?}");
                    assert!(types.insert(name.to_string(), kind.to_string()).is_none(), "TYPE given twice: {line:?}");
                }
                _ => panic!("unknown comment {line:?}"),
            }
            continue;
        }
        assert!(!line.is_empty() && !line.starts_with('#'), "stray line {line:?}");
        let (name_and_labels, value) = line.rsplit_once(' ').expect("name and value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().unwrap_or_else(|_| panic!("value of {line:?} is not a float")),
        };
        let (name, labels) = match name_and_labels.split_once('{') {
            Some((name, rest)) => (name, Some(rest.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels in {line:?}")))),
            None => (name_and_labels, None),
        };
        assert!(is_name(name, true), "bad metric name in {line:?}");
        let mut label_names = Vec::new();
        if let Some(mut rest) = labels {
            while !rest.is_empty() {
                let (label, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("label without =\" in {line:?}"));
                assert!(is_name(label, false) && !label.starts_with("__"), "bad label name {label:?} in {line:?}");
                label_names.push(label);
                let mut chars = after.char_indices();
                let end = loop {
                    match chars.next() {
                        Some((_, '\\')) => assert!(matches!(chars.next(), Some((_, '\\' | '"' | 'n'))), "bad escape in {line:?}"),
                        Some((i, '"')) => break i,
                        Some((_, '\n')) | None => panic!("unterminated label value in {line:?}"),
                        Some(_) => {}
                    }
                };
                rest = &after[end + 1..];
                rest = rest.strip_prefix(',').unwrap_or_else(|| {
                    assert!(rest.is_empty(), "labels not separated by commas in {line:?}");
                    rest
                });
            }
        }
        let family = match (name.strip_suffix("_sum").or_else(|| name.strip_suffix("_count")), types.get(name)) {
            (_, Some(_)) => name.to_string(),
            (Some(base), None) if types.get(base).is_some_and(|k| k == "summary" || k == "histogram") => base.to_string(),
            _ => panic!("sample {line:?} has no TYPE before it"),
        };
        if types[&family] == "summary" && name == family {
            assert!(label_names.contains(&"quantile"), "a summary sample without a quantile: {line:?}");
        }
        if current_family.as_deref() != Some(family.as_str()) {
            assert!(!finished_families.contains(&family), "family {family} is split: {line:?}");
            if let Some(previous) = current_family.replace(family.clone()) {
                finished_families.push(previous);
            }
        }
        assert!(series.insert(name_and_labels.to_string(), value).is_none(), "sample given twice: {line:?}");
    }
    series
}

fn scrape(address: &str) -> Series {
    let (status, body) = http_get(address, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    parse_exposition(&body)
}

fn value(series: &Series, key: &str) -> f64 {
    series.get(key).copied().unwrap_or(0.0)
}

fn delta(before: &Series, after: &Series, key: &str) -> f64 {
    value(after, key) - value(before, key)
}

#[test]
fn metrics_endpoint_counts_what_clients_did_and_parses() {
    let dir = TempDir::new("metrics");
    let metrics_address = format!("127.0.0.1:{}", free_port());
    let listener = format!("metrics.listener=http://{metrics_address}");
    let mut broker = Broker::start(&dir.0, 2, &[&listener]);
    assert!(broker.log().contains(&format!("serving metrics at http://{metrics_address}/metrics")), "{}", broker.log());
    let bootstrap = broker.bootstrap();
    admin(&bootstrap, "admin.create_topics([NewTopic('metered', 3, 1)])['metered'].result()");

    let before = scrape(&metrics_address);
    assert_eq!(value(&before, "kafka_server_replicamanager_partitioncount"), 3.0);
    assert_eq!(value(&before, "kafka_server_replicamanager_leadercount"), 3.0);
    assert_eq!(value(&before, "kafka_controller_kafkacontroller_activecontrollercount"), 1.0);
    assert_eq!(value(&before, "kafka_controller_kafkacontroller_offlinepartitionscount"), 0.0);

    // confluent-kafka produces RECORDS records of VALUE_BYTES (one idempotent producer) and a
    // group consumer reads them all back and commits.
    let consumed = run_python(&format!(
        r#"
from confluent_kafka import Producer, Consumer
producer = Producer({{'bootstrap.servers': '{bootstrap}', 'enable.idempotence': True, 'linger.ms': 5}})
for i in range({RECORDS}):
    producer.produce('metered', value=b'x' * {VALUE_BYTES}, partition=i % 3)
assert producer.flush(30) == 0
consumer = Consumer({{'bootstrap.servers': '{bootstrap}', 'group.id': 'metered-group', 'auto.offset.reset': 'earliest', 'enable.auto.commit': False}})
consumer.subscribe(['metered'])
count = 0
import time
deadline = time.time() + 30
while count < {RECORDS} and time.time() < deadline:
    message = consumer.poll(1.0)
    if message is not None and message.error() is None:
        count += 1
consumer.commit(asynchronous=False)
consumer.close()
print(count)
"#
    ));
    assert_eq!(consumed.trim(), RECORDS.to_string());

    let after = scrape(&metrics_address);
    let topic = |name: &str| format!("kafka_server_brokertopicmetrics_{name}_total{{topic=\"metered\"}}");
    assert_eq!(delta(&before, &after, &topic("messagesin")), RECORDS as f64, "one count per record produced");
    let bytes_in = delta(&before, &after, &topic("bytesin"));
    // Batches of RecordBatch v2: the values plus at most ~100 bytes of headers and framing per record.
    assert!(bytes_in >= (RECORDS * VALUE_BYTES) as f64 && bytes_in <= (RECORDS * (VALUE_BYTES + 100)) as f64, "bytes in {bytes_in}");
    let bytes_out = delta(&before, &after, &topic("bytesout"));
    assert!(bytes_out >= bytes_in, "every batch produced was fetched: out {bytes_out} < in {bytes_in}");
    let fetched = delta(&before, &after, "broker_fetch_bytes_total{path=\"zero_copy\"}") + delta(&before, &after, "broker_fetch_bytes_total{path=\"copied\"}");
    assert_eq!(fetched, bytes_out, "fetch bytes split by path add up to bytes out");
    assert!(delta(&before, &after, "broker_fetch_bytes_total{path=\"zero_copy\"}") > 0.0, "zero-copy is the default path");

    for request in ["Produce", "Fetch", "OffsetCommit", "JoinGroup", "Metadata"] {
        let requests = delta(&before, &after, &format!("kafka_network_requestmetrics_requests_total{{request=\"{request}\"}}"));
        assert!(requests >= 1.0, "{request}: {requests} requests");
        // The scrape in `before` came after the requests of the topic's creation only.
        let timed = value(&after, &format!("kafka_network_requestmetrics_totaltimems_count{{request=\"{request}\"}}"));
        assert_eq!(timed, value(&after, &format!("kafka_network_requestmetrics_requests_total{{request=\"{request}\"}}")), "{request}");
        let p99 = value(&after, &format!("kafka_network_requestmetrics_totaltimems{{request=\"{request}\",quantile=\"0.99\"}}"));
        assert!(p99 > 0.0, "{request}: p99 {p99} ms");
    }
    let shard_requests: f64 = (0..2).map(|shard| value(&after, &format!("broker_shard_requests_total{{shard=\"{shard}\"}}"))).sum();
    // FetchConsumer and FetchFollower split the Fetch requests again (Kafka's series): not added.
    let all_requests: f64 = after
        .iter()
        .filter(|(k, _)| k.starts_with("kafka_network_requestmetrics_requests_total{") && !k.contains("\"FetchConsumer\"") && !k.contains("\"FetchFollower\""))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(shard_requests, all_requests, "per-shard request counts add up to the per-API ones");
    let fetches = value(&after, "kafka_network_requestmetrics_requests_total{request=\"Fetch\"}");
    let split = value(&after, "kafka_network_requestmetrics_requests_total{request=\"FetchConsumer\"}");
    assert_eq!(fetches, split, "every Fetch here is a consumer's (FetchConsumer)");
    assert!(value(&after, "kafka_server_replicamanager_produceridcount") >= 1.0, "the idempotent producer's id");
    assert!(value(&after, "kafka_coordinator_group_groupmetadatamanager_numgroups") >= 1.0, "metered-group");
    assert!(value(&after, "kafka_coordinator_group_groupmetadatamanager_numgroupsempty") >= 1.0, "metered-group, its consumer gone");
    // __consumer_offsets was created by the group: more partitions now.
    assert!(value(&after, "kafka_server_replicamanager_partitioncount") > 3.0);

    // Every series the Grafana dashboard reads is one the broker serves.
    let dashboard = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../ops/grafana/broker.json")).unwrap();
    let served: std::collections::BTreeSet<&str> = after.keys().map(|k| k.split('{').next().unwrap()).collect();
    let mut read = 0;
    for (start, _) in dashboard.match_indices(|c: char| c == 'k' || c == 'b') {
        let word: String = dashboard[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        let preceded = dashboard[..start].chars().last().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if !preceded && (word.starts_with("kafka_") || word.starts_with("broker_")) {
            assert!(served.contains(word.as_str()), "the dashboard reads {word}, which the broker does not serve");
            read += 1;
        }
    }
    assert!(read >= 15, "the dashboard reads {read} series");

    let (status, _) = http_get(&metrics_address, "/other");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    // Garbage gets a 400 and the endpoint keeps serving.
    let mut garbage = TcpStream::connect(&metrics_address).unwrap();
    garbage.write_all(b"\x16\x03\x01\x00\x05hello\r\n\r\n").unwrap();
    let mut answer = String::new();
    garbage.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = garbage.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    scrape(&metrics_address);
    assert_eq!(broker.stop(), 0);
}

#[test]
fn metrics_are_off_unless_configured_and_a_taken_port_stops_the_start() {
    let dir = TempDir::new("metrics-off");
    let mut broker = Broker::start(&dir.0, 1, &[]);
    assert!(!broker.log().contains("serving metrics"), "{}", broker.log());
    assert_eq!(broker.stop(), 0);

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let output = std::process::Command::new(tests::broker_binary())
        .args(["--shards", "1", "--override", &format!("listeners=PLAINTEXT://127.0.0.1:{}", free_port())])
        .args(["--override", &format!("log.dirs={}", dir.0.join("logs-taken").display())])
        .args(["--override", &format!("metrics.listener=http://{address}")])
        .output()
        .unwrap();
    assert!(!output.status.success(), "a broker whose metrics port is taken must not run");
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot listen for metrics.listener"), "{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn describe_cluster_and_log_dirs_answer_python_admin_clients() {
    let dir = TempDir::new("describe-cluster");
    let mut broker = Broker::start(&dir.0, 2, &["broker.id=7", "broker.rack=rack-a"]);
    let bootstrap = broker.bootstrap();
    let port = broker.address().port();
    let meta = std::fs::read_to_string(dir.0.join("logs/meta.properties")).unwrap();
    let cluster_id = meta.lines().find_map(|l| l.strip_prefix("cluster.id=")).unwrap();
    // confluent-kafka's describe_cluster (librdkafka asks Metadata for it).
    let described = admin(
        &bootstrap,
        "cluster = admin.describe_cluster().result()\n\
         print(cluster.cluster_id, cluster.controller.id, [(n.id, n.host, n.port, n.rack) for n in cluster.nodes])",
    );
    assert_eq!(described.trim(), format!("{cluster_id} 7 [(7, '127.0.0.1', {port}, 'rack-a')]"));
    // kafka-python's describe_cluster speaks DescribeCluster (API 60) itself, asking for the
    // cluster's authorized operations: without an authorizer Kafka grants all of them.
    let described = run_python(&format!(
        r#"
from kafka.admin import KafkaAdminClient
admin = KafkaAdminClient(bootstrap_servers='{bootstrap}')
cluster = admin.describe_cluster()
print(cluster['cluster_id'], cluster['controller_id'], [(b['broker_id'], b['host'], b['port'], b['rack']) for b in cluster['brokers']])
print(sorted(str(o) for o in cluster['authorized_operations']))
"#
    ));
    let mut lines = described.lines();
    assert_eq!(lines.next().unwrap(), format!("{cluster_id} 7 [(7, '127.0.0.1', {port}, 'rack-a')]"), "{described}");
    let operations = lines.next().unwrap();
    assert_eq!(operations, "['ALTER', 'ALTER_CONFIGS', 'CLUSTER_ACTION', 'CREATE', 'DESCRIBE', 'DESCRIBE_CONFIGS', 'IDEMPOTENT_WRITE']");

    // kafka-python's describe_log_dirs (DescribeLogDirs): each partition with its size, per log
    // dir, and (v4) the file system's total and usable bytes.
    admin(&bootstrap, "admin.create_topics([NewTopic('sized', 2, 1)])['sized'].result()");
    let output = tests::kcat_produce(&bootstrap, &["-t", "sized", "-p", "1"], (0..50).map(|i| format!("record-{i:04}")));
    assert!(output.status.success(), "{output:?}");
    let dirs = run_python(&format!(
        r#"
from kafka.admin import KafkaAdminClient
admin = KafkaAdminClient(bootstrap_servers='{bootstrap}')
for broker in admin.describe_log_dirs(topic_partitions=['sized']):
    for result in broker['log_dirs']:
        print(broker['broker'], result['error_code'], result['log_dir'], result['total_bytes'] >= result['usable_bytes'] > 0)
        for topic in result['topics']:
            for p in topic['partitions']:
                print(topic['name'], p['partition_index'], p['partition_size'])
"#
    ));
    let log_dir = dir.0.join("logs").display().to_string();
    let mut lines = dirs.lines();
    assert_eq!(lines.next().unwrap(), format!("7 0 {log_dir} True"), "{dirs}");
    let sizes: Vec<(String, i64)> = lines.map(|l| l.rsplit_once(' ').map(|(tp, size)| (tp.to_string(), size.parse().unwrap())).unwrap()).collect();
    assert_eq!(sizes.len(), 2, "{dirs}");
    assert_eq!(sizes[0], ("sized 0".to_string(), 0), "{dirs}");
    assert_eq!(sizes[1].0, "sized 1", "{dirs}");
    let segment = std::fs::metadata(dir.0.join("logs/sized-1/00000000000000000000.log")).unwrap().len() as i64;
    assert_eq!(sizes[1].1, segment, "the partition's size is its segment's: {dirs}");
    assert_eq!(broker.stop(), 0);
}
