//! Fetch v13-v17 (KIP-516: topics named by id), on the wire and with real clients: records by
//! topic id for every version, an unknown id answered UNKNOWN_TOPIC_ID per partition, fetch
//! sessions keyed by id (a fetch by names cannot use one: FETCH_SESSION_TOPIC_ID_ERROR;
//! partitions forgotten by id), and a topic deleted and created again under the same name,
//! which the old session must not serve (INCONSISTENT_TOPIC_ID) while a fetch by the new id
//! reads the new topic. Then which Fetch version each real client negotiates (the broker's
//! `broker_requests_by_version_total`), and that it reads every record with it.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use storage::test_support::build_batch;
use tests::wire::Connection;
use tests::{Broker, TempDir};

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// Creates `name` and returns its topic id (CreateTopics v7 answers it). Retries while a
/// deletion of the same name is still under way.
fn create_topic(connection: &mut Connection, name: &str, partitions: i32) -> uuid::Uuid {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let request = CreateTopicsRequest::default().with_timeout_ms(5000).with_topics(vec![CreatableTopic::default()
            .with_name(topic_name(name))
            .with_num_partitions(partitions)
            .with_replication_factor(-1)]);
        let response: CreateTopicsResponse = connection.call(ApiKey::CreateTopics, 7, &request);
        let topic = &response.topics[0];
        if topic.error_code == 0 {
            assert!(!topic.topic_id.is_nil(), "create {name}: a topic id");
            return topic.topic_id;
        }
        assert!(topic.error_code == ResponseError::TopicAlreadyExists.code() && Instant::now() < deadline, "create {name}: {}", topic.error_code);
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A Fetch naming topics by id: each (id, [(partition, offset)]).
fn fetch_by_id(topics: &[(uuid::Uuid, &[(i32, i64)])], session_id: i32, epoch: i32, forgotten: &[(uuid::Uuid, i32)]) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(1 << 20)
        .with_session_id(session_id)
        .with_session_epoch(epoch)
        .with_topics(
            topics
                .iter()
                .map(|(id, partitions)| {
                    FetchTopic::default().with_topic_id(*id).with_partitions(
                        partitions
                            .iter()
                            .map(|&(p, offset)| FetchPartition::default().with_partition(p).with_fetch_offset(offset).with_partition_max_bytes(1 << 20))
                            .collect(),
                    )
                })
                .collect(),
        )
        .with_forgotten_topics_data(forgotten.iter().map(|(id, p)| ForgottenTopic::default().with_topic_id(*id).with_partitions(vec![*p])).collect())
}

/// Every partition answered: (topic id, partition, error code, records bytes), sorted.
fn answered(response: &FetchResponse) -> Vec<(uuid::Uuid, i32, i16, Bytes)> {
    let mut partitions: Vec<_> = response
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t.topic_id, p.partition_index, p.error_code, p.records.clone().unwrap_or_default())))
        .collect();
    partitions.sort_by_key(|p| (p.0, p.1));
    partitions
}

/// The stored batch equals the produced one but for its base offset and leader epoch.
fn same_batch(stored: &[u8], produced: &[u8]) -> bool {
    stored.len() == produced.len() && stored[16..] == produced[16..]
}

