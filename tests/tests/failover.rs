//! Failover without losing acknowledged records: a real ZooKeeper, three broker processes, an
//! idempotent confluent-kafka producer with acks=all writing numbered records, and kill -9 of the
//! broker leading most partitions, five times with different victims.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tests::cluster::{assert_acked_read_back, clients_dir, read_produced, run_producer};
use tests::zookeeper::ZooKeeper;
use tests::{run_with_timeout, Broker, TempDir};

fn start_broker(dir: &TempDir, zookeeper: &ZooKeeper, broker_id: i32) -> Broker {
    let connect = format!("zookeeper.connect={}", zookeeper.connect("/kafka"));
    let id = format!("broker.id={broker_id}");
    let session = format!("zookeeper.session.timeout.ms={SESSION_TIMEOUT_MS}");
    Broker::start(&dir.0, 1, &[&connect, &id, &session])
}

fn partition_states(bootstrap: &str) -> Vec<(i32, Vec<i32>)> {
    tests::cluster::partition_states(bootstrap, TOPIC, &[])
}

fn wait_for_full_isr(bootstrap: &str, within: Duration) {
    tests::cluster::wait_for_full_isr(bootstrap, TOPIC, PARTITIONS, 3, &[], within)
}

const SESSION_TIMEOUT_MS: u64 = 3_000;
const PARTITIONS: usize = 6;
const TOPIC: &str = "numbers";

fn log_bytes(dir: &TempDir, partition: usize) -> Vec<u8> {
    let path = dir.0.join("logs").join(format!("{TOPIC}-{partition}"));
    let mut names: Vec<_> = std::fs::read_dir(&path).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    names.retain(|p: &std::path::PathBuf| p.extension().is_some_and(|e| e == "log"));
    names.sort();
    names.iter().flat_map(|p| std::fs::read(p).unwrap()).collect()
}

