//! The broker binary: reads Kafka-style configuration, claims the data directories and the port,
//! starts one shard per core and serves the Kafka protocol until SIGTERM.

mod clock;
mod config;
mod connection;
mod fetch_session;
mod connection_quotas;
mod group_router;
mod groups;
mod handlers;
mod inter_broker;
mod log_dir_failure;
mod metrics;
mod metrics_endpoint;
mod partition;
mod producer_state;
mod replication;
mod security;
mod shard_context;
mod splice_sender;
mod state;
mod stored_reader;
mod tasks;
mod topic_admin;
mod topics;
mod txn;
mod txn_router;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use clap::Parser;
use shard::{start_shards, ShardPlacement};
use storage::log_manager::LogDirs;

use crate::config::{parse_properties, BrokerConfig};
use crate::shard_context::Shard;
use crate::state::BrokerState;

/// glommio refuses to start below this RLIMIT_MEMLOCK (it registers I/O buffers with io_uring).
const MIN_LOCKED_MEMORY_BYTES: u64 = 512 * 1024;

#[derive(Parser, Debug)]
#[command(name = "broker", about = "A Kafka-compatible broker, thread-per-core")]
struct Cli {
    /// A Kafka server.properties file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// key=value overriding one property, as kafka-server-start.sh --override does. Repeatable.
    #[arg(long = "override", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// CPUs to pin one shard each to, e.g. 0-3 or 0,2. Default: every online CPU.
    #[arg(long, conflicts_with = "shards")]
    cpus: Option<String>,
    /// Run this many unpinned shards (may exceed the number of cores; for tests).
    #[arg(long)]
    shards: Option<usize>,
}

