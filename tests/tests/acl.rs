//! ACLs and authorisation (issue 20) with real clients: confluent-kafka's AdminClient creates,
//! describes and deletes ACLs; producers, consumers and Metadata as alice and bob (SASL PLAIN)
//! are refused or served as Kafka's AclAuthorizer decides; a grant takes effect on a live
//! connection; ACLs survive a restart; kcat sees the same; the operations of KIP-430.
//!
//! The admin connects over PLAINTEXT as User:ANONYMOUS, a super user here (as an operator lets
//! an internal plaintext listener through).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tests::{free_port, python, run_with_timeout, Broker, TempDir};

const JAAS: &str = r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="admin-secret" user_admin="admin-secret" user_alice="alice-secret" user_bob="bob-secret";"#;

struct Secured {
    broker: Broker,
    /// PLAINTEXT, User:ANONYMOUS (a super user).
    admin: String,
    /// SASL_PLAINTEXT with PLAIN.
    sasl: String,
}

fn start(dir: &TempDir, extra: &[&str]) -> Secured {
    let (plaintext, sasl) = (free_port(), free_port());
    let mut overrides = vec![
        format!("listeners=PLAINTEXT://127.0.0.1:{plaintext},SASL_PLAINTEXT://127.0.0.1:{sasl}"),
        "sasl.enabled.mechanisms=PLAIN".into(),
        format!("listener.name.sasl_plaintext.plain.sasl.jaas.config={JAAS}"),
        "authorizer.class.name=kafka.security.authorizer.AclAuthorizer".into(),
        "super.users=User:ANONYMOUS;User:admin".into(),
    ];
    overrides.extend(extra.iter().map(|s| s.to_string()));
    let overrides: Vec<&str> = overrides.iter().map(String::as_str).collect();
    let broker = Broker::start_on_port(&dir.0, 2, plaintext, &overrides);
    Secured { broker, admin: format!("127.0.0.1:{plaintext}"), sasl: format!("127.0.0.1:{sasl}") }
}

fn acl_py(args: &[&str]) -> (bool, String, String) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/acl.py");
    run_with_timeout(Command::new(python()).arg(script).args(args), Duration::from_secs(90))
}

/// Runs acl.py and returns its stdout, failing the test (with the broker's log) if it failed.
fn ok(broker: &Broker, args: &[&str]) -> String {
    let (ok, stdout, stderr) = acl_py(args);
    assert!(ok, "acl.py {args:?}:\n{stdout}\n{stderr}\n{}", broker.log());
    stdout
}

/// Records in topics made by the admin (a super user), so they exist before the ACL checks.
fn fill(s: &Secured, topic: &str, count: usize) {
    let output = tests::kcat_produce(&s.admin, &["-t", topic], (0..count).map(|i| format!("{topic}-{i}")));
    assert!(output.status.success(), "kcat -P {topic}: {}\n{}", String::from_utf8_lossy(&output.stderr), s.broker.log());
}

fn kcat() -> Command {
    let mut command = Command::new("kcat");
    command.env_remove("LD_LIBRARY_PATH");
    command
}

