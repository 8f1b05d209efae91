//! Issue 20 in cluster mode: three brokers whose inter-broker listener is secured (replica
//! fetchers, transaction markers and KIP-890 verification over TLS, with SASL or mTLS), SCRAM
//! users kept in ZooKeeper as Kafka keeps them, and clients told the addresses of the listener
//! they connected on. A real ZooKeeper, the real binary, confluent-kafka and Debian's kcat.
//!
//! The brokers' own SCRAM user is written to ZooKeeper before they start, as Kafka's operators do
//! (`kafka-configs --zookeeper ... --add-config SCRAM-SHA-512=[password=...]`): a broker cannot
//! log in to another before its credential exists.

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tests::security::{make_certs, Certs};
use tests::cluster::{assert_acked_read_back, clients_dir, partition_states, read_produced, run_producer, wait_for_full_isr};
use tests::zookeeper::ZooKeeper;
use tests::{free_port, run_with_timeout, Broker, TempDir};

const SESSION_TIMEOUT_MS: u64 = 3_000;
const CHROOT: &str = "/kafka";
const ADMIN_JAAS: &str = r#"org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="admin-secret";"#;

fn script(args: &[&str]) -> String {
    let (ok, stdout, stderr) = run_with_timeout(
        Command::new(clients_dir().join(".venv/bin/python")).arg(clients_dir().join("security_cluster.py")).args(args),
        Duration::from_secs(120),
    );
    assert!(ok, "security_cluster.py {:?}: {stdout}\n{stderr}", &args[..1]);
    stdout
}

/// `/config/users/<user>` with a SCRAM-SHA-512 credential, written straight to ZooKeeper.
fn bootstrap_scram_user(zookeeper: &ZooKeeper, user: &str, password: &str) {
    use zookeeper_client::{Acls, Client, CreateMode};
    let credential = script(&["scram-credential", password]).trim().to_string();
    let config = [("SCRAM-SHA-512".to_string(), credential)].into_iter().collect();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let client = Client::connect(&zookeeper.connect("")).await.unwrap();
        let persistent = CreateMode::Persistent.with_acls(Acls::anyone_all());
        client.mkdir(&format!("{CHROOT}{}", zk::user_configs::USERS), &persistent).await.unwrap();
        let path = format!("{CHROOT}{}", zk::user_configs::user_path(user));
        client.create(&path, zk::user_configs::user_config_json(&config).as_bytes(), &persistent).await.unwrap();
    });
}

/// A broker's ports: the client listener (the harness checks readiness on it) and, in setups
/// with a separate inter-broker listener, that one.
struct Ports {
    client: u16,
    internal: u16,
}

/// The TLS keys every listener shares: the test CA's broker certificate, which also serves as the
/// client certificate one broker presents to another.
fn tls_overrides(certs: &Certs) -> Vec<String> {
    vec![
        "ssl.keystore.type=PEM".into(),
        format!("ssl.keystore.location={}", certs.broker_keystore.display()),
        "ssl.truststore.type=PEM".into(),
        format!("ssl.truststore.location={}", certs.ca.display()),
    ]
}

/// Three brokers (ids 1-3) with `listener_keys(ports)` and the TLS keys of `tls_overrides`.
fn start_cluster(zookeeper: &ZooKeeper, name: &str, certs: &Certs, listener_keys: impl Fn(&Ports) -> Vec<String>) -> (Vec<TempDir>, Vec<Ports>, Vec<Broker>) {
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("{name}-{i}"))).collect();
    let ports: Vec<Ports> = (0..3).map(|_| Ports { client: free_port(), internal: free_port() }).collect();
    let brokers = (0..3)
        .map(|i| {
            let mut overrides = vec![
                format!("zookeeper.connect={}", zookeeper.connect(CHROOT)),
                format!("broker.id={}", i + 1),
                format!("zookeeper.session.timeout.ms={SESSION_TIMEOUT_MS}"),
            ];
            overrides.extend(listener_keys(&ports[i]));
            overrides.extend(tls_overrides(certs));
            let overrides: Vec<&str> = overrides.iter().map(String::as_str).collect();
            Broker::start_on_port(&dirs[i].0, 1, ports[i].client, &overrides)
        })
        .collect();
    (dirs, ports, brokers)
}

