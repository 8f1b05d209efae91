//! Every client we test over SASL_SSL (issue 20), each against a test CA made by the test:
//! kafka-python, aiokafka and kafkajs (tests/clients/security_clients.py, security.js) with PLAIN
//! and SCRAM-SHA-512: produce and consume, a wrong password refused with the client's own
//! authentication error, the broker's certificate verified (a client trusting another CA fails),
//! and mTLS on the SSL listener with the certificate's subject as the principal. kcat and
//! confluent-kafka are in security.rs, the Java client and Kafka's CLI tools in tests/java's
//! SecurityTest.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tests::security::{create_scram_user, make_certs, start_secured};
use tests::{python, run_with_timeout, Broker, TempDir};

struct Client {
    name: &'static str,
    /// What the client reports for a wrong password (its exception or error class).
    authentication_error: &'static str,
    /// What it reports for a broker certificate signed by a CA it does not trust.
    untrusted_error: &'static str,
}

impl Client {
    fn command(&self) -> Command {
        let clients = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients");
        if self.name == "kafkajs" {
            let mut command = Command::new("node");
            command.arg(clients.join("security.js"));
            command
        } else {
            let mut command = Command::new(python());
            command.arg(clients.join("security_clients.py"));
            command
        }
    }

    /// Runs `command` (roundtrip or refused) with the options; returns stdout and stderr joined.
    fn run(&self, broker: &Broker, command: &str, options: &[(&str, &str)]) -> (bool, String) {
        let mut process = self.command();
        process.arg(command);
        if self.name != "kafkajs" {
            process.args(["--client", self.name]);
        }
        for (option, value) in options {
            process.arg(format!("--{option}")).arg(value);
        }
        let (ok, stdout, stderr) = run_with_timeout(&mut process, Duration::from_secs(120));
        let output = format!("{stdout}\n{stderr}");
        if command == "roundtrip" {
            assert!(ok && stdout.contains("consumed"), "{} {command} {options:?}:\n{output}\n{}", self.name, broker.log());
        }
        (ok, output)
    }
}

fn sasl_ssl<'a>(bootstrap: &'a str, mechanism: &'a str, user: &'a str, password: &'a str, ca: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![("bootstrap", bootstrap), ("protocol", "SASL_SSL"), ("mechanism", mechanism), ("user", user), ("password", password), ("ca", ca)]
}

fn client_over_sasl_ssl(client: Client) {
    let dir = TempDir::new(&format!("security-clients-{}", client.name));
    let certs = make_certs(&dir.0);
    let (broker, ports) = start_secured(&dir, &certs, &[]);
    create_scram_user(&broker, ports.plaintext, "bob", "bob-secret");
    let bootstrap = format!("127.0.0.1:{}", ports.sasl_ssl);
    let (ca, other_ca) = (certs.ca.display().to_string(), certs.other_ca.display().to_string());
    let count = "50";
    // PLAIN (users from the listener's JAAS config) and SCRAM-SHA-512 (made by the AdminClient).
    for (mechanism, user, password) in [("PLAIN", "alice", "alice-secret"), ("SCRAM-SHA-512", "bob", "bob-secret")] {
        let topic = format!("{}-{}", client.name, mechanism.to_ascii_lowercase());
        let mut options = sasl_ssl(&bootstrap, mechanism, user, password, &ca);
        options.extend([("topic", topic.as_str()), ("count", count)]);
        client.run(&broker, "roundtrip", &options);
        // A wrong password: the client's own authentication error, with the broker's message.
        let (_, output) = client.run(&broker, "refused", &sasl_ssl(&bootstrap, mechanism, user, "wrong", &ca));
        assert!(output.contains(client.authentication_error), "{} {mechanism} wrong password:\n{output}", client.name);
        let message = if mechanism == "PLAIN" { "Invalid username or password" } else { "invalid credentials with SASL mechanism SCRAM-SHA-512" };
        assert!(output.contains(message) && !output.contains("UNEXPECTEDLY CONNECTED"), "{} {mechanism}:\n{output}", client.name);
    }
    // The broker's certificate is checked: a client that trusts only another CA fails the handshake.
    let (_, output) = client.run(&broker, "refused", &sasl_ssl(&bootstrap, "PLAIN", "alice", "alice-secret", &other_ca));
    assert!(output.contains(client.untrusted_error) && !output.contains("UNEXPECTEDLY CONNECTED"), "{} other CA:\n{output}", client.name);
    // mTLS: the SSL listener requires a certificate signed by the CA; its subject is the principal.
    let ssl = format!("127.0.0.1:{}", ports.ssl);
    let (cert, key) = (certs.client_cert.display().to_string(), certs.client_key.display().to_string());
    let topic = format!("{}-mtls", client.name);
    let options = [("bootstrap", ssl.as_str()), ("protocol", "SSL"), ("ca", &ca), ("cert", &cert), ("key", &key), ("topic", &topic), ("count", count)];
    client.run(&broker, "roundtrip", &options);
    assert!(broker.log().contains(r#"TLS client certificate accepted principal="User:CN=alice,OU=eng""#), "{}", broker.log());
    // Without a certificate the SSL listener refuses it.
    let (_, output) = client.run(&broker, "refused", &[("bootstrap", ssl.as_str()), ("protocol", "SSL"), ("ca", &ca)]);
    assert!(!output.contains("UNEXPECTEDLY CONNECTED"), "{} without a client certificate:\n{output}", client.name);
}

#[test]
fn kafka_python_over_sasl_ssl_and_mtls() {
    client_over_sasl_ssl(Client {
        name: "kafka-python",
        authentication_error: "SaslAuthenticationFailedError",
        untrusted_error: "CERTIFICATE_VERIFY_FAILED",
    });
}

#[test]
fn aiokafka_over_sasl_ssl_and_mtls() {
    client_over_sasl_ssl(Client { name: "aiokafka", authentication_error: "SaslAuthenticationFailed", untrusted_error: "CERTIFICATE_VERIFY_FAILED" });
}

#[test]
fn kafkajs_over_sasl_ssl_and_mtls() {
    client_over_sasl_ssl(Client {
        name: "kafkajs",
        authentication_error: "KafkaJSSASLAuthenticationError",
        untrusted_error: "unable to verify the first certificate",
    });
}
