//! Cluster mode against a real ZooKeeper (Debian's package) and three real broker processes:
//! registration, cluster id and controller election in Kafka's ZooKeeper layout.

use std::time::{Duration, Instant};

use tests::zookeeper::ZooKeeper;
use tests::{Broker, TempDir};

const SESSION_TIMEOUT_MS: u64 = 4_000;

fn start_broker(dir: &TempDir, zookeeper: &ZooKeeper, broker_id: i32) -> Broker {
    let connect = format!("zookeeper.connect={}", zookeeper.connect("/kafka"));
    let id = format!("broker.id={broker_id}");
    let session = format!("zookeeper.session.timeout.ms={SESSION_TIMEOUT_MS}");
    Broker::start(&dir.0, 1, &[&connect, &id, &session])
}

fn controller(zookeeper: &ZooKeeper) -> Option<(i32, i32)> {
    let data = zookeeper.cli("get /kafka/controller");
    let broker_id = data.split("\"brokerid\":").nth(1)?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()?;
    let epoch = zookeeper.cli("get /kafka/controller_epoch").trim().parse().ok()?;
    Some((broker_id, epoch))
}

fn wait_for_controller(zookeeper: &ZooKeeper, not: i32, within: Duration) -> (i32, i32, Duration) {
    let started = Instant::now();
    loop {
        if let Some((id, epoch)) = controller(zookeeper) {
            if id != not {
                return (id, epoch, started.elapsed());
            }
        }
        assert!(started.elapsed() < within, "no new controller within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn meta_property(dir: &TempDir, key: &str) -> String {
    let text = std::fs::read_to_string(dir.0.join("logs").join("meta.properties")).unwrap();
    text.lines().find_map(|l| l.strip_prefix(&format!("{key}="))).unwrap().to_string()
}

#[test]
fn brokers_register_and_elect_a_controller_in_kafkas_layout() {
    let zookeeper = ZooKeeper::start();
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("cluster-{i}"))).collect();
    let mut brokers: Vec<Broker> =
        [1, 2, -1].iter().zip(&dirs).map(|(&id, dir)| start_broker(dir, &zookeeper, id)).collect();
    let ids = [1, 2, 1001];

    // The layout an operator inspects with zkCli.
    assert_eq!(zookeeper.cli("ls /kafka/brokers/ids"), "[1, 1001, 2]", "broker.id=-1 got 1001 from /brokers/seqid");
    for (broker, id) in brokers.iter().zip(ids) {
        let registration = zookeeper.cli(&format!("get /kafka/brokers/ids/{id}"));
        assert!(
            registration.contains(&format!("\"endpoints\":[\"PLAINTEXT://127.0.0.1:{}\"]", broker.port)),
            "{registration}"
        );
    }
    let cluster_id = zookeeper.cli("get /kafka/cluster/id");
    for dir in &dirs {
        assert!(cluster_id.contains(&meta_property(dir, "cluster.id")), "{cluster_id} vs meta.properties");
    }
    assert_eq!(meta_property(&dirs[2], "broker.id"), "1001");
    for path in ["/kafka/admin/delete_topics", "/kafka/config/topics", "/kafka/brokers/topics"] {
        assert!(!zookeeper.cli(&format!("ls {path}")).contains("does not exist"), "{path} missing");
    }
    let (first, first_epoch) = controller(&zookeeper).expect("a controller");
    assert!(ids.contains(&first));

    // kill -9 the controller: another broker takes over with a higher epoch once its session
    // expires.
    let victim = ids.iter().position(|&id| id == first).unwrap();
    brokers[victim].kill_9();
    let within = Duration::from_millis(SESSION_TIMEOUT_MS) + Duration::from_secs(4);
    let (second, second_epoch, took) = wait_for_controller(&zookeeper, first, within);
    assert!(second_epoch > first_epoch, "epoch {second_epoch} after {first_epoch}");
    eprintln!("controller {first} killed: {second} took over (epoch {second_epoch}) after {took:?}");

    // The killed broker comes back with its id and rejoins as a follower of the controller.
    brokers[victim].restart();
    assert_eq!(zookeeper.cli("ls /kafka/brokers/ids"), "[1, 1001, 2]");
    assert_eq!(controller(&zookeeper), Some((second, second_epoch)));

    // A clean stop closes the session: the next controller is elected at once, not a session
    // timeout later.
    let second_index = ids.iter().position(|&id| id == second).unwrap();
    assert_eq!(brokers[second_index].stop(), 0);
    let (third, third_epoch, took) = wait_for_controller(&zookeeper, second, Duration::from_secs(3));
    assert!(third_epoch > second_epoch);
    assert!(took < Duration::from_millis(SESSION_TIMEOUT_MS), "took {took:?}: the session was not closed");
    let registered: Vec<i32> = zookeeper
        .cli("ls /kafka/brokers/ids")
        .trim_matches(|c| c == '[' || c == ']')
        .split(", ")
        .map(|id| id.parse().unwrap())
        .collect();
    assert!(!registered.contains(&second) && registered.contains(&third), "{registered:?}");
}

