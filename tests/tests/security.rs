//! Listeners, TLS and SASL (issue 20) with real clients: kcat (Debian's librdkafka, with SSL and
//! SASL) and confluent-kafka over SSL (client certificate required), SASL_PLAINTEXT and SASL_SSL
//! with PLAIN and SCRAM-SHA-512; SCRAM users made with the AdminClient and kept over a restart;
//! bad input that closes only its own connection.
//! Certificates and the secured broker come from tests::security (shared with
//! security_clients.rs).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use kafka_protocol::messages::{
    ApiKey, MetadataRequest, MetadataResponse, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use tests::security::{create_scram_user, kcat, make_certs, openssl, start_secured, Certs};
use tests::{free_port, python, run_with_timeout, Broker, TempDir};

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
    let (broker, ports) = start_secured(&dir, &certs, &[]);
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
    let (mut broker, ports) = start_secured(&dir, &certs, &[]);
    create_scram_user(&broker, ports.plaintext, "bob", "bob-secret");
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
    let (broker, ports) = start_secured(&dir, &certs, &[]);
    // Connections that stay open while the others misbehave: one idle, never authenticating.
    let mut idle = TcpStream::connect(("127.0.0.1", ports.sasl_plaintext)).unwrap();
    // One that opens a TLS connection and never starts the handshake.
    let mut silent_tls = TcpStream::connect(("127.0.0.1", ports.ssl)).unwrap();
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
    assert!(closed_by_peer(&mut silent_tls, Duration::from_secs(10)), "a client that never started TLS was kept");
    assert!(broker.log().contains("the TLS handshake timed out"), "{}", broker.log());
    assert!(broker.log().contains("TLS handshake failed"), "{}", broker.log());
}

/// Key store types we cannot read (JKS) are refused at start, naming what works.
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
            "ssl.keystore.type=JKS",
            "--override",
            "ssl.keystore.location=/nonexistent.jks",
        ]),
        Duration::from_secs(30),
    );
    assert!(!ok, "the broker started with a JKS key store");
    assert!(stderr.contains("only PEM and PKCS12"), "{stderr}");
}

