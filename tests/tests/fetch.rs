//! Fetch on both paths (zero-copy splice and the copy path): partitions owned by another shard
//! than the connection's, and a fetch whose segment retention deletes while the response is
//! still being sent. Checked byte for byte against what was produced. A fetch without partitions
//! is answered at once.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, StrBytes};
use storage::test_support::build_batch;
use tests::wire::Connection;
use tests::{Broker, TempDir};

const PATHS: [&str; 2] = ["fetch.zero.copy=true", "fetch.zero.copy=false"];

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn create_topic(connection: &mut Connection, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    let configs = configs
        .iter()
        .map(|(k, v)| CreatableTopicConfig::default().with_name(StrBytes::from_string(k.to_string())).with_value(Some(StrBytes::from_string(v.to_string()))))
        .collect();
    let request = CreateTopicsRequest::default().with_timeout_ms(5000).with_topics(vec![CreatableTopic::default()
        .with_name(topic_name(name))
        .with_num_partitions(partitions)
        .with_replication_factor(-1)
        .with_configs(configs)]);
    let response: CreateTopicsResponse = connection.call(ApiKey::CreateTopics, 5, &request);
    assert_eq!(response.topics[0].error_code, 0, "create {name}");
}

fn fetch_request(topic: &str, partitions: &[i32], max_bytes: i32) -> FetchRequest {
    FetchRequest::default().with_max_wait_ms(0).with_min_bytes(0).with_max_bytes(max_bytes).with_topics(vec![FetchTopic::default()
        .with_topic(topic_name(topic))
        .with_partitions(
            partitions
                .iter()
                .map(|p| FetchPartition::default().with_partition(*p).with_fetch_offset(0).with_partition_max_bytes(max_bytes))
                .collect(),
        )])
}

/// Splits stored batches and checks each against the produced one: the broker rewrites only
/// the base offset (bytes 0..8) and the partition leader epoch (12..16); the CRC covers the rest.
fn assert_batches_equal(records: &Bytes, produced: &[Vec<u8>], context: &str) {
    let mut position = 0;
    for (index, expected) in produced.iter().enumerate() {
        let size = 12 + i32::from_be_bytes(records[position + 8..position + 12].try_into().unwrap()) as usize;
        let stored = &records[position..position + size];
        assert_eq!(size, expected.len(), "{context}: batch {index} size");
        assert_eq!(&stored[16..], &expected[16..], "{context}: batch {index} bytes");
        position += size;
    }
    assert_eq!(position, records.len(), "{context}: nothing after the last batch");
}

/// One Fetch for four partitions spread over two shards: each connection's shard owns two and
/// the other shard the rest, so every response mixes local and routed partitions.
#[test]
fn fetch_across_shards_returns_every_partitions_bytes() {
    for path in PATHS {
        let dir = TempDir::new("fetch-across-shards");
        let broker = Broker::start(&dir.0, 2, &[path]);
        let mut connection = Connection::open(broker.address());
        create_topic(&mut connection, "spread", 4, &[]);
        let mut produced: Vec<Vec<Vec<u8>>> = vec![Vec::new(); 4];
        for round in 0..3 {
            for partition in 0..4 {
                let batch = build_batch(20 + round, 700, 1_700_000_000_000, (partition * 10 + round) as u8);
                connection.produce("spread", partition, batch.clone());
                produced[partition as usize].push(batch);
            }
        }
        // Several connections, so both shards serve some of them, and more fetches than a shard
        // has transfer slots, so a slot that is not given back shows.
        for _ in 0..6 {
            let mut reader = Connection::open(broker.address());
            for _ in 0..10 {
                let response: FetchResponse = reader.call(ApiKey::Fetch, 11, &fetch_request("spread", &[0, 1, 2, 3], 1 << 20));
                for data in &response.responses[0].partitions {
                    assert_eq!(data.error_code, 0, "{path}: partition {}", data.partition_index);
                    let records = data.records.clone().unwrap_or_default();
                    let context = format!("{path}: partition {}", data.partition_index);
                    assert_batches_equal(&records, &produced[data.partition_index as usize], &context);
                }
            }
        }
    }
}