/// librdkafka's settings for a SASL_SSL SCRAM-SHA-512 client, as kcat `-X` arguments and as the
/// JSON the Python scripts take.
fn client_security(certs: &Certs, user: &str, password: &str) -> (Vec<String>, serde_json::Value) {
    let settings = [
        ("security.protocol", "SASL_SSL".to_string()),
        ("sasl.mechanisms", "SCRAM-SHA-512".to_string()),
        ("sasl.username", user.to_string()),
        ("sasl.password", password.to_string()),
        ("ssl.ca.location", certs.ca.display().to_string()),
    ];
    let kcat = settings.iter().flat_map(|(k, v)| ["-X".to_string(), format!("{k}={v}")]).collect();
    let json = serde_json::Value::Object(settings.iter().map(|(k, v)| (k.to_string(), serde_json::Value::String(v.clone()))).collect());
    (kcat, json)
}

fn with_bootstrap(config: &serde_json::Value, bootstrap: &str) -> String {
    let mut config = config.clone();
    config["bootstrap.servers"] = serde_json::Value::String(bootstrap.to_string());
    config.to_string()
}

#[test]
fn sasl_ssl_between_brokers_scram_users_in_zookeeper_failover_and_transactions() {
    let zookeeper = ZooKeeper::start();
    let certs_dir = TempDir::new("security-cluster-certs");
    let certs = make_certs(&certs_dir.0);
    bootstrap_scram_user(&zookeeper, "admin", "admin-secret");
    let (_dirs, ports, mut brokers) = start_cluster(&zookeeper, "security-cluster", &certs, |ports| {
        vec![
            format!("listeners=SASL_SSL://127.0.0.1:{}", ports.client),
            "security.inter.broker.protocol=SASL_SSL".into(),
            "sasl.enabled.mechanisms=SCRAM-SHA-512".into(),
            "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512".into(),
            format!("listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={ADMIN_JAAS}"),
        ]
    });
    let bootstrap_all = brokers.iter().map(Broker::bootstrap).collect::<Vec<_>>().join(",");
    let (admin_kcat, admin) = client_security(&certs, "admin", "admin-secret");

    // The registration carries the listener and its protocol, as Kafka's BrokerIdZNode v5.
    let registration = zookeeper.cli(&format!("get {CHROOT}/brokers/ids/1"));
    assert!(
        registration.contains(&format!("\"endpoints\":[\"SASL_SSL://127.0.0.1:{}\"]", ports[0].client))
            && registration.contains("\"listener_security_protocol_map\":{\"SASL_SSL\":\"SASL_SSL\"}")
            && registration.contains("\"port\":-1"),
        "{registration}"
    );

    // A user made on broker 1 is known to broker 3 within a second, from ZooKeeper.
    script(&["create-user", &with_bootstrap(&admin, &brokers[0].bootstrap()), "alice", "alice-secret"]);
    let known = script(&["wait-user", &with_bootstrap(&admin, &brokers[2].bootstrap()), "alice"]);
    let known_ms: u64 = known.split_whitespace().last().unwrap().parse().unwrap();
    assert!(known_ms < 1000, "broker 3 knew alice only after {known_ms} ms");
    let stored = zookeeper.cli(&format!("get {CHROOT}/config/users/alice"));
    assert!(stored.contains("\"SCRAM-SHA-512\":\"salt=") && !stored.contains("alice-secret"), "{stored}");
    let changes = zookeeper.cli(&format!("ls {CHROOT}/config/changes"));
    assert!(changes.contains("config_change_"), "{changes}");
    let (alice_kcat, alice) = client_security(&certs, "alice", "alice-secret");

    // RF 3 over TLS: alice produces acks=all through broker 3 only; the leader of most
    // partitions is killed; every acknowledged record is read back.
    const TOPIC: &str = "secured";
    const PARTITIONS: usize = 6;
    script(&["create-topic", &with_bootstrap(&alice, &bootstrap_all), TOPIC, &PARTITIONS.to_string(), "3"]);
    wait_for_full_isr(&brokers[2].bootstrap(), TOPIC, PARTITIONS, 3, &alice_kcat, Duration::from_secs(30));
    let states = partition_states(&brokers[2].bootstrap(), TOPIC, &alice_kcat);
    let mut led = [0usize; 3];
    for (leader, _) in &states {
        led[*leader as usize - 1] += 1;
    }
    let victim = (0..3).max_by_key(|&b| led[b]).unwrap();
    let survivors = (0..3).filter(|&b| b != victim).map(|b| brokers[b].bootstrap()).collect::<Vec<_>>().join(",");
    let report_dir = TempDir::new("security-cluster-reports");
    let report = report_dir.0.join("produced.json");
    let producer = run_producer(&survivors, TOPIC, PARTITIONS, 8.0, 0, &report, &alice.to_string());
    std::thread::sleep(Duration::from_secs(2));
    let killed_at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    brokers[victim].kill_9();
    let output = producer.wait_with_output().unwrap();
    assert!(output.status.success(), "producer: {}", String::from_utf8_lossy(&output.stderr));
    let produced = read_produced(&report);
    assert!(produced.errors.is_empty(), "delivery errors {:?}", &produced.errors[..produced.errors.len().min(5)]);
    assert!(produced.acked.iter().any(|a| a.3 > killed_at + 1.0), "nothing acknowledged after the kill");
    // The victim comes back and catches up over TLS: full ISRs again.
    brokers[victim].restart();
    let reader = (victim + 1) % 3;
    wait_for_full_isr(&brokers[reader].bootstrap(), TOPIC, PARTITIONS, 3, &alice_kcat, Duration::from_secs(30));
    let acked: Vec<(i32, i64, u64)> = produced.acked.iter().map(|&(p, o, v, _)| (p, o, v)).collect();
    assert_acked_read_back(&brokers[reader].bootstrap(), TOPIC, &alice_kcat, &acked);
    eprintln!("{} acknowledged records over SASL_SSL, broker {} killed, all read back", acked.len(), victim + 1);

    // Transactions across brokers: the coordinator's markers reach the other leaders over TLS.
    const TXN_TOPIC: &str = "secured-txn";
    script(&["create-topic", &with_bootstrap(&admin, &bootstrap_all), TXN_TOPIC, "3", "3"]);
    wait_for_full_isr(&brokers[0].bootstrap(), TXN_TOPIC, 3, 3, &admin_kcat, Duration::from_secs(30));
    let outcome = script(&["transactions", &with_bootstrap(&alice, &bootstrap_all), TXN_TOPIC, "3"]);
    assert!(outcome.contains("transactions ok"), "{outcome}");

    // The users are in ZooKeeper: a restarted broker still authenticates alice.
    assert_eq!(brokers[2].stop(), 0);
    brokers[2].restart();
    let (ok, stdout, stderr) = run_with_timeout(
        tests::cluster::kcat().args(["-b", &brokers[2].bootstrap(), "-L", "-t", TOPIC]).args(&alice_kcat),
        Duration::from_secs(30),
    );
    assert!(ok && stdout.contains("3 brokers"), "{stdout}\n{stderr}\n{}", brokers[2].log());
    for broker in &brokers {
        assert!(!broker.log().contains("panicked"), "{}", broker.log());
    }
}

