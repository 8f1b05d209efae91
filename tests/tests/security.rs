//! Listeners, TLS and SASL (issue 20) with real clients: kcat (Debian's librdkafka, with SSL and
//! SASL) and confluent-kafka over SSL (client certificate required), SASL_PLAINTEXT and SASL_SSL
//! with PLAIN and SCRAM-SHA-512; SCRAM users made with the AdminClient and kept over a restart;
//! bad input that closes only its own connection.
//!
//! The test CA and certificates come from `tests::certs` (the `openssl` CLI), made afresh by each test.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tests::certs::{make_certs, Certs};
use tests::cluster::kcat;
use tests::{free_port, python, run_with_timeout, Broker, TempDir};

struct Ports {
    plaintext: u16,
    ssl: u16,
    sasl_plaintext: u16,
    sasl_ssl: u16,
}

const JAAS: &str = r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="admin-secret" user_admin="admin-secret" user_alice="alice-secret";"#;

/// A broker with all four listener kinds: SSL requires a client certificate; both SASL
/// listeners offer PLAIN (users from the JAAS config) and SCRAM.
fn start_secured(dir: &TempDir, certs: &Certs) -> (Broker, Ports) {
    let ports = Ports { plaintext: free_port(), ssl: free_port(), sasl_plaintext: free_port(), sasl_ssl: free_port() };
    let listeners = format!(
        "listeners=PLAINTEXT://127.0.0.1:{},SSL://127.0.0.1:{},SASL_PLAINTEXT://127.0.0.1:{},SASL_SSL://127.0.0.1:{}",
        ports.plaintext, ports.ssl, ports.sasl_plaintext, ports.sasl_ssl
    );
    let overrides = [
        listeners,
        "ssl.keystore.type=PEM".into(),
        format!("ssl.keystore.location={}", certs.broker_keystore.display()),
        "ssl.truststore.type=PEM".into(),
        format!("ssl.truststore.location={}", certs.ca.display()),
        "listener.name.ssl.ssl.client.auth=required".into(),
        "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512".into(),
        format!("listener.name.sasl_plaintext.plain.sasl.jaas.config={JAAS}"),
        format!("listener.name.sasl_ssl.plain.sasl.jaas.config={JAAS}"),
    ];
    let overrides: Vec<&str> = overrides.iter().map(String::as_str).collect();
    (Broker::start_on_port(&dir.0, 1, ports.plaintext, &overrides), ports)
}

/// kcat's -X settings for a protocol (SASL user and password when given).
fn kcat_security(protocol: &str, certs: &Certs, sasl: Option<(&str, &str, &str)>) -> Vec<String> {
    let mut args = vec!["-X".to_string(), format!("security.protocol={protocol}")];
    if protocol.ends_with("SSL") {
        args.extend(["-X".into(), format!("ssl.ca.location={}", certs.ca.display())]);
    }
    if protocol == "SSL" {
        args.extend(["-X".into(), format!("ssl.certificate.location={}", certs.client_cert.display())]);
        args.extend(["-X".into(), format!("ssl.key.location={}", certs.client_key.display())]);
    }
    if let Some((mechanism, user, password)) = sasl {
        args.extend(["-X".into(), format!("sasl.mechanisms={mechanism}")]);
        args.extend(["-X".into(), format!("sasl.username={user}"), "-X".into(), format!("sasl.password={password}")]);
    }
    args
}