/// Bytes the broker's end of a connection has not sent yet (its send queue, /proc/net/tcp).
fn unsent_bytes(broker_port: u16, client_port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let port = |address: &str| u16::from_str_radix(address.rsplit(':').next().unwrap(), 16).unwrap();
        if port(fields[1]) == broker_port && port(fields[2]) == client_port {
            let tx_queue = fields[4].split(':').next().unwrap();
            return u64::from_str_radix(tx_queue, 16).unwrap();
        }
    }
    panic!("no connection {broker_port} -> {client_port} in /proc/net/tcp");
}

/// A consumer asks for a whole segment and does not read: the response stalls in the socket
/// buffers while retention deletes the segment. The bytes that then arrive are the segment's
/// (the fetch holds the file open), never garbage.
#[test]
fn fetch_in_flight_while_retention_deletes_its_segment() {
    const BATCH_COUNT: usize = 60;
    const SEGMENT_BYTES: usize = 48 << 20;
    for path in PATHS {
        let dir = TempDir::new("fetch-in-flight-deletion");
        let broker = Broker::start(&dir.0, 1, &[path, "log.retention.check.interval.ms=100"]);
        let mut connection = Connection::open(broker.address());
        // retention.ms=-1: the batches' 2023 timestamps would make the first segment expire by
        // time as soon as it rolls; only the retention.bytes change below may delete it.
        create_topic(&mut connection, "doomed", 1, &[("segment.bytes", &SEGMENT_BYTES.to_string()), ("retention.ms", "-1")]);
        let mut produced = Vec::new();
        for index in 0..BATCH_COUNT {
            let batch = build_batch(900, 1000, 1_700_000_000_000, index as u8);
            connection.produce("doomed", 0, batch.clone());
            produced.push(batch);
        }
        let first_segment = dir.0.join("logs/doomed-0/00000000000000000000.log");
        let segment_size = std::fs::metadata(&first_segment).unwrap().len() as usize;
        let in_first_segment = produced.iter().scan(0, |sum, b| {
            *sum += b.len();
            Some(*sum)
        });
        let batches_in_first = in_first_segment.take_while(|end| *end <= segment_size).count();
        assert!(batches_in_first < BATCH_COUNT, "the data spans two segments");

        // The fetch, not read yet: far more than the socket buffers hold.
        let mut stalled = Connection::open(broker.address());
        let request = fetch_request("doomed", &[0], 52_428_800);
        let correlation_id = 77;
        let header = RequestHeader::default()
            .with_request_api_key(ApiKey::Fetch as i16)
            .with_request_api_version(11)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("stalled")));
        let mut body = bytes::BytesMut::new();
        kafka_protocol::protocol::Encodable::encode(&header, &mut body, 1).unwrap();
        kafka_protocol::protocol::Encodable::encode(&request, &mut body, 11).unwrap();
        stalled.send_frame(&body);
        std::thread::sleep(Duration::from_millis(300));

        let alter = IncrementalAlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("doomed"))
            .with_configs(vec![AlterableConfig::default()
                .with_name(StrBytes::from_static_str("retention.bytes"))
                .with_config_operation(0)
                .with_value(Some(StrBytes::from_static_str("1")))])]);
        let altered: IncrementalAlterConfigsResponse = connection.call(ApiKey::IncrementalAlterConfigs, 0, &alter);
        assert_eq!(altered.responses[0].error_code, 0);
        let started = Instant::now();
        while first_segment.exists() {
            assert!(started.elapsed() < Duration::from_secs(20), "{path}: retention did not delete the first segment:\n{}", broker.log());
            std::thread::sleep(Duration::from_millis(50));
        }

        let unsent = unsent_bytes(broker.port, stalled.local_port());
        assert!(unsent > 0, "{path}: the response was still being sent when its segment went");

        let mut frame = stalled.read_frame().expect("the stalled fetch's response");
        let response_header = ResponseHeader::decode(&mut frame, 0).unwrap();
        assert_eq!(response_header.correlation_id, correlation_id);
        let response = FetchResponse::decode(&mut frame, 11).unwrap();
        let data = &response.responses[0].partitions[0];
        assert_eq!(data.error_code, 0, "{path}");
        let records = data.records.clone().unwrap_or_default();
        assert_batches_equal(&records, &produced[..batches_in_first], path);

        // A new fetch from offset 0 now gets a clean OFFSET_OUT_OF_RANGE.
        let response: FetchResponse = connection.call(ApiKey::Fetch, 11, &fetch_request("doomed", &[0], 1 << 20));
        assert_eq!(response.responses[0].partitions[0].error_code, kafka_protocol::ResponseError::OffsetOutOfRange.code(), "{path}");
    }
}