/// CreateTopics through confluent-kafka's AdminClient, sent to one broker.
fn create_topic(bootstrap: &str, topic: &str, partitions: i32, replication_factor: i32, config: &str) {
    let script = format!(
        "from confluent_kafka.admin import AdminClient, NewTopic\n\
         admin = AdminClient({{'bootstrap.servers': '{bootstrap}'}})\n\
         config = dict(kv.split('=') for kv in '{config}'.split(',') if kv)\n\
         for future in admin.create_topics([NewTopic('{topic}', {partitions}, {replication_factor}, config=config)]).values():\n\
         \x20   future.result(30)\n"
    );
    tests::run_python(&script);
}

/// `kcat -L -J` from one broker: (broker ids, leader by partition).
fn metadata(bootstrap: &str, topic: &str) -> (Vec<i64>, Vec<i64>) {
    let (ok, stdout, stderr) = tests::run_with_timeout(
        std::process::Command::new("kcat").args(["-b", bootstrap, "-L", "-J", "-t", topic]),
        Duration::from_secs(30),
    );
    assert!(ok, "kcat -L failed: {stderr}");
    let ids = |key: &str, list: &str| -> Vec<i64> {
        list.split(&format!("\"{key}\":")).skip(1).filter_map(|s| s.split(|c: char| !c.is_ascii_digit() && c != '-').next()?.parse().ok()).collect()
    };
    let brokers_part = stdout.split("\"topics\"").next().unwrap().split("\"brokers\":").nth(1).unwrap_or("");
    let topics_part = stdout.split("\"topics\"").nth(1).unwrap_or("");
    (ids("id", brokers_part), ids("leader", topics_part))
}

