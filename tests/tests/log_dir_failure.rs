//! A failed log dir, as Kafka marks one (issue 21): the broker has two log dirs, one of them on a
//! small ext4 file system of its own (a loop device), which the test shuts down with
//! EXT4_IOC_SHUTDOWN, the kernel's own "this disk is gone": from then on every I/O on it fails
//! with EIO. The partitions in that dir answer KAFKA_STORAGE_ERROR to produce and fetch, Metadata
//! shows them without a leader, DescribeLogDirs answers KAFKA_STORAGE_ERROR for the dir, the log
//! says it once, and the partitions in the other dir keep working. Needs root (mount, losetup)
//! and mkfs.ext4: skips with a message without them.

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use storage::test_support::build_batch;
use tests::wire::Connection;
use tests::{Broker, TempDir};

const KAFKA_STORAGE_ERROR: i16 = 56;
const LEADER_NOT_AVAILABLE: i16 = 5;
const FAILED_LINE: &str = "log dir failed";
/// ext4's `EXT4_IOC_SHUTDOWN` (`_IOR('X', 125, __u32)`) and `EXT4_GOING_FLAGS_NOLOGFLUSH`.
const EXT4_IOC_SHUTDOWN: libc::c_ulong = 0x8004_587D;
const EXT4_GOING_FLAGS_NOLOGFLUSH: u32 = 2;

/// A 32 MiB ext4 image mounted through a loop device; unmounted (lazily: the broker may have just
/// died holding files) when dropped.
struct LoopExt4(PathBuf);

impl LoopExt4 {
    fn mount(under: &TempDir) -> Result<LoopExt4, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root".into());
        }
        let image = under.0.join("disk.img");
        std::fs::File::create(&image).and_then(|f| f.set_len(32 << 20)).map_err(|e| e.to_string())?;
        let mkfs = Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image).output().map_err(|e| format!("mkfs.ext4: {e}"))?;
        if !mkfs.status.success() {
            return Err(format!("mkfs.ext4: {}", String::from_utf8_lossy(&mkfs.stderr)));
        }
        let path = under.0.join("mnt");
        std::fs::create_dir_all(&path).map_err(|e| e.to_string())?;
        let mount = Command::new("mount").args(["-o", "loop"]).arg(&image).arg(&path).output().map_err(|e| format!("mount: {e}"))?;
        if !mount.status.success() {
            return Err(format!("mount -o loop: {}", String::from_utf8_lossy(&mount.stderr)));
        }
        Ok(LoopExt4(path))
    }

    /// Every later I/O on the file system fails with EIO, as when its disk goes away.
    fn shut_down(&self) {
        let root = std::fs::File::open(&self.0).unwrap();
        let flags = EXT4_GOING_FLAGS_NOLOGFLUSH;
        // SAFETY: the ioctl reads one u32 from the pointer we pass, on a descriptor we own.
        let result = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&root), EXT4_IOC_SHUTDOWN, &flags) };
        assert_eq!(result, 0, "EXT4_IOC_SHUTDOWN: {}", std::io::Error::last_os_error());
    }
}

impl Drop for LoopExt4 {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn produce(connection: &mut Connection, topic: &str, partition: i32) -> i16 {
    let request = ProduceRequest::default().with_acks(1).with_timeout_ms(5000).with_topic_data(vec![TopicProduceData::default()
        .with_name(topic_name(topic))
        .with_partition_data(vec![PartitionProduceData::default().with_index(partition).with_records(Some(Bytes::from(build_batch(4, 100, 0, 7))))])]);
    let response: ProduceResponse = connection.call(ApiKey::Produce, 8, &request);
    response.responses[0].partition_responses[0].error_code
}

fn fetch(connection: &mut Connection, topic: &str, partition: i32) -> (i16, usize) {
    let request = FetchRequest::default().with_max_wait_ms(0).with_max_bytes(1 << 20).with_topics(vec![FetchTopic::default()
        .with_topic(topic_name(topic))
        .with_partitions(vec![FetchPartition::default().with_partition(partition).with_fetch_offset(0).with_partition_max_bytes(1 << 20)])]);
    let response: FetchResponse = connection.call(ApiKey::Fetch, 11, &request);
    let answer = &response.responses[0].partitions[0];
    (answer.error_code, answer.records.as_ref().map_or(0, |r| r.len()))
}

/// The partitions of `topic` stored under `log_dir`.
fn partitions_in(log_dir: &Path, topic: &str) -> Vec<i32> {
    let mut found: Vec<i32> = std::fs::read_dir(log_dir)
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().strip_prefix(&format!("{topic}-"))?.parse().ok())
        .collect();
    found.sort();
    found
}

