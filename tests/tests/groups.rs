//! Consumer groups driven by real clients (tests/clients/groups.py for confluent-kafka and
//! kafka-python, groups.js for kafkajs) against the real broker with 4 shards, so group
//! requests are routed to the shard that owns the group's `__consumer_offsets` partition.
//!
//! The scenarios run one at a time: they measure rebalance and takeover times, which two cores
//! shared with other scenarios would blur.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use tests::{run_with_timeout, Broker, TempDir};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients")
}

/// Runs a groups.py scenario; returns its stdout (facts) after checking it passed.
fn scenario(broker: &Broker, client: &str, name: &str, topic: &str, extra: &[&str]) -> String {
    let python = clients_dir().join(".venv/bin/python");
    assert!(python.exists(), "{} is missing: run tests/clients/setup.sh", python.display());
    let (ok, stdout, stderr) = run_with_timeout(
        Command::new(python)
            .arg(clients_dir().join("groups.py"))
            .args([name, "--client", client, "--bootstrap", &broker.bootstrap(), "--topic", topic])
            .args(extra),
        Duration::from_secs(150),
    );
    assert!(ok && stdout.contains(&format!("{name} ok")), "{client} {name} {extra:?} failed:\n{stdout}\n{stderr}\nbroker log:\n{}", broker.log());
    eprintln!("{client} {name} {extra:?}:\n{stdout}");
    stdout
}

fn fact(stdout: &str, name: &str) -> String {
    let prefix = format!("fact {name}=");
    stdout.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap_or_else(|| panic!("no fact {name} in:\n{stdout}")).to_string()
}

fn group_scenarios(client: &str) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new(&format!("groups-{client}"));
    let broker = Broker::start(&dir.0, 4, &[]);
    // Seeds: 3 partitions, 4 consumers -> one each, the fourth idle; 6 and 3 -> two each.
    let split = scenario(&broker, client, "split", "split-3-4", &["--partitions", "3", "--members", "4"]);
    assert_ne!(fact(&split, "idle"), "-");
    scenario(&broker, client, "split", "split-6-3", &["--partitions", "6", "--members", "3"]);
    // A member that closes hands its partitions over within 5 s; one killed, within
    // session.timeout.ms (6 s here) + 3 s; the scenario checks nothing was skipped.
    scenario(&broker, client, "failover", "leave", &["--how", "leave"]);
    scenario(&broker, client, "failover", "kill", &["--how", "kill"]);
    // auto.offset.reset earliest and latest; the first record within 4 s of subscribe.
    scenario(&broker, client, "reset", "reset", &[]);
    scenario(&broker, client, "admin", "admin", &["--partitions", "3"]);
    scenario(&broker, client, "static", "static", &["--partitions", "4"]);
}

#[test]
fn confluent_kafka_consumer_groups() {
    group_scenarios("confluent");
}

#[test]
fn kafka_python_consumer_groups() {
    group_scenarios("kafka-python");
}

#[test]
fn kafkajs_consumer_group_split() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("groups-kafkajs");
    let broker = Broker::start(&dir.0, 4, &[]);
    for (topic, partitions, members) in [("js-3-4", "3", "4"), ("js-6-3", "6", "3")] {
        let (ok, stdout, stderr) = run_with_timeout(
            Command::new("node")
                .arg(clients_dir().join("groups.js"))
                .args(["--bootstrap", &broker.bootstrap(), "--topic", topic, "--partitions", partitions, "--members", members]),
            Duration::from_secs(120),
        );
        assert!(ok && stdout.contains("split ok"), "kafkajs split {topic} failed:\n{stdout}\n{stderr}\nbroker log:\n{}", broker.log());
    }
}

/// Committed offsets survive a graceful restart and a kill -9: a new consumer in the group
/// resumes exactly at them.
#[test]
fn committed_offsets_survive_restart_and_kill_9() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("groups-restart");
    let mut broker = Broker::start(&dir.0, 4, &[]);
    for client in ["confluent", "kafka-python"] {
        for graceful in [true, false] {
            let topic = format!("resume-{client}-{}", if graceful { "sigterm" } else { "kill9" });
            let committed = fact(&scenario(&broker, client, "commit", &topic, &["--partitions", "3"]), "committed");
            if graceful {
                assert_eq!(broker.stop(), 0, "{}", broker.log());
            } else {
                broker.kill_9();
            }
            broker.restart();
            let resumed = fact(&scenario(&broker, client, "resume", &topic, &["--expect", &committed]), "resumed");
            assert_eq!(resumed, committed);
        }
    }
    assert!(broker.log().contains("groups loaded"), "{}", broker.log());
}

/// `offsets.retention.minutes`: once a group is Empty for that long, its offsets and the group
/// go (0 minutes here, checked every 200 ms): the group has no committed offset any more.
#[test]
fn offsets_of_an_empty_group_expire() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("groups-retention");
    let broker = Broker::start(&dir.0, 2, &["offsets.retention.minutes=0", "offsets.retention.check.interval.ms=200"]);
    scenario(&broker, "confluent", "commit", "expiring", &["--partitions", "3"]);
    let started = std::time::Instant::now();
    while !broker.log().contains("offsets expired; group removed") {
        assert!(started.elapsed() < Duration::from_secs(10), "offsets never expired:\n{}", broker.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let committed = fact(&scenario(&broker, "confluent", "committed", "expiring", &["--partitions", "3"]), "committed");
    assert_eq!(committed, r#"{"0": null, "1": null, "2": null}"#);
}
