//! Transactions (KIP-98) driven by confluent-kafka (tests/clients/transactions.py) against the
//! real broker with 4 shards, so transactional ids, their `__transaction_state` partitions, the
//! partitions written and the groups' `__consumer_offsets` partitions sit on different shards
//! and the coordinator's markers cross them: the coordinator, markers and fencing; read_committed
//! (the last stable offset, the aborted transactions of Fetch from the `.txnindex`) against
//! read_uncommitted, which sees aborted records too (the client skips the control batches).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use kafka_protocol::messages::{ApiKey, DescribeTransactionsRequest, DescribeTransactionsResponse, ListTransactionsRequest, ListTransactionsResponse, TransactionalId};
use kafka_protocol::protocol::StrBytes;
use tests::wire::Connection;
use tests::{run_with_timeout, Broker, TempDir};

/// One broker at a time: four brokers of 4 shards on two shared cores would blur the timeouts.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn scenario(broker: &Broker, name: &str, topic: &str) -> String {
    scenario_at(&broker.bootstrap(), name, topic, &[], &|| broker.log())
}

fn scenario_at(bootstrap: &str, name: &str, topic: &str, extra: &[&str], log: &dyn Fn() -> String) -> String {
    let clients = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients");
    let (ok, stdout, stderr) = run_with_timeout(
        Command::new(tests::python()).arg(clients.join("transactions.py")).args([name, "--bootstrap", bootstrap, "--topic", topic]).args(extra),
        Duration::from_secs(90),
    );
    assert!(ok && stdout.contains(&format!("{name} ok")), "{name} failed:\n{stdout}\n{stderr}\nbroker log:\n{}", log());
    eprintln!("{name}:\n{stdout}");
    stdout
}

fn fact(stdout: &str, name: &str) -> String {
    let prefix = format!("fact {name}=");
    stdout.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap_or_else(|| panic!("no fact {name} in:\n{stdout}")).to_string()
}

/// (error, state, producer id, epoch) of a transactional id, by DescribeTransactions.
fn describe(broker: &Broker, transactional_id: &str) -> (i16, String, i64, i16) {
    let request = DescribeTransactionsRequest::default().with_transactional_ids(vec![TransactionalId(StrBytes::from_string(transactional_id.into()))]);
    let response: DescribeTransactionsResponse = Connection::open(broker.address()).call(ApiKey::DescribeTransactions, 0, &request);
    let state = &response.transaction_states[0];
    (state.error_code, state.transaction_state.to_string(), state.producer_id.0, state.producer_epoch)
}

fn start(dir: &TempDir) -> Broker {
    // Timed-out transactions are looked for every 500 ms (Kafka: 10 s), so the timeout scenario
    // takes seconds.
    Broker::start(&dir.0, 4, &["transaction.abort.timed.out.transaction.cleanup.interval.ms=500", "transaction.state.log.num.partitions=8"])
}

#[test]
fn commit_abort_and_restart() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("txn-basic");
    let mut broker = start(&dir);
    let out = scenario(&broker, "basic", "basic");
    assert_eq!(fact(&out, "committed"), "11");
    assert_eq!(fact(&out, "aborted"), "6", "read_uncommitted sees aborted records");
    assert_eq!(fact(&out, "total"), "17", "no control record reaches the application");
    assert_eq!((fact(&out, "rc_committed").as_str(), fact(&out, "rc_aborted").as_str()), ("11", "0"), "read_committed never sees aborted records");
    assert_eq!((fact(&out, "kp_rc_committed").as_str(), fact(&out, "kp_rc_aborted").as_str()), ("11", "0"), "kafka-python's read_committed too");
    let (error, state, producer_id, epoch) = describe(&broker, "basic-txn");
    assert_eq!((error, state.as_str()), (0, "CompleteCommit"));

    // The coordinator's state survives a restart (loaded from __transaction_state).
    assert_eq!(broker.stop(), 0);
    broker.restart();
    let mut loaded = describe(&broker, "basic-txn");
    for _ in 0..50 {
        if loaded.0 == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        loaded = describe(&broker, "basic-txn");
    }
    assert_eq!(loaded, (0, "CompleteCommit".to_string(), producer_id, epoch));
    let list: ListTransactionsResponse = Connection::open(broker.address()).call(ApiKey::ListTransactions, 1, &ListTransactionsRequest::default().with_duration_filter(-1));
    assert!(list.transaction_states.iter().any(|s| s.transactional_id.0.as_str() == "basic-txn"), "{list:?}");
    // A new producer with the id continues the producer id and its epochs.
    scenario(&broker, "reinit", "basic");
    assert_eq!(describe(&broker, "basic-txn"), (0, "CompleteCommit".to_string(), producer_id, epoch + 1));
}