#[test]
fn topics_are_assigned_in_zookeeper_led_across_brokers_and_replicated() {
    let zookeeper = ZooKeeper::start();
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("leaders-{i}"))).collect();
    let brokers: Vec<Broker> = [1, 2, 3].iter().zip(&dirs).map(|(&id, dir)| start_broker(dir, &zookeeper, id)).collect();
    let topic = "orders";
    create_topic(&brokers[0].bootstrap(), topic, 6, 3, "min.insync.replicas=2");

    // Kafka's layout: the assignment, each partition's state, the topic config.
    let assignment = zookeeper.cli(&format!("get /kafka/brokers/topics/{topic}"));
    assert!(assignment.contains("\"partitions\":{\"0\":["), "{assignment}");
    let config = zookeeper.cli(&format!("get /kafka/config/topics/{topic}"));
    assert!(config.contains("\"min.insync.replicas\":\"2\""), "{config}");
    let mut leaders_in_zookeeper = Vec::new();
    for partition in 0..6 {
        let state = zookeeper.cli(&format!("get /kafka/brokers/topics/{topic}/partitions/{partition}/state"));
        assert!(state.contains("\"leader_epoch\":0") && state.contains("\"isr\":["), "{state}");
        let leader: i64 = state.split("\"leader\":").nth(1).unwrap().split(',').next().unwrap().parse().unwrap();
        leaders_in_zookeeper.push(leader);
    }
    let mut per_broker = std::collections::BTreeMap::new();
    for leader in &leaders_in_zookeeper {
        *per_broker.entry(*leader).or_insert(0) += 1;
    }
    assert_eq!(per_broker.values().copied().collect::<Vec<_>>(), vec![2, 2, 2], "leaders spread: {leaders_in_zookeeper:?}");

    // Every broker answers Metadata with all three brokers and the same leaders.
    for broker in &brokers {
        let (ids, mut leaders) = metadata(&broker.bootstrap(), topic);
        let mut ids = ids;
        ids.sort();
        assert_eq!(ids, vec![1, 2, 3]);
        leaders.truncate(6);
        assert_eq!(leaders, leaders_in_zookeeper, "metadata from broker on {}", broker.port);
    }

    // kcat produces through one bootstrap broker to every leader and reads everything back
    // through another. acks=all: consumers read up to the high watermark, so with acks=1 a
    // follower still catching up (five clusters share two cores here) would hide records.
    let output = tests::kcat_produce(
        &brokers[0].bootstrap(),
        &["-t", topic, "-K", ":", "-X", "acks=all"],
        (0..600).map(|i| format!("key-{}:value-{i}", i % 37)),
    );
    assert!(output.status.success(), "kcat -P: {}", String::from_utf8_lossy(&output.stderr));
    let (ok, stdout, stderr) = tests::run_with_timeout(
        std::process::Command::new("kcat").args(["-b", &brokers[1].bootstrap(), "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%p %s\n"]),
        Duration::from_secs(60),
    );
    assert!(ok, "kcat -C: {stderr}");
    let mut values: Vec<&str> = stdout.lines().filter_map(|l| l.split(' ').nth(1)).collect();
    values.sort();
    values.dedup();
    assert_eq!(values.len(), 600, "every record read back once");
    let partitions: std::collections::BTreeSet<&str> = stdout.lines().filter_map(|l| l.split(' ').next()).collect();
    assert_eq!(partitions.len(), 6, "records on every partition, so on every leader");

    // acks=all: answered once the followers have the records (min.insync.replicas=2 holds, as
    // the followers joined the ISR).
    let output = tests::kcat_produce(
        &brokers[0].bootstrap(),
        &["-t", topic, "-X", "acks=all", "-X", "message.timeout.ms=20000"],
        (0..100).map(|i| format!("acks-all-{i}")),
    );
    assert!(output.status.success() && output.stderr.is_empty(), "kcat -P acks=all: {}", String::from_utf8_lossy(&output.stderr));

    // Followers copy their leaders: every replica's log ends up byte for byte the leader's.
    let log_of = |broker: usize, partition: usize| {
        std::fs::read(dirs[broker].0.join("logs").join(format!("{topic}-{partition}")).join("00000000000000000000.log")).unwrap_or_default()
    };
    let started = Instant::now();
    loop {
        let diverging: Vec<(usize, usize)> = (0..6)
            .flat_map(|p| (0..3).map(move |b| (p, b)))
            .filter(|&(p, b)| log_of(b, p) != log_of(leaders_in_zookeeper[p] as usize - 1, p))
            .collect();
        if diverging.is_empty() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "replicas still differ from their leaders: {diverging:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(log_of(0, 0).len() > 1000, "the logs hold the records");

    // DeleteRecords: answered with the low watermark once every replica's log start followed
    // the leader's (Kafka's DelayedDeleteRecords), and each replica keeps it on disk.
    let deleted = tests::admin(
        &brokers[1].bootstrap(),
        &format!(
            "from confluent_kafka import TopicPartition\n\
             for tp, f in admin.delete_records([TopicPartition('{topic}', 0, 5)], request_timeout=30).items():\n\
             \x20   print(f.result().low_watermark)\n"
        ),
    );
    assert_eq!(deleted.trim(), "5", "the low watermark over all replicas");
    for dir in &dirs {
        let checkpoint = std::fs::read_to_string(dir.0.join("logs").join(format!("{topic}-0")).join("log-start-offset-checkpoint")).unwrap_or_default();
        assert_eq!(checkpoint, format!("0\n1\n{topic} 0 5\n"), "every replica's log start offset is durable");
    }
}

fn partition_dirs(dir: &TempDir, topic: &str) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(dir.0.join("logs"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.rsplit_once('-').is_some_and(|(t, p)| t == topic && p.parse::<u32>().is_ok()))
        .collect();
    found.sort();
    found
}

fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// DeleteTopics and CreatePartitions work cluster-wide: the controller deletes the topic in
/// ZooKeeper and every replica goes, including that of a broker that was down at the time; new
/// partitions get replicas and leaders and take records.
#[test]
fn topics_are_deleted_and_grown_cluster_wide() {
    let zookeeper = ZooKeeper::start();
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("topic-admin-{i}"))).collect();
    let mut brokers: Vec<Broker> = [1, 2, 3].iter().zip(&dirs).map(|(&id, dir)| start_broker(dir, &zookeeper, id)).collect();
    let all = brokers.iter().map(|b| b.bootstrap()).collect::<Vec<_>>().join(",");

    // Deletion, with broker 3 down: the topic goes from ZooKeeper and from brokers 1 and 2 at
    // once, from broker 3 when it comes back.
    create_topic(&all, "doomed", 3, 3, "");
    let output = tests::kcat_produce(&all, &["-t", "doomed", "-X", "acks=all"], (0..300).map(|i| format!("doomed-{i}")));
    assert!(output.status.success(), "kcat -P: {}", String::from_utf8_lossy(&output.stderr));
    for dir in &dirs {
        wait_until("replicas created", Duration::from_secs(10), || partition_dirs(dir, "doomed").len() == 3);
    }
    brokers[2].kill_9();
    let survivors = format!("{},{}", brokers[0].bootstrap(), brokers[1].bootstrap());
    tests::admin(&survivors, "for f in admin.delete_topics(['doomed'], operation_timeout=30).values():\n    f.result(30)");
    assert!(!zookeeper.cli("ls /kafka/brokers/topics").contains("doomed"));
    assert!(!zookeeper.cli("ls /kafka/config/topics").contains("doomed"));
    assert_eq!(zookeeper.cli("ls /kafka/admin/delete_topics"), "[]");
    for dir in &dirs[..2] {
        wait_until("replicas deleted", Duration::from_secs(10), || partition_dirs(dir, "doomed").is_empty());
    }
    assert_eq!(partition_dirs(&dirs[2], "doomed").len(), 3, "the stopped broker still has its replicas");
    brokers[2].restart();
    wait_until("the returning broker deletes its replicas", Duration::from_secs(10), || partition_dirs(&dirs[2], "doomed").is_empty());
    // The name is free again.
    create_topic(&all, "doomed", 1, 3, "");

    // CreatePartitions: 2 -> 5, each new partition with 3 replicas and a leader, taking records.
    create_topic(&all, "growing", 2, 3, "");
    tests::admin(&all, "for f in admin.create_partitions([NewPartitions('growing', 5)], operation_timeout=30).values():\n    f.result(30)");
    let assignment = zookeeper.cli("get /kafka/brokers/topics/growing");
    let json: serde_json::Value = serde_json::from_str(assignment.trim()).unwrap();
    let partitions = json["partitions"].as_object().unwrap();
    assert_eq!(partitions.len(), 5, "{assignment}");
    assert!(partitions.values().all(|r| r.as_array().unwrap().len() == 3), "{assignment}");
    for broker in &brokers {
        let (_, leaders) = metadata(&broker.bootstrap(), "growing");
        assert_eq!(leaders.len(), 5, "every broker knows 5 partitions with leaders: {leaders:?}");
        assert!(leaders.iter().all(|&l| l > 0));
    }
    let output = tests::kcat_produce(&all, &["-t", "growing", "-p", "4", "-X", "acks=all"], (0..50).map(|i| format!("new-{i}")));
    assert!(output.status.success() && output.stderr.is_empty(), "kcat -P: {}", String::from_utf8_lossy(&output.stderr));
    let (ok, stdout, stderr) = tests::run_with_timeout(
        std::process::Command::new("kcat").args(["-b", &all, "-C", "-t", "growing", "-p", "4", "-o", "beginning", "-e", "-q"]),
        Duration::from_secs(30),
    );
    assert!(ok, "kcat -C: {stderr}");
    assert_eq!(stdout.lines().count(), 50);
    for broker in &mut brokers {
        assert_eq!(broker.stop(), 0, "clean stop:\n{}", broker.log());
    }
}

