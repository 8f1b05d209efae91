//! Connection limits and idle connections (issue 21): `max.connections.per.ip` and its
//! overrides close a new connection at once, `max.connections` makes new connections wait
//! across shards, `connections.max.idle.ms` closes idle connections, and 10,000 idle connections
//! leave a producer and a consumer working beside them.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use tests::{free_port, kcat_produce, run_with_timeout, Broker, TempDir};

/// A connection from `source` (any 127.0.0.x reaches the broker's 127.0.0.1 listener).
fn connect_from(source: &str, broker: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    // The port is chosen at connect (per destination), not at bind: 10,000 binds to port 0 would
    // each need a port unused towards every destination, which a busy host runs out of.
    let on: libc::c_int = 1;
    // SAFETY: setsockopt on a socket we own, with an int option value.
    unsafe {
        use std::os::fd::AsRawFd;
        let value = &on as *const libc::c_int as *const libc::c_void;
        libc::setsockopt(socket.as_raw_fd(), libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT, value, std::mem::size_of::<libc::c_int>() as u32);
    }
    let local: SocketAddr = format!("{source}:0").parse().unwrap();
    socket.bind(&local.into()).unwrap();
    socket.connect(&broker.into()).unwrap();
    socket.set_nodelay(true).unwrap();
    socket.into()
}

/// ApiVersions v0 (header v1: key 18, version 0, correlation id, client id), size-prefixed.
fn api_versions_request() -> Vec<u8> {
    let client_id = b"connections-test";
    let mut body = Vec::new();
    body.extend_from_slice(&18i16.to_be_bytes());
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&7i32.to_be_bytes());
    body.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    body.extend_from_slice(client_id);
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

#[derive(Debug, PartialEq)]
enum Answer {
    Answered,
    Closed,
    NoAnswerYet,
}

fn send_api_versions(stream: &mut TcpStream) -> bool {
    stream.write_all(&api_versions_request()).is_ok()
}

/// Reads one response within `timeout`.
fn read_answer(stream: &mut TcpStream, timeout: Duration) -> Answer {
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut size = [0u8; 4];
    match stream.read_exact(&mut size) {
        Ok(()) => {}
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return Answer::NoAnswerYet,
        Err(_) => return Answer::Closed,
    }
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    match stream.read_exact(&mut body) {
        Ok(()) => {
            assert_eq!(&body[..4], &7i32.to_be_bytes(), "the correlation id comes back");
            Answer::Answered
        }
        Err(_) => Answer::Closed,
    }
}

fn ask(stream: &mut TcpStream) -> Answer {
    if !send_api_versions(stream) {
        return Answer::Closed;
    }
    read_answer(stream, Duration::from_secs(10))
}