#[test]
fn a_second_producer_fences_the_first() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("txn-fencing");
    let broker = start(&dir);
    let out = scenario(&broker, "fencing", "fencing");
    assert_eq!(fact(&out, "idle_fenced"), "yes");
    assert_eq!(fact(&out, "open_fenced"), "yes");
    // The fenced producer's records are in the log (aborted), the others committed.
    assert_eq!(fact(&out, "values"), "first-committed,second-open,third-committed");
    let (error, state, _, epoch) = describe(&broker, "fencing-txn");
    assert_eq!((error, state.as_str()), (0, "CompleteCommit"));
    // Three producers, one fence that bumped the epoch once more: 0, 1, (fence) 2, 3.
    assert_eq!(epoch, 3);
}

#[test]
fn offsets_commit_with_the_transaction() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("txn-offsets");
    let broker = start(&dir);
    let out = scenario(&broker, "offsets", "offsets");
    assert_eq!(fact(&out, "after_commit"), "4");
    assert_eq!(fact(&out, "after_abort"), "4", "an aborted transaction's offsets never show");
}

#[test]
fn timed_out_transactions_are_aborted() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("txn-timeout");
    let broker = start(&dir);
    let out = scenario(&broker, "timeout", "timeout");
    assert_eq!(fact(&out, "timed_out"), "yes");
    assert_eq!(fact(&out, "values"), "abandoned,after");
    assert!(broker.log().contains("aborting a transaction past its timeout"), "{}", broker.log());
    let out = scenario(&broker, "invalid_timeout", "invalid");
    assert_eq!(fact(&out, "refused"), "INVALID_TRANSACTION_TIMEOUT");
}

/// Kafka's transactional id -> `__transaction_state` partition (Java's String.hashCode, sign bit
/// masked).
fn partition_for(transactional_id: &str, partitions: i32) -> i32 {
    let hash = transactional_id.encode_utf16().fold(0i32, |hash, unit| hash.wrapping_mul(31).wrapping_add(unit as i32));
    (hash & 0x7fff_ffff) % partitions
}

/// Three brokers of 2 shards in ZooKeeper's `/kafka`, failing over within seconds, with 4
/// partitions of `__transaction_state` and `__consumer_offsets`.
fn start_cluster(zookeeper: &tests::zookeeper::ZooKeeper, name: &str) -> (Vec<TempDir>, Vec<Broker>) {
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("{name}-{i}"))).collect();
    let connect = format!("zookeeper.connect={}", zookeeper.connect("/kafka"));
    let brokers = (0..3)
        .map(|i| {
            let id = format!("broker.id={}", i + 1);
            Broker::start(
                &dirs[i].0,
                2,
                &[&connect, &id, "zookeeper.session.timeout.ms=3000", "replica.lag.time.max.ms=2000", "transaction.state.log.num.partitions=4", "offsets.topic.num.partitions=4"],
            )
        })
        .collect();
    (dirs, brokers)
}