#[test]
fn fetch_by_topic_id_on_the_wire() {
    let dir = TempDir::new("fetch-topic-ids");
    let mut broker = Broker::start(&dir.0, 2, &[]);
    let mut connection = Connection::open(broker.address());
    let id = create_topic(&mut connection, "ids", 2);
    let batches = [build_batch(3, 100, 1_700_000_000_000, b'a'), build_batch(2, 100, 1_700_000_000_000, b'b')];
    for (partition, batch) in batches.iter().enumerate() {
        connection.produce("ids", partition as i32, batch.clone());
    }
    let unknown = uuid::Uuid::from_bytes([0xab; 16]);

    // Every version by id, sessionless: the records, the topic id echoed; an unknown id beside
    // them is answered UNKNOWN_TOPIC_ID for each of its partitions, and does not fail the rest.
    for version in 13..=17 {
        let request = fetch_by_id(&[(id, &[(0, 0), (1, 0)]), (unknown, &[(0, 0), (5, 0)])], 0, -1, &[]);
        let response: FetchResponse = connection.call(ApiKey::Fetch, version, &request);
        assert_eq!((response.error_code, response.session_id), (0, 0), "v{version}");
        let partitions = answered(&response);
        assert_eq!(partitions.len(), 4, "v{version}: {partitions:?}");
        for (topic, partition, error_code, records) in &partitions {
            if *topic == id {
                assert_eq!(*error_code, 0, "v{version} partition {partition}");
                assert!(same_batch(records, &batches[*partition as usize]), "v{version} partition {partition}: {} bytes", records.len());
            } else {
                assert_eq!((*topic, *error_code, records.len()), (unknown, ResponseError::UnknownTopicId.code(), 0), "v{version}");
            }
        }
    }
    // The same fetch by name (v12) reads the same records: one topic, two ways to name it.
    let by_name = FetchRequest::default().with_max_bytes(1 << 20).with_session_epoch(-1).with_topics(vec![FetchTopic::default()
        .with_topic(topic_name("ids"))
        .with_partitions(vec![FetchPartition::default().with_partition(1).with_partition_max_bytes(1 << 20)])]);
    let response: FetchResponse = connection.call(ApiKey::Fetch, 12, &by_name);
    assert!(same_batch(response.responses[0].partitions[0].records.as_ref().unwrap(), &batches[1]));

    // A session by id (v13, full fetch), then incremental fetches by id.
    let full: FetchResponse = connection.call(ApiKey::Fetch, 13, &fetch_by_id(&[(id, &[(0, 0), (1, 0)])], 0, 0, &[]));
    assert_eq!(full.error_code, 0);
    assert!(full.session_id > 0, "a full v13 fetch opens a session");
    let session = full.session_id;
    // A fetch by names (v12) cannot use a session keyed by ids; the session stays.
    let by_names: FetchResponse = connection.call(ApiKey::Fetch, 12, &FetchRequest::default().with_session_id(session).with_session_epoch(1));
    assert_eq!(by_names.error_code, ResponseError::FetchSessionTopicIdError.code());
    // The fetcher moves past what it read: nothing new.
    let quiet: FetchResponse = connection.call(ApiKey::Fetch, 17, &fetch_by_id(&[(id, &[(0, 3), (1, 2)])], session, 1, &[]));
    assert_eq!((quiet.error_code, quiet.session_id, answered(&quiet).len()), (0, session, 0));
    // Partition 1 is forgotten by id: its new record does not come, partition 0's does.
    let next = [build_batch(1, 50, 1_700_000_000_000, b'c'), build_batch(1, 50, 1_700_000_000_000, b'd')];
    let forget: FetchResponse = connection.call(ApiKey::Fetch, 17, &fetch_by_id(&[], session, 2, &[(id, 1)]));
    assert_eq!(answered(&forget).len(), 0);
    connection.produce("ids", 0, next[0].clone());
    connection.produce("ids", 1, next[1].clone());
    let news: FetchResponse = connection.call(ApiKey::Fetch, 17, &fetch_by_id(&[], session, 3, &[]));
    let news = answered(&news);
    assert_eq!(news.iter().map(|p| (p.0, p.1, p.2)).collect::<Vec<_>>(), vec![(id, 0, 0)]);
    assert!(same_batch(&news[0].3, &next[0]));

    // The topic is deleted and created again under its name, with a new id and a new record.
    let delete = DeleteTopicsRequest::default().with_timeout_ms(5000).with_topics(vec![DeleteTopicState::default().with_name(Some(topic_name("ids")))]);
    let deleted: DeleteTopicsResponse = connection.call(ApiKey::DeleteTopics, 6, &delete);
    assert_eq!(deleted.responses[0].error_code, 0);
    let new_id = create_topic(&mut connection, "ids", 2);
    assert_ne!(new_id, id);
    let fresh = build_batch(4, 100, 1_700_000_000_000, b'n');
    connection.produce("ids", 0, fresh.clone());
    // The old session names the old id: its partition is not served from the new topic.
    let stale: FetchResponse = connection.call(ApiKey::Fetch, 17, &fetch_by_id(&[], session, 4, &[]));
    assert_eq!(stale.error_code, 0);
    let stale = answered(&stale);
    assert_eq!(stale.iter().map(|p| (p.0, p.1, p.2, p.3.len())).collect::<Vec<_>>(), vec![(id, 0, ResponseError::InconsistentTopicId.code(), 0)]);
    // A sessionless fetch by the old id: unknown. By the new id: the new topic's record.
    let old: FetchResponse = connection.call(ApiKey::Fetch, 16, &fetch_by_id(&[(id, &[(0, 0)])], 0, -1, &[]));
    assert_eq!(answered(&old)[0].2, ResponseError::UnknownTopicId.code());
    let new: FetchResponse = connection.call(ApiKey::Fetch, 16, &fetch_by_id(&[(new_id, &[(0, 0)])], 0, -1, &[]));
    let new = answered(&new);
    assert_eq!((new[0].0, new[0].2), (new_id, 0));
    assert!(same_batch(&new[0].3, &fresh));
    assert_eq!(broker.stop(), 0);
}

