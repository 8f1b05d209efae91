//! Topic administration as Kafka clients use it against a single broker (confluent-kafka's
//! AdminClient, kcat): manual replica assignments, a topic's `compression.type` (the broker
//! recompresses), ListGroups' group types (v5).

use std::collections::BTreeSet;
use std::time::Duration;

use tests::{admin, kcat_produce, run_with_timeout, Broker, TempDir};

/// The codecs of every batch stored for `topic` (partitions 0..partitions, first segment).
fn stored_codecs(dir: &TempDir, topic: &str, partitions: i32) -> BTreeSet<i16> {
    let mut codecs = BTreeSet::new();
    for partition in 0..partitions {
        let segment = dir.0.join(format!("logs/{topic}-{partition}/00000000000000000000.log"));
        let bytes = std::fs::read(&segment).unwrap();
        for batch in storage::batch::split_batches(&bytes).unwrap() {
            codecs.insert(storage::batch::validate(batch, storage::batch::Validation::FromLog).unwrap().compression_codec());
        }
    }
    codecs
}

fn kcat_count(broker: &Broker, topic: &str) -> usize {
    let (ok, stdout, stderr) = run_with_timeout(
        std::process::Command::new("kcat").args(["-b", &broker.bootstrap(), "-C", "-t", topic, "-o", "beginning", "-e", "-q"]),
        Duration::from_secs(30),
    );
    assert!(ok, "kcat -C {topic}: {stderr}");
    stdout.lines().count()
}

/// Kafka accepts a replica assignment that names live brokers, on one broker as on many; one
/// naming an unknown broker is INVALID_REPLICA_ASSIGNMENT.
#[test]
fn manual_replica_assignments_on_a_single_broker() {
    let dir = TempDir::new("admin-assignment");
    let broker = Broker::start(&dir.0, 2, &[]);
    let out = admin(
        &broker.bootstrap(),
        "admin.create_topics([NewTopic('manual', 3, replica_assignment=[[0], [0], [0]])])['manual'].result(30)\n\
         admin.create_partitions([NewPartitions('manual', 5, replica_assignment=[[0], [0]])])['manual'].result(30)\n\
         print('partitions', len(admin.list_topics('manual', timeout=10).topics['manual'].partitions))\n\
         for call in (lambda: admin.create_topics([NewTopic('unknown-broker', 1, replica_assignment=[[7]])])['unknown-broker'].result(30),\n\
         \x20            lambda: admin.create_topics([NewTopic('twice', 1, replica_assignment=[[0, 0]])])['twice'].result(30),\n\
         \x20            lambda: admin.create_partitions([NewPartitions('manual', 7, replica_assignment=[[0]])])['manual'].result(30)):\n\
         \x20   try:\n\
         \x20       call()\n\
         \x20       print('accepted')\n\
         \x20   except Exception as e:\n\
         \x20       print('refused', e.args[0].name())",
    );
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["partitions 5", "refused INVALID_REPLICA_ASSIGNMENT", "refused INVALID_REPLICA_ASSIGNMENT", "refused INVALID_REPLICA_ASSIGNMENT"],
        "broker log:\n{}",
        broker.log()
    );
    let output = kcat_produce(&broker.bootstrap(), &["-t", "manual", "-p", "4"], (0..10).map(|i| format!("r{i}")));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(kcat_count(&broker, "manual"), 10);
}

/// A topic's `compression.type` names the codec its batches are stored in, whatever the producer
/// sent (Kafka recompresses on the broker); `producer` keeps the producer's. Set at creation and
/// changed later with IncrementalAlterConfigs.
#[test]
fn a_topics_compression_type_recompresses_on_the_broker() {
    let dir = TempDir::new("admin-compression");
    let broker = Broker::start(&dir.0, 2, &[]);
    let bootstrap = broker.bootstrap();
    for (codec, codec_id, sent) in [("gzip", 1, "none"), ("snappy", 2, "gzip"), ("lz4", 3, "none"), ("zstd", 4, "lz4"), ("uncompressed", 0, "gzip")] {
        let topic = format!("stored-{codec}");
        admin(
            &bootstrap,
            &format!("admin.create_topics([NewTopic('{topic}', 2, 1, config={{'compression.type': '{codec}'}})])['{topic}'].result(30)"),
        );
        let output = kcat_produce(&bootstrap, &["-t", &topic, "-z", sent, "-X", "enable.idempotence=true"], (0..300).map(|i| format!("value-{i}-{}", "x".repeat(100))));
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        assert_eq!(kcat_count(&broker, &topic), 300, "{topic}: every record reads back");
        assert_eq!(stored_codecs(&dir, &topic, 2), BTreeSet::from([codec_id]), "{topic}: stored as {codec}, sent as {sent}");
    }

    // Changed on a live topic: later batches take the new codec.
    let topic = "stored-changed";
    admin(&bootstrap, &format!("admin.create_topics([NewTopic('{topic}', 1, 1)])['{topic}'].result(30)"));
    let output = kcat_produce(&bootstrap, &["-t", topic, "-z", "gzip"], (0..50).map(|i| format!("before-{i}")));
    assert!(output.status.success());
    admin(
        &bootstrap,
        &format!(
            "resource = ConfigResource('topic', '{topic}', incremental_configs=[ConfigEntry('compression.type', 'zstd', incremental_operation=AlterConfigOpType.SET)])\n\
             admin.incremental_alter_configs([resource])[resource].result(30)"
        ),
    );
    let output = kcat_produce(&bootstrap, &["-t", topic, "-z", "gzip"], (0..50).map(|i| format!("after-{i}")));
    assert!(output.status.success());
    assert_eq!(kcat_count(&broker, topic), 100);
    assert_eq!(stored_codecs(&dir, topic, 1), BTreeSet::from([1, 4]), "gzip as sent before the change, zstd after");
}