/// The broker has closed this connection: a read sees end of stream (or a reset) within `timeout`.
fn closed_within(stream: &mut TcpStream, timeout: Duration) -> bool {
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

/// Still open and quiet: nothing to read and no end of stream.
fn still_open(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let open = matches!(stream.peek(&mut byte), Err(e) if e.kind() == ErrorKind::WouldBlock);
    stream.set_nonblocking(false).unwrap();
    open
}

fn scrape(port: u16) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

#[test]
fn the_connection_over_max_connections_per_ip_is_closed_at_once_and_overrides_raise_the_limit() {
    let dir = TempDir::new("conns-per-ip");
    let metrics_port = free_port();
    let metrics = format!("metrics.listener=http://127.0.0.1:{metrics_port}");
    let broker = Broker::start(&dir.0, 1, &["max.connections.per.ip=5", "max.connections.per.ip.overrides=127.0.0.2:8", &metrics]);

    let mut five: Vec<TcpStream> = (0..5).map(|_| connect_from("127.0.0.3", broker.address())).collect();
    for stream in &mut five {
        assert_eq!(ask(stream), Answer::Answered);
    }
    let started = Instant::now();
    let mut sixth = connect_from("127.0.0.3", broker.address());
    assert!(closed_within(&mut sixth, Duration::from_secs(5)), "the 6th connection from 127.0.0.3 is closed");
    assert!(started.elapsed() < Duration::from_secs(2), "closed at once, not after {:?}", started.elapsed());
    for stream in &mut five {
        assert_eq!(ask(stream), Answer::Answered, "the first five still work");
    }

    let mut eight: Vec<TcpStream> = (0..8).map(|_| connect_from("127.0.0.2", broker.address())).collect();
    for stream in &mut eight {
        assert_eq!(ask(stream), Answer::Answered, "127.0.0.2 may have 8 (its override)");
    }
    let mut ninth = connect_from("127.0.0.2", broker.address());
    assert!(closed_within(&mut ninth, Duration::from_secs(5)), "the 9th connection from 127.0.0.2 is closed");

    let text = scrape(metrics_port);
    assert!(text.contains("broker_connections_refused_total{listener=\"PLAINTEXT\"} 2\n"), "{text}");
    assert!(text.contains("kafka_server_socket_server_metrics_connection_count{listener=\"PLAINTEXT\",networkProcessor=\"0\"} 13\n"), "{text}");
    let log = broker.log();
    assert_eq!(log.matches("closing new connections over max.connections.per.ip").count(), 1, "logged once a minute, not per refusal:\n{log}");
}

#[test]
fn an_idle_connection_is_closed_after_connections_max_idle_ms_and_an_active_one_stays() {
    let dir = TempDir::new("conns-idle");
    let broker = Broker::start(&dir.0, 1, &["connections.max.idle.ms=2000"]);
    let mut idle = connect_from("127.0.0.1", broker.address());
    let mut active = connect_from("127.0.0.1", broker.address());
    assert_eq!(ask(&mut idle), Answer::Answered);
    let idle_since = Instant::now();
    let waiter = std::thread::spawn(move || {
        let closed = closed_within(&mut idle, Duration::from_secs(10));
        (closed, idle_since.elapsed())
    });
    // 5 s of a request every 500 ms: never idle for 2 s.
    for _ in 0..10 {
        assert_eq!(ask(&mut active), Answer::Answered, "the active connection stays open");
        std::thread::sleep(Duration::from_millis(500));
    }
    let (closed, after) = waiter.join().unwrap();
    assert!(closed, "the idle connection was not closed");
    assert!(after >= Duration::from_millis(1900) && after < Duration::from_millis(4000), "closed after {after:?}, expected ~2 s");
    assert_eq!(ask(&mut active), Answer::Answered);
}

#[test]
fn max_connections_counts_across_shards_and_the_next_connection_waits_for_a_slot() {
    let dir = TempDir::new("conns-max");
    let broker = Broker::start(&dir.0, 2, &["max.connections=4"]);
    // The harness's readiness probe held a slot for a moment: the fourth may wait for it.
    let mut four: Vec<TcpStream> = (0..4).map(|_| connect_from("127.0.0.1", broker.address())).collect();
    for stream in &mut four {
        assert_eq!(ask(stream), Answer::Answered);
    }
    // More connections than the limit, so both shards' sockets get some (SO_REUSEPORT hashes
    // them): every one waits, unserved, whichever shard accepted it.
    let mut waiting: Vec<TcpStream> = (0..4).map(|_| connect_from("127.0.0.1", broker.address())).collect();
    for stream in &mut waiting {
        assert!(send_api_versions(stream));
    }
    for stream in &mut waiting {
        assert_eq!(read_answer(stream, Duration::from_millis(700)), Answer::NoAnswerYet, "served over max.connections=4");
    }
    for stream in &mut four {
        assert_eq!(ask(stream), Answer::Answered, "the four served ones still work");
    }
    // Two close: two of the waiting ones are served, whichever shard they wait on.
    four.truncate(2);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut answered = 0;
    while answered < 2 && Instant::now() < deadline {
        for stream in &mut waiting {
            if read_answer(stream, Duration::from_millis(50)) == Answer::Answered {
                answered += 1;
            }
        }
    }
    assert_eq!(answered, 2, "two slots freed, two waiting connections served");
    std::thread::sleep(Duration::from_millis(300));
    let more = waiting.iter_mut().map(|s| read_answer(s, Duration::from_millis(50))).filter(|a| *a == Answer::Answered).count();
    assert_eq!(more, 0, "never more than max.connections served");
    assert!(broker.log().contains("connection limit reached"), "{}", broker.log());
}

/// Soft RLIMIT_NOFILE up to the hard limit: this test holds 10,000 sockets.
fn raise_descriptor_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    limit.rlim_cur
}

#[test]
fn ten_thousand_idle_connections_held_while_kcat_produces_and_consumes() {
    const IDLE: usize = 10_000;
    const BATCH: usize = 200;
    let limit = raise_descriptor_limit();
    assert!(limit as usize > IDLE + 500, "this test needs {IDLE} descriptors, the hard limit is {limit}");
    let dir = TempDir::new("conns-10k");
    let broker = Broker::start(&dir.0, 2, &[]);
    let started = Instant::now();
    let mut idle: Vec<TcpStream> = Vec::with_capacity(IDLE);
    while idle.len() < IDLE {
        let mut batch: Vec<TcpStream> = (0..BATCH).map(|_| connect_from("127.0.0.1", broker.address())).collect();
        for stream in &mut batch {
            assert!(send_api_versions(stream));
        }
        for stream in &mut batch {
            assert_eq!(read_answer(stream, Duration::from_secs(20)), Answer::Answered, "connection {} not answered", idle.len());
        }
        idle.append(&mut batch);
    }
    eprintln!("{IDLE} connections open after ApiVersions in {:?}", started.elapsed());

    let lines: Vec<String> = (0..100).map(|i| format!("record-{i}")).collect();
    let output = kcat_produce(&broker.bootstrap(), &["-t", "beside-idle"], lines.clone());
    assert!(output.status.success(), "kcat -P failed: {}", String::from_utf8_lossy(&output.stderr));
    let (ok, stdout, stderr) = run_with_timeout(
        Command::new("kcat").env_remove("LD_LIBRARY_PATH").args(["-b", &broker.bootstrap(), "-C", "-t", "beside-idle", "-o", "beginning", "-e", "-q"]),
        Duration::from_secs(30),
    );
    assert!(ok, "kcat -C failed: {stderr}");
    assert_eq!(stdout.lines().collect::<Vec<_>>(), lines.iter().map(String::as_str).collect::<Vec<_>>());

    let open = idle.iter().filter(|s| still_open(s)).count();
    assert_eq!(open, IDLE, "every idle connection is still open");
    for stream in idle.iter_mut().step_by(1000) {
        assert_eq!(ask(stream), Answer::Answered, "an idle connection still answers");
    }
    eprintln!("whole test {:?}", started.elapsed());
}
