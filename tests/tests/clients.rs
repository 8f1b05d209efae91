//! confluent-kafka, kafka-python and kafkajs (installed by tests/clients/setup.sh) run the same
//! scenario against the broker: create a topic with several partitions, produce keyed records,
//! read them all back and check content and per-partition order (tests/clients/roundtrip.*).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tests::{assert_stored_compressed, python, run_with_timeout, Broker, TempDir};

fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients")
}

fn roundtrip_py(broker: &Broker, client: &str, topic: &str, extra: &[&str]) {
    let script = clients_dir().join("roundtrip.py");
    let (ok, stdout, stderr) = run_with_timeout(
        Command::new(python())
            .arg(script)
            .args(["--client", client, "--bootstrap", &broker.bootstrap(), "--topic", topic])
            .args(["--partitions", "3", "--records", "500"])
            .args(extra),
        Duration::from_secs(120),
    );
    assert!(ok && stdout.contains("roundtrip ok"), "{client} {extra:?} failed:\n{stdout}\n{stderr}\nbroker log:\n{}", broker.log());
}

#[test]
fn confluent_kafka_round_trip_with_every_codec_and_idempotence() {
    let dir = TempDir::new("confluent");
    let broker = Broker::start(&dir.0, 4, &[]);
    roundtrip_py(&broker, "confluent", "confluent-plain", &[]);
    for (codec, codec_id) in [("gzip", 1), ("snappy", 2), ("lz4", 3), ("zstd", 4)] {
        let topic = format!("confluent-{codec}");
        roundtrip_py(&broker, "confluent", &topic, &["--compression", codec]);
        assert_stored_compressed(&dir, &topic, codec_id);
    }
    roundtrip_py(&broker, "confluent", "confluent-idempotent", &["--idempotent"]);
}

#[test]
fn kafka_python_round_trip_with_every_codec() {
    let dir = TempDir::new("kafka-python");
    let broker = Broker::start(&dir.0, 4, &[]);
    roundtrip_py(&broker, "kafka-python", "kp-plain", &[]);
    for (codec, codec_id) in [("gzip", 1), ("snappy", 2), ("lz4", 3), ("zstd", 4)] {
        let topic = format!("kp-{codec}");
        roundtrip_py(&broker, "kafka-python", &topic, &["--compression", codec]);
        assert_stored_compressed(&dir, &topic, codec_id);
    }
}

#[test]
fn clients_work_with_a_single_shard_too() {
    let dir = TempDir::new("one-shard");
    let broker = Broker::start(&dir.0, 1, &[]);
    roundtrip_py(&broker, "confluent", "one-shard-confluent", &["--idempotent"]);
    roundtrip_py(&broker, "kafka-python", "one-shard-kp", &[]);
}

/// kafkajs consumes only through a consumer group: the round trip exercises the group APIs too.
#[test]
fn kafkajs_round_trip() {
    let dir = TempDir::new("kafkajs");
    let broker = Broker::start(&dir.0, 4, &[]);
    for (topic, extra) in [("kafkajs-plain", vec![]), ("kafkajs-gzip", vec!["--compression", "gzip"]), ("kafkajs-idem", vec!["--idempotent"])] {
        let (ok, stdout, stderr) = run_with_timeout(
            Command::new("node")
                .arg(clients_dir().join("roundtrip.js"))
                .args(["--bootstrap", &broker.bootstrap(), "--topic", topic, "--partitions", "3", "--records", "500", "--phase", "all"])
                .args(&extra),
            Duration::from_secs(120),
        );
        assert!(ok && stdout.contains("roundtrip ok"), "kafkajs {extra:?} failed:\n{stdout}\n{stderr}\nbroker log:\n{}", broker.log());
    }
}