/// A fetch with no partitions (what a closing consumer sends to end its fetch session: Kafka
/// Connect's three stores each waited out `fetch.max.wait.ms` on it at every stop) is answered at
/// once, as Kafka answers it, not after its max wait.
#[test]
fn a_fetch_without_partitions_is_answered_at_once() {
    let dir = TempDir::new("fetch-empty");
    let mut broker = Broker::start(&dir.0, 2, &[]);
    let mut connection = Connection::open(broker.address());
    for version in [4, 11, 12] {
        let request = FetchRequest::default().with_replica_id(BrokerId(-1)).with_max_wait_ms(5000).with_min_bytes(1).with_max_bytes(1 << 20).with_session_epoch(-1);
        let started = Instant::now();
        let response: FetchResponse = connection.call(ApiKey::Fetch, version, &request);
        let elapsed = started.elapsed();
        assert_eq!(response.error_code, 0, "v{version}");
        assert!(response.responses.is_empty(), "v{version}");
        assert!(elapsed < Duration::from_millis(2000), "v{version}: an empty fetch waited {elapsed:?} of its 5000 ms max wait");
    }
    assert_eq!(broker.stop(), 0);
}

fn session_fetch(topic: &str, partitions: &[(i32, i64)], session_id: i32, epoch: i32, forgotten: &[i32]) -> FetchRequest {
    let mut request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(1 << 20)
        .with_session_id(session_id)
        .with_session_epoch(epoch);
    if !partitions.is_empty() {
        request.topics = vec![FetchTopic::default().with_topic(topic_name(topic)).with_partitions(
            partitions
                .iter()
                .map(|&(p, offset)| FetchPartition::default().with_partition(p).with_fetch_offset(offset).with_partition_max_bytes(1 << 20))
                .collect(),
        )];
    }
    if !forgotten.is_empty() {
        request.forgotten_topics_data =
            vec![fetch_request::ForgottenTopic::default().with_topic(topic_name(topic)).with_partitions(forgotten.to_vec())];
    }
    request
}

/// The partitions an answer carries, as (partition, high watermark, records bytes).
fn answered(response: &FetchResponse) -> Vec<(i32, i64, usize)> {
    let mut partitions: Vec<_> = response
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter())
        .map(|p| (p.partition_index, p.high_watermark, p.records.as_ref().map_or(0, |r| r.len())))
        .collect();
    partitions.sort();
    partitions
}

