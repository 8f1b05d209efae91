//! A real ZooKeeper server (Debian's `zookeeper` package) on loopback for cluster tests, and
//! zkCli to look at what the brokers wrote. Dropping it kills the server and removes its data.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, run_with_timeout, TempDir};

const ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";
const ZKCLI: &str = "/usr/share/zookeeper/bin/zkCli.sh";
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct ZooKeeper {
    pub port: u16,
    child: Option<Child>,
    _dir: TempDir,
}

impl ZooKeeper {
    /// Starts a standalone server with a 200 ms tick: sessions as short as 400 ms are allowed, and
    /// ZooKeeper expires sessions on tick boundaries, so failover times measured here are the
    /// session timeout plus at most 200 ms, not 500.
    pub fn start() -> ZooKeeper {
        assert!(
            Path::new(ZOOKEEPER_JAR).exists(),
            "{ZOOKEEPER_JAR} is missing: apt-get install zookeeper (tests/clients/setup.sh does)"
        );
        let dir = TempDir::new("zookeeper");
        let port = free_port();
        let config = dir.0.join("zoo.cfg");
        std::fs::write(
            &config,
            format!(
                "tickTime=200\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\n\
                 admin.enableServer=false\n4lw.commands.whitelist=*\nmaxSessionTimeout=60000\n",
                dir.0.join("data").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.0.join("zookeeper.log")).unwrap();
        let child = Command::new("java")
            .arg("-cp")
            .arg(ZOOKEEPER_JAR)
            .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start java (apt-get install default-jre-headless)");
        let mut server = ZooKeeper { port, child: Some(child), _dir: dir };
        let started = Instant::now();
        while !server.is_ok() {
            if let Some(status) = server.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("ZooKeeper exited at start with {status}");
            }
            assert!(started.elapsed() < START_TIMEOUT, "ZooKeeper did not answer ruok within {START_TIMEOUT:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// (leader, isr) of a partition, from its state znode under `chroot`, read with zkCli.
    pub fn partition_state(&self, chroot: &str, topic: &str, partition: i32) -> (i32, Vec<i32>) {
        // zkCli sometimes prints only its connection line (it lost the race with its own
        // session): ask again, a few times, before calling the znode unreadable.
        let mut attempts = 0;
        let json: serde_json::Value = loop {
            let state = self.cli(&format!("get {chroot}/brokers/topics/{topic}/partitions/{partition}/state"));
            match serde_json::from_str(state.trim()) {
                Ok(json) => break json,
                Err(e) if attempts >= 5 => panic!("state znode {state:?}: {e}"),
                Err(_) => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
            }
        };
        let isr = json["isr"].as_array().unwrap().iter().map(|b| b.as_i64().unwrap() as i32).collect();
        (json["leader"].as_i64().unwrap() as i32, isr)
    }

    /// `zookeeper.connect` for the brokers.
    pub fn connect(&self, chroot: &str) -> String {
        format!("127.0.0.1:{}{chroot}", self.port)
    }

    /// The four-letter `ruok`, with a read timeout (ZooKeeper 3.8.0 may never answer a probe sent
    /// during its start-up).
    fn is_ok(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        if stream.write_all(b"ruok").is_err() {
            return false;
        }
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer == "imok"
    }

    /// One zkCli command (`ls /x`, `get /x`); returns its output's last line, which is the result
    /// (zkCli prints connection chatter first).
    pub fn cli(&self, command: &str) -> String {
        let mut zkcli = Command::new(ZKCLI);
        zkcli.arg("-server").arg(format!("127.0.0.1:{}", self.port));
        zkcli.args(command.split_whitespace());
        let (_, stdout, stderr) = run_with_timeout(&mut zkcli, Duration::from_secs(30));
        stdout.lines().filter(|l| !l.trim().is_empty()).last().map(str::to_string).unwrap_or_else(|| stderr)
    }

    pub fn data_dir(&self) -> PathBuf {
        self._dir.0.clone()
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