#[test]
fn acls_decide_produce_consume_and_metadata_and_survive_a_restart() {
    let dir = TempDir::new("acl-enforced");
    let mut s = start(&dir, &[]);
    for topic in ["orders", "secret", "app-1", "app-2"] {
        fill(&s, topic, 3);
    }
    let (admin, sasl) = (s.admin.clone(), s.sasl.clone());
    let b = &s.broker;
    // No ACL: refused (allow.everyone.if.no.acl.found is false).
    assert_eq!(ok(b, &["produce", &sasl, "alice", "alice-secret", "orders"]).trim(), "TOPIC_AUTHORIZATION_FAILED");
    // A grant takes effect on the same producer's connection, without reconnecting.
    let live = ok(b, &["grant-live", &sasl, &admin, "orders"]);
    assert!(live.contains("before TOPIC_AUTHORIZATION_FAILED") && live.contains("after delivered"), "{live}\n{}", b.log());
    // Topic READ without the group: GROUP_AUTHORIZATION_FAILED; with it, the records.
    ok(b, &["create", &admin, "TOPIC", "orders", "LITERAL", "User:alice", "READ", "ALLOW"]);
    assert_eq!(ok(b, &["consume", &sasl, "alice", "alice-secret", "orders", "alice-group"]).trim(), "error GROUP_AUTHORIZATION_FAILED");
    ok(b, &["create", &admin, "GROUP", "alice-", "PREFIXED", "User:alice", "READ", "ALLOW"]);
    assert_eq!(ok(b, &["consume", &sasl, "alice", "alice-secret", "orders", "alice-group"]).trim(), "consumed 4");
    // Prefixed grants, and deny beats allow.
    ok(b, &["create", &admin, "TOPIC", "app-", "PREFIXED", "User:bob", "WRITE", "ALLOW"]);
    assert_eq!(ok(b, &["produce", &sasl, "bob", "bob-secret", "app-1"]).trim(), "delivered");
    assert_eq!(ok(b, &["produce", &sasl, "bob", "bob-secret", "orders"]).trim(), "TOPIC_AUTHORIZATION_FAILED");
    ok(b, &["create", &admin, "TOPIC", "app-1", "LITERAL", "User:*", "WRITE", "DENY"]);
    assert_eq!(ok(b, &["produce", &sasl, "bob", "bob-secret", "app-1"]).trim(), "TOPIC_AUTHORIZATION_FAILED");
    assert_eq!(ok(b, &["produce", &sasl, "bob", "bob-secret", "app-2"]).trim(), "delivered");
    // Metadata shows only what each may describe (WRITE and READ imply DESCRIBE); a super user
    // sees everything.
    assert_eq!(ok(b, &["topics", &sasl, "alice", "alice-secret"]).trim(), "orders");
    assert_eq!(ok(b, &["topics", &sasl, "bob", "bob-secret"]).trim(), "app-1 app-2");
    assert_eq!(ok(b, &["topics", &sasl, "admin", "admin-secret"]).trim(), "app-1 app-2 orders secret");
    // kcat (Debian's librdkafka) as alice: refused on secret, served on orders.
    let alice = ["-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanisms=PLAIN", "-X", "sasl.username=alice", "-X", "sasl.password=alice-secret"];
    let (_, stdout, stderr) = run_with_timeout(
        kcat().args(["-b", &sasl, "-C", "-t", "secret", "-o", "beginning", "-e", "-q"]).args(alice),
        Duration::from_secs(30),
    );
    assert!(!stdout.contains("secret-0") && stderr.contains("uthoriz"), "kcat read secret as alice:\n{stdout}\n{stderr}");
    let (read, stdout, stderr) = run_with_timeout(
        kcat().args(["-b", &sasl, "-C", "-t", "orders", "-o", "beginning", "-e", "-q"]).args(alice),
        Duration::from_secs(30),
    );
    assert!(read && stdout.contains("orders-0"), "kcat as alice:\n{stdout}\n{stderr}");
    // DescribeAcls lists them all; DeleteAcls answers what it removed.
    let before = ok(b, &["describe", &admin]);
    assert_eq!(before.lines().count(), 5, "{before}");
    assert!(before.contains("TOPIC app- PREFIXED User:bob * WRITE ALLOW") && before.contains("TOPIC app-1 LITERAL User:* * WRITE DENY"), "{before}");
    let deleted = ok(b, &["delete", &admin, "TOPIC", "app-1", "LITERAL"]);
    assert!(deleted.contains("deleted TOPIC app-1 LITERAL User:* * WRITE DENY"), "{deleted}");
    assert_eq!(ok(b, &["produce", &sasl, "bob", "bob-secret", "app-1"]).trim(), "delivered");
    let kept = ok(b, &["describe", &admin]);
    assert!(std::fs::read_to_string(dir.0.join("logs/acls.json")).unwrap().contains("\"principal\":\"User:bob\""));
    // Kept over a restart, and enforced after it.
    assert_eq!(s.broker.stop(), 0);
    s.broker.restart();
    let b = &s.broker;
    assert_eq!(ok(b, &["describe", &admin]), kept);
    assert_eq!(ok(b, &["produce", &sasl, "alice", "alice-secret", "orders"]).trim(), "delivered");
    assert_eq!(ok(b, &["produce", &sasl, "alice", "alice-secret", "secret"]).trim(), "TOPIC_AUTHORIZATION_FAILED");
}