/// A topic id no topic has (a consumer whose metadata ran ahead of this broker's) is taken into
/// a session beside a known one and answered UNKNOWN_TOPIC_ID at each fetch, without failing the
/// session (its later resolution, once the topic exists, is fetch_session's unit test: a topic
/// cannot be created with a chosen id).
#[test]
fn a_session_keeps_an_unknown_id_answered() {
    let dir = TempDir::new("fetch-topic-ids-later");
    let mut broker = Broker::start(&dir.0, 2, &[]);
    let mut connection = Connection::open(broker.address());
    let first = create_topic(&mut connection, "first", 1);
    let unknown = uuid::Uuid::from_bytes([0x5c; 16]);
    let full: FetchResponse = connection.call(ApiKey::Fetch, 13, &fetch_by_id(&[(first, &[(0, 0)]), (unknown, &[(0, 0)])], 0, 0, &[]));
    assert!(full.session_id > 0);
    let errors: Vec<_> = answered(&full).iter().map(|p| (p.0, p.2)).collect();
    assert!(errors.contains(&(unknown, ResponseError::UnknownTopicId.code())) && errors.contains(&(first, 0)), "{errors:?}");
    // Still unknown: answered again (a partition with an error always is).
    let again: FetchResponse = connection.call(ApiKey::Fetch, 13, &fetch_by_id(&[], full.session_id, 1, &[]));
    assert_eq!(answered(&again).iter().map(|p| (p.0, p.2)).collect::<Vec<_>>(), vec![(unknown, ResponseError::UnknownTopicId.code())]);
    assert_eq!(broker.stop(), 0);
}

fn clients_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients")
}

/// The Fetch versions used between two scrapes, each with its request count.
fn fetch_versions(before: &std::collections::BTreeMap<String, f64>, after: &std::collections::BTreeMap<String, f64>) -> Vec<(i16, f64)> {
    (0..=17)
        .filter_map(|version| {
            let series = format!("broker_requests_by_version_total{{request=\"Fetch\",version=\"{version}\"}}");
            let count = after.get(&series).copied().unwrap_or(0.0) - before.get(&series).copied().unwrap_or(0.0);
            (count > 0.0).then_some((version, count))
        })
        .collect()
}

