//! Deletion off the shard (issue "Nothing blocks a shard"): retention renames segments to
//! `.deleted` and removes them later; topic deletion renames the partition directory to
//! `<dir>.<id>-delete`; checkpoints are replaced by a rename off the shard. A kill -9 at any
//! moment of that recovers: leftovers removed at start, checkpoint files whole, every acknowledged
//! record still readable, deleted topics gone for good.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use storage::test_support::build_batch;
use tests::wire::Connection;
use tests::{Broker, TempDir};

const TOPIC: &str = "churn";

fn create_topic(connection: &mut Connection, name: &str) {
    let request = CreateTopicsRequest::default().with_timeout_ms(5000).with_topics(vec![CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_string(name.to_string())))
        .with_num_partitions(1)
        .with_replication_factor(-1)]);
    let response: CreateTopicsResponse = connection.call(ApiKey::CreateTopics, 5, &request);
    assert_eq!(response.topics[0].error_code, 0, "creating {name}");
}

/// Produces one batch with acks=1; the base offset it got, or None if refused.
fn produce(connection: &mut Connection, batch: Vec<u8>) -> Option<i64> {
    let request = ProduceRequest::default().with_acks(1).with_timeout_ms(5000).with_topic_data(vec![TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
        .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(Bytes::from(batch)))])]);
    let response: ProduceResponse = connection.call(ApiKey::Produce, 8, &request);
    let partition = &response.responses[0].partition_responses[0];
    (partition.error_code == 0).then_some(partition.base_offset)
}

/// ListOffsets: earliest (-2) or latest (-1).
fn list_offset(connection: &mut Connection, timestamp: i64) -> i64 {
    let request = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![ListOffsetsTopic::default()
        .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
        .with_partitions(vec![ListOffsetsPartition::default().with_partition_index(0).with_timestamp(timestamp)])]);
    let response: ListOffsetsResponse = connection.call(ApiKey::ListOffsets, 1, &request);
    let partition = &response.topics[0].partitions[0];
    assert_eq!(partition.error_code, 0);
    partition.offset
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// Kafka's recovery point checkpoint: version 0, one entry, `topic partition offset`.
fn assert_whole_recovery_point(partition_dir: &Path) {
    let text = std::fs::read_to_string(partition_dir.join("recovery-point-offset-checkpoint")).expect("a recovery point checkpoint");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "a whole checkpoint: {text:?}");
    assert_eq!(lines[0], "0");
    assert_eq!(lines[1], "1");
    let fields: Vec<&str> = lines[2].split(' ').collect();
    assert_eq!(fields.len(), 3, "a whole entry: {text:?}");
    assert_eq!(fields[0], TOPIC);
    assert!(fields[2].parse::<i64>().is_ok(), "a whole offset: {text:?}");
}

