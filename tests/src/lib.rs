//! End-to-end harness: starts the real broker binary on a free port with its own data directory,
//! and stops it (SIGTERM, or SIGKILL for crash tests) even when a test fails.

pub mod cluster;
pub mod security;
pub mod wire;
pub mod zookeeper;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The line the broker logs once every shard accepts connections.
const READY_LINE: &str = "broker ready";
/// How long a broker may take to start listening. A start takes well under a second alone; a
/// 4-shard broker among parallel tests and builds on two cores once took over 30 s to log ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub fn broker_binary() -> PathBuf {
    workspace_binary("broker")
}

/// The load generator (`bench` crate), for its smoke test.
pub fn bench_binary() -> PathBuf {
    workspace_binary("bench")
}

fn workspace_binary(name: &str) -> PathBuf {
    // Test executables live in target/<profile>/deps; the workspace's binaries one level up.
    let exe = std::env::current_exe().expect("test executable path");
    let path = exe.parent().and_then(Path::parent).expect("target dir").join(name);
    assert!(path.exists(), "{} is missing: build it first (./test.sh runs cargo build --release -p broker -p bench)", path.display());
    path
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("e2e-{}-{name}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // KEEP_TEST_DIRS=1 keeps data and broker logs for a post-mortem.
        if std::env::var_os("KEEP_TEST_DIRS").is_some() {
            eprintln!("kept {}", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A broker process. Dropping it kills the process (SIGKILL) if it still runs.
pub struct Broker {
    pub port: u16,
    pub data_dir: PathBuf,
    pub shards: usize,
    pub overrides: Vec<String>,
    child: Option<Child>,
    log_path: PathBuf,
}

impl Broker {
    /// Starts a broker with `shards` unpinned shards and `overrides` (key=value) in `data_dir`.
    pub fn start(data_dir: &Path, shards: usize, overrides: &[&str]) -> Broker {
        Broker::start_on_port(data_dir, shards, free_port(), overrides)
    }

    /// As `start`, with the PLAINTEXT port given: a test that sets `listeners` itself (several
    /// listeners) names this port as its PLAINTEXT one, which readiness is checked on.
    pub fn start_on_port(data_dir: &Path, shards: usize, port: u16, overrides: &[&str]) -> Broker {
        let mut broker = Broker {
            port,
            data_dir: data_dir.to_path_buf(),
            shards,
            overrides: overrides.iter().map(|s| s.to_string()).collect(),
            child: None,
            log_path: data_dir.join(format!("broker-{}.log", std::process::id())),
        };
        broker.spawn();
        broker
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn address(&self) -> SocketAddr {
        self.bootstrap().parse().unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn spawn(&mut self) {
        let logs = self.data_dir.join("logs");
        let mut command = Command::new(broker_binary());
        command
            .arg("--shards")
            .arg(self.shards.to_string())
            .arg("--override")
            .arg(format!("listeners=PLAINTEXT://127.0.0.1:{}", self.port))
            .arg("--override")
            .arg(format!("log.dirs={}", logs.display()));
        for item in &self.overrides {
            command.arg("--override").arg(item);
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log_path).unwrap();
        // TEST_BROKER_RUST_LOG (e.g. `info,broker::replication=debug`) for a post-mortem.
        let level = std::env::var("TEST_BROKER_RUST_LOG").unwrap_or_else(|_| "info,glommio=warn".into());
        command.stdout(Stdio::null()).stderr(log).env("RUST_LOG", level);
        let ready_before = self.log().matches(READY_LINE).count();
        self.child = Some(command.spawn().expect("start the broker binary"));
        let started = Instant::now();
        // Wait for the broker's own word: a connect could reach the socket of a killed
        // predecessor that the kernel has not torn down yet.
        while self.log().matches(READY_LINE).count() == ready_before || TcpStream::connect(self.address()).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("broker exited at start with {status}:\n{}", self.log());
            }
            assert!(started.elapsed() < START_TIMEOUT, "broker did not listen within {START_TIMEOUT:?}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The broker's stderr so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn stop(&mut self) -> i32 {
        let mut child = self.child.take().expect("running");
        signal(child.id(), libc::SIGTERM);
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            if started.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("broker did not stop within 30 s of SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL and wait.
    pub fn kill_9(&mut self) {
        let mut child = self.child.take().expect("running");
        signal(child.id(), libc::SIGKILL);
        let _ = child.wait();
    }

    /// Starts the same broker again (same port, data, options).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop it first");
        self.spawn();
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) on a child we started.
    unsafe { libc::kill(pid as i32, signal) };
}

/// Runs `kcat -b BOOTSTRAP -P` with `args`, feeding it `lines`; returns its output (status and
/// stderr, where kcat reports delivery failures).
pub fn kcat_produce(bootstrap: &str, args: &[&str], lines: impl IntoIterator<Item = String>) -> std::process::Output {
    use std::io::Write;
    // Debian's librdkafka, not the SSL-less one bench builds (cargo puts its directory on
    // LD_LIBRARY_PATH in a workspace test run).
    let mut producer = Command::new("kcat")
        .env_remove("LD_LIBRARY_PATH")
        .args(["-b", bootstrap, "-P"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat is installed (tests/clients/setup.sh installs it)");
    {
        let stdin = producer.stdin.as_mut().unwrap();
        for line in lines {
            writeln!(stdin, "{line}").unwrap();
        }
    }
    producer.wait_with_output().unwrap()
}

/// Runs a command with a time limit (killed past it); returns (success, stdout, stderr).
pub fn run_with_timeout(command: &mut Command, timeout: Duration) -> (bool, String, String) {
    let child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start the command");
    let pid = child.id();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    let (timed_out, output) = match receiver.recv_timeout(timeout) {
        Ok(output) => (false, output),
        Err(_) => {
            signal(pid, libc::SIGKILL);
            (true, receiver.recv().expect("the waiter thread answers"))
        }
    };
    let output = output.expect("wait for the command");
    let mut stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if timed_out {
        stderr.push_str(&format!("\n(killed after {timeout:?})"));
    }
    (!timed_out && output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned(), stderr)
}

/// The Python of tests/clients/.venv (confluent-kafka, kafka-python), made by tests/clients/setup.sh.
pub fn python() -> PathBuf {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/.venv/bin/python");
    assert!(python.exists(), "{} is missing: run tests/clients/setup.sh", python.display());
    python
}

/// Runs a Python script (confluent-kafka's admin client, say) with the venv's Python; asserts it
/// exits 0 within a minute and returns its stdout.
pub fn run_python(script: &str) -> String {
    let (ok, stdout, stderr) = run_with_timeout(Command::new(python()).arg("-c").arg(script), Duration::from_secs(60));
    assert!(ok, "python failed:\n{script}\n{stdout}\n{stderr}");
    stdout
}

/// Runs a Python snippet with confluent-kafka's AdminClient bound to `admin` (and `NewTopic`,
/// `NewPartitions`, `ConfigResource`, `ConfigEntry`, `AlterConfigOpType` imported); returns its stdout.
pub fn admin(bootstrap: &str, body: &str) -> String {
    run_python(&format!(
        "from confluent_kafka.admin import AdminClient, NewTopic, NewPartitions, ConfigResource, ConfigEntry, AlterConfigOpType\n\
         admin = AdminClient({{'bootstrap.servers': '{bootstrap}'}})\n{body}\n"
    ))
}

/// Most of the topic's bytes on disk (3 partitions) are batches compressed with `codec_id`, and
/// none carries another codec: the client compressed and the broker stored the batches as sent.
/// (Clients send a batch uncompressed when compressing would not shrink it, so not every one.)
pub fn assert_stored_compressed(dir: &TempDir, topic: &str, codec_id: i16) {
    let (mut compressed_bytes, mut total_bytes) = (0, 0);
    for partition in 0..3 {
        let segment = dir.0.join(format!("logs/{topic}-{partition}/00000000000000000000.log"));
        let bytes = std::fs::read(&segment).unwrap();
        for batch in storage::batch::split_batches(&bytes).unwrap() {
            let header = storage::batch::validate(batch, storage::batch::Validation::FromLog).unwrap();
            assert!([0, codec_id].contains(&header.compression_codec()), "{topic}: codec {}", header.compression_codec());
            total_bytes += batch.len();
            if header.compression_codec() == codec_id {
                compressed_bytes += batch.len();
            }
        }
    }
    assert!(compressed_bytes * 2 > total_bytes, "{topic}: only {compressed_bytes} of {total_bytes} bytes compressed");
}

/// The samples of a broker's `/metrics` (at `metrics.listener`'s HOST:PORT), by name and labels
/// as written (`name{label="v"}`); comments left out. The format itself is checked in
/// tests/metrics.rs.
pub fn scrape_metrics(address: &str) -> std::collections::BTreeMap<String, f64> {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(address).expect("connect to metrics.listener");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("the endpoint answers and closes");
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    body.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter_map(|(name, value)| Some((name.to_string(), value.parse().ok()?)))
        .collect()
}