/// Each real client against a broker that offers Fetch v0-v17: the round trip of
/// tests/clients/roundtrip.* (create, produce, read every record back, check content and order)
/// passes, with the Fetch version it negotiates read from the broker's metrics. librdkafka 2.16
/// (confluent-kafka) fetches by topic id; kafka-python 3.0 stops at v12, kafkajs 2.2 at v11 (by
/// name). Apache Kafka's Java client (v17) is tests/java `FetchSessionTest`.
#[test]
fn each_client_reads_everything_with_the_fetch_version_it_negotiates() {
    let dir = TempDir::new("fetch-topic-ids-clients");
    let metrics = format!("127.0.0.1:{}", tests::free_port());
    let broker = Broker::start(&dir.0, 2, &[&format!("metrics.listener=http://{metrics}")]);
    let python = |client: &str| {
        let mut command = std::process::Command::new(tests::python());
        command.arg(clients_dir().join("roundtrip.py")).args(["--client", client]);
        command
    };
    let mut kafkajs = std::process::Command::new("node");
    kafkajs.arg(clients_dir().join("roundtrip.js")).args(["--phase", "all"]);
    let expected: [(&str, std::process::Command, &[i16]); 3] =
        [("confluent", python("confluent"), &[16]), ("kafka-python", python("kafka-python"), &[12]), ("kafkajs", kafkajs, &[11])];
    for (client, mut command, versions) in expected {
        // The last client's long poll may still be answered (counted) after it closed: wait
        // until the counts stand still.
        let mut before = tests::scrape_metrics(&metrics);
        for _ in 0..10 {
            std::thread::sleep(Duration::from_millis(700));
            let now = tests::scrape_metrics(&metrics);
            if fetch_versions(&before, &now).is_empty() {
                break;
            }
            before = now;
        }
        let topic = format!("versions-{client}");
        let (ok, stdout, stderr) = tests::run_with_timeout(
            command.args(["--bootstrap", &broker.bootstrap(), "--topic", &topic, "--partitions", "3", "--records", "300"]),
            Duration::from_secs(120),
        );
        assert!(ok && stdout.contains("roundtrip ok"), "{client} failed:\n{stdout}\n{stderr}\nbroker log:\n{}", broker.log());
        // A request is counted once its response is written: the client may be done a moment
        // before its last fetch is.
        let mut used = fetch_versions(&before, &tests::scrape_metrics(&metrics));
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(500));
            let now = fetch_versions(&before, &tests::scrape_metrics(&metrics));
            if !now.is_empty() && now == used {
                break;
            }
            used = now;
        }
        eprintln!("{client}: Fetch versions used (version, requests): {used:?}");
        assert_eq!(used.iter().map(|(version, _)| *version).collect::<Vec<_>>(), versions, "{client}");
    }
}