#[test]
fn kill_9_during_deletions_and_checkpoints_recovers() {
    let dir = TempDir::new("deletion");
    let mut broker = Broker::start(&dir.0, 1, &[
        "log.segment.bytes=65536",
        "log.retention.bytes=262144",
        "log.retention.check.interval.ms=20",
        // Deleted segments wait long enough to be there when the broker is killed.
        "log.segment.delete.delay.ms=60000",
        // Every append flushed, the recovery point checkpointed as often as the task runs.
        "log.flush.interval.messages=1",
        "log.flush.offset.checkpoint.interval.ms=10",
    ]);
    let partition_dir = dir.0.join("logs").join(format!("{TOPIC}-0"));
    let mut connection = Connection::open(broker.address());
    create_topic(&mut connection, TOPIC);

    let mut acknowledged_end = 0i64;
    let mut saw_pending_deletions = false;
    for round in 0..6 {
        // Produce for a while (retention deletes and checkpoints run meanwhile), then kill -9 at
        // a moment that differs each round.
        let until = Instant::now() + Duration::from_millis(300 + 97 * round);
        while Instant::now() < until {
            let base_offset = produce(&mut connection, build_batch(8, 1000, 0, round as u8)).expect("produce accepted");
            assert!(base_offset >= acknowledged_end, "offsets only grow");
            acknowledged_end = base_offset + 8;
        }
        broker.kill_9();
        // What the dead broker left half done: deletions waiting out their delay, replacements.
        let leftovers: Vec<String> =
            file_names(&partition_dir).into_iter().filter(|n| n.contains(".deleted") || n.ends_with(".tmp")).collect();
        saw_pending_deletions |= leftovers.iter().any(|n| n.ends_with(".deleted"));
        broker.restart();
        connection = Connection::open(broker.address());

        // Only what was left at the kill must be gone: retention (every 20 ms here) may already
        // have scheduled new deletions since the restart, which wait out their own delay.
        let names = file_names(&partition_dir);
        assert!(
            !names.iter().any(|n| leftovers.contains(n) || n.ends_with(".tmp")),
            "round {round}: leftovers of deletions and replacements are removed at start: {names:?} (left at the kill: {leftovers:?})"
        );
        assert_whole_recovery_point(&partition_dir);
        // Retention catches up right after a restart: read once the log start holds still.
        let mut earliest = list_offset(&mut connection, -2);
        let settle_until = Instant::now() + Duration::from_secs(10);
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let now = list_offset(&mut connection, -2);
            if now == earliest || Instant::now() > settle_until {
                break;
            }
            earliest = now;
        }
        let latest = list_offset(&mut connection, -1);
        assert!(latest >= acknowledged_end, "round {round}: every acknowledged record survives kill -9 ({latest} < {acknowledged_end})");
        assert!(earliest > 0 && earliest < latest, "round {round}: retention ran ({earliest}..{latest})");
        // Every offset from the log start to its end is readable, in order.
        let output = std::process::Command::new("kcat")
            .args(["-b", &broker.bootstrap(), "-C", "-t", TOPIC, "-o", "beginning", "-e", "-q", "-f", "%o\n"])
            .output()
            .expect("kcat");
        let offsets: Vec<i64> = String::from_utf8_lossy(&output.stdout).lines().map(|l| l.parse().unwrap()).collect();
        let first = *offsets.first().expect("records to read");
        assert!(first >= earliest, "round {round}: read from the log start");
        assert!(offsets.windows(2).all(|w| w[1] == w[0] + 1), "round {round}: no gap");
        assert_eq!(offsets.last(), Some(&(latest - 1)), "round {round}: read to the end");
    }
    assert!(saw_pending_deletions, "retention left .deleted files waiting for their delay at some kill");

    // Topic deletion, killed before its delay is over: the renamed directory goes at the next
    // start and the topic does not come back.
    create_topic(&mut connection, "doomed");
    let request = DeleteTopicsRequest::default()
        .with_timeout_ms(5000)
        .with_topic_names(vec![TopicName(StrBytes::from_static_str("doomed"))]);
    let response: DeleteTopicsResponse = connection.call(ApiKey::DeleteTopics, 4, &request);
    assert_eq!(response.responses[0].error_code, 0);
    let logs = dir.0.join("logs");
    assert!(file_names(&logs).iter().any(|n| n.starts_with("doomed-0.") && n.ends_with("-delete")), "renamed for deletion: {:?}", file_names(&logs));
    broker.kill_9();
    broker.restart();
    assert!(!file_names(&logs).iter().any(|n| n.starts_with("doomed")), "removed at start: {:?}", file_names(&logs));
    let mut connection = Connection::open(broker.address());
    let metadata: MetadataResponse = connection.call(ApiKey::Metadata, 9, &MetadataRequest::default().with_topics(None));
    assert!(!metadata.topics.iter().any(|t| t.name.as_ref().map(|n| n.as_str()) == Some("doomed")), "the deleted topic stays deleted");
    assert_eq!(broker.stop(), 0, "clean stop:\n{}", broker.log());
}
