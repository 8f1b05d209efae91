//! DeleteRecords (API 21) through confluent-kafka's AdminClient: the log start offset moves (inside
//! a segment too), whole segments below it go, readers start there, it survives a restart, -1
//! means the high watermark, and an offset past the high watermark is OFFSET_OUT_OF_RANGE.

use std::path::Path;

use tests::{admin, kcat_produce, Broker, TempDir};

const TOPIC: &str = "trimmed";

fn delete_records(bootstrap: &str, offset: i64) -> String {
    admin(bootstrap, &format!(
        "from confluent_kafka import TopicPartition\n\
         futures = admin.delete_records([TopicPartition('{TOPIC}', 0, {offset})], request_timeout=10)\n\
         for tp, f in futures.items():\n\
         \x20   try:\n\
         \x20       print('low_watermark', f.result().low_watermark)\n\
         \x20   except Exception as e:\n\
         \x20       print('error', e.args[0].name())\n"
    ))
}

fn earliest_and_latest(bootstrap: &str) -> (i64, i64) {
    let out = admin(bootstrap, &format!(
        "from confluent_kafka import TopicPartition\n\
         from confluent_kafka.admin import OffsetSpec\n\
         e = admin.list_offsets({{TopicPartition('{TOPIC}', 0): OffsetSpec.earliest()}})\n\
         l = admin.list_offsets({{TopicPartition('{TOPIC}', 0): OffsetSpec.latest()}})\n\
         print(list(e.values())[0].result().offset, list(l.values())[0].result().offset)\n"
    ));
    let mut fields = out.split_whitespace().map(|f| f.parse::<i64>().unwrap());
    (fields.next().unwrap(), fields.next().unwrap())
}

fn first_consumed_offset(bootstrap: &str) -> Option<i64> {
    let output = std::process::Command::new("kcat")
        .args(["-b", bootstrap, "-C", "-t", TOPIC, "-o", "beginning", "-e", "-q", "-c", "1", "-f", "%o\n"])
        .output()
        .expect("kcat");
    String::from_utf8_lossy(&output.stdout).lines().next().map(|l| l.parse().unwrap())
}

fn segment_count(partition_dir: &Path) -> usize {
    std::fs::read_dir(partition_dir).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".log")).count()
}

#[test]
fn delete_records_moves_the_log_start_offset_durably() {
    let dir = TempDir::new("delete-records");
    // Small segments (about 20 records each), so a delete spans whole segments and part of one.
    let mut broker = Broker::start(&dir.0, 1, &["log.segment.bytes=2048"]);
    let bootstrap = broker.bootstrap();
    let output = kcat_produce(&bootstrap, &["-t", TOPIC, "-p", "0", "-X", "batch.num.messages=1"], (0..200).map(|i| format!("{i:080}")));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let partition_dir = dir.0.join("logs").join(format!("{TOPIC}-0"));
    let segments_before = segment_count(&partition_dir);
    assert!(segments_before > 5, "several segments: {segments_before}");

    assert_eq!(delete_records(&bootstrap, 123).trim(), "low_watermark 123");
    assert_eq!(earliest_and_latest(&bootstrap), (123, 200));
    assert_eq!(first_consumed_offset(&bootstrap), Some(123), "readers start at the new log start");
    let segments_after = segment_count(&partition_dir);
    assert!(segments_after < segments_before, "whole segments below it are deleted: {segments_before} -> {segments_after}");
    assert_eq!(delete_records(&bootstrap, 100).trim(), "low_watermark 123", "the log start never moves back");
    assert_eq!(delete_records(&bootstrap, 201).trim(), "error OFFSET_OUT_OF_RANGE", "past the high watermark");

    // Durable: kill -9 and a clean restart both keep it.
    broker.kill_9();
    broker.restart();
    assert_eq!(earliest_and_latest(&bootstrap), (123, 200), "after kill -9");
    assert_eq!(broker.stop(), 0);
    broker.restart();
    assert_eq!(earliest_and_latest(&bootstrap), (123, 200), "after a clean restart");
    assert_eq!(first_consumed_offset(&bootstrap), Some(123));

    // -1: up to the high watermark. New records are readable after it.
    assert_eq!(delete_records(&bootstrap, -1).trim(), "low_watermark 200");
    assert_eq!(earliest_and_latest(&bootstrap), (200, 200));
    let output = kcat_produce(&bootstrap, &["-t", TOPIC, "-p", "0"], ["after".to_string()]);
    assert!(output.status.success());
    assert_eq!(first_consumed_offset(&bootstrap), Some(200));
    assert_eq!(broker.stop(), 0, "clean stop:\n{}", broker.log());
}