#[test]
fn authorised_operations_as_kip_430() {
    let dir = TempDir::new("acl-operations");
    let s = start(&dir, &[]);
    fill(&s, "ops", 1);
    let (admin, sasl, b) = (&s.admin, &s.sasl, &s.broker);
    ok(b, &["create", admin, "TOPIC", "ops", "LITERAL", "User:alice", "WRITE", "ALLOW"]);
    ok(b, &["create", admin, "TOPIC", "ops", "LITERAL", "User:alice", "READ", "ALLOW"]);
    ok(b, &["create", admin, "GROUP", "ops-group", "LITERAL", "User:alice", "READ", "ALLOW"]);
    ok(b, &["create", admin, "BROKER", "kafka-cluster", "LITERAL", "User:alice", "DESCRIBE", "ALLOW"]);
    // The group must exist to be described.
    assert_eq!(ok(b, &["consume", sasl, "alice", "alice-secret", "ops", "ops-group"]).trim(), "consumed 1");
    let operations = ok(b, &["operations", sasl, "alice", "alice-secret", "ops", "ops-group"]);
    assert!(operations.contains("cluster ['DESCRIBE']"), "{operations}");
    assert!(operations.contains("topic ['DESCRIBE', 'READ', 'WRITE']"), "{operations}");
    assert!(operations.contains("group ['DESCRIBE', 'READ']"), "{operations}");
    // A super user holds every operation of each type.
    let all = ok(b, &["operations", sasl, "admin", "admin-secret", "ops", "ops-group"]);
    assert!(all.contains("'ALTER_CONFIGS'") && all.contains("'CLUSTER_ACTION'") && all.contains("'DELETE'"), "{all}");
}