/// Cluster mode: three brokers, `__transaction_state` replicated on all three (RF 3, min ISR 2),
/// topics of RF 1 so a transaction's partitions sit on several brokers and the coordinator's
/// markers go out as WriteTxnMarkers. Then kill -9 the coordinator: the new leader of the id's
/// partition loads it and carries on.
#[test]
fn cluster_coordinator_markers_and_failover() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let zookeeper = tests::zookeeper::ZooKeeper::start();
    let (_dirs, mut brokers) = start_cluster(&zookeeper, "txn-cluster");
    let bootstrap_all = brokers.iter().map(|b| b.bootstrap()).collect::<Vec<_>>().join(",");
    let logs = || String::new();
    let out = scenario_at(&bootstrap_all, "basic", "cbasic", &["--replication-factor", "1"], &logs);
    assert_eq!(fact(&out, "total"), "17");
    assert_eq!((fact(&out, "rc_committed").as_str(), fact(&out, "rc_aborted").as_str()), ("11", "0"), "read_committed across brokers");
    let partition = partition_for("cbasic-txn", 4);
    let (coordinator, isr) = zookeeper.partition_state("/kafka", "__transaction_state", partition);
    assert_eq!(isr.len(), 3, "__transaction_state is replicated: {isr:?}");
    let (error, state, producer_id, epoch) = describe(&brokers[coordinator as usize - 1], "cbasic-txn");
    assert_eq!((error, state.as_str()), (0, "CompleteCommit"));

    // kill -9 the coordinator: the new leader loads the id (same producer id, next epoch). The
    // next transaction writes to a replicated topic made now (an admin request needs a live
    // controller, which the killed broker may have been).
    tests::admin(&bootstrap_all, "admin.create_topics([NewTopic('cbasic-re', 1, 3)])['cbasic-re'].result()");
    // Only once both followers are in its ISR: killed before, its leader takes the partition
    // offline with it (no unclean election), and the next transaction cannot write there.
    wait_for_full_isrs(&zookeeper, "cbasic-re", 0..1);
    brokers[coordinator as usize - 1].kill_9();
    let survivors: Vec<&Broker> = brokers.iter().enumerate().filter(|(i, _)| *i as i32 + 1 != coordinator).map(|(_, b)| b).collect();
    let bootstrap = survivors.iter().map(|b| b.bootstrap()).collect::<Vec<_>>().join(",");
    scenario_at(&bootstrap, "reinit", "cbasic", &["--replication-factor", "2"], &logs);
    let (new_coordinator, _) = zookeeper.partition_state("/kafka", "__transaction_state", partition);
    assert_ne!(new_coordinator, coordinator);
    let after = describe(&brokers[new_coordinator as usize - 1], "cbasic-txn");
    assert_eq!(after, (0, "CompleteCommit".to_string(), producer_id, epoch + 1));
    for (i, broker) in brokers.iter_mut().enumerate() {
        if i as i32 + 1 != coordinator {
            assert_eq!(broker.stop(), 0, "clean stop:\n{}", broker.log());
        }
    }
}

/// The last stable offset: an open transaction holds read_committed consumers (plain records
/// produced after it too) and ListOffsets' latest for them, until its commit releases them.
#[test]
fn an_open_transaction_holds_read_committed_at_the_last_stable_offset() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("txn-lso");
    let broker = start(&dir);
    let out = scenario(&broker, "lso", "lso");
    // plain-before (0), txn-0 (1), plain-after (2): the LSO is 1 while the transaction is open.
    assert_eq!(fact(&out, "open_latest_committed"), "1");
    assert_eq!(fact(&out, "open_latest_uncommitted"), "3");
    assert_eq!(fact(&out, "held"), "plain-before", "nothing at or past the open transaction");
    assert_eq!(fact(&out, "uncommitted_while_open"), "plain-before,txn-0,plain-after");
    assert_eq!(fact(&out, "released"), "plain-before,txn-0,plain-after");
    // The COMMIT marker (3) moved both to the log end.
    assert_eq!((fact(&out, "latest_committed").as_str(), fact(&out, "latest_uncommitted").as_str()), ("4", "4"));
    let release_ms: u64 = fact(&out, "release_ms").parse().unwrap();
    assert!(release_ms < 5000, "the commit wakes the long poll: {release_ms} ms");
}

/// The `.txnindex` files under `dir`: (path, bytes).
fn txn_indexes(dir: &std::path::Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "txnindex") {
                found.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }
    found
}