#[test]
fn acknowledged_records_survive_five_leader_kills() {
    let zookeeper = ZooKeeper::start();
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("failover-{i}"))).collect();
    let mut brokers: Vec<Broker> = (0..3).map(|i| start_broker(&dirs[i], &zookeeper, i as i32 + 1)).collect();
    let bootstrap_all = brokers.iter().map(|b| b.bootstrap()).collect::<Vec<_>>().join(",");
    let script = format!(
        "from confluent_kafka.admin import AdminClient, NewTopic\n\
         admin = AdminClient({{'bootstrap.servers': '{bootstrap_all}'}})\n\
         for f in admin.create_topics([NewTopic('{TOPIC}', {PARTITIONS}, 3, config={{'min.insync.replicas': '2'}})]).values():\n\
         \x20   f.result(30)\n"
    );
    let (ok, _, stderr) = run_with_timeout(Command::new(clients_dir().join(".venv/bin/python")).arg("-c").arg(script), Duration::from_secs(60));
    assert!(ok, "create topic: {stderr}");
    wait_for_full_isr(&brokers[0].bootstrap(), Duration::from_secs(20));

    let report_dir = TempDir::new("failover-reports");
    let mut all_acked: Vec<(i32, i64, u64)> = Vec::new();
    let mut victims = Vec::new();
    let mut first = 0u64;
    for round in 0..5 {
        let survivor_bootstrap = |exclude: usize| brokers.iter().enumerate().filter(|(i, _)| *i != exclude).map(|(_, b)| b.bootstrap()).collect::<Vec<_>>().join(",");
        let states = partition_states(&brokers[round % 3].bootstrap());
        let mut led: BTreeMap<i32, usize> = BTreeMap::new();
        for (leader, _) in &states {
            *led.entry(*leader).or_default() += 1;
        }
        let most = *led.values().max().unwrap();
        let candidates: Vec<i32> = led.iter().filter(|(_, &n)| n == most).map(|(&id, _)| id).collect();
        let victim = candidates[round % candidates.len()];
        let moved: BTreeSet<i32> = states.iter().enumerate().filter(|(_, (l, _))| *l == victim).map(|(p, _)| p as i32).collect();
        let report = report_dir.0.join(format!("round-{round}.json"));
        let producer = run_producer(&survivor_bootstrap(victim as usize - 1), TOPIC, PARTITIONS, 8.0, first, &report, "{}");
        std::thread::sleep(Duration::from_secs(2));
        let killed_at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
        brokers[victim as usize - 1].kill_9();
        let output = producer.wait_with_output().unwrap();
        assert!(output.status.success(), "producer: {}", String::from_utf8_lossy(&output.stderr));
        let produced = read_produced(&report);
        assert!(produced.errors.is_empty(), "round {round}: delivery errors {:?}", &produced.errors[..produced.errors.len().min(5)]);
        let failover_s = produced
            .acked
            .iter()
            .filter(|(p, _, _, at)| moved.contains(p) && *at > killed_at)
            .map(|(_, _, _, at)| at - killed_at)
            .fold(f64::INFINITY, f64::min);
        let limit_s = SESSION_TIMEOUT_MS as f64 / 1000.0 + 2.0;
        eprintln!("round {round}: killed broker {victim} (led {moved:?}); first produce to a moved partition {failover_s:.2} s later; {} acked", produced.acked.len());
        assert!(failover_s <= limit_s, "round {round}: failover took {failover_s:.2} s, more than {limit_s} s");
        first += produced.acked.len() as u64 + 1_000_000;
        all_acked.extend(produced.acked.iter().map(|&(p, o, v, _)| (p, o, v)));
        victims.push(victim);

        // The victim comes back, catches up and rejoins the ISR; then every replica's log is the
        // leader's, byte for byte.
        brokers[victim as usize - 1].restart();
        wait_for_full_isr(&brokers[0].bootstrap(), Duration::from_secs(30));
        let started = Instant::now();
        loop {
            let states = partition_states(&brokers[0].bootstrap());
            let differing: Vec<usize> = (0..PARTITIONS)
                .filter(|&p| {
                    let leader = states.get(p).map_or(1, |s| s.0) as usize - 1;
                    (0..3).any(|b| log_bytes(&dirs[b], p) != log_bytes(&dirs[leader], p))
                })
                .collect();
            if differing.is_empty() {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(15), "round {round}: replicas differ on partitions {differing:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let distinct: BTreeSet<i32> = victims.iter().copied().collect();
    assert!(distinct.len() >= 2, "victims {victims:?}");

    // Every acknowledged record, exactly once, in order per partition.
    let consumed = assert_acked_read_back(&brokers[1].bootstrap(), TOPIC, &[], &all_acked);
    eprintln!("{} acknowledged records over 5 kills ({victims:?}), all read back once, in order", all_acked.len());

    // Two of three brokers down with min.insync.replicas=2: acks=all is refused, and consumers
    // still read what is committed.
    let survivor = 2usize;
    brokers[0].stop();
    brokers[1].stop();
    std::thread::sleep(Duration::from_millis(SESSION_TIMEOUT_MS + 1500));
    let output = tests::kcat_produce(
        &brokers[survivor].bootstrap(),
        &["-t", TOPIC, "-p", "0", "-X", "acks=all", "-X", "retries=0", "-X", "message.timeout.ms=10000"],
        ["999999999999".to_string()],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Not enough in-sync replicas"), "acks=all with one broker left: {stderr}");
    let (ok, stdout, stderr) = run_with_timeout(
        Command::new("kcat").args(["-b", &brokers[survivor].bootstrap(), "-C", "-t", TOPIC, "-p", "0", "-o", "beginning", "-e", "-q"]),
        Duration::from_secs(30),
    );
    assert!(ok, "kcat -C with one broker left: {stderr}");
    let committed = consumed.get(&0).map_or(0, Vec::len);
    assert_eq!(stdout.lines().count(), committed, "partition 0 read through the last broker");
}