/// Mixed: brokers talk over SSL with client certificates (mTLS) on INTERNAL; clients use
/// SASL_SSL on EXTERNAL and are told only EXTERNAL addresses.
#[test]
fn mtls_between_brokers_sasl_ssl_for_clients() {
    let zookeeper = ZooKeeper::start();
    let certs_dir = TempDir::new("security-mixed-certs");
    let certs = make_certs(&certs_dir.0);
    bootstrap_scram_user(&zookeeper, "alice", "alice-secret");
    let (_dirs, ports, brokers) = start_cluster(&zookeeper, "security-mixed", &certs, |ports| {
        vec![
            format!("listeners=EXTERNAL://127.0.0.1:{},INTERNAL://127.0.0.1:{}", ports.client, ports.internal),
            "listener.security.protocol.map=EXTERNAL:SASL_SSL,INTERNAL:SSL".into(),
            "inter.broker.listener.name=INTERNAL".into(),
            "listener.name.internal.ssl.client.auth=required".into(),
            "listener.name.external.sasl.enabled.mechanisms=SCRAM-SHA-512".into(),
        ]
    });
    let (alice_kcat, alice) = client_security(&certs, "alice", "alice-secret");
    let bootstrap_all = brokers.iter().map(Broker::bootstrap).collect::<Vec<_>>().join(",");

    // Metadata on EXTERNAL names the EXTERNAL ports only.
    let (ok, stdout, stderr) = run_with_timeout(
        tests::cluster::kcat().args(["-b", &brokers[0].bootstrap(), "-L"]).args(&alice_kcat),
        Duration::from_secs(30),
    );
    assert!(ok, "{stderr}");
    for p in &ports {
        assert!(stdout.contains(&format!("127.0.0.1:{}", p.client)), "{stdout}");
        assert!(!stdout.contains(&format!("127.0.0.1:{}", p.internal)), "{stdout}");
    }
    const TOPIC: &str = "mixed";
    script(&["create-topic", &with_bootstrap(&alice, &bootstrap_all), TOPIC, "3", "3"]);
    wait_for_full_isr(&brokers[1].bootstrap(), TOPIC, 3, 3, &alice_kcat, Duration::from_secs(30));
    let report_dir = TempDir::new("security-mixed-reports");
    let report = report_dir.0.join("produced.json");
    let output = run_producer(&bootstrap_all, TOPIC, 3, 3.0, 0, &report, &alice.to_string()).wait_with_output().unwrap();
    assert!(output.status.success(), "producer: {}", String::from_utf8_lossy(&output.stderr));
    let produced = read_produced(&report);
    assert!(produced.errors.is_empty() && !produced.acked.is_empty(), "delivery errors {:?}", &produced.errors[..produced.errors.len().min(5)]);
    let acked: Vec<(i32, i64, u64)> = produced.acked.iter().map(|&(p, o, v, _)| (p, o, v)).collect();
    assert_acked_read_back(&brokers[2].bootstrap(), TOPIC, &alice_kcat, &acked);
    // The brokers authenticated each other by certificate.
    assert!(brokers.iter().any(|b| b.log().contains("User:CN=localhost")), "{}", brokers[0].log());
    script(&["create-topic", &with_bootstrap(&alice, &bootstrap_all), "mixed-txn", "3", "3"]);
    wait_for_full_isr(&brokers[1].bootstrap(), "mixed-txn", 3, 3, &alice_kcat, Duration::from_secs(30));
    let outcome = script(&["transactions", &with_bootstrap(&alice, &bootstrap_all), "mixed-txn", "3"]);
    assert!(outcome.contains("transactions ok"), "{outcome}");
}