#[test]
fn without_an_authorizer_acl_requests_answer_security_disabled_and_bad_config_is_refused() {
    let dir = TempDir::new("acl-disabled");
    let broker = Broker::start(&dir.0, 1, &[]);
    let (_, stdout, stderr) = acl_py(&["create", &broker.bootstrap(), "TOPIC", "t", "LITERAL", "User:alice", "READ", "ALLOW"]);
    assert!(format!("{stdout}{stderr}").contains("SECURITY_DISABLED"), "{stdout}\n{stderr}");
    drop(broker);
    let bad = TempDir::new("acl-bad-class");
    let output = Command::new(tests::broker_binary())
        .args(["--shards", "1", "--override", &format!("listeners=PLAINTEXT://127.0.0.1:{}", free_port())])
        .args(["--override", &format!("log.dirs={}", bad.0.join("logs").display()), "--override", "authorizer.class.name=com.example.Mine"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("authorizer.class.name=com.example.Mine"), "{stderr}");
}

/// An ACL for User:ANONYMOUS (every plaintext client), in CreateAcls's codes: resource type,
/// name, pattern type, host, operation, permission.
fn anonymous_acl(resource_type: i8, name: &str, pattern: i8, host: &str, operation: i8, permission: i8) -> kafka_protocol::messages::create_acls_request::AclCreation {
    use kafka_protocol::protocol::StrBytes;
    let s = |text: &str| StrBytes::from_string(text.to_string());
    kafka_protocol::messages::create_acls_request::AclCreation::default()
        .with_resource_type(resource_type)
        .with_resource_name(s(name))
        .with_resource_pattern_type(pattern)
        .with_principal(s("User:ANONYMOUS"))
        .with_host(s(host))
        .with_operation(operation)
        .with_permission_type(permission)
}

/// Kafka 3.9's Produce check on the wire (KafkaApis.handleProduceRequest): a request is
/// transactional when its batches are, whatever its `transactional_id` field says. Transactional
/// batches need WRITE on the request's transactional id, and a request without one is refused;
/// either way every partition of the request answers TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
/// before topics are checked. Non-transactional batches under a denied id are not checked
/// against it. `allow.everyone.if.no.acl.found=true` lets User:ANONYMOUS (plaintext) create the
/// ACLs and use what they do not name. The topics' DENYs name hosts beside an ALLOW for any
/// host: one the client connects from (127.0.0.1) applies, another does not. (Without the ALLOW
/// the other host's DENY would refuse too: a resource with any ACL is no longer "no ACL found".)
#[test]
fn produce_checks_the_transactional_id_when_the_batches_are_transactional() {
    use bytes::Bytes;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ApiKey, CreateAclsRequest, CreateAclsResponse, ProduceRequest, ProduceResponse, TopicName, TransactionalId};
    use kafka_protocol::protocol::StrBytes;
    use storage::test_support::{build_batch, build_keyed_batch, build_txn_batch};
    use tests::wire::Connection;

    const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
    const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
    let s = |text: &str| StrBytes::from_string(text.to_string());
    let dir = TempDir::new("acl-produce-txn");
    let broker = Broker::start(&dir.0, 1, &["authorizer.class.name=kafka.security.authorizer.AclAuthorizer", "allow.everyone.if.no.acl.found=true"]);
    for topic in ["open", "locked", "remote-denied"] {
        let output = tests::kcat_produce(&broker.bootstrap(), &["-t", topic], [format!("{topic}-0")]);
        assert!(output.status.success(), "kcat -P {topic}: {}\n{}", String::from_utf8_lossy(&output.stderr), broker.log());
    }
    let mut connection = Connection::open(broker.address());
    // WRITE (4) on (resource type, name, host, permission): TRANSACTIONAL_ID 5, TOPIC 2; DENY 2,
    // ALLOW 3.
    let write = |resource_type: i8, name: &str, host: &str, permission: i8| anonymous_acl(resource_type, name, 3, host, 4, permission);
    let mut creations = vec![write(5, "denied-txn", "*", 2), write(2, "locked", "127.0.0.1", 2), write(2, "remote-denied", "10.9.9.9", 2)];
    creations.extend(["locked", "remote-denied"].map(|topic| write(2, topic, "*", 3)));
    let request = CreateAclsRequest::default().with_creations(creations);
    let response: CreateAclsResponse = connection.call(ApiKey::CreateAcls, 3, &request);
    assert!(response.results.iter().all(|r| r.error_code == 0), "{response:?}");

    // Produce v9 of one batch to each topic; the answer's (topic, error code) pairs.
    let mut produce = |transactional_id: Option<&str>, batch: &[u8], topics: &[&str]| -> Vec<(String, i16)> {
        let topic_data = topics
            .iter()
            .map(|t| {
                let partition = PartitionProduceData::default().with_index(0).with_records(Some(Bytes::copy_from_slice(batch)));
                TopicProduceData::default().with_name(TopicName(s(t))).with_partition_data(vec![partition])
            })
            .collect();
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(5000)
            .with_transactional_id(transactional_id.map(|t| TransactionalId(s(t))))
            .with_topic_data(topic_data);
        let response: ProduceResponse = connection.call(ApiKey::Produce, 9, &request);
        response.responses.iter().flat_map(|t| t.partition_responses.iter().map(|p| (t.name.0.to_string(), p.error_code))).collect()
    };
    let transactional = build_txn_batch(4242, 1, None, 1_700_000_000_000);
    let idempotent = build_keyed_batch(&[(None, Some(&b"idempotent"[..]))], 1_700_000_000_000, Some((4343, 0, 0)));
    let plain = build_batch(1, 10, 1_700_000_000_000, b'p');
    let every = |code: i16| vec![("open".to_string(), code), ("locked".to_string(), code)];
    // Transactional batches under a denied id: the whole request, the locked topic too.
    assert_eq!(produce(Some("denied-txn"), &transactional, &["open", "locked"]), every(TRANSACTIONAL_ID_AUTHORIZATION_FAILED));
    // Transactional batches without an id: refused the same way.
    assert_eq!(produce(None, &transactional, &["open", "locked"]), every(TRANSACTIONAL_ID_AUTHORIZATION_FAILED));
    // The id is set but no batch is transactional: not checked; topics decide per partition.
    assert_eq!(produce(Some("denied-txn"), &idempotent, &["open", "locked"]), vec![("open".into(), 0), ("locked".into(), TOPIC_AUTHORIZATION_FAILED)]);
    assert_eq!(produce(Some("denied-txn"), &plain, &["open", "remote-denied"]), vec![("open".into(), 0), ("remote-denied".into(), 0)]);
    drop(connection);
    // Nothing of the refused requests was appended: open holds kcat's record and the two accepted.
    let (_, stdout, stderr) = run_with_timeout(kcat().args(["-b", &broker.bootstrap(), "-C", "-t", "open", "-o", "beginning", "-e", "-f", "%s\n"]), Duration::from_secs(30));
    assert_eq!(stdout.lines().collect::<Vec<_>>(), ["open-0", "idempotent", "pppppppppp"], "{stderr}");
}

