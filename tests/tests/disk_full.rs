//! A full disk (a small tmpfs as the log dir): produce is answered KAFKA_STORAGE_ERROR, the broker
//! says so in its log (once, not per request), stays up, and takes writes again once there is
//! room. Needs root to mount the tmpfs, as the suite runs here and in CI.

use std::path::PathBuf;
use std::process::Command;

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use storage::test_support::build_batch;
use tests::wire::Connection;
use tests::{Broker, TempDir};

const KAFKA_STORAGE_ERROR: i16 = 56;
const LOGGED: &str = "answered KAFKA_STORAGE_ERROR";

/// A tmpfs of `size`, unmounted (and its mount point removed) when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(under: &TempDir, size: &str) -> Tmpfs {
        let path = under.0.join("tmpfs");
        std::fs::create_dir_all(&path).unwrap();
        let status = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(&path).status().unwrap();
        assert!(status.success(), "mounting a tmpfs at {} (needs root)", path.display());
        Tmpfs(path)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn produce(connection: &mut Connection, topic: &str, batch: Vec<u8>) -> i16 {
    let request = ProduceRequest::default().with_acks(1).with_timeout_ms(5000).with_topic_data(vec![TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_string(topic.to_string())))
        .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(Bytes::from(batch)))])]);
    let response: ProduceResponse = connection.call(ApiKey::Produce, 8, &request);
    response.responses[0].partition_responses[0].error_code
}

#[test]
fn a_full_disk_answers_kafka_storage_error_and_says_so_in_the_log() {
    let dir = TempDir::new("disk-full");
    let disk = Tmpfs::mount(&dir, "4m");
    // Room to make later: a file the test removes once the disk is full.
    let ballast = disk.0.join("ballast");
    std::fs::write(&ballast, vec![0u8; 1 << 20]).unwrap();
    let log_dirs = format!("log.dirs={}", disk.0.join("logs").display());
    let mut broker = Broker::start(&dir.0, 1, &[&log_dirs]);
    let mut connection = Connection::open(broker.address());
    let request = CreateTopicsRequest::default().with_timeout_ms(5000).with_topics(vec![CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_static_str("full")))
        .with_num_partitions(1)
        .with_replication_factor(-1)]);
    let response: CreateTopicsResponse = connection.call(ApiKey::CreateTopics, 5, &request);
    assert_eq!(response.topics[0].error_code, 0);

    // 64 KiB batches until the disk refuses one (4 MiB at most fit).
    let mut acknowledged = 0;
    let error = loop {
        match produce(&mut connection, "full", build_batch(16, 4096, 0, 7)) {
            0 => acknowledged += 1,
            error => break error,
        }
        assert!(acknowledged < 100, "the disk never filled");
    };
    assert_eq!(error, KAFKA_STORAGE_ERROR, "a full disk is KAFKA_STORAGE_ERROR");
    for _ in 0..5 {
        assert_eq!(produce(&mut connection, "full", build_batch(16, 4096, 0, 7)), KAFKA_STORAGE_ERROR);
    }
    let log = broker.log();
    assert_eq!(log.matches(LOGGED).count(), 1, "said once, not per request:\n{log}");
    assert!(log.contains("No space left on device"), "the reason is named:\n{log}");

    // Room again: writes succeed, and everything acknowledged is still there.
    std::fs::remove_file(&ballast).unwrap();
    assert_eq!(produce(&mut connection, "full", build_batch(16, 4096, 0, 7)), 0, "writes resume once there is room");
    let response: ListOffsetsResponse = connection.call(
        ApiKey::ListOffsets,
        1,
        &ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![
            kafka_protocol::messages::list_offsets_request::ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("full")))
                .with_partitions(vec![kafka_protocol::messages::list_offsets_request::ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(-1)]),
        ]),
    );
    assert_eq!(response.topics[0].partitions[0].offset, 16 * (acknowledged + 1), "every acknowledged batch is in the log");
    assert_eq!(broker.stop(), 0, "clean stop:\n{}", broker.log());
}
