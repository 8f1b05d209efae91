//! Helpers for the 3-broker cluster tests (failover.rs, security_cluster.rs): partition states
//! and full ISRs as a broker's Metadata says them, the acks=all producer of failover.py and the
//! read-back of every acknowledged record. `security` is kcat's/librdkafka's `-X key=value`
//! settings for secured listeners (empty for PLAINTEXT).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::run_with_timeout;

pub use crate::security::kcat;

pub fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients")
}

/// (leader, isr) by partition, as a broker's Metadata says (kcat -L).
pub fn partition_states(bootstrap: &str, topic: &str, security: &[String]) -> Vec<(i32, Vec<i32>)> {
    let (ok, stdout, _) = run_with_timeout(kcat().args(["-b", bootstrap, "-L", "-t", topic]).args(security), Duration::from_secs(20));
    if !ok {
        return Vec::new();
    }
    stdout
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let rest = line.strip_prefix("partition ")?;
            let leader = rest.split("leader ").nth(1)?.split(',').next()?.trim().parse().ok()?;
            let isr = rest.split("isrs: ").nth(1)?.split(',').filter_map(|b| b.trim().parse().ok()).collect();
            Some((leader, isr))
        })
        .collect()
}

/// Waits until each of the topic's `partitions` has a leader and all `replicas` in its ISR.
pub fn wait_for_full_isr(bootstrap: &str, topic: &str, partitions: usize, replicas: usize, security: &[String], within: Duration) {
    let started = Instant::now();
    loop {
        let states = partition_states(bootstrap, topic, security);
        if states.len() == partitions && states.iter().all(|(leader, isr)| *leader > 0 && isr.len() == replicas) {
            return;
        }
        assert!(started.elapsed() < within, "the ISR did not come back to {replicas} within {within:?}: {states:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub struct Produced {
    /// (partition, offset, value, acknowledged at, seconds since the epoch)
    pub acked: Vec<(i32, i64, u64, f64)>,
    pub errors: Vec<String>,
}

/// failover.py: an idempotent acks=all producer of numbered records for `seconds`; `config` is
/// extra librdkafka settings (JSON object, "{}" for none).
pub fn run_producer(bootstrap: &str, topic: &str, partitions: usize, seconds: f64, first: u64, out: &Path, config: &str) -> Child {
    Command::new(clients_dir().join(".venv/bin/python"))
        .arg(clients_dir().join("failover.py"))
        .args([bootstrap, topic, &partitions.to_string(), &seconds.to_string()])
        .arg(out)
        .arg(first.to_string())
        .env("KAFKA_CLIENT_CONFIG", config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python with confluent-kafka (tests/clients/setup.sh)")
}

pub fn read_produced(path: &Path) -> Produced {
    let value: serde_json::Value = serde_json::from_slice(&std::fs::read(path).expect("the producer's report")).unwrap();
    let acked = value["acked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a[0].as_i64().unwrap() as i32, a[1].as_i64().unwrap(), a[2].as_u64().unwrap(), a[3].as_f64().unwrap()))
        .collect();
    let errors = value["errors"].as_array().unwrap().iter().map(|e| e.as_str().unwrap_or_default().to_string()).collect();
    assert_eq!(value["unflushed"].as_i64(), Some(0), "records left unsent");
    Produced { acked, errors }
}

/// Reads the whole topic back with kcat and checks every acknowledged (partition, offset, value)
/// is there, each value once and in order per partition. Returns the records by partition.
pub fn assert_acked_read_back(bootstrap: &str, topic: &str, security: &[String], acked: &[(i32, i64, u64)]) -> BTreeMap<i32, Vec<(i64, u64)>> {
    let (ok, stdout, stderr) = run_with_timeout(
        kcat().args(["-b", bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%p %o %s\n"]).args(security),
        Duration::from_secs(60),
    );
    assert!(ok, "kcat -C: {stderr}");
    let mut consumed: BTreeMap<i32, Vec<(i64, u64)>> = BTreeMap::new();
    for line in stdout.lines() {
        let mut parts = line.split(' ');
        let partition: i32 = parts.next().unwrap().parse().unwrap();
        let offset: i64 = parts.next().unwrap().parse().unwrap();
        let value: u64 = parts.next().unwrap().parse().unwrap();
        consumed.entry(partition).or_default().push((offset, value));
    }
    let mut seen = BTreeSet::new();
    for (partition, records) in &consumed {
        for pair in records.windows(2) {
            assert!(pair[1].1 > pair[0].1, "partition {partition}: {:?} after {:?}", pair[1], pair[0]);
        }
        for (_, value) in records {
            assert!(seen.insert(*value), "value {value} read twice");
        }
    }
    for (partition, offset, value) in acked {
        let found = consumed.get(partition).and_then(|r| r.iter().find(|(o, _)| o == offset));
        assert_eq!(found.map(|(_, v)| *v), Some(*value), "acknowledged record {value} (partition {partition}, offset {offset}) is missing");
    }
    consumed
}