/// KIP-951 (Fetch v16+) in cluster mode: a fetch by topic id sent to a broker that does not lead
/// the partition is answered NOT_LEADER_OR_FOLLOWER with the partition's `current_leader` (id and
/// leader epoch, as ZooKeeper has them) and that leader's address in `node_endpoints`, so the
/// client goes there without asking Metadata first; v15 has no such fields.
#[test]
fn not_leader_names_the_current_leader_from_v16() {
    let zookeeper = tests::zookeeper::ZooKeeper::start();
    let dirs: Vec<TempDir> = (0..2).map(|i| TempDir::new(&format!("topic-ids-leader-{i}"))).collect();
    let connect = format!("zookeeper.connect={}", zookeeper.connect("/kafka"));
    let brokers: Vec<Broker> =
        (0..2).map(|i| Broker::start(&dirs[i].0, 1, &[&connect, &format!("broker.id={}", i + 1), "offsets.topic.replication.factor=1"])).collect();
    let mut connection = Connection::open(brokers[0].address());
    let id = create_topic(&mut connection, "led", 1);
    let deadline = Instant::now() + Duration::from_secs(20);
    // The state znode, once the controller wrote it (zkCli may print only its connection line:
    // asked again then).
    let (leader, epoch) = loop {
        let state = zookeeper.cli("get /kafka/brokers/topics/led/partitions/0/state");
        if let Ok(json) = serde_json::from_str::<serde_json::Value>(state.trim()) {
            if json["leader"].as_i64().unwrap_or(-1) > 0 {
                break (json["leader"].as_i64().unwrap() as i32, json["leader_epoch"].as_i64().unwrap() as i32);
            }
        }
        assert!(Instant::now() < deadline, "no leader for led-0: {state}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let (other, leading) = if leader == 1 { (&brokers[1], &brokers[0]) } else { (&brokers[0], &brokers[1]) };
    let mut to_other = Connection::open(other.address());
    // The other broker learns of the topic through ZooKeeper: wait until it knows the id.
    let deadline = Instant::now() + Duration::from_secs(20);
    let response = loop {
        let response: FetchResponse = to_other.call(ApiKey::Fetch, 16, &fetch_by_id(&[(id, &[(0, 0)])], 0, -1, &[]));
        if response.responses[0].partitions[0].error_code != ResponseError::UnknownTopicId.code() || Instant::now() > deadline {
            break response;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let data = &response.responses[0].partitions[0];
    assert_eq!((response.responses[0].topic_id, data.error_code), (id, ResponseError::NotLeaderOrFollower.code()));
    assert_eq!((data.current_leader.leader_id.0, data.current_leader.leader_epoch), (leader, epoch));
    let endpoints: Vec<_> = response.node_endpoints.iter().map(|n| (n.node_id.0, n.host.to_string(), n.port)).collect();
    assert_eq!(endpoints, vec![(leader, "127.0.0.1".to_string(), leading.port as i32)]);
    // v15: neither field.
    let response: FetchResponse = to_other.call(ApiKey::Fetch, 15, &fetch_by_id(&[(id, &[(0, 0)])], 0, -1, &[]));
    let data = &response.responses[0].partitions[0];
    assert_eq!(data.error_code, ResponseError::NotLeaderOrFollower.code());
    assert_eq!(data.current_leader.leader_id.0, -1);
    assert!(response.node_endpoints.is_empty());
}

/// CPU time of `pid` so far (user + system, exited threads included), in microseconds: fields
/// 14 and 15 of /proc/PID/stat, counted after the command name's closing parenthesis.
fn cpu_us(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let ticks: u64 = stat.rsplit_once(')').unwrap().1.split_whitespace().skip(11).take(2).map(|t| t.parse::<u64>().unwrap()).sum();
    ticks * 1_000_000 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64
}

/// A measurement, not a check (tuning.md quotes it): the broker's CPU per sessionless fetch of
/// 1,000 one-partition topics, by name (v12) and by id (v16: the ids resolved in one pass over
/// the topic table), alternated A B A B on one broker. Run with
/// `cargo test --release -p tests --test topic_ids -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement; tuning.md quotes its output"]
fn fetch_by_id_costs_about_what_fetch_by_name_does() {
    const TOPICS: usize = 1000;
    const FETCHES: usize = 400;
    let dir = TempDir::new("fetch-topic-ids-cost");
    let mut broker = Broker::start(&dir.0, 1, &[]);
    let mut connection = Connection::open(broker.address());
    let names: Vec<String> = (0..TOPICS).map(|i| format!("cost-{i:04}")).collect();
    let request = CreateTopicsRequest::default().with_timeout_ms(60_000).with_topics(
        names.iter().map(|name| CreatableTopic::default().with_name(topic_name(name)).with_num_partitions(1).with_replication_factor(-1)).collect(),
    );
    let created: CreateTopicsResponse = connection.call(ApiKey::CreateTopics, 7, &request);
    assert!(created.topics.iter().all(|t| t.error_code == 0));
    let ids: Vec<uuid::Uuid> = created.topics.iter().map(|t| t.topic_id).collect();
    let one = [(0, 0)];
    let by_id = fetch_by_id(&ids.iter().map(|id| (*id, &one[..])).collect::<Vec<_>>(), 0, -1, &[]);
    let by_name = FetchRequest::default().with_max_bytes(1 << 20).with_session_epoch(-1).with_topics(
        names
            .iter()
            .map(|name| {
                FetchTopic::default().with_topic(topic_name(name)).with_partitions(vec![FetchPartition::default().with_partition(0).with_partition_max_bytes(1 << 20)])
            })
            .collect(),
    );
    let mut per_fetch_us: [(i16, Vec<f64>); 2] = [(12, Vec::new()), (16, Vec::new())];
    for _round in 0..4 {
        for (version, samples) in per_fetch_us.iter_mut() {
            let request = if *version >= 13 { &by_id } else { &by_name };
            let before = cpu_us(broker.pid());
            for _ in 0..FETCHES {
                let response: FetchResponse = connection.call(ApiKey::Fetch, *version, request);
                assert_eq!(response.responses.len(), TOPICS);
            }
            samples.push((cpu_us(broker.pid()) - before) as f64 / FETCHES as f64);
        }
    }
    for (version, samples) in &per_fetch_us {
        eprintln!("Fetch v{version}, {TOPICS} topics: broker CPU per fetch (us), by round: {samples:.0?}");
    }
    assert_eq!(broker.stop(), 0);
}