/// Fetch sessions (KIP-227) on the wire, as Kafka 3.9 answers: a full fetch (epoch 0) opens a
/// session; an incremental one (epoch 1, 2...) reads every partition of the session and answers
/// only those with records or a changed high watermark; an unknown id is
/// FETCH_SESSION_ID_NOT_FOUND, a wrong epoch INVALID_FETCH_SESSION_EPOCH (no partitions either
/// way); forgotten partitions leave the session; epoch -1 is sessionless; a full fetch naming a
/// session closes it; with `max.incremental.fetch.session.cache.slots=0` no session is made.
/// The session lives on the connection's shard: partitions owned by both shards are followed.
#[test]
fn fetch_sessions_on_the_wire() {
    let dir = TempDir::new("fetch-sessions");
    let mut broker = Broker::start(&dir.0, 2, &[]);
    let mut connection = Connection::open(broker.address());
    create_topic(&mut connection, "s", 4, &[]);
    connection.produce("s", 0, build_batch(1, 10, 0, b'f'));
    let all: Vec<(i32, i64)> = (0..4).map(|p| (p, 0)).collect();

    let full: FetchResponse = connection.call(ApiKey::Fetch, 12, &session_fetch("s", &all, 0, 0, &[]));
    assert_eq!(full.error_code, 0);
    assert!(full.session_id > 0, "a full fetch opens a session");
    assert_eq!(answered(&full).len(), 4, "a full answer carries every partition");
    let id = full.session_id;

    // The fetcher read partition 0's record and says so; nothing else changed: an incremental
    // fetch answers no partition.
    let quiet: FetchResponse = connection.call(ApiKey::Fetch, 12, &session_fetch("s", &[(0, 1)], id, 1, &[]));
    assert_eq!((quiet.error_code, quiet.session_id), (0, id));
    assert_eq!(answered(&quiet), vec![], "nothing new");

    // Records on partitions 1 and 3 (both shards): only they come, from the offsets the session holds.
    connection.produce("s", 1, build_batch(1, 10, 0, b'o'));
    connection.produce("s", 3, build_batch(1, 10, 0, b't'));
    let news: FetchResponse = connection.call(ApiKey::Fetch, 12, &session_fetch("s", &[], id, 2, &[]));
    let news = answered(&news);
    assert_eq!(news.iter().map(|p| (p.0, p.1)).collect::<Vec<_>>(), vec![(1, 1), (3, 1)]);
    assert!(news.iter().all(|p| p.2 > 0), "with their records: {news:?}");

    // The fetcher moves its offsets on 1 and 3 and forgets 0; nothing new remains.
    let moved: FetchResponse = connection.call(ApiKey::Fetch, 12, &session_fetch("s", &[(1, 1), (3, 1)], id, 3, &[0]));
    assert_eq!(answered(&moved), vec![]);
    // Partition 0 is forgotten: a record there does not come; one on partition 2 does.
    connection.produce("s", 0, build_batch(1, 10, 0, b's'));
    connection.produce("s", 2, build_batch(1, 10, 0, b't'));
    let after: FetchResponse = connection.call(ApiKey::Fetch, 12, &session_fetch("s", &[], id, 4, &[]));
    assert_eq!(answered(&after).iter().map(|p| p.0).collect::<Vec<_>>(), vec![2]);

    // Errors: a wrong epoch, an unknown id; no partitions with either.
    let stale: FetchResponse = connection.call(ApiKey::Fetch, 12, &session_fetch("s", &[], id, 4, &[]));
    assert_eq!(stale.error_code, kafka_protocol::ResponseError::InvalidFetchSessionEpoch.code());
    assert!(stale.responses.is_empty());
    let unknown: FetchResponse = connection.call(ApiKey::Fetch, 12, &session_fetch("s", &[], id ^ 0x5a5a, 1, &[]));
    assert_eq!(unknown.error_code, kafka_protocol::ResponseError::FetchSessionIdNotFound.code());
    assert!(unknown.responses.is_empty());
    // The session survives its fetcher's mistakes: epoch 5 is still next.
    let still: FetchResponse = connection.call(ApiKey::Fetch, 12, &session_fetch("s", &[], id, 5, &[]));
    assert_eq!((still.error_code, still.session_id), (0, id));

    // A full fetch naming the session closes it (and opens another); epoch -1 is sessionless.
    let reopened: FetchResponse = connection.call(ApiKey::Fetch, 12, &session_fetch("s", &all, id, 0, &[]));
    assert!(reopened.session_id > 0 && reopened.session_id != id);
    let closed: FetchResponse = connection.call(ApiKey::Fetch, 12, &session_fetch("s", &[], id, 6, &[]));
    assert_eq!(closed.error_code, kafka_protocol::ResponseError::FetchSessionIdNotFound.code());
    let sessionless: FetchResponse = connection.call(ApiKey::Fetch, 12, &session_fetch("s", &all, 0, -1, &[]));
    assert_eq!((sessionless.error_code, sessionless.session_id, answered(&sessionless).len()), (0, 0, 4));
    // Fetch v4-v6 have no session fields: answered in full.
    let old: FetchResponse = connection.call(ApiKey::Fetch, 6, &fetch_request("s", &[0, 1, 2, 3], 1 << 20));
    assert_eq!(answered(&old).len(), 4);
    assert_eq!(broker.stop(), 0);

    // Sessions disabled: a full fetch gets session id 0.
    let dir = TempDir::new("fetch-sessions-off");
    let mut broker = Broker::start(&dir.0, 2, &["max.incremental.fetch.session.cache.slots=0"]);
    let mut connection = Connection::open(broker.address());
    create_topic(&mut connection, "s", 2, &[]);
    let full: FetchResponse = connection.call(ApiKey::Fetch, 12, &session_fetch("s", &[(0, 0), (1, 0)], 0, 0, &[]));
    assert_eq!((full.error_code, full.session_id, answered(&full).len()), (0, 0, 2));
    assert_eq!(broker.stop(), 0);
}