/// utime + stime of a process, in seconds (/proc/PID/stat, 100 ticks a second).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    (fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()) as f64 / 100.0
}

fn partition_bytes(dir: &TempDir, topic: &str) -> u64 {
    let path = dir.0.join("logs").join(format!("{topic}-0"));
    std::fs::read_dir(path).map(|d| d.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "log")).map(|e| e.metadata().unwrap().len()).sum()).unwrap_or(0)
}

/// Measurement, not a check (tuning.md quotes it): CPU seconds per GiB replicated, the followers'
/// and the leader's, with the inter-broker listener on PLAINTEXT and then on SASL_SSL (SCRAM),
/// clients on a PLAINTEXT listener both times. 256 MiB of 1 KiB records through kcat, acks=all,
/// RF 3, one partition.
/// `cargo test --release -p tests --test security_cluster -- --ignored --nocapture replication_cost`
#[test]
#[ignore]
fn replication_cost_tls_vs_plaintext() {
    const TOPIC: &str = "cost";
    const RECORDS: usize = 256 * 1024;
    let certs_dir = TempDir::new("replication-cost-certs");
    let certs = make_certs(&certs_dir.0);
    let input = certs_dir.0.join("records.txt");
    let line = "x".repeat(1023) + "\n";
    std::fs::write(&input, line.repeat(RECORDS)).unwrap();
    for inter_broker in ["PLAINTEXT", "SASL_SSL"] {
        let zookeeper = ZooKeeper::start();
        bootstrap_scram_user(&zookeeper, "admin", "admin-secret");
        let (dirs, _ports, brokers) = start_cluster(&zookeeper, "replication-cost", &certs, |ports| {
            vec![
                format!("listeners=CLIENT://127.0.0.1:{},INTERNAL://127.0.0.1:{}", ports.client, ports.internal),
                format!("listener.security.protocol.map=CLIENT:PLAINTEXT,INTERNAL:{inter_broker}"),
                "inter.broker.listener.name=INTERNAL".into(),
                "sasl.enabled.mechanisms=SCRAM-SHA-512".into(),
                "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512".into(),
                format!("listener.name.internal.scram-sha-512.sasl.jaas.config={ADMIN_JAAS}"),
            ]
        });
        let bootstrap_all = brokers.iter().map(Broker::bootstrap).collect::<Vec<_>>().join(",");
        script(&["create-topic", &serde_json::json!({ "bootstrap.servers": bootstrap_all }).to_string(), TOPIC, "1", "3"]);
        wait_for_full_isr(&brokers[0].bootstrap(), TOPIC, 1, 3, &[], Duration::from_secs(30));
        let leader = partition_states(&brokers[0].bootstrap(), TOPIC, &[])[0].0 as usize - 1;
        let before: Vec<f64> = brokers.iter().map(|b| cpu_seconds(b.pid())).collect();
        let started = std::time::Instant::now();
        let (ok, _, stderr) = run_with_timeout(
            tests::cluster::kcat()
                .args(["-b", &brokers[leader].bootstrap(), "-P", "-t", TOPIC, "-p", "0", "-l"])
                .args(["-X", "acks=all", "-X", "linger.ms=5", "-X", "batch.size=1000000", "-X", "queue.buffering.max.kbytes=262144"])
                .arg(&input),
            Duration::from_secs(300),
        );
        assert!(ok, "kcat -P: {stderr}");
        let leader_bytes = partition_bytes(&dirs[leader], TOPIC);
        while (0..3).any(|b| partition_bytes(&dirs[b], TOPIC) < leader_bytes) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let seconds = started.elapsed().as_secs_f64();
        let gib = leader_bytes as f64 / (1u64 << 30) as f64;
        let used: Vec<f64> = brokers.iter().enumerate().map(|(i, b)| cpu_seconds(b.pid()) - before[i]).collect();
        let followers: f64 = (0..3).filter(|&b| b != leader).map(|b| used[b]).sum::<f64>() / 2.0;
        eprintln!(
            "inter-broker {inter_broker}: {:.0} MiB in {seconds:.1} s ({:.0} MiB/s); CPU-s per GiB: leader {:.2}, each follower {:.2}",
            gib * 1024.0,
            gib * 1024.0 / seconds,
            used[leader] / gib,
            followers / gib
        );
    }
}