/// The admin and group APIs refuse as Kafka 3.9's KafkaApis does, each with its resource's error
/// code: CreateTopics (CREATE on the cluster or the topic), DeleteTopics and DeleteRecords
/// (DELETE), CreatePartitions (ALTER), DescribeConfigs (DESCRIBE_CONFIGS) answer
/// TOPIC_AUTHORIZATION_FAILED; OffsetFetch, DescribeGroups (DESCRIBE) and DeleteGroups (DELETE)
/// GROUP_AUTHORIZATION_FAILED; CreateAcls and AlterUserScramCredentials (ALTER on the cluster)
/// CLUSTER_AUTHORIZATION_FAILED. User:ANONYMOUS (plaintext) under
/// `allow.everyone.if.no.acl.found=true` and DENYs on `guarded*` topics, the group and the cluster.
#[test]
fn admin_and_group_apis_refuse_with_their_resources_error_codes() {
    use bytes::Bytes;
    use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
    use kafka_protocol::messages::alter_user_scram_credentials_request::ScramCredentialUpsertion;
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;
    use tests::wire::Connection;

    const TOPIC: i16 = 29;
    const GROUP: i16 = 30;
    const CLUSTER: i16 = 31;
    let s = |text: &str| StrBytes::from_string(text.to_string());
    let dir = TempDir::new("acl-admin-apis");
    let broker = Broker::start(&dir.0, 1, &["authorizer.class.name=kafka.security.authorizer.AclAuthorizer", "allow.everyone.if.no.acl.found=true"]);
    let output = tests::kcat_produce(&broker.bootstrap(), &["-t", "guarded"], ["one".to_string()]);
    assert!(output.status.success(), "kcat -P: {}\n{}", String::from_utf8_lossy(&output.stderr), broker.log());
    let mut connection = Connection::open(broker.address());
    // DENY (resource type, name, pattern, operation): TOPIC 2, GROUP 3, CLUSTER 4; LITERAL 3,
    // PREFIXED 4; ALL 2, CREATE 7, ALTER 10.
    let deny = |resource_type: i8, name: &str, pattern: i8, operation: i8| anonymous_acl(resource_type, name, pattern, "*", operation, 2);
    let creations = vec![deny(2, "guarded", 4, 2), deny(3, "guarded-group", 3, 2), deny(4, "kafka-cluster", 3, 7), deny(4, "kafka-cluster", 3, 10)];
    let created: CreateAclsResponse = connection.call(ApiKey::CreateAcls, 3, &CreateAclsRequest::default().with_creations(creations));
    assert!(created.results.iter().all(|r| r.error_code == 0), "{created:?}");

    let topic = || TopicName(s("guarded"));
    let create = CreateTopicsRequest::default().with_timeout_ms(5000).with_topics(vec![CreatableTopic::default()
        .with_name(TopicName(s("guarded-new")))
        .with_num_partitions(1)
        .with_replication_factor(-1)]);
    let response: CreateTopicsResponse = connection.call(ApiKey::CreateTopics, 7, &create);
    assert_eq!(response.topics.iter().map(|t| t.error_code).collect::<Vec<_>>(), [TOPIC], "CreateTopics");
    let response: DeleteTopicsResponse = connection.call(ApiKey::DeleteTopics, 5, &DeleteTopicsRequest::default().with_timeout_ms(5000).with_topic_names(vec![topic()]));
    assert_eq!(response.responses.iter().map(|t| t.error_code).collect::<Vec<_>>(), [TOPIC], "DeleteTopics");
    let grow = CreatePartitionsRequest::default().with_timeout_ms(5000).with_topics(vec![CreatePartitionsTopic::default().with_name(topic()).with_count(2)]);
    let response: CreatePartitionsResponse = connection.call(ApiKey::CreatePartitions, 3, &grow);
    assert_eq!(response.results.iter().map(|t| t.error_code).collect::<Vec<_>>(), [TOPIC], "CreatePartitions");
    let describe = DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default().with_resource_type(2).with_resource_name(s("guarded"))]);
    let response: DescribeConfigsResponse = connection.call(ApiKey::DescribeConfigs, 4, &describe);
    assert_eq!(response.results.iter().map(|t| t.error_code).collect::<Vec<_>>(), [TOPIC], "DescribeConfigs");
    let delete_records = DeleteRecordsRequest::default().with_timeout_ms(5000).with_topics(vec![DeleteRecordsTopic::default()
        .with_name(topic())
        .with_partitions(vec![DeleteRecordsPartition::default().with_partition_index(0).with_offset(1)])]);
    let response: DeleteRecordsResponse = connection.call(ApiKey::DeleteRecords, 2, &delete_records);
    assert_eq!(response.topics[0].partitions.iter().map(|p| p.error_code).collect::<Vec<_>>(), [TOPIC], "DeleteRecords");

    let group = || GroupId(s("guarded-group"));
    let fetch = OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default().with_group_id(group())]);
    let response: OffsetFetchResponse = connection.call(ApiKey::OffsetFetch, 8, &fetch);
    assert_eq!(response.groups.iter().map(|g| g.error_code).collect::<Vec<_>>(), [GROUP], "OffsetFetch");
    let response: DescribeGroupsResponse = connection.call(ApiKey::DescribeGroups, 5, &DescribeGroupsRequest::default().with_groups(vec![group()]));
    assert_eq!(response.groups.iter().map(|g| g.error_code).collect::<Vec<_>>(), [GROUP], "DescribeGroups");
    let response: DeleteGroupsResponse = connection.call(ApiKey::DeleteGroups, 2, &DeleteGroupsRequest::default().with_groups_names(vec![group()]));
    assert_eq!(response.results.iter().map(|g| g.error_code).collect::<Vec<_>>(), [GROUP], "DeleteGroups");

    let more = CreateAclsRequest::default().with_creations(vec![deny(2, "other", 3, 2)]);
    let response: CreateAclsResponse = connection.call(ApiKey::CreateAcls, 3, &more);
    assert_eq!(response.results.iter().map(|r| r.error_code).collect::<Vec<_>>(), [CLUSTER], "CreateAcls");
    let upsertion = ScramCredentialUpsertion::default()
        .with_name(s("carol"))
        .with_mechanism(2)
        .with_iterations(8192)
        .with_salt(Bytes::from_static(b"salt"))
        .with_salted_password(Bytes::from_static(&[7; 64]));
    let scram = AlterUserScramCredentialsRequest::default().with_upsertions(vec![upsertion]);
    let response: AlterUserScramCredentialsResponse = connection.call(ApiKey::AlterUserScramCredentials, 0, &scram);
    assert_eq!(response.results.iter().map(|r| r.error_code).collect::<Vec<_>>(), [CLUSTER], "AlterUserScramCredentials");
    // Nothing refused happened: guarded still has its one partition, guarded-new none.
    let logs = dir.0.join("logs");
    assert!(logs.join("guarded-0").is_dir() && !logs.join("guarded-1").exists() && !logs.join("guarded-new-0").exists());
}