/// Leader epochs keep replicas from diverging (Kafka's KIP-101 case): a leader takes records
/// nobody else has (acks=1, followers dead), dies; an unclean election makes a follower leader,
/// which takes other records at the same offsets. When the old leader returns, it asks the new
/// one where its latest epoch ends (OffsetForLeaderEpoch), cuts its own records there and
/// copies the new leader's: the logs end byte for byte equal, without refetching the shared part.
#[test]
fn a_returning_leader_truncates_to_the_new_leaders_epoch() {
    let zookeeper = ZooKeeper::start();
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("epochs-{i}"))).collect();
    let start = |i: usize| {
        let connect = format!("zookeeper.connect={}", zookeeper.connect("/kafka"));
        let id = format!("broker.id={}", i + 1);
        let session = format!("zookeeper.session.timeout.ms={SESSION_TIMEOUT_MS}");
        Broker::start(&dirs[i].0, 1, &[&connect, &id, &session, "unclean.leader.election.enable=true"])
    };
    let mut brokers: Vec<Broker> = (0..3).map(start).collect();
    let all = brokers.iter().map(|b| b.bootstrap()).collect::<Vec<_>>().join(",");
    let topic = "epochs";
    create_topic(&all, topic, 1, 3, "");
    let produce = |bootstrap: &str, prefix: &str, count: usize| {
        let output = tests::kcat_produce(bootstrap, &["-t", topic, "-p", "0", "-X", "acks=1"], (0..count).map(|i| format!("{prefix}-{i}")));
        assert!(output.status.success() && output.stderr.is_empty(), "kcat -P: {}", String::from_utf8_lossy(&output.stderr));
    };
    let log_of = |i: usize| std::fs::read(dirs[i].0.join("logs").join(format!("{topic}-0")).join("00000000000000000000.log")).unwrap_or_default();
    produce(&all, "common", 100);
    let (old_leader, _) = zookeeper.partition_state("/kafka", topic, 0);
    let old = old_leader as usize - 1;
    wait_until("followers have the common records", Duration::from_secs(10), || (0..3).all(|i| log_of(i) == log_of(old)));

    // The followers die; the leader alone takes records.
    let followers: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    for &f in &followers {
        brokers[f].kill_9();
    }
    wait_until("the ISR shrinks to the leader", Duration::from_secs(15), || zookeeper.partition_state("/kafka", topic, 0).1 == vec![old_leader]);
    produce(&brokers[old].bootstrap(), "lost", 50);
    brokers[old].kill_9();

    // A follower comes back and is elected uncleanly; it takes records of its own.
    brokers[followers[0]].restart();
    let new_leader = followers[0] as i32 + 1;
    wait_until("the returning follower leads", Duration::from_secs(20), || zookeeper.partition_state("/kafka", topic, 0).0 == new_leader);
    produce(&brokers[followers[0]].bootstrap(), "new", 70);

    // The old leader returns: its lost records go, the new leader's come.
    brokers[old].restart();
    brokers[followers[1]].restart();
    wait_until("every replica equals the new leader's log", Duration::from_secs(20), || {
        (0..3).all(|i| log_of(i) == log_of(followers[0]))
    });
    assert!(
        brokers[old].log().contains("truncating to the leader's epoch end"),
        "the old leader cut its log by leader epoch:\n{}",
        brokers[old].log()
    );
    let (ok, stdout, stderr) = tests::run_with_timeout(
        std::process::Command::new("kcat").args(["-b", &all, "-C", "-t", topic, "-o", "beginning", "-e", "-q"]),
        Duration::from_secs(30),
    );
    assert!(ok, "kcat -C: {stderr}");
    let values: Vec<&str> = stdout.lines().collect();
    assert_eq!(values.len(), 170, "common and new records: {values:?}");
    assert!(!values.iter().any(|v| v.starts_with("lost-")));
    let checkpoint = |i: usize| std::fs::read_to_string(dirs[i].0.join("logs").join(format!("{topic}-0")).join("leader-epoch-checkpoint")).unwrap();
    assert_eq!(checkpoint(old), checkpoint(followers[0]), "the epoch caches agree");
    for broker in &mut brokers {
        assert_eq!(broker.stop(), 0, "clean stop:\n{}", broker.log());
    }
}

