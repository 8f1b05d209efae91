//! ACL denials and grants (issue 20) with kafka-python, aiokafka and kafkajs over SASL_SSL
//! (tests/clients/acl_clients.py and acl.js; confluent-kafka and kcat are in acl.rs, the Java
//! client in tests/java's AclToolTest). One broker per client with Kafka's AclAuthorizer, its
//! certificates from a test CA; `admin` (PLAIN) is a super user and grants through the client's
//! own admin API (kafka-python's KafkaAdminClient.create_acls, kafkajs's admin.createAcls;
//! aiokafka has none, so kafka-python's grants for it); `bob` (SCRAM-SHA-512, made by the test)
//! starts with no ACL. Each client surfaces every refusal as its own error class carrying the
//! Kafka error: Metadata hides what bob may not describe, Produce and Fetch refuse a topic he may
//! describe but not write or read, FindCoordinator, OffsetCommit and JoinGroup refuse a group
//! without DESCRIBE or READ, FindCoordinator and InitProducerId a transactional id without
//! DESCRIBE or WRITE; after each grant the same client goes on. Over a restart the SCRAM user and
//! the ACLs are kept.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tests::security::{create_scram_user, make_certs, start_secured};
use tests::{python, run_with_timeout, Broker, TempDir};

struct Client {
    name: &'static str,
    /// The client's error classes for TOPIC_, GROUP_ and TRANSACTIONAL_ID_AUTHORIZATION_FAILED.
    topic_error: &'static str,
    group_error: &'static str,
    transactional_id_error: &'static str,
}

const KAFKAJS: &str = "kafkajs";

impl Client {
    fn command(&self, phase: &str) -> Command {
        let clients = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients");
        if self.name == KAFKAJS {
            let mut command = Command::new("node");
            command.arg(clients.join("acl.js")).arg(phase);
            command
        } else {
            let mut command = Command::new(python());
            command.arg(clients.join("acl_clients.py")).args([phase, "--client", self.name]);
            command
        }
    }

    /// The steps' lines (`step: outcome`) the client prints for `phase`.
    fn run(&self, broker: &Broker, phase: &str, bootstrap: &str, ca: &str) -> Vec<String> {
        let (ok, stdout, stderr) = run_with_timeout(self.command(phase).args(["--bootstrap", bootstrap, "--ca", ca]), Duration::from_secs(180));
        assert!(ok, "{} {phase}:\n{stdout}\n{stderr}\n{}", self.name, broker.log());
        stdout.lines().map(str::to_string).collect()
    }

    /// What the client must print for `phase`, in order.
    fn expected(&self, phase: &str) -> Vec<String> {
        let denied = |class: &str, code: &str| format!("{class} {code}_AUTHORIZATION_FAILED");
        let topic = denied(self.topic_error, "TOPIC");
        let group = denied(self.group_error, "GROUP");
        let transactional_id = denied(self.transactional_id_error, "TRANSACTIONAL_ID");
        // kafkajs turns a refused FindCoordinator into "coordinator not found"; the broker's
        // code is in its log.
        let coordinator = |code: &str, error: &str| {
            if self.name == KAFKAJS {
                format!("KafkaJSGroupCoordinatorNotFound (logged {code}_AUTHORIZATION_FAILED)")
            } else {
                error.to_string()
            }
        };
        let python = self.name != KAFKAJS;
        let steps: Vec<(&str, String, bool)> = if phase == "before" {
            vec![
                ("topics-none", String::new(), true),
                ("produce-unknown", topic.clone(), true),
                ("topics-describe", "orders".into(), true),
                ("produce-denied", topic.clone(), true),
                // kafkajs has no consumer without a group, nor a commit without joining.
                ("fetch-denied", topic.clone(), python),
                ("commit-group-unknown", group.clone(), python),
                ("join-group-unknown", coordinator("GROUP", &group), true),
                ("commit-group-denied", group.clone(), python),
                ("join-group-denied", group, true),
                ("group-fetch-denied", topic.clone(), true),
                ("produce-granted", "ok delivered".into(), true),
                ("consume-granted", "ok consumed 4".into(), true),
                ("produce-secret", topic, true),
                ("transaction-unknown", coordinator("TRANSACTIONAL_ID", &transactional_id), true),
                ("transaction-denied", transactional_id, true),
                ("transaction-granted", "ok committed".into(), true),
            ]
        } else {
            vec![
                ("topics-after-restart", "orders".into(), true),
                ("produce-after-restart", "ok delivered".into(), true),
                // 3 seeded, 1 granted, 1 transactional, 1 after the restart.
                ("fetch-after-restart", "ok fetched 6".into(), python),
                ("produce-secret-after-restart", topic, true),
                ("transaction-after-restart", "ok committed".into(), true),
            ]
        };
        steps.into_iter().filter(|(_, _, runs)| *runs).map(|(step, outcome, _)| format!("{step}: {outcome}")).collect()
    }
}

fn denials_and_grants(client: Client) {
    let dir = TempDir::new(&format!("acl-clients-{}", client.name));
    let certs = make_certs(&dir.0);
    let overrides = [
        "authorizer.class.name=kafka.security.authorizer.AclAuthorizer",
        // ANONYMOUS: the plaintext listener, where the test makes bob's SCRAM credentials.
        "super.users=User:ANONYMOUS;User:admin",
        "group.initial.rebalance.delay.ms=0",
        "offsets.topic.num.partitions=1",
        "transaction.state.log.num.partitions=1",
    ];
    let (mut broker, ports) = start_secured(&dir, &certs, &overrides);
    create_scram_user(&broker, ports.plaintext, "bob", "bob-secret");
    let bootstrap = format!("127.0.0.1:{}", ports.sasl_ssl);
    let ca = certs.ca.display().to_string();
    for phase in ["before", "after"] {
        if phase == "after" {
            assert_eq!(broker.stop(), 0);
            broker.restart();
        }
        let printed = client.run(&broker, phase, &bootstrap, &ca);
        assert_eq!(printed, client.expected(phase), "{} {phase}\n{}", client.name, broker.log());
    }
}

#[test]
fn kafka_python_refused_and_granted_by_acls() {
    denials_and_grants(Client {
        name: "kafka-python",
        topic_error: "TopicAuthorizationFailedError",
        group_error: "GroupAuthorizationFailedError",
        transactional_id_error: "TransactionalIdAuthorizationFailedError",
    });
}

#[test]
fn aiokafka_refused_and_granted_by_acls() {
    denials_and_grants(Client {
        name: "aiokafka",
        topic_error: "TopicAuthorizationFailedError",
        group_error: "GroupAuthorizationFailedError",
        transactional_id_error: "TransactionalIdAuthorizationFailed",
    });
}

#[test]
fn kafkajs_refused_and_granted_by_acls() {
    denials_and_grants(Client {
        name: KAFKAJS,
        topic_error: "KafkaJSProtocolError",
        group_error: "KafkaJSProtocolError",
        transactional_id_error: "KafkaJSProtocolError",
    });
}