/// kill -9 with a transaction open (and one aborted, one committed): after the restart the
/// `.txnindex` is rebuilt (the aborted records are still filtered), and the open transaction
/// does not hold the LSO for ever: the coordinator aborts it on its timeout.
#[test]
fn kill_9_with_a_transaction_open_leaves_no_stuck_lso() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("txn-kill");
    let mut broker = start(&dir);
    scenario(&broker, "leave_open", "killed");
    broker.kill_9();
    broker.restart();
    let out = scenario(&broker, "after_restart", "killed");
    assert_eq!(fact(&out, "rc_values"), "after-0,committed-0", "read_committed: no aborted or abandoned record");
    assert_eq!(fact(&out, "ru_values"), "aborted-0,aborted-1,aborted-2,after-0,committed-0,open-0");
    assert_eq!(broker.stop(), 0);
    // Kafka's format: two aborted transactions (the client's abort, the coordinator's timeout).
    let indexes: Vec<_> = txn_indexes(&dir.0).into_iter().filter(|(p, _)| p.to_string_lossy().contains("killed-0")).collect();
    assert_eq!(indexes.len(), 1, "{indexes:?}");
    let bytes = &indexes[0].1;
    assert_eq!(bytes.len(), 2 * 34, "{bytes:?}");
    for entry in bytes.chunks(34) {
        assert_eq!(&entry[0..2], &[0, 0], "version 0");
        let first_offset = i64::from_be_bytes(entry[10..18].try_into().unwrap());
        let last_offset = i64::from_be_bytes(entry[18..26].try_into().unwrap());
        assert!(first_offset < last_offset, "{first_offset} < {last_offset}");
    }
    // committed-0 (0), its marker (1), aborted-0..2 (2-4): the first abort covers 2..=5.
    assert_eq!(i64::from_be_bytes(bytes[10..18].try_into().unwrap()), 2);
    assert_eq!(i64::from_be_bytes(bytes[18..26].try_into().unwrap()), 5);
}

/// kafkajs (tests/clients/transactions.js): commit, abort, fencing by a second producer with
/// the same transactional id, and a consume-transform-produce loop whose group offsets commit
/// with its transactions (sendOffsets).
#[test]
fn kafkajs_transactions() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("txn-kafkajs");
    let broker = start(&dir);
    let clients = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients");
    for scenario in ["commit", "abort", "fence", "offsets"] {
        let topic = format!("js-{scenario}");
        let (ok, stdout, stderr) = run_with_timeout(
            Command::new("node").arg(clients.join("transactions.js")).args([scenario, "--bootstrap", &broker.bootstrap(), "--topic", &topic]),
            Duration::from_secs(90),
        );
        assert!(ok && stdout.contains(&format!("{scenario} ok")), "kafkajs {scenario} failed:\n{stdout}\n{stderr}\nbroker log:\n{}", broker.log());
        eprintln!("kafkajs {scenario}:\n{stdout}");
    }
}