/// Produces `count` records with kcat and reads them back with kcat, over `port`.
fn kcat_roundtrip(broker: &Broker, port: u16, security: &[String], topic: &str, count: usize) {
    let bootstrap = format!("127.0.0.1:{port}");
    let mut produce_args: Vec<&str> = vec!["-t", topic, "-X", "acks=all"];
    produce_args.extend(security.iter().map(String::as_str));
    let output = tests::kcat_produce(&bootstrap, &produce_args, (0..count).map(|i| format!("record-{i}")));
    assert!(output.status.success(), "kcat -P over {security:?}: {}\n{}", String::from_utf8_lossy(&output.stderr), broker.log());
    let (ok, stdout, stderr) = run_with_timeout(
        kcat().args(["-b", &bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-q"]).args(security),
        Duration::from_secs(60),
    );
    assert!(ok, "kcat -C over {security:?}: {stderr}\n{}", broker.log());
    let expected: Vec<String> = (0..count).map(|i| format!("record-{i}")).collect();
    assert_eq!(stdout.lines().collect::<Vec<_>>(), expected);
}

fn security_py(args: &[&str]) -> (bool, String, String) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/security.py");
    run_with_timeout(Command::new(python()).arg(script).args(args), Duration::from_secs(90))
}

#[test]
fn tls_with_client_certificates_and_sasl_plain() {
    let dir = TempDir::new("security-tls-plain");
    let certs = make_certs(&dir.0);
    let (broker, ports) = start_secured(&dir, &certs);
    // SSL with a client certificate: its subject is the principal, as Kafka's default builder.
    kcat_roundtrip(&broker, ports.ssl, &kcat_security("SSL", &certs, None), "over-ssl", 50);
    assert!(broker.log().contains("User:CN=alice,OU=eng"), "no certificate principal in the log:\n{}", broker.log());
    // The same listener refuses a client without a certificate.
    let mut no_cert = kcat_security("SASL_SSL", &certs, None);
    no_cert[1] = "security.protocol=SSL".into();
    let (ok, _, stderr) = run_with_timeout(
        kcat().args(["-b", &format!("127.0.0.1:{}", ports.ssl), "-L", "-m", "5"]).args(&no_cert),
        Duration::from_secs(30),
    );
    assert!(!ok, "a client without a certificate got metadata:\n{stderr}");
    // PLAIN over SASL_PLAINTEXT and SASL_SSL (users from the listener's JAAS config).
    let plain = kcat_security("SASL_PLAINTEXT", &certs, Some(("PLAIN", "alice", "alice-secret")));
    kcat_roundtrip(&broker, ports.sasl_plaintext, &plain, "over-sasl-plaintext", 50);
    let plain_ssl = kcat_security("SASL_SSL", &certs, Some(("PLAIN", "alice", "alice-secret")));
    kcat_roundtrip(&broker, ports.sasl_ssl, &plain_ssl, "over-sasl-ssl", 50);
    assert!(broker.log().contains("User:alice"), "{}", broker.log());
    // confluent-kafka with PLAIN over SASL_SSL.
    let bootstrap = format!("127.0.0.1:{}", ports.sasl_ssl);
    let ca = certs.ca.display().to_string();
    let (ok, stdout, stderr) = security_py(&["roundtrip", &bootstrap, "SASL_SSL", "PLAIN", "admin", "admin-secret", &ca, "py-plain", "100"]);
    assert!(ok && stdout.contains("consumed 100"), "{stdout}\n{stderr}\n{}", broker.log());
    // A wrong password gets SASL_AUTHENTICATION_FAILED with Kafka's message.
    let (_, stdout, stderr) = security_py(&["refused", &bootstrap, "SASL_SSL", "PLAIN", "alice", "wrong", &ca]);
    assert!(stdout.contains("Invalid username or password"), "{stdout}\n{stderr}");
    assert!(!stdout.contains("UNEXPECTEDLY CONNECTED"), "{stdout}");
}

#[test]
fn scram_users_from_the_admin_client_survive_a_restart() {
    let dir = TempDir::new("security-scram");
    let certs = make_certs(&dir.0);
    let (mut broker, ports) = start_secured(&dir, &certs);
    let plaintext = format!("127.0.0.1:{}", ports.plaintext);
    let (ok, stdout, stderr) = security_py(&["create-user", &plaintext, "bob", "bob-secret"]);
    assert!(ok && stdout.contains("bob SCRAM_SHA_512 8192"), "{stdout}\n{stderr}\n{}", broker.log());
    let stored = std::fs::read_to_string(dir.0.join("logs/scram-credentials")).unwrap();
    assert!(stored.contains("bob\tSCRAM-SHA-512\tsalt=") && !stored.contains("bob-secret"), "{stored}");
    let bootstrap = format!("127.0.0.1:{}", ports.sasl_ssl);
    let ca = certs.ca.display().to_string();
    let roundtrip = |topic: &str, broker: &Broker| {
        let (ok, stdout, stderr) = security_py(&["roundtrip", &bootstrap, "SASL_SSL", "SCRAM-SHA-512", "bob", "bob-secret", &ca, topic, "100"]);
        assert!(ok && stdout.contains("consumed 100"), "{stdout}\n{stderr}\n{}", broker.log());
    };
    roundtrip("scram-before", &broker);
    let scram = kcat_security("SASL_SSL", &certs, Some(("SCRAM-SHA-512", "bob", "bob-secret")));
    kcat_roundtrip(&broker, ports.sasl_ssl, &scram, "scram-kcat", 20);
    let (_, stdout, stderr) = security_py(&["refused", &bootstrap, "SASL_SSL", "SCRAM-SHA-512", "bob", "wrong", &ca]);
    assert!(stdout.contains("Authentication failed"), "{stdout}\n{stderr}");
    // SCRAM-SHA-256 was not set for bob: refused too.
    let (_, stdout, _) = security_py(&["refused", &bootstrap, "SASL_SSL", "SCRAM-SHA-256", "bob", "bob-secret", &ca]);
    assert!(stdout.contains("Authentication failed"), "{stdout}");
    assert_eq!(broker.stop(), 0);
    broker.restart();
    roundtrip("scram-after", &broker);
}

/// Reads until the peer closes (Ok(true)) or the timeout passes (Ok(false)).
fn closed_by_peer(stream: &mut TcpStream, timeout: Duration) -> bool {
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// A Kafka request frame: api key, version, correlation id, client id, body.
fn request(api_key: i16, version: i16, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&api_key.to_be_bytes());
    frame.extend_from_slice(&version.to_be_bytes());
    frame.extend_from_slice(&7i32.to_be_bytes());
    frame.extend_from_slice(&4i16.to_be_bytes());
    frame.extend_from_slice(b"test");
    frame.extend_from_slice(body);
    let mut sized = (frame.len() as i32).to_be_bytes().to_vec();
    sized.extend(frame);
    sized
}

#[test]
fn bad_input_closes_only_its_own_connection() {
    let dir = TempDir::new("security-bad-input");
    let certs = make_certs(&dir.0);
    let (broker, ports) = start_secured(&dir, &certs);
    // Connections that stay open while the others misbehave: one idle, never authenticating.
    let mut idle = TcpStream::connect(("127.0.0.1", ports.sasl_plaintext)).unwrap();
    // A TLS handshake of garbage.
    let mut garbage = TcpStream::connect(("127.0.0.1", ports.ssl)).unwrap();
    garbage.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5, 0xff, 0xfe]).unwrap();
    assert!(closed_by_peer(&mut garbage, Duration::from_secs(10)), "garbage TLS was not refused");
    // Metadata (v1, all topics) before authenticating on a SASL listener: closed, as Kafka.
    let mut early = TcpStream::connect(("127.0.0.1", ports.sasl_plaintext)).unwrap();
    early.write_all(&request(3, 1, &(-1i32).to_be_bytes())).unwrap();
    assert!(closed_by_peer(&mut early, Duration::from_secs(10)), "an unauthenticated Metadata was answered");
    // A SASL exchange cut short: handshake for SCRAM, half a client-first, then gone.
    let mut cut = TcpStream::connect(("127.0.0.1", ports.sasl_plaintext)).unwrap();
    let mut handshake = Vec::new();
    handshake.extend_from_slice(&13i16.to_be_bytes());
    handshake.extend_from_slice(b"SCRAM-SHA-512");
    cut.write_all(&request(17, 1, &handshake)).unwrap();
    let mut size = [0u8; 4];
    cut.read_exact(&mut size).unwrap();
    let mut answer = vec![0u8; i32::from_be_bytes(size) as usize];
    cut.read_exact(&mut answer).unwrap();
    assert_eq!(&answer[4..6], &[0, 0], "SaslHandshake for SCRAM-SHA-512 refused");
    cut.write_all(&[0, 0, 0, 100, 0, 36, 0, 1]).unwrap();
    drop(cut);
    // An unknown mechanism is answered UNSUPPORTED_SASL_MECHANISM (33) with the enabled ones.
    let mut unknown = TcpStream::connect(("127.0.0.1", ports.sasl_plaintext)).unwrap();
    let mut handshake = Vec::new();
    handshake.extend_from_slice(&6i16.to_be_bytes());
    handshake.extend_from_slice(b"GSSAPI");
    unknown.write_all(&request(17, 1, &handshake)).unwrap();
    unknown.read_exact(&mut size).unwrap();
    let mut answer = vec![0u8; i32::from_be_bytes(size) as usize];
    unknown.read_exact(&mut answer).unwrap();
    assert_eq!(i16::from_be_bytes([answer[4], answer[5]]), 33);
    // The broker serves everyone else meanwhile.
    kcat_roundtrip(&broker, ports.plaintext, &[], "still-plain", 20);
    let plain = kcat_security("SASL_SSL", &certs, Some(("PLAIN", "alice", "alice-secret")));
    kcat_roundtrip(&broker, ports.sasl_ssl, &plain, "still-sasl-ssl", 20);
    // The idle one is closed once the authentication time runs out (10 s).
    assert!(closed_by_peer(&mut idle, Duration::from_secs(20)), "a never-authenticating client was kept");
    assert!(broker.log().contains("TLS handshake failed"), "{}", broker.log());
}

/// Key store types we cannot read are refused at start, naming what works.
#[test]
fn unsupported_key_stores_are_a_clear_start_error() {
    let dir = TempDir::new("security-bad-config");
    let port = free_port();
    let (ok, _, stderr) = run_with_timeout(
        Command::new(tests::broker_binary()).args([
            "--shards",
            "1",
            "--override",
            &format!("listeners=SSL://127.0.0.1:{port}"),
            "--override",
            &format!("log.dirs={}", dir.0.join("logs").display()),
            "--override",
            "ssl.keystore.type=PKCS12",
            "--override",
            "ssl.keystore.location=/nonexistent.p12",
        ]),
        Duration::from_secs(30),
    );
    assert!(!ok, "the broker started with a PKCS12 key store");
    assert!(stderr.contains("only PEM"), "{stderr}");
}