fn main() {
    init_logging();
    if let Err(message) = run(Cli::parse()) {
        tracing::error!("{message}");
        eprintln!("broker: {message}");
        std::process::exit(1);
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,glommio=warn"));
    let colors = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(colors).with_writer(std::io::stderr).init();
}

fn run(cli: Cli) -> Result<(), String> {
    let mut properties = BTreeMap::new();
    if let Some(path) = &cli.config {
        let text = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        properties = parse_properties(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    for item in &cli.overrides {
        let (key, value) = item.split_once('=').ok_or_else(|| format!("--override {item:?}: expected key=value"))?;
        properties.insert(key.trim().to_string(), value.trim().to_string());
    }
    let config = BrokerConfig::from_properties(&properties)?;
    let placement = match (&cli.cpus, cli.shards) {
        (Some(list), _) => ShardPlacement::Pinned(shard::cpus::parse_cpu_list(list)?),
        (None, Some(0)) => return Err("--shards must be at least 1".into()),
        (None, Some(count)) => ShardPlacement::Unpinned(count),
        (None, None) => ShardPlacement::Pinned(shard::cpus::online_cpus()),
    };
    config.check_shard_lists(placement.shard_count())?;
    check_locked_memory_limit()?;
    let descriptor_limit = prepare_descriptor_table();
    let fd_cache_size = segment_fd_cache_size(config.log_segment_fd_cache_size, descriptor_limit, placement.shard_count());

    let log_dirs = LogDirs::new(config.log_dirs.clone()).map_err(|e| e.to_string())?;
    let _locks = lock_log_dirs(&log_dirs)?;
    probe_port(&config)?;
    let clean_shutdown = log_dirs.take_clean_shutdown_markers().map_err(|e| e.to_string())?;
    // Before any shard starts, so off every shard thread.
    log_dirs.remove_leftover_deletions();
    // The coordinator starts first (it assigns the broker id); its snapshots reach the broker
    // state once that exists.
    let broker_slot: Arc<std::sync::OnceLock<Arc<BrokerState>>> = Arc::new(std::sync::OnceLock::new());
    let (coordinator, config, cluster_id) = match &config.zookeeper_connect {
        None => {
            let cluster_id = state::load_or_create_meta(&log_dirs, config.broker_id, None)?;
            (None, config, cluster_id)
        }
        Some(connect) => {
            let (coordinator, joined) = join_cluster(&config, connect, &log_dirs, broker_slot.clone())?;
            let cluster_id = state::load_or_create_meta(&log_dirs, joined.broker_id, Some(&joined.cluster_id))?;
            let config = BrokerConfig { broker_id: joined.broker_id, ..config };
            (Some(coordinator), config, cluster_id)
        }
    };
    let on_disk: Vec<(String, i32)> =
        log_dirs.existing_partitions().map_err(|e| e.to_string())?.into_iter().map(|(t, p, _)| (t, p)).collect();
    let topics = topics::TopicTable::load(&log_dirs.dirs()[0], &on_disk)?;
    let cluster = coordinator.as_ref().map(|c| c.handle());
    let broker = Arc::new(BrokerState::new(config.clone(), log_dirs, topics, cluster_id, clean_shutdown, cluster)?);
    if let Some(coordinator) = &coordinator {
        // Serve only once the cluster has been read: which topics exist, who leads what.
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(config.zookeeper_connection_timeout_ms.unwrap_or(config.zookeeper_session_timeout_ms));
        while !coordinator.view.snapshot().complete && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = broker_slot.set(broker.clone());
        broker.apply_cluster_snapshot(&coordinator.view.snapshot());
    }
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, broker.shutting_down.clone()).map_err(|e| format!("installing a signal handler: {e}"))?;
    }
    tracing::info!(
        listener = %config.listener,
        shards = placement.shard_count(),
        ?placement,
        clean_shutdown,
        log_dirs = ?config.log_dirs,
        "starting broker {}",
        config.broker_id
    );

    let all_clean = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let make_context = {
        let broker = broker.clone();
        move |router| {
            let broker = broker.clone();
            async move {
                storage::segment_file::set_cache_capacity(fd_cache_size);
                let shard = Rc::new(Shard::new(router, broker));
                shard.partitions.open_existing().await;
                groups::loader::load(&shard.groups).await;
                shard
            }
        }
    };
    let run_shard = {
        let all_clean = all_clean.clone();
        move |shard: Rc<Shard>| {
            let all_clean = all_clean.clone();
            async move {
                if !tasks::serve_until_shutdown(shard.clone()).await {
                    all_clean.store(false, std::sync::atomic::Ordering::Release);
                }
            }
        }
    };
    start_shards(placement, make_context, run_shard)?;
    if let Some(coordinator) = coordinator {
        coordinator.shutdown(); // closes the session: our registration and controllership go now
    }
    if let Some(reason) = broker.start_failure.get() {
        return Err(reason.clone());
    }
    if all_clean.load(std::sync::atomic::Ordering::Acquire) {
        broker.log_dirs.write_clean_shutdown_markers().map_err(|e| e.to_string())?;
        tracing::info!("stopped cleanly");
        Ok(())
    } else {
        Err("stopped, but some logs could not be flushed; the next start runs recovery".into())
    }
}

fn check_locked_memory_limit() -> Result<(), String> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        return Ok(());
    }
    if limit.rlim_cur != libc::RLIM_INFINITY && limit.rlim_cur < MIN_LOCKED_MEMORY_BYTES {
        return Err(format!(
            "the locked-memory limit is {} KiB; io_uring needs at least {} KiB. Raise it with `ulimit -l 8192` \
             (or LimitMEMLOCK= in a systemd unit, --ulimit memlock=8388608 in Docker); see tuning.md",
            limit.rlim_cur / 1024,
            MIN_LOCKED_MEMORY_BYTES / 1024
        ));
    }
    Ok(())
}

/// Descriptors, once at start, off every shard thread: the soft `RLIMIT_NOFILE` is raised to the
/// hard limit (as Kafka's start scripts expect operators to), and the process's descriptor table
/// is grown to its final size. The kernel grows that table by doubling, and a growth waits for an
/// RCU grace period (`expand_files` -> `synchronize_rcu`): measured 10-18 ms in D state of a shard
/// thread that opened or dup'ed the descriptor crossing a power of two. Growing it here (a dup to
/// a high number, closed at once: the table never shrinks) takes that wait out of the shards.
fn prepare_descriptor_table() -> u64 {
    /// Slots reserved up front: 8 bytes each, so 1 MiB at most.
    const MAX_RESERVED_DESCRIPTORS: u64 = 1 << 17;
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    let reserved = limit.rlim_cur.min(MAX_RESERVED_DESCRIPTORS).saturating_sub(1);
    // SAFETY: dup of stderr to the lowest free number >= `reserved`, closed right after.
    let high = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, reserved as libc::c_int) };
    if high >= 0 {
        unsafe { libc::close(high) };
    }
    tracing::info!(descriptor_limit = limit.rlim_cur, table_slots = reserved + 1, "descriptor limit");
    limit.rlim_cur
}

/// Each shard's bound on open closed-segment files (`log.segment.fd.cache.size`): by default
/// half the descriptors over the shards, the other half for connections, active segments,
/// fetches in flight and index files being written.
fn segment_fd_cache_size(configured: Option<usize>, descriptor_limit: u64, shards: usize) -> usize {
    let size = configured.unwrap_or_else(|| (descriptor_limit / 2 / shards.max(1) as u64).max(16) as usize);
    tracing::info!(descriptor_limit, shards, segment_fd_cache_per_shard = size, "descriptor budget");
    size
}

