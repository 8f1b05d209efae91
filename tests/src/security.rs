//! What the security tests share (tests/tests/security*.rs): a test CA and certificates made
//! afresh with the `openssl` CLI, and a broker with all four listener kinds.
//!
//! The `openssl` CLI is on the machine already (Debian's openssl), where rcgen would add a crate
//! and its build to tests/.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{free_port, Broker, TempDir};

pub struct Certs {
    pub dir: PathBuf,
    pub ca: PathBuf,
    /// A second CA that signed nothing the broker uses: a client trusting only it must fail.
    pub other_ca: PathBuf,
    /// The broker's PKCS#8 key followed by its certificate (KIP-651's PEM key store).
    pub broker_keystore: PathBuf,
    pub broker_key: PathBuf,
    pub broker_cert: PathBuf,
    /// CN=alice,OU=eng, signed by the CA.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// The client's key followed by its certificate (the Java client's PEM key store).
    pub client_keystore: PathBuf,
}

pub fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl").current_dir(dir).args(args).output().expect("run openssl");
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// A CA, a broker certificate for 127.0.0.1 and a client certificate for CN=alice,OU=eng; and
/// another CA.
pub fn make_certs(dir: &Path) -> Certs {
    let dir = dir.join("certs");
    std::fs::create_dir_all(&dir).unwrap();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    for (name, subject) in [("ca", "/CN=test-ca"), ("other-ca", "/CN=other-ca")] {
        let (key, crt) = (format!("{name}.key"), format!("{name}.crt"));
        openssl(&dir, &[&["req", "-x509"][..], &ec, &["-keyout", &key, "-out", &crt, "-days", "2", "-subj", subject]].concat());
    }
    for (name, subject, extensions) in [
        ("broker", "/CN=localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n"),
        ("client", "/OU=eng/CN=alice", "extendedKeyUsage=clientAuth\n"),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), extensions).unwrap();
        openssl(&dir, &[&["req"][..], &ec, &["-keyout", &format!("{name}.key"), "-out", &format!("{name}.csr"), "-subj", subject]].concat());
        openssl(
            &dir,
            &[
                "x509", "-req", "-in", &format!("{name}.csr"), "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
                "-extfile", &format!("{name}.ext"), "-out", &format!("{name}.crt"),
            ],
        );
        let keystore = [std::fs::read_to_string(dir.join(format!("{name}.key"))).unwrap(), std::fs::read_to_string(dir.join(format!("{name}.crt"))).unwrap()].concat();
        std::fs::write(dir.join(format!("{name}-keystore.pem")), keystore).unwrap();
    }
    Certs {
        ca: dir.join("ca.crt"),
        other_ca: dir.join("other-ca.crt"),
        broker_keystore: dir.join("broker-keystore.pem"),
        broker_key: dir.join("broker.key"),
        broker_cert: dir.join("broker.crt"),
        client_cert: dir.join("client.crt"),
        client_key: dir.join("client.key"),
        client_keystore: dir.join("client-keystore.pem"),
        dir,
    }
}

pub struct Ports {
    pub plaintext: u16,
    pub ssl: u16,
    pub sasl_plaintext: u16,
    pub sasl_ssl: u16,
}

/// PLAIN users admin and alice, in Kafka's JAAS format.
pub const JAAS: &str = r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="admin-secret" user_admin="admin-secret" user_alice="alice-secret";"#;

/// A broker with all four listener kinds: SSL requires a client certificate; both SASL
/// listeners offer PLAIN (users from the JAAS config) and SCRAM. `extra` overrides come last.
pub fn start_secured(dir: &TempDir, certs: &Certs, extra: &[&str]) -> (Broker, Ports) {
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
    let mut overrides: Vec<&str> = overrides.iter().map(String::as_str).collect();
    overrides.extend_from_slice(extra);
    (Broker::start_on_port(&dir.0, 1, ports.plaintext, &overrides), ports)
}

/// Debian's kcat with Debian's librdkafka (SSL and SASL): in a workspace test run cargo puts
/// bench's SSL-less librdkafka on LD_LIBRARY_PATH.
pub fn kcat() -> Command {
    let mut command = Command::new("kcat");
    command.env_remove("LD_LIBRARY_PATH");
    command
}

/// Creates a SCRAM-SHA-512 user through the plaintext listener with confluent-kafka's
/// AdminClient (tests/clients/security.py create-user).
pub fn create_scram_user(broker: &Broker, plaintext_port: u16, user: &str, password: &str) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/security.py");
    let (ok, stdout, stderr) = crate::run_with_timeout(
        Command::new(crate::python()).arg(script).args(["create-user", &format!("127.0.0.1:{plaintext_port}"), user, password]),
        std::time::Duration::from_secs(90),
    );
    assert!(ok && stdout.contains(&format!("{user} SCRAM_SHA_512 8192")), "{stdout}\n{stderr}\n{}", broker.log());
}