/// Waits until every partition of `topic` in `partitions` has all three brokers in its ISR:
/// killed before, a leader takes its partitions offline with it (no unclean election).
fn wait_for_full_isrs(zookeeper: &tests::zookeeper::ZooKeeper, topic: &str, partitions: impl Iterator<Item = i32> + Clone) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for partition in partitions {
        while zookeeper.partition_state("/kafka", topic, partition).1.len() < 3 {
            assert!(std::time::Instant::now() < deadline, "{topic}-{partition}'s ISR never filled: {:?}", zookeeper.partition_state("/kafka", topic, partition));
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Cluster mode, issue 18's last scenario: a confluent-kafka transactional producer runs a stream
/// of transactions over a topic of RF 3 whose six partitions are led by all three brokers (every
/// 3rd transaction aborted on purpose), and the transaction coordinator of its id is killed -9
/// twice in the middle of it: once between a transaction's records and its commit, then (the
/// first victim restarted and back in every ISR) racing a commit. The producer recovers as
/// librdkafka's docs say; then read_committed reads every transaction it saw committed exactly
/// once, nothing of an aborted one, and no partition's LSO is left behind (transactions.py
/// `stream` checks all that). The killed brokers rejoin.
#[test]
fn cluster_coordinator_killed_mid_stream() {
    use std::io::BufRead;
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let zookeeper = tests::zookeeper::ZooKeeper::start();
    let (dirs, mut brokers) = start_cluster(&zookeeper, "txn-stream");
    let bootstrap_all = brokers.iter().map(|b| b.bootstrap()).collect::<Vec<_>>().join(",");
    // By path, not through `brokers`, which the kill borrows mutably (the harness's log file name).
    let logs = || {
        let log = |i: usize| std::fs::read_to_string(dirs[i].0.join(format!("broker-{}.log", std::process::id()))).unwrap_or_default();
        (0..3).map(|i| format!("--- broker {}:\n{}", i + 1, log(i))).collect::<String>()
    };
    let partitions = 6;
    tests::admin(&bootstrap_all, &format!("admin.create_topics([NewTopic('stream', {partitions}, 3)])['stream'].result()"));
    let leaders: std::collections::BTreeSet<i32> = (0..partitions).map(|p| zookeeper.partition_state("/kafka", "stream", p).0).collect();
    assert_eq!(leaders.len(), 3, "the partitions' leaders are spread over the brokers");

    let go = dirs[0].0.join("go");
    let clients = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients");
    let stderr_path = dirs[0].0.join("stream.stderr");
    let mut child = Command::new(tests::python())
        .arg(clients.join("transactions.py"))
        .args(["stream", "--bootstrap", &bootstrap_all, "--topic", "stream", "--partitions", &partitions.to_string(), "--go"])
        .arg(&go)
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let (lines, receive) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let started = std::time::Instant::now();
    let mut out = String::new();
    let mut killed = Vec::new();
    let mut next_victim = None;
    let coordinator = || zookeeper.partition_state("/kafka", "__transaction_state", partition_for("stream-txn", 4)).0;
    let fail = |out: &str, child: &mut std::process::Child, why: &str| -> ! {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{why}:\n{out}\n{}\nbroker logs:\n{}", std::fs::read_to_string(&stderr_path).unwrap_or_default(), logs());
    };
    loop {
        let line = match receive.recv_timeout(Duration::from_secs(120).saturating_sub(started.elapsed())) {
            Ok(line) => line,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => fail(&out, &mut child, "the stream took over 120 s"),
        };
        out.push_str(&line);
        out.push('\n');
        if line == "fact ready" {
            // init_transactions made `__transaction_state`: all replicas in sync before the kill.
            wait_for_full_isrs(&zookeeper, "stream", 0..partitions);
            wait_for_full_isrs(&zookeeper, "__transaction_state", 0..4);
            // Looked up now: zkCli takes a second, too long to spend inside a transaction.
            next_victim = Some(coordinator());
            std::fs::write(&go, b"").unwrap();
        } else if line == "fact mid-transaction" {
            // A transaction's records are written and its commit not asked for yet.
            let victim = next_victim.take().expect("ready came first");
            brokers[victim as usize - 1].kill_9();
            killed.push(victim);
            std::fs::write(go.with_extension("killed"), b"").unwrap();
        } else if line == "fact before-commit" {
            // The first killed broker rejoins every ISR; then the new coordinator is killed
            // as the producer's commit goes out (before, during or after its PrepareCommit
            // write or markers: every outcome must hold).
            brokers[killed[0] as usize - 1].restart();
            wait_for_full_isrs(&zookeeper, "stream", 0..partitions);
            wait_for_full_isrs(&zookeeper, "__transaction_state", 0..4);
            next_victim = Some(coordinator());
            std::fs::write(go.with_extension("rejoined"), b"").unwrap();
        } else if line == "fact committing" {
            let victim = next_victim.take().expect("before-commit came first");
            brokers[victim as usize - 1].kill_9();
            killed.push(victim);
        }
    }
    let status = child.wait().unwrap();
    if !status.success() || !out.contains("stream ok") {
        fail(&out, &mut child, "stream failed");
    }
    // What the coordinators did, for a reader wondering about an `unknown` outcome.
    let coordinator_lines = logs().lines().filter(|l| l.contains("broker::txn::")).map(|l| format!("{l}\n")).collect::<String>();
    eprintln!("stream ({:?}):\n{out}\ncoordinators:\n{coordinator_lines}", started.elapsed());
    assert_eq!(killed.len(), 2, "the coordinator was killed twice mid-stream");
    assert_ne!(coordinator(), killed[1], "the coordinator failed over");
    let committed: usize = fact(&out, "committed").split(' ').next().unwrap().parse().unwrap();
    assert!(committed >= 5, "most of the stream commits despite the kills: {out}");

    // The broker killed last comes back and catches up into every ISR again.
    brokers[killed[1] as usize - 1].restart();
    wait_for_full_isrs(&zookeeper, "stream", 0..partitions);
    wait_for_full_isrs(&zookeeper, "__transaction_state", 0..4);
    for broker in brokers.iter_mut() {
        assert_eq!(broker.stop(), 0, "clean stop:\n{}", broker.log());
    }
}

/// This broker's TCP connections to the other brokers' listeners (`ports`), from the kernel's
/// table: (ESTABLISHED sockets owned by `pid` whose remote port is a broker's, TIME_WAIT sockets
/// of anyone whose remote port is a broker's). A broker dialling anew per call leaves a TIME_WAIT
/// behind each call (it closes first); pooled connections leave none.
fn inter_broker_sockets(pid: u32, ports: &[u16]) -> (usize, usize) {
    let inodes: std::collections::BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
                .filter_map(|target| target.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let (mut established, mut time_wait) = (0, 0);
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table).unwrap_or_default().lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let remote_port = fields[2].rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            if !remote_port.is_some_and(|p| ports.contains(&p)) {
                continue;
            }
            match fields[3] {
                "01" if inodes.contains(fields[9]) => established += 1,
                "06" => time_wait += 1,
                _ => {}
            }
        }
    }
    (established, time_wait)
}