/// Holds an exclusive flock on `<log dir>/.lock` for the life of the process, as Kafka does, so
/// two brokers never share a data directory.
fn lock_log_dirs(log_dirs: &LogDirs) -> Result<Vec<std::fs::File>, String> {
    use std::os::fd::AsRawFd;
    let mut locks = Vec::new();
    for dir in log_dirs.dirs() {
        let path = dir.join(".lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| format!("opening {}: {e}", path.display()))?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(format!(
                "the data directory {} is in use by another broker process (lock {} is held)",
                dir.display(),
                path.display()
            ));
        }
        locks.push(file);
    }
    Ok(locks)
}

/// glommio binds with SO_REUSEPORT, which would let a second broker share the port silently and
/// steal half the connections. So before binding, look for a socket already listening on the
/// port in the kernel's table. (A probe bind would also trip over the dead connections a killed
/// broker leaves in FIN_WAIT, and a probe listen would accept clients that arrive too early.)
///
/// A broker killed with SIGKILL keeps its listening socket in the kernel until its io_uring is
/// torn down, which can take a moment; so a listener that goes away within
/// `PORT_RELEASE_WAIT_MS` is waited for rather than reported.
fn probe_port(config: &BrokerConfig) -> Result<(), String> {
    const PORT_RELEASE_WAIT_MS: u64 = 10_000;
    let started = std::time::Instant::now();
    loop {
        match port_listener_check(config) {
            Ok(()) => return Ok(()),
            Err(e) if started.elapsed() > std::time::Duration::from_millis(PORT_RELEASE_WAIT_MS) => return Err(e),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
}

fn port_listener_check(config: &BrokerConfig) -> Result<(), String> {
    for listener in &config.listeners {
        listener_port_check(listener.bind)?;
    }
    Ok(())
}

fn listener_port_check(address: std::net::SocketAddr) -> Result<(), String> {
    const TCP_LISTEN_STATE: &str = "0A";
    let port = address.port();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state)) = (fields.get(1), fields.get(3)) else { continue };
            let listening_port = local.rsplit_once(':').and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if *state == TCP_LISTEN_STATE && listening_port == Some(port) {
                return Err(format!(
                    "cannot listen on {address}: Address already in use (another process listens on port {port}; is another broker running?)",
                ));
            }
        }
    }
    Ok(())
}

/// Cluster mode: the ZooKeeper coordinator thread registers this broker (getting an id from
/// ZooKeeper for `broker.id=-1`, or reusing the one in meta.properties), takes part in controller
/// elections and follows topics and partition leaders.
fn join_cluster(
    config: &BrokerConfig,
    connect: &str,
    log_dirs: &LogDirs,
    broker_slot: Arc<std::sync::OnceLock<Arc<BrokerState>>>,
) -> Result<(zk::Coordinator, zk::Joined), String> {
    let broker_id = match (config.broker_id, state::stored_broker_id(log_dirs)) {
        (-1, Some(stored)) => stored,
        (configured, _) => configured,
    };
    let zk_config = zk::ZkConfig {
        connect: connect.to_string(),
        session_timeout_ms: config.zookeeper_session_timeout_ms,
        connection_timeout_ms: config.zookeeper_connection_timeout_ms.unwrap_or(config.zookeeper_session_timeout_ms),
    };
    let endpoint = zk::BrokerEndpoint {
        broker_id,
        endpoints: config
            .listeners
            .iter()
            .map(|l| zk::ListenerEndpoint {
                listener: l.name.clone(),
                protocol: l.protocol.name().to_string(),
                host: l.advertised_host.clone(),
                port: l.advertised_port,
            })
            .collect(),
        rack: config.broker_rack.clone(),
    };
    let proposed_cluster_id = state::new_cluster_id();
    let options = zk::CoordinatorOptions {
        unclean_leader_election: config.unclean_leader_election_enable,
        change_notification_expiration_ms: config.zookeeper_change_notification_expiration_ms,
        on_change: Arc::new(move |snapshot| {
            if let Some(broker) = broker_slot.get() {
                broker.apply_cluster_snapshot(snapshot);
            }
        }),
    };
    let (coordinator, joined) = zk::Coordinator::start(zk_config, endpoint, proposed_cluster_id, options)?;
    log_dir_failure::tell_the_controller(coordinator.handle());
    Ok((coordinator, joined))
}
