//! Consumer groups in cluster mode: `__consumer_offsets` is a replicated topic in ZooKeeper and a
//! group's coordinator is the leader of its partition. A real ZooKeeper, three broker processes,
//! confluent-kafka consumers (tests/clients/groups.py), and kill -9 of the coordinator.

use std::process::Command;
use std::time::Duration;

use kafka_protocol::messages::{ApiKey, FindCoordinatorRequest, FindCoordinatorResponse, GroupId, OffsetFetchRequest, OffsetFetchResponse};
use kafka_protocol::protocol::StrBytes;
use tests::wire::Connection;
use tests::zookeeper::ZooKeeper;
use tests::{run_with_timeout, Broker, TempDir};

const SESSION_TIMEOUT_MS: u64 = 3_000;
const OFFSETS_PARTITIONS: i32 = 10;
const NOT_COORDINATOR: i16 = 16;

fn start_broker(dir: &TempDir, zookeeper: &ZooKeeper, broker_id: i32) -> Broker {
    let connect = format!("zookeeper.connect={}", zookeeper.connect("/kafka"));
    let id = format!("broker.id={broker_id}");
    let session = format!("zookeeper.session.timeout.ms={SESSION_TIMEOUT_MS}");
    let offsets = format!("offsets.topic.num.partitions={OFFSETS_PARTITIONS}");
    Broker::start(&dir.0, 2, &[&connect, &id, &session, &offsets])
}

fn clients_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients")
}

/// Runs a groups.py scenario with confluent-kafka; returns its stdout after checking it passed.
fn scenario(bootstrap: &str, name: &str, topic: &str, extra: &[&str]) -> String {
    let (ok, stdout, stderr) = run_with_timeout(
        Command::new(clients_dir().join(".venv/bin/python"))
            .arg(clients_dir().join("groups.py"))
            .args([name, "--client", "confluent", "--bootstrap", bootstrap, "--topic", topic])
            .args(extra),
        Duration::from_secs(120),
    );
    assert!(ok && stdout.contains(&format!("{name} ok")), "{name} {extra:?} failed:\n{stdout}\n{stderr}");
    eprintln!("{name} {extra:?}:\n{stdout}");
    stdout
}

fn fact(stdout: &str, name: &str) -> String {
    let prefix = format!("fact {name}=");
    stdout.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap_or_else(|| panic!("no fact {name} in:\n{stdout}")).to_string()
}

/// Kafka's group -> `__consumer_offsets` partition (Java's String.hashCode, sign bit masked).
fn partition_for_group(group: &str) -> i32 {
    let hash = group.encode_utf16().fold(0i32, |hash, unit| hash.wrapping_mul(31).wrapping_add(unit as i32));
    (hash & 0x7fff_ffff) % OFFSETS_PARTITIONS
}

fn find_coordinator(broker: &Broker, group: &str) -> (i16, i32) {
    let request = FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.to_string()));
    let response: FindCoordinatorResponse = Connection::open(broker.address()).call(ApiKey::FindCoordinator, 3, &request);
    (response.error_code, response.node_id.0)
}

fn offset_fetch_error(broker: &Broker, group: &str) -> i16 {
    let request = OffsetFetchRequest::default().with_group_id(GroupId(StrBytes::from_string(group.to_string()))).with_topics(None);
    let response: OffsetFetchResponse = Connection::open(broker.address()).call(ApiKey::OffsetFetch, 7, &request);
    response.error_code
}

#[test]
fn groups_follow_the_leadership_of_their_offsets_partition() {
    let zookeeper = ZooKeeper::start();
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("cluster-groups-{i}"))).collect();
    let mut brokers: Vec<Broker> = (0..3).map(|i| start_broker(&dirs[i], &zookeeper, i as i32 + 1)).collect();
    let bootstrap_all = brokers.iter().map(|b| b.bootstrap()).collect::<Vec<_>>().join(",");

    // A group rebalances through the cluster's coordinator: 3 partitions, 3 members, one each.
    scenario(&bootstrap_all, "split", "cluster-split", &["--partitions", "3", "--members", "3", "--replication-factor", "3"]);

    // `__consumer_offsets` is in ZooKeeper, replicated on every broker (offsets.topic.replication.factor 3).
    let assignment = zookeeper.cli("get /kafka/brokers/topics/__consumer_offsets");
    let json: serde_json::Value = serde_json::from_str(assignment.trim()).unwrap_or_else(|e| panic!("{assignment:?}: {e}"));
    let partitions = json["partitions"].as_object().unwrap();
    assert_eq!(partitions.len(), OFFSETS_PARTITIONS as usize, "{assignment}");
    assert!(partitions.values().all(|replicas| replicas.as_array().unwrap().len() == 3), "{assignment}");

    // Offsets committed through the coordinator; every broker names the same coordinator, the
    // leader of the group's partition, and the others refuse the group with NOT_COORDINATOR.
    let topic = "cluster-resume";
    let group = format!("group-{topic}");
    let committed = fact(&scenario(&bootstrap_all, "commit", topic, &["--partitions", "3", "--replication-factor", "3"]), "committed");
    let offsets_partition = partition_for_group(&group);
    let (coordinator, isr) = zookeeper.partition_state("/kafka", "__consumer_offsets", offsets_partition);
    assert_eq!(isr.len(), 3, "the offsets partition's ISR: {isr:?}");
    for broker in &brokers {
        assert_eq!(find_coordinator(broker, &group), (0, coordinator), "FindCoordinator on broker {}", broker.port);
        let expected = if broker.port == brokers[coordinator as usize - 1].port { 0 } else { NOT_COORDINATOR };
        assert_eq!(offset_fetch_error(broker, &group), expected, "OffsetFetch on broker {}", broker.port);
    }

    // kill -9 the coordinator: a new leader of the offsets partition takes the group over with
    // every committed offset (commits are acknowledged only once the ISR has them).
    brokers[coordinator as usize - 1].kill_9();
    let survivors = brokers.iter().enumerate().filter(|(i, _)| *i as i32 + 1 != coordinator).map(|(_, b)| b.bootstrap()).collect::<Vec<_>>().join(",");
    let after = fact(&scenario(&survivors, "committed", topic, &["--partitions", "3"]), "committed");
    assert_eq!(after, committed, "committed offsets after the coordinator's kill -9");
    let (new_coordinator, _) = zookeeper.partition_state("/kafka", "__consumer_offsets", offsets_partition);
    assert_ne!(new_coordinator, coordinator);
    let resumed = fact(&scenario(&survivors, "resume", topic, &["--expect", &committed]), "resumed");
    assert_eq!(resumed, committed);

    // The old coordinator comes back as a follower: the group stays where it is.
    brokers[coordinator as usize - 1].restart();
    assert_eq!(find_coordinator(&brokers[coordinator as usize - 1], &group), (0, new_coordinator));
    assert_eq!(offset_fetch_error(&brokers[coordinator as usize - 1], &group), NOT_COORDINATOR);
    for broker in &mut brokers {
        assert_eq!(broker.stop(), 0, "clean stop:\n{}", broker.log());
    }
}