/// Cluster mode: many transactions from four producers over a 6-partition topic led by all
/// three brokers, so every transaction sends markers to other brokers (WriteTxnMarkers) and its
/// partitions' leaders verify it with the coordinator's broker (KIP-890). The brokers reuse
/// pooled connections for both (`inter_broker/pool.rs`): the connections between brokers stay
/// within the pool's bound (2 shards x 2 other brokers x (4 pooled + 1 replica fetcher)) and
/// leave no TIME_WAIT per call (dialling per call left about six per transaction); after the
/// run, pooled connections idle for `connections.max.idle.ms` close, leaving the fetchers'.
#[test]
fn cluster_transactions_reuse_inter_broker_connections() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let zookeeper = tests::zookeeper::ZooKeeper::start();
    let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("txn-pool-{i}"))).collect();
    let connect = format!("zookeeper.connect={}", zookeeper.connect("/kafka"));
    let mut brokers: Vec<Broker> = (0..3)
        .map(|i| {
            let id = format!("broker.id={}", i + 1);
            Broker::start(&dirs[i].0, 2, &[&connect, &id, "transaction.state.log.num.partitions=4", "offsets.topic.num.partitions=4", "connections.max.idle.ms=4000"])
        })
        .collect();
    let bootstrap = brokers.iter().map(|b| b.bootstrap()).collect::<Vec<_>>().join(",");
    let ports: Vec<u16> = brokers.iter().map(|b| b.address().port()).collect();
    let pids: Vec<u32> = brokers.iter().map(|b| b.pid()).collect();
    let (_, time_wait_before) = inter_broker_sockets(pids[0], &ports);

    let transactions = 200;
    let clients = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients");
    let mut child = Command::new(tests::python())
        .arg(clients.join("transactions.py"))
        .args(["many", "--bootstrap", &bootstrap, "--topic", "many", "--partitions", "6", "--count", &transactions.to_string(), "--producers", "4"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let mut most = vec![0; 3];
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(180) {
            let _ = child.kill();
            panic!("the transactions took over 180 s");
        }
        for (i, pid) in pids.iter().enumerate() {
            most[i] = most[i].max(inter_broker_sockets(*pid, &ports).0);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let logs = || brokers.iter().map(|b| format!("--- {}:\n{}", b.bootstrap(), b.log())).collect::<String>();
    assert!(output.status.success() && stdout.contains("many ok"), "many failed:\n{stdout}\n{}\n{}", String::from_utf8_lossy(&output.stderr), logs());
    assert_eq!(fact(&stdout, "committed"), transactions.to_string());
    assert_eq!(fact(&stdout, "rc_read"), (transactions * 6).to_string(), "read_committed reads every transaction's records");
    let (_, time_wait_after) = inter_broker_sockets(pids[0], &ports);
    eprintln!("{transactions} transactions in {:?}: most connections to other brokers per broker {most:?}, TIME_WAIT to brokers {time_wait_before} -> {time_wait_after}", started.elapsed());
    // 2 shards x 2 other brokers x (4 pooled + 1 replica fetcher).
    assert!(most.iter().all(|&n| n <= 20), "connections between brokers stay bounded: {most:?}");
    // The clients' own closes leave a few; dialling per call left about 6 per transaction.
    assert!(time_wait_after - time_wait_before < transactions / 4, "inter-broker calls reuse connections: {time_wait_before} -> {time_wait_after} TIME_WAIT");

    // Idle pooled connections close after 3/4 of connections.max.idle.ms (3 s, reaped every 1.5 s): the
    // replica fetchers' (one per shard per leader followed: 4 at most) stay.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now: Vec<usize> = pids.iter().map(|pid| inter_broker_sockets(*pid, &ports).0).collect();
        if now.iter().all(|&n| n <= 4) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "idle pooled connections were not closed: {now:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    for broker in brokers.iter_mut() {
        assert_eq!(broker.stop(), 0, "clean stop:\n{}", broker.log());
    }
}