mod cluster {
    //! Three brokers with real ZooKeeper: an ACL created on one broker is in ZooKeeper as Kafka
    //! writes it and enforced by every broker within a second; deleted on another, lifted on all.
    //! PLAINTEXT only, `allow.everyone.if.no.acl.found=true`: resources without ACLs (the cluster,
    //! for replication) stay open, as an operator migrating to ACLs runs.
    //! Also: old change notifications are purged as Kafka's brokers purge them (zk's change_purge.rs).

    use std::time::{Duration, Instant};

    use kafka_protocol::messages::create_acls_request::AclCreation;
    use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::{
        ApiKey, CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse, DescribeAclsRequest, DescribeAclsResponse,
        MetadataRequest, MetadataResponse, TopicName,
    };
    use kafka_protocol::protocol::StrBytes;
    use tests::wire::Connection;
    use tests::zookeeper::ZooKeeper;
    use tests::{Broker, TempDir};

    fn s(text: &str) -> StrBytes {
        StrBytes::from_string(text.to_string())
    }

    /// The topic's error code in this broker's own Metadata answer.
    fn metadata_error(broker: &Broker, topic: &str) -> i16 {
        let request = MetadataRequest::default().with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(TopicName(s(topic))))]));
        let response: MetadataResponse = Connection::open(broker.address()).call(ApiKey::Metadata, 12, &request);
        response.topics[0].error_code
    }

    fn wait_all(brokers: &[Broker], topic: &str, code: i16, within: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let codes: Vec<i16> = brokers.iter().map(|b| metadata_error(b, topic)).collect();
            if codes.iter().all(|c| *c == code) {
                return started.elapsed();
            }
            assert!(started.elapsed() < within, "not every broker answers {code} for {topic} within {within:?}: {codes:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Three brokers on `zookeeper` under `/kafka`, with an authorizer and `extra` overrides.
    fn start_cluster(zookeeper: &ZooKeeper, name: &str, extra: &[&str]) -> (Vec<TempDir>, Vec<Broker>) {
        let dirs: Vec<TempDir> = (0..3).map(|i| TempDir::new(&format!("{name}-{i}"))).collect();
        let connect = format!("zookeeper.connect={}", zookeeper.connect("/kafka"));
        let brokers: Vec<Broker> = (1..=3)
            .zip(&dirs)
            .map(|(id, dir)| {
                let id = format!("broker.id={id}");
                let mut overrides = vec![
                    connect.as_str(),
                    id.as_str(),
                    "zookeeper.session.timeout.ms=4000",
                    "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                    "allow.everyone.if.no.acl.found=true",
                ];
                overrides.extend_from_slice(extra);
                Broker::start(&dir.0, 1, &overrides)
            })
            .collect();
        (dirs, brokers)
    }

    /// DENY DESCRIBE on the literal topic `topic` for User:ANONYMOUS (every plaintext client here).
    fn deny_describe(topic: &str) -> AclCreation {
        AclCreation::default()
            .with_resource_type(2)
            .with_resource_name(s(topic))
            .with_resource_pattern_type(3)
            .with_principal(s("User:ANONYMOUS"))
            .with_host(s("*"))
            .with_operation(8)
            .with_permission_type(2)
    }

    fn create_acls(broker: &Broker, creations: Vec<AclCreation>) {
        let response: CreateAclsResponse =
            Connection::open(broker.address()).call(ApiKey::CreateAcls, 3, &CreateAclsRequest::default().with_creations(creations));
        assert!(response.results.iter().all(|r| r.error_code == 0), "{response:?}");
    }

    #[test]
    fn an_acl_created_on_one_broker_is_enforced_by_all_within_a_second() {
        let zookeeper = ZooKeeper::start();
        let (_dirs, brokers) = start_cluster(&zookeeper, "acl-cluster", &[]);
        let all: String = brokers.iter().map(|b| b.bootstrap()).collect::<Vec<_>>().join(",");
        let output = tests::kcat_produce(&all, &["-t", "hidden"], ["one".to_string()]);
        assert!(output.status.success(), "kcat -P: {}", String::from_utf8_lossy(&output.stderr));
        wait_all(&brokers, "hidden", 0, Duration::from_secs(15));

        // Created on broker 1: DENY DESCRIBE for User:ANONYMOUS (every plaintext client here).
        let creation = deny_describe("hidden");
        let prefixed = creation.clone().with_resource_name(s("guard-")).with_resource_pattern_type(4).with_operation(4);
        create_acls(&brokers[0], vec![creation, prefixed]);
        let enforced = wait_all(&brokers, "hidden", 29, Duration::from_secs(1));
        println!("ACL enforced by all three brokers {enforced:?} after CreateAcls answered");
        // In ZooKeeper as Kafka writes it, with its change notifications.
        let znode = zookeeper.cli("get /kafka/kafka-acl/Topic/hidden");
        assert!(znode.contains(r#""principal":"User:ANONYMOUS""#) && znode.contains(r#""permissionType":"Deny""#) && znode.contains(r#""operation":"Describe""#), "{znode}");
        let prefixed_znode = zookeeper.cli("get /kafka/kafka-acl-extended/prefixed/Topic/guard-");
        assert!(prefixed_znode.contains(r#""operation":"Write""#), "{prefixed_znode}");
        assert!(zookeeper.cli("ls /kafka/kafka-acl-changes").contains("acl_changes_"));
        assert!(zookeeper.cli("ls /kafka/kafka-acl-extended-changes").contains("acl_changes_"));
        // Broker 3 describes both.
        let every = DescribeAclsRequest::default()
            .with_resource_type_filter(1)
            .with_resource_name_filter(None)
            .with_pattern_type_filter(1)
            .with_principal_filter(None)
            .with_host_filter(None)
            .with_operation(1)
            .with_permission_type(1);
        let described: DescribeAclsResponse = Connection::open(brokers[2].address()).call(ApiKey::DescribeAcls, 3, &every);
        assert_eq!(described.error_code, 0);
        assert_eq!(described.resources.len(), 2, "{described:?}");

        // Deleted on broker 2: lifted on all.
        let filter = DeleteAclsFilter::default()
            .with_resource_type_filter(2)
            .with_resource_name_filter(Some(s("hidden")))
            .with_pattern_type_filter(3)
            .with_principal_filter(None)
            .with_host_filter(None)
            .with_operation(1)
            .with_permission_type(1);
        let deleted: DeleteAclsResponse =
            Connection::open(brokers[1].address()).call(ApiKey::DeleteAcls, 3, &DeleteAclsRequest::default().with_filters(vec![filter]));
        assert_eq!(deleted.filter_results[0].matching_acls.len(), 1, "{deleted:?}");
        let lifted = wait_all(&brokers, "hidden", 0, Duration::from_secs(1));
        println!("ACL deletion enforced by all three brokers {lifted:?} after DeleteAcls answered");
        assert!(!zookeeper.cli("ls /kafka/kafka-acl/Topic").contains("hidden"));
    }

    /// The children of `path` (under the `/kafka` chroot), sorted.
    fn children(zookeeper: &ZooKeeper, path: &str) -> Vec<String> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let client = zookeeper_client::Client::connect(&zookeeper.connect("/kafka")).await.unwrap();
            let mut names = client.list_children(path).await.unwrap();
            names.sort();
            names
        })
    }

    /// Sets a SCRAM-SHA-512 credential for each of `users` through `broker` (the salted password
    /// need not be a real one: nobody logs in as them).
    fn create_users(broker: &Broker, users: &[String]) {
        use kafka_protocol::messages::alter_user_scram_credentials_request::ScramCredentialUpsertion;
        use kafka_protocol::messages::{AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse};
        let upsertions = users
            .iter()
            .map(|user| {
                ScramCredentialUpsertion::default()
                    .with_name(s(user))
                    .with_mechanism(2)
                    .with_iterations(4096)
                    .with_salt(bytes::Bytes::from_static(b"0123456789abcdef"))
                    .with_salted_password(bytes::Bytes::from(vec![7u8; 64]))
            })
            .collect();
        let request = AlterUserScramCredentialsRequest::default().with_upsertions(upsertions);
        let response: AlterUserScramCredentialsResponse = Connection::open(broker.address()).call(ApiKey::AlterUserScramCredentials, 0, &request);
        assert!(response.results.iter().all(|r| r.error_code == 0), "{response:?}");
    }

    /// Whether `broker` describes a SCRAM credential for `user`.
    fn knows_user(broker: &Broker, user: &str) -> bool {
        use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
        use kafka_protocol::messages::{DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse};
        let request = DescribeUserScramCredentialsRequest::default().with_users(Some(vec![UserName::default().with_name(s(user))]));
        let response: DescribeUserScramCredentialsResponse =
            Connection::open(broker.address()).call(ApiKey::DescribeUserScramCredentials, 0, &request);
        response.results.iter().any(|r| r.error_code == 0 && !r.credential_infos.is_empty())
    }

    /// Kafka's brokers delete change notifications older than 15 minutes whenever a new one
    /// arrives (ZkNodeChangeNotificationListener); ours too, with the age shortened to 3 s here
    /// (`zookeeper.change.notification.expiration.ms`, ours). Many users and ACLs are made, time
    /// passes, one more of each: only the newest notifications stay, and later changes still
    /// reach every broker.
    #[test]
    fn old_change_notifications_are_purged_and_later_changes_still_reach_every_broker() {
        const EXPIRATION_MS: u64 = 3_000;
        const ROOTS: [&str; 3] = ["/config/changes", "/kafka-acl-changes", "/kafka-acl-extended-changes"];
        let zookeeper = ZooKeeper::start();
        let expiration = format!("zookeeper.change.notification.expiration.ms={EXPIRATION_MS}");
        let (_dirs, brokers) = start_cluster(&zookeeper, "purge-cluster", &[&expiration]);

        let users: Vec<String> = (0..30).map(|i| format!("user-{i}")).collect();
        create_users(&brokers[0], &users);
        let literal: Vec<AclCreation> = (0..30).map(|i| deny_describe(&format!("old-{i}"))).collect();
        let prefixed: Vec<AclCreation> = (0..30).map(|i| deny_describe(&format!("old-prefix-{i}-")).with_resource_pattern_type(4)).collect();
        create_acls(&brokers[1], literal);
        create_acls(&brokers[2], prefixed);
        for root in ROOTS {
            let found = children(&zookeeper, root);
            assert!(found.len() >= 30, "{root}: {} notifications before the purge", found.len());
        }

        std::thread::sleep(Duration::from_millis(EXPIRATION_MS + 500));
        // One more of each: its arrival purges the expired ones, and it stays.
        create_users(&brokers[0], &["newest".to_string()]);
        create_acls(&brokers[1], vec![deny_describe("hidden"), deny_describe("guard-").with_resource_pattern_type(4)]);
        let started = Instant::now();
        loop {
            let left: Vec<Vec<String>> = ROOTS.iter().map(|root| children(&zookeeper, root)).collect();
            if left.iter().all(|names| names.len() == 1) {
                println!("old notifications purged {:?} after the newest arrived; left: {left:?}", started.elapsed());
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(5), "expired notifications still there: {left:?}");
            std::thread::sleep(Duration::from_millis(100));
        }

        // Every broker applied the newest changes and applies the next ones.
        wait_all(&brokers, "hidden", 29, Duration::from_secs(5));
        create_users(&brokers[2], &["later".to_string()]);
        create_acls(&brokers[2], vec![deny_describe("later-topic")]);
        wait_all(&brokers, "later-topic", 29, Duration::from_secs(5));
        for broker in &brokers {
            assert!(knows_user(broker, "newest") && knows_user(broker, "later") && knows_user(broker, "user-0"), "users on {}", broker.bootstrap());
        }
        for root in ROOTS {
            assert!(!children(&zookeeper, root).is_empty(), "{root}: the newest notification stays");
        }
    }
}
