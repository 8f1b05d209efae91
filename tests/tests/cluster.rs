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