/// A deposed controller's writes fail: the controller code itself (`zk::controller::reconcile`)
/// against a real ZooKeeper, with the fence of an epoch another controller has since replaced.
#[test]
fn a_deposed_controllers_writes_are_rejected() {
    use zookeeper_client::{Acls, Client, CreateMode};
    let zookeeper = ZooKeeper::start();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let client = Client::connect(&zookeeper.connect("")).await.unwrap();
        let persistent = CreateMode::Persistent.with_acls(Acls::anyone_all());
        for path in ["/brokers/ids", "/brokers/topics"] {
            client.mkdir(path, &persistent).await.unwrap();
        }
        let endpoint = zk::ListenerEndpoint { listener: "PLAINTEXT".into(), protocol: "PLAINTEXT".into(), host: "127.0.0.1".into(), port: 9092 };
        let registration = zk::paths::broker_registration_json(&[endpoint], None, 0);
        client.create("/brokers/ids/1", registration.as_bytes(), &CreateMode::Ephemeral.with_acls(Acls::anyone_all())).await.unwrap();
        client.create("/brokers/topics/t", zk::paths::topic_json(&[1; 16], &[vec![1]]).as_bytes(), &persistent).await.unwrap();

        let deposed = zk::bump_controller_epoch(&client).await.unwrap();
        let current = zk::bump_controller_epoch(&client).await.unwrap();
        assert_eq!(current.epoch, deposed.epoch + 1);
        let snapshot = zk::cluster::read(&client).await.unwrap();
        assert!(snapshot.state("t", 0).is_none(), "no leader yet");

        let refused = zk::controller::reconcile(&client, &snapshot, deposed, false).await;
        assert!(matches!(refused, Err(zk::controller::ReconcileError::Fenced)), "{refused:?}");
        assert!(zk::cluster::read(&client).await.unwrap().state("t", 0).is_none(), "the deposed controller wrote nothing");

        let written = zk::controller::reconcile(&client, &snapshot, current, false).await;
        assert!(matches!(written, Ok(1)), "{written:?}");
        let state = zk::cluster::read(&client).await.unwrap().state("t", 0).cloned().unwrap();
        assert_eq!((state.leader, state.controller_epoch), (1, current.epoch));
    });
}

/// A fetch waiting on a follower wakes when the follower's replication brings it data: Kafka
/// serves consumers' Fetch v11+ (KIP-392 client metadata) from any replica up to that replica's
/// high watermark, and a follower's replicated append and high watermark go through the
/// partition's door, which wakes the fetches waiting on it. Without the wake-up the fetch would
/// sit out its whole max wait.
#[test]
fn a_followers_replication_wakes_a_fetch_waiting_on_it() {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;

    let zookeeper = ZooKeeper::start();
    let dirs: Vec<TempDir> = (0..2).map(|i| TempDir::new(&format!("follower-wake-{i}"))).collect();
    let brokers: Vec<Broker> = (0..2).map(|i| start_broker(&dirs[i], &zookeeper, i as i32 + 1)).collect();
    let all = brokers.iter().map(|b| b.bootstrap()).collect::<Vec<_>>().join(",");
    let topic = "follower-wake";
    create_topic(&all, topic, 1, 2, "");
    let produce = |value: &str| {
        let output = tests::kcat_produce(&all, &["-t", topic, "-p", "0", "-X", "acks=all"], [value.to_string()]);
        assert!(output.status.success() && output.stderr.is_empty(), "kcat -P: {}", String::from_utf8_lossy(&output.stderr));
    };
    produce("first");
    let (leader, _) = zookeeper.partition_state("/kafka", topic, 0);
    let follower = &brokers[if leader == 1 { 1 } else { 0 }];
    let fetch = |offset: i64, max_wait_ms: i32| -> (i16, i64, usize, Duration) {
        let request = FetchRequest::default().with_max_wait_ms(max_wait_ms).with_min_bytes(1).with_max_bytes(1 << 20).with_topics(vec![
            FetchTopic::default().with_topic(TopicName(StrBytes::from_string(topic.to_string()))).with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)]),
        ]);
        let started = Instant::now();
        let response: FetchResponse = tests::wire::Connection::open(follower.address()).call(ApiKey::Fetch, 11, &request);
        let data = &response.responses[0].partitions[0];
        (data.error_code, data.high_watermark, data.records.as_ref().map_or(0, |r| r.len()), started.elapsed())
    };
    wait_until("the follower serves the first record", Duration::from_secs(15), || {
        let (error, high_watermark, bytes, _) = fetch(0, 0);
        error == 0 && high_watermark == 1 && bytes > 0
    });

    // A consumer long-polls the follower past its end; the leader then takes a record.
    const MAX_WAIT_MS: i32 = 15_000;
    let (error, high_watermark, bytes, took) = std::thread::scope(|scope| {
        let waiting = scope.spawn(|| fetch(1, MAX_WAIT_MS));
        std::thread::sleep(Duration::from_millis(500));
        produce("second");
        waiting.join().unwrap()
    });
    assert_eq!(error, 0);
    assert_eq!(high_watermark, 2, "the follower's high watermark covers the new record");
    assert!(bytes > 0, "the follower answered with the replicated record");
    assert!(took < Duration::from_millis(MAX_WAIT_MS as u64 / 2), "the fetch waited {took:?}: the follower's replication did not wake it");
    eprintln!("a fetch waiting on the follower was answered after {took:?}");
}