/// PKCS12 key and trust stores made by `openssl pkcs12 -export`: the broker serves TLS with the
/// key from one and verifies client certificates against the other; a wrong store password is a
/// start error that says so. The SSL listener's `ssl.principal.mapping.rules` (Kafka's RULE:
/// syntax) turn the certificate subject CN=alice,OU=eng into ALICE@ENG.
#[test]
fn pkcs12_stores_and_principal_mapping_rules() {
    let dir = TempDir::new("security-pkcs12");
    let certs = make_certs(&dir.0);
    let (key, cert, ca) = (certs.broker_key.display().to_string(), certs.broker_cert.display().to_string(), certs.ca.display().to_string());
    openssl(&certs.dir, &["pkcs12", "-export", "-in", &cert, "-inkey", &key, "-name", "broker", "-out", "broker.p12", "-passout", "pass:store-secret"]);
    openssl(&certs.dir, &["pkcs12", "-export", "-nokeys", "-in", &ca, "-out", "trust.p12", "-passout", "pass:trust-secret"]);
    let keystore = format!("ssl.keystore.location={}", certs.dir.join("broker.p12").display());
    let truststore = format!("ssl.truststore.location={}", certs.dir.join("trust.p12").display());
    let pkcs12 = [
        "ssl.keystore.type=PKCS12",
        keystore.as_str(),
        "ssl.keystore.password=store-secret",
        "ssl.key.password=store-secret",
        "ssl.truststore.type=PKCS12",
        truststore.as_str(),
        "ssl.truststore.password=trust-secret",
        r"listener.name.ssl.ssl.principal.mapping.rules=RULE:^CN=([a-z]+),OU=ServiceUsers$/svc-$1/, RULE:^CN=([a-z]+),OU=(.*)$/$1@$2/U, DEFAULT",
    ];
    let (broker, ports) = start_secured(&dir, &certs, &pkcs12);
    kcat_roundtrip(&broker, ports.ssl, &kcat_security("SSL", &certs, None), "over-pkcs12", 20);
    assert!(broker.log().contains(r#"TLS client certificate accepted principal="User:ALICE@ENG""#), "{}", broker.log());
    let plain_ssl = kcat_security("SASL_SSL", &certs, Some(("PLAIN", "alice", "alice-secret")));
    kcat_roundtrip(&broker, ports.sasl_ssl, &plain_ssl, "sasl-over-pkcs12", 20);
    drop(broker);
    // A wrong store password: the broker does not start, and says which store.
    let port = free_port();
    let log_dirs = format!("log.dirs={}", dir.0.join("logs2").display());
    let listeners = format!("listeners=SSL://127.0.0.1:{port}");
    let mut args = vec!["--shards".to_string(), "1".to_string()];
    for setting in [listeners.as_str(), log_dirs.as_str(), "ssl.keystore.type=PKCS12", keystore.as_str(), "ssl.keystore.password=wrong"] {
        args.extend(["--override".to_string(), setting.to_string()]);
    }
    let (ok, _, stderr) = run_with_timeout(Command::new(tests::broker_binary()).args(&args), Duration::from_secs(30));
    assert!(!ok && stderr.contains("ssl.keystore.location") && stderr.contains("cannot read the PKCS12 store"), "{stderr}");
}

/// PLAIN through SaslHandshake v1 and SaslAuthenticate v1 (a first authentication or a
/// re-authentication): the SaslAuthenticate answer.
fn sasl_plain(connection: &mut tests::wire::Connection, user: &str, password: &str) -> SaslAuthenticateResponse {
    let handshake = SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN"));
    let answer: SaslHandshakeResponse = connection.call(ApiKey::SaslHandshake, 1, &handshake);
    assert_eq!(answer.error_code, 0);
    let token = bytes::Bytes::from(format!("\0{user}\0{password}"));
    connection.call(ApiKey::SaslAuthenticate, 1, &SaslAuthenticateRequest::default().with_auth_bytes(token))
}

/// The session lifetime of a successful PLAIN authentication.
fn session_lifetime_ms(connection: &mut tests::wire::Connection, user: &str, password: &str) -> i64 {
    let answer = sasl_plain(connection, user, password);
    assert_eq!(answer.error_code, 0, "{:?}", answer.error_message);
    answer.session_lifetime_ms
}

fn metadata(connection: &mut tests::wire::Connection) -> MetadataResponse {
    connection.call(ApiKey::Metadata, 4, &MetadataRequest::default().with_topics(Some(Vec::new())))
}

/// KIP-368 `connections.max.reauth.ms`: SaslAuthenticate answers the session's lifetime; a
/// client that re-authenticates in time (same principal) keeps its connection, one that does not
/// is closed on its next request, as Kafka; another principal in re-authentication is refused.
/// (The Java client, which re-authenticates by itself, is in tests/java's SecurityTest.)
#[test]
fn sessions_end_after_connections_max_reauth_ms_unless_reauthenticated() {
    use tests::wire::Connection;
    let dir = TempDir::new("security-reauth");
    let certs = make_certs(&dir.0);
    let (broker, ports) = start_secured(&dir, &certs, &["listener.name.sasl_plaintext.connections.max.reauth.ms=1500"]);
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], ports.sasl_plaintext));
    let mut lapsed = Connection::open(address);
    let mut renewed = Connection::open(address);
    let lifetime_ms = session_lifetime_ms(&mut lapsed, "alice", "alice-secret");
    assert!(lifetime_ms > 1000 && lifetime_ms <= 1500, "session_lifetime_ms {lifetime_ms}");
    assert!(session_lifetime_ms(&mut renewed, "alice", "alice-secret") > 1000);
    assert_eq!(metadata(&mut lapsed).brokers.len(), 1);
    std::thread::sleep(Duration::from_millis(900));
    assert!(session_lifetime_ms(&mut renewed, "alice", "alice-secret") > 1000, "re-authentication refused");
    std::thread::sleep(Duration::from_millis(900));
    // 1.8 s after the first authentication: the one that re-authenticated is still served...
    assert_eq!(metadata(&mut renewed).brokers.len(), 1);
    // ...the other is closed on its next request (Metadata v4 for no topics).
    lapsed.send_frame(&[0, 3, 0, 4, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 1]);
    assert!(lapsed.read_frame().is_none(), "a request after the session expired was answered");
    assert!(broker.log().contains("SASL session expired without re-authentication"), "{}", broker.log());
    // Another principal cannot take over a session by re-authenticating.
    let answer = sasl_plain(&mut renewed, "admin", "admin-secret");
    assert_eq!(answer.error_code, 58, "SASL_AUTHENTICATION_FAILED");
    assert!(answer.error_message.unwrap().contains("Cannot change principals"));
    assert!(renewed.is_closed_by_peer());
}