#[test]
fn an_io_error_takes_its_log_dir_offline_and_the_other_dir_keeps_working() {
    let dir = TempDir::new("log-dir-failure");
    let disk = match LoopExt4::mount(&dir) {
        Ok(disk) => disk,
        Err(why) => {
            eprintln!("SKIPPED: an ext4 file system on a loop device is needed to fail a log dir ({why})");
            return;
        }
    };
    let (good, failing) = (dir.0.join("good"), disk.0.join("logs"));
    let log_dirs = format!("log.dirs={},{}", good.display(), failing.display());
    let mut broker = Broker::start(&dir.0, 1, &[&log_dirs]);
    let mut connection = Connection::open(broker.address());
    let request = CreateTopicsRequest::default().with_timeout_ms(5000).with_topics(vec![CreatableTopic::default()
        .with_name(topic_name("t"))
        .with_num_partitions(4)
        .with_replication_factor(-1)]);
    let response: CreateTopicsResponse = connection.call(ApiKey::CreateTopics, 5, &request);
    assert_eq!(response.topics[0].error_code, 0);
    let (healthy, doomed) = (partitions_in(&good, "t"), partitions_in(&failing, "t"));
    assert!(!healthy.is_empty() && !doomed.is_empty(), "partitions placed in both dirs: {healthy:?} {doomed:?}");
    for partition in 0..4 {
        assert_eq!(produce(&mut connection, "t", partition), 0, "before the failure");
    }

    disk.shut_down();
    // The first write to the failed dir meets EIO and takes the whole dir offline.
    assert_eq!(produce(&mut connection, "t", doomed[0]), KAFKA_STORAGE_ERROR);
    for &partition in &doomed {
        assert_eq!(produce(&mut connection, "t", partition), KAFKA_STORAGE_ERROR, "produce to partition {partition} in the failed dir");
        assert_eq!(fetch(&mut connection, "t", partition).0, KAFKA_STORAGE_ERROR, "fetch from partition {partition} in the failed dir");
    }
    for &partition in &healthy {
        assert_eq!(produce(&mut connection, "t", partition), 0, "partition {partition} in the healthy dir takes writes");
        let (error, bytes) = fetch(&mut connection, "t", partition);
        assert_eq!(error, 0, "partition {partition} in the healthy dir serves reads");
        assert!(bytes > 0, "partition {partition}: records come back");
    }

    let metadata: MetadataResponse = connection.call(ApiKey::Metadata, 9, &MetadataRequest::default().with_topics(None));
    let topic = metadata.topics.iter().find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == "t")).unwrap();
    for partition in &topic.partitions {
        if doomed.contains(&partition.partition_index) {
            assert_eq!((partition.error_code, partition.leader_id.0), (LEADER_NOT_AVAILABLE, -1), "offline partition {}", partition.partition_index);
            assert_eq!(partition.offline_replicas.len(), 1);
        } else {
            assert_eq!((partition.error_code, partition.leader_id.0), (0, 0), "healthy partition {}", partition.partition_index);
        }
    }

    let log_dirs: DescribeLogDirsResponse = connection.call(ApiKey::DescribeLogDirs, 1, &DescribeLogDirsRequest::default().with_topics(None));
    for result in &log_dirs.results {
        let expected = if Path::new(result.log_dir.as_str()) == failing { KAFKA_STORAGE_ERROR } else { 0 };
        assert_eq!(result.error_code, expected, "DescribeLogDirs for {}", result.log_dir.as_str());
    }

    let log = broker.log();
    assert_eq!(log.matches(FAILED_LINE).count(), 1, "said once:\n{log}");
    assert!(broker.is_running(), "one failed dir of two: the broker stays up");
    drop(broker);
}
