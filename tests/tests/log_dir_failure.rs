//! A failed log dir, as Kafka marks one (issue 21): the broker has two log dirs, one of them on a
//! small ext4 file system of its own (a loop device), which the test shuts down with
//! EXT4_IOC_SHUTDOWN, the kernel's own "this disk is gone": from then on every I/O on it fails
//! with EIO. The partitions in that dir answer KAFKA_STORAGE_ERROR to produce and fetch, Metadata
//! shows them without a leader, DescribeLogDirs answers KAFKA_STORAGE_ERROR for the dir, the log
//! says it once, and the partitions in the other dir keep working. Needs root (mount, losetup)
//! and mkfs.ext4: skips with a message without them.
//!
//! In cluster mode (`cluster_a_failed_log_dir_moves_leadership_off_its_replicas`), three brokers
//! with a real ZooKeeper: the broker whose dir fails tells the controller (Kafka's
//! `/log_dir_event_notification`, zk's log_dir_events.rs), which elects new leaders from the rest
//! of the ISR and drops the failed replicas from ISRs; producers and consumers carry on.

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
/// died holding files) and its loop device detached when dropped, also when the test failed.
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

    /// None (and the test says it skips) where the machine cannot make one.
    fn mount_or_skip(under: &TempDir) -> Option<LoopExt4> {
        LoopExt4::mount(under)
            .map_err(|why| eprintln!("SKIPPED: an ext4 file system on a loop device is needed to fail a log dir ({why})"))
            .ok()
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
        // `mount -o loop` sets autoclear, which frees the device once the last user of the file
        // system is gone; detach whatever still holds our image (found by the image, never by a
        // device number another test may have been given since).
        let image = self.0.with_file_name("disk.img");
        if let Ok(found) = Command::new("losetup").arg("-n").arg("-O").arg("NAME").arg("-j").arg(&image).output() {
            for device in String::from_utf8_lossy(&found.stdout).split_whitespace() {
                let _ = Command::new("losetup").arg("-d").arg(device).status();
            }
        }
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
    let Some(disk) = LoopExt4::mount_or_skip(&dir) else { return };
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

/// The (leader, isr, offline replicas) of each partition of `topic` in `broker`'s Metadata.
fn cluster_partitions(broker: &Broker, topic: &str) -> Vec<(i32, Vec<i32>, Vec<i32>)> {
    let request = MetadataRequest::default().with_topics(Some(vec![
        kafka_protocol::messages::metadata_request::MetadataRequestTopic::default().with_name(Some(topic_name(topic))),
    ]));
    let response: MetadataResponse = Connection::open(broker.address()).call(ApiKey::Metadata, 9, &request);
    let ids = |list: &[BrokerId]| list.iter().map(|b| b.0).collect::<Vec<i32>>();
    let mut partitions: Vec<_> = response.topics[0].partitions.iter().map(|p| (p.partition_index, p)).collect();
    partitions.sort_by_key(|(index, _)| *index);
    partitions.into_iter().map(|(_, p)| (p.leader_id.0, ids(&p.isr_nodes), ids(&p.offline_replicas))).collect()
}

/// Reads `topic` from the beginning to its end with confluent-kafka (assigned partitions, no
/// group); returns the values by partition.
fn read_with_confluent_kafka(bootstrap: &str, topic: &str, partitions: usize) -> std::collections::BTreeMap<i32, Vec<u64>> {
    let script = format!(
        "import json\n\
         from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING\n\
         c = Consumer({{'bootstrap.servers': '{bootstrap}', 'group.id': 'read-back', 'enable.auto.commit': False,\n\
         \x20             'enable.partition.eof': True, 'topic.metadata.refresh.interval.ms': 500}})\n\
         c.assign([TopicPartition('{topic}', p, OFFSET_BEGINNING) for p in range({partitions})])\n\
         values, ended = {{}}, set()\n\
         while len(ended) < {partitions}:\n\
         \x20   m = c.poll(30)\n\
         \x20   assert m is not None, 'no record or end within 30 s'\n\
         \x20   if m.error():\n\
         \x20       if m.error().code() == -191: ended.add(m.partition()); continue\n\
         \x20       raise Exception(str(m.error()))\n\
         \x20   values.setdefault(m.partition(), []).append(int(m.value()))\n\
         c.close()\n\
         print(json.dumps(values))\n"
    );
    let values: std::collections::BTreeMap<String, Vec<u64>> = serde_json::from_str(tests::run_python(&script).trim()).unwrap();
    values.into_iter().map(|(p, v)| (p.parse().unwrap(), v)).collect()
}

#[test]
fn cluster_a_failed_log_dir_moves_leadership_off_its_replicas() {
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
    use tests::cluster::{assert_acked_read_back, read_produced, run_producer};
    use tests::zookeeper::ZooKeeper;

    const TOPIC: &str = "moving";
    let dir = TempDir::new("log-dir-failure-cluster");
    let Some(disk) = LoopExt4::mount_or_skip(&dir) else { return };
    let zookeeper = ZooKeeper::start();
    let others: Vec<TempDir> = (2..=3).map(|i| TempDir::new(&format!("log-dir-failure-cluster-{i}"))).collect();
    let connect = format!("zookeeper.connect={}", zookeeper.connect("/kafka"));
    // Broker 1 has two dirs, the failing one first: of a topic's two partitions it holds, the
    // first opened goes there (both empty: the first dir), the second to the other.
    let failing = disk.0.join("logs");
    let broker_1_dirs = format!("log.dirs={},{}", failing.display(), dir.0.join("good").display());
    let common = [connect.as_str(), "zookeeper.session.timeout.ms=4000", "replica.lag.time.max.ms=10000"];
    let mut brokers = vec![Broker::start(&dir.0, 1, &[&common[..], &["broker.id=1", &broker_1_dirs]].concat())];
    for (i, other) in others.iter().enumerate() {
        let id = format!("broker.id={}", i + 2);
        brokers.push(Broker::start(&other.0, 1, &[&common[..], &[id.as_str()]].concat()));
    }
    let all = brokers.iter().map(Broker::bootstrap).collect::<Vec<_>>().join(",");
    // Broker 1 leads both partitions (first in each replica list).
    tests::admin(
        &all,
        &format!(
            "for f in admin.create_topics([NewTopic('{TOPIC}', 2, replica_assignment=[[1, 2, 3], [1, 3, 2]], config={{'min.insync.replicas': '2'}})]).values():\n    f.result(30)"
        ),
    );
    tests::cluster::wait_for_full_isr(&brokers[1].bootstrap(), TOPIC, 2, 3, &[], Duration::from_secs(30));
    let doomed = partitions_in(&failing, TOPIC);
    assert_eq!(doomed.len(), 1, "one partition of broker 1 in the failing dir: {doomed:?}");
    let (doomed, healthy) = (doomed[0], 1 - doomed[0]);

    let reports = TempDir::new("log-dir-failure-cluster-reports");
    let report = reports.0.join("produced.json");
    let producer = run_producer(&all, TOPIC, 2, 10.0, 0, &report, "{}");
    std::thread::sleep(Duration::from_millis(2500));
    let failed_at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    let started = Instant::now();
    disk.shut_down();

    // The producer's next write to broker 1's doomed partition meets EIO: the dir goes offline,
    // broker 1 tells the controller, and leadership moves to the rest of the ISR.
    let moved_after = loop {
        let states = cluster_partitions(&brokers[1], TOPIC);
        let (leader, isr, offline) = &states[doomed as usize];
        if *leader > 1 && !isr.contains(&1) && offline == &vec![1] {
            break started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "leadership did not move within 10 s: {states:?}\n{}", brokers[0].log());
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("partition {doomed}: new leader, broker 1 out of the ISR and offline {moved_after:?} after the dir failed");
    assert!(moved_after < Duration::from_secs(5), "took {moved_after:?}");

    let output = producer.wait_with_output().unwrap();
    assert!(output.status.success(), "producer: {}", String::from_utf8_lossy(&output.stderr));
    let produced = read_produced(&report);
    assert!(produced.errors.is_empty(), "delivery errors {:?}", &produced.errors[..produced.errors.len().min(5)]);
    let after = |partition: i32| produced.acked.iter().filter(|(p, _, _, at)| *p == partition && *at > failed_at + moved_after.as_secs_f64()).count();
    assert!(after(doomed) > 0 && after(healthy) > 0, "producing went on in both partitions after the move: {} {}", after(doomed), after(healthy));

    // Every broker's Metadata: the doomed partition led elsewhere with broker 1 out of its ISR and
    // listed offline; the healthy one still led by broker 1 with its full ISR.
    for broker in &brokers {
        let states = cluster_partitions(broker, TOPIC);
        let (leader, isr, offline) = &states[doomed as usize];
        assert!(*leader > 1 && !isr.contains(&1) && isr.len() == 2 && offline == &vec![1], "doomed partition on {}: {states:?}", broker.bootstrap());
        let (leader, isr, offline) = &states[healthy as usize];
        assert!(*leader == 1 && isr.len() == 3 && offline.is_empty(), "healthy partition on {}: {states:?}", broker.bootstrap());
    }

    // Every acknowledged record, once and in order: kcat and confluent-kafka alike.
    let acked: Vec<(i32, i64, u64)> = produced.acked.iter().map(|&(p, o, v, _)| (p, o, v)).collect();
    let consumed = assert_acked_read_back(&all, TOPIC, &[], &acked);
    let read = read_with_confluent_kafka(&all, TOPIC, 2);
    for (partition, records) in &consumed {
        let values: Vec<u64> = records.iter().map(|(_, v)| *v).collect();
        assert_eq!(read.get(partition), Some(&values), "partition {partition}: confluent-kafka read what kcat read");
    }
    eprintln!("{} acknowledged records ({} after the failure) read back by kcat and confluent-kafka", acked.len(), after(doomed) + after(healthy));

    // Kafka's notification was consumed by the controller; our record of the offline replica stays.
    assert_eq!(zookeeper.cli("ls /kafka/log_dir_event_notification"), "[]");
    let offline = zookeeper.cli("get /kafka/log_dir_offline_replicas/1");
    assert!(offline.contains(&format!("\"{TOPIC}\":[{doomed}]")), "{offline}");
    let log = brokers[0].log();
    assert_eq!(log.matches(FAILED_LINE).count(), 1, "said once:\n{log}");
    assert_eq!(log.matches(" ERROR ").count(), 1, "the failure is the only error:\n{log}");
    assert!(brokers[0].is_running(), "one failed dir of two: broker 1 stays up");

    // Kafka's way out: restart with the dir repaired or removed from log.dirs. Broker 1 comes back
    // without it: its offline record went with its old session, it copies the moved partition
    // again and rejoins the ISR.
    let port = brokers[0].port;
    brokers[0].stop();
    let good_only = format!("log.dirs={}", dir.0.join("good").display());
    brokers[0] = Broker::start_on_port(&dir.0, 1, port, &[&common[..], &["broker.id=1", &good_only]].concat());
    tests::cluster::wait_for_full_isr(&brokers[1].bootstrap(), TOPIC, 2, 3, &[], Duration::from_secs(30));
    for broker in &brokers {
        let states = cluster_partitions(broker, TOPIC);
        assert!(states.iter().all(|(_, isr, offline)| isr.len() == 3 && offline.is_empty()), "after the restart, on {}: {states:?}", broker.bootstrap());
    }
    assert_eq!(zookeeper.cli("ls /kafka/log_dir_offline_replicas"), "[]");
    drop(brokers);
}