/// The TLS settings of issue 20 the other tests leave at their defaults. The key store inline
/// (KIP-651 `ssl.keystore.key` + `ssl.keystore.certificate.chain`, on one line each as in a
/// properties file); `ssl.client.auth=requested` (kcat without a certificate is served, with one
/// its subject is the principal); `ssl.enabled.protocols` and `ssl.cipher.suites` on another
/// listener, checked with openssl s_client, which can offer one version or suite only.
#[test]
fn inline_key_store_requested_client_certificates_protocols_and_cipher_suites() {
    let dir = TempDir::new("security-tls-settings");
    let certs = make_certs(&dir.0);
    let one_line = |path: &PathBuf| std::fs::read_to_string(path).unwrap().replace('\n', " ");
    let (plaintext, requested, pinned) = (free_port(), free_port(), free_port());
    let overrides = [
        format!("listeners=PLAINTEXT://127.0.0.1:{plaintext},REQUESTED://127.0.0.1:{requested},PINNED://127.0.0.1:{pinned}"),
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,REQUESTED:SSL,PINNED:SSL".into(),
        "ssl.keystore.type=PEM".into(),
        format!("ssl.keystore.key={}", one_line(&certs.broker_key)),
        format!("ssl.keystore.certificate.chain={}", one_line(&certs.broker_cert)),
        "ssl.truststore.type=PEM".into(),
        format!("ssl.truststore.location={}", certs.ca.display()),
        "listener.name.requested.ssl.client.auth=requested".into(),
        "listener.name.pinned.ssl.enabled.protocols=TLSv1.3".into(),
        "listener.name.pinned.ssl.cipher.suites=TLS_AES_256_GCM_SHA384".into(),
    ];
    let overrides: Vec<&str> = overrides.iter().map(String::as_str).collect();
    let broker = Broker::start_on_port(&dir.0, 1, plaintext, &overrides);
    // requested: no certificate, then one.
    let ca_only = vec!["-X".to_string(), "security.protocol=SSL".into(), "-X".into(), format!("ssl.ca.location={}", certs.ca.display())];
    kcat_roundtrip(&broker, requested, &ca_only, "without-certificate", 5);
    assert!(!broker.log().contains("TLS client certificate accepted"), "{}", broker.log());
    kcat_roundtrip(&broker, requested, &kcat_security("SSL", &certs, None), "with-certificate", 5);
    assert!(broker.log().contains(r#"TLS client certificate accepted principal="User:CN=alice,OU=eng""#), "{}", broker.log());
    // pinned: TLS 1.3 with one suite; the broker's certificate verified against the CA.
    let s_client = |extra: &[&str]| {
        let address = format!("127.0.0.1:{pinned}");
        let mut command = Command::new("openssl");
        command.args(["s_client", "-connect", &address, "-CAfile"]).arg(&certs.ca).args(extra).stdin(std::process::Stdio::null());
        let (ok, stdout, stderr) = run_with_timeout(&mut command, Duration::from_secs(30));
        (ok, format!("{stdout}\n{stderr}"))
    };
    let (ok, output) = s_client(&["-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384"]);
    assert!(ok && output.contains("TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384") && output.contains("Verify return code: 0 (ok)"), "{output}");
    let (ok, output) = s_client(&["-tls1_2"]);
    assert!(!ok && output.contains("alert protocol version"), "TLS 1.2 served:\n{output}");
    let (ok, output) = s_client(&["-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256"]);
    assert!(!ok && output.contains("alert handshake failure"), "another suite served:\n{output}");
    kcat_roundtrip(&broker, pinned, &ca_only, "over-tls13", 5);
}
