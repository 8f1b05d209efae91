//! Producer state (issue 18 phase 2) with exact requests. Snapshots: an idempotent producer's
//! retry and an open transaction outlive retention deleting the segments that held their
//! batches, across kill -9 and clean restarts, and a damaged snapshot (a kill -9 mid-write) is
//! skipped for an older one. Without snapshots the broker would replay only the last two
//! segments and forget both producers. KIP-890 part 1: a transactional batch for a partition
//! not added to the producer's transaction is refused (no hanging transaction).

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
use storage::test_support::build_batch;
use tests::wire::Connection;
use tests::{Broker, TempDir};

const DUPLICATE_SEQUENCE_NUMBER: i16 = 46;
const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const INVALID_TXN_STATE: i16 = 48;
const TRANSACTION_ABORTABLE: i16 = 120;

fn name(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn start(dir: &TempDir) -> Broker {
    Broker::start(&dir.0, 1, &["log.retention.check.interval.ms=50", "transaction.state.log.num.partitions=1"])
}

fn create_topic(connection: &mut Connection, topic: &str) {
    // About four 1 KB batches per segment, and retention keeps about eight of them.
    let configs = [("segment.bytes", "4096"), ("retention.bytes", "8192")]
        .iter()
        .map(|(k, v)| CreatableTopicConfig::default().with_name(name(k)).with_value(Some(name(v))))
        .collect();
    let request = CreateTopicsRequest::default().with_timeout_ms(5000).with_topics(vec![CreatableTopic::default()
        .with_name(TopicName(name(topic)))
        .with_num_partitions(1)
        .with_replication_factor(-1)
        .with_configs(configs)]);
    let response: CreateTopicsResponse = connection.call(ApiKey::CreateTopics, 5, &request);
    assert_eq!(response.topics[0].error_code, 0, "create {topic}");
}

/// One batch of one 1000-byte record from a producer: (id, epoch, sequence, transactional).
fn producer_batch(producer_id: i64, epoch: i16, sequence: i32, transactional: bool) -> Vec<u8> {
    let record = Record {
        transactional,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id,
        producer_epoch: epoch,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence,
        timestamp: 1_700_000_000_000,
        key: Some(Bytes::from_static(b"k")),
        value: Some(Bytes::from(vec![b'v'; 1000])),
        headers: IndexMap::new(),
    };
    let mut buffer = BytesMut::new();
    RecordBatchEncoder::encode(&mut buffer, [&record], &RecordEncodeOptions { version: 2, compression: Compression::None }).unwrap();
    buffer.to_vec()
}

/// (error code, base offset) of a produce (v9, acks=-1).
fn produce(connection: &mut Connection, topic: &str, transactional_id: Option<&str>, batch: Vec<u8>) -> (i16, i64) {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_transactional_id(transactional_id.map(|t| TransactionalId(name(t))))
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(name(topic)))
            .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(Bytes::from(batch)))])]);
    let response: ProduceResponse = connection.call(ApiKey::Produce, 9, &request);
    let partition = &response.responses[0].partition_responses[0];
    (partition.error_code, partition.base_offset)
}

fn log_start_offset(connection: &mut Connection, topic: &str) -> i64 {
    let request = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![ListOffsetsTopic::default()
        .with_name(TopicName(name(topic)))
        .with_partitions(vec![ListOffsetsPartition::default().with_partition_index(0).with_timestamp(-2)])]);
    let response: ListOffsetsResponse = connection.call(ApiKey::ListOffsets, 1, &request);
    response.topics[0].partitions[0].offset
}

/// Plain batches until retention has deleted everything up to `offset` (the producer's batches).
fn push_out_with_retention(connection: &mut Connection, topic: &str, offset: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while log_start_offset(connection, topic) <= offset {
        assert!(Instant::now() < deadline, "retention did not delete offset {offset}");
        for _ in 0..4 {
            assert_eq!(produce(connection, topic, None, build_batch(1, 1000, 1_700_000_000_000, 1)).0, 0);
        }
        std::thread::sleep(Duration::from_millis(60));
    }
}

fn snapshot_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".snapshot"))
        .collect();
    names.sort();
    names
}

/// (producer id, epoch) from InitProducerId, retried while the coordinator loads.
fn init_producer_id(connection: &mut Connection, transactional_id: Option<&str>) -> (i64, i16) {
    if let Some(id) = transactional_id {
        // As clients do: FindCoordinator creates `__transaction_state` on first use.
        let find = FindCoordinatorRequest::default().with_key_type(1).with_coordinator_keys(vec![name(id)]);
        let _: FindCoordinatorResponse = connection.call(ApiKey::FindCoordinator, 4, &find);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let request = InitProducerIdRequest::default()
            .with_transactional_id(transactional_id.map(|t| TransactionalId(name(t))))
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        let response: InitProducerIdResponse = connection.call(ApiKey::InitProducerId, 4, &request);
        if response.error_code == 0 {
            return (response.producer_id.0, response.producer_epoch);
        }
        assert!(Instant::now() < deadline, "InitProducerId: error {}", response.error_code);
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The open transaction's first offset on `topic`-0 by DescribeProducers (-1: none), or None
/// if the producer is unknown there.
fn txn_start_offset(connection: &mut Connection, topic: &str, producer_id: i64) -> Option<i64> {
    let request = DescribeProducersRequest::default().with_topics(vec![TopicRequest::default().with_name(TopicName(name(topic))).with_partition_indexes(vec![0])]);
    let response: DescribeProducersResponse = connection.call(ApiKey::DescribeProducers, 0, &request);
    let partition = &response.topics[0].partitions[0];
    assert_eq!(partition.error_code, 0);
    partition.active_producers.iter().find(|p| p.producer_id.0 == producer_id).map(|p| p.current_txn_start_offset)
}

/// AddPartitionsToTxn v3 (as clients send it) of `topic`-0.
fn add_partition(connection: &mut Connection, transactional_id: &str, producer_id: i64, epoch: i16, topic: &str) {
    let add = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(name(transactional_id)))
        .with_v3_and_below_producer_id(ProducerId(producer_id))
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default().with_name(TopicName(name(topic))).with_partitions(vec![0])]);
    let added: AddPartitionsToTxnResponse = connection.call(ApiKey::AddPartitionsToTxn, 3, &add);
    assert_eq!(added.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code, 0);
}

/// AddPartitionsToTxn v4 `verify_only` (as a partition leader sends it): the partition's code.
fn verify_only(connection: &mut Connection, transactional_id: &str, producer_id: i64, epoch: i16, topic: &str) -> i16 {
    use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTransaction;
    let request = AddPartitionsToTxnRequest::default().with_transactions(vec![AddPartitionsToTxnTransaction::default()
        .with_transactional_id(TransactionalId(name(transactional_id)))
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(epoch)
        .with_verify_only(true)
        .with_topics(vec![AddPartitionsToTxnTopic::default().with_name(TopicName(name(topic))).with_partitions(vec![0])])]);
    let response: AddPartitionsToTxnResponse = connection.call(ApiKey::AddPartitionsToTxn, 4, &request);
    assert_eq!(response.error_code, 0);
    response.results_by_transaction[0].topic_results[0].results_by_partition[0].partition_error_code
}

#[test]
fn a_transactional_batch_for_a_partition_not_in_the_transaction_is_refused() {
    let dir = TempDir::new("txn-verification");
    let broker = Broker::start(&dir.0, 4, &["transaction.state.log.num.partitions=8"]);
    let transactional_id = "verified-txn";
    let mut connection = Connection::open(broker.address());
    create_topic(&mut connection, "added");
    create_topic(&mut connection, "stray");
    let (producer_id, epoch) = init_producer_id(&mut connection, Some(transactional_id));
    add_partition(&mut connection, transactional_id, producer_id, epoch, "added");
    assert_eq!(verify_only(&mut connection, transactional_id, producer_id, epoch, "added"), 0);
    assert_eq!(verify_only(&mut connection, transactional_id, producer_id, epoch, "stray"), TRANSACTION_ABORTABLE);

    // Not added: refused, and nothing is appended (no open transaction there).
    let (code, _) = produce(&mut connection, "stray", Some(transactional_id), producer_batch(producer_id, epoch, 0, true));
    assert_eq!(code, INVALID_TXN_STATE, "{}", broker.log());
    assert_eq!(txn_start_offset(&mut connection, "stray", producer_id), None);
    // Without the request's transactional id: refused too, as Kafka 3.9's KafkaApis refuses a
    // request with transactional batches and no id, authorizer or not.
    assert_eq!(produce(&mut connection, "added", None, producer_batch(producer_id, epoch, 0, true)).0, 53, "TRANSACTIONAL_ID_AUTHORIZATION_FAILED");
    // Added: appended, and the next batches of the transaction go without asking again.
    assert_eq!(produce(&mut connection, "added", Some(transactional_id), producer_batch(producer_id, epoch, 0, true)), (0, 0));
    assert_eq!(produce(&mut connection, "added", Some(transactional_id), producer_batch(producer_id, epoch, 1, true)), (0, 1));
}

#[test]
fn an_idempotent_retry_is_recognised_after_retention_and_restarts() {
    let dir = TempDir::new("producer-snapshots");
    let mut broker = start(&dir);
    let topic = "idem";
    let partition_dir = dir.0.join("logs").join(format!("{topic}-0"));
    let mut connection = Connection::open(broker.address());
    create_topic(&mut connection, topic);
    let (producer_id, epoch) = init_producer_id(&mut connection, None);
    assert_eq!(produce(&mut connection, topic, None, producer_batch(producer_id, epoch, 0, false)), (0, 0));
    assert_eq!(produce(&mut connection, topic, None, producer_batch(producer_id, epoch, 1, false)), (0, 1));
    push_out_with_retention(&mut connection, topic, 1);
    let snapshots = snapshot_files(&partition_dir);
    assert!(!snapshots.is_empty() && snapshots.len() <= 2, "the last two snapshots are kept: {snapshots:?}");

    // kill -9: only the snapshots written on roll are there.
    broker.kill_9();
    broker.restart();
    let mut connection = Connection::open(broker.address());
    let (code, offset) = produce(&mut connection, topic, None, producer_batch(producer_id, epoch, 1, false));
    assert!(code == 0 && offset == 1 || code == DUPLICATE_SEQUENCE_NUMBER, "the retry of the last batch is a duplicate: ({code}, {offset})\n{}", broker.log());
    assert_eq!(produce(&mut connection, topic, None, producer_batch(producer_id, epoch, 3, false)).0, OUT_OF_ORDER_SEQUENCE_NUMBER, "a gap");
    let (code, next) = produce(&mut connection, topic, None, producer_batch(producer_id, epoch, 2, false));
    assert_eq!(code, 0);
    assert!(next > 1);

    // A clean stop writes a snapshot at the log end; damage it (as a kill -9 mid-write of a
    // rename-less writer would) and leave a half-written `.tmp`: the older one is used.
    assert_eq!(broker.stop(), 0);
    let snapshots = snapshot_files(&partition_dir);
    let newest = partition_dir.join(snapshots.last().unwrap());
    let bytes = std::fs::read(&newest).unwrap();
    std::fs::write(&newest, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(partition_dir.join(format!("{}.tmp", snapshots.last().unwrap())), b"half").unwrap();
    broker.restart();
    let mut connection = Connection::open(broker.address());
    let (code, offset) = produce(&mut connection, topic, None, producer_batch(producer_id, epoch, 2, false));
    assert!(code == 0 && offset == next || code == DUPLICATE_SEQUENCE_NUMBER, "still a duplicate: ({code}, {offset})\n{}", broker.log());
    assert!(!snapshot_files(&partition_dir).contains(snapshots.last().unwrap()), "the damaged snapshot is deleted");
    assert!(!partition_dir.join(format!("{}.tmp", snapshots.last().unwrap())).exists(), "the leftover .tmp is removed");
}

#[test]
fn an_open_transaction_outlives_retention_and_a_kill_9() {
    let dir = TempDir::new("producer-snapshots-txn");
    let mut broker = start(&dir);
    let topic = "txn";
    let transactional_id = "snap-txn";
    let mut connection = Connection::open(broker.address());
    create_topic(&mut connection, topic);
    let (producer_id, epoch) = init_producer_id(&mut connection, Some(transactional_id));
    add_partition(&mut connection, transactional_id, producer_id, epoch, topic);
    assert_eq!(produce(&mut connection, topic, Some(transactional_id), producer_batch(producer_id, epoch, 0, true)), (0, 0));
    assert_eq!(txn_start_offset(&mut connection, topic, producer_id), Some(0));
    push_out_with_retention(&mut connection, topic, 0);

    broker.kill_9();
    broker.restart();
    let mut connection = Connection::open(broker.address());
    assert_eq!(txn_start_offset(&mut connection, topic, producer_id), Some(0), "the open transaction is known after the restart\n{}", broker.log());

    // The abort's marker closes it (the coordinator resends it once loaded if need be).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let end = EndTxnRequest::default()
            .with_transactional_id(TransactionalId(name(transactional_id)))
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(epoch)
            .with_committed(false);
        let response: EndTxnResponse = connection.call(ApiKey::EndTxn, 3, &end);
        if response.error_code == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "EndTxn: error {}\n{}", response.error_code, broker.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while txn_start_offset(&mut connection, topic, producer_id) != Some(-1) {
        assert!(Instant::now() < deadline, "the abort marker closes the transaction\n{}", broker.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // And that survives a clean restart too.
    assert_eq!(broker.stop(), 0);
    broker.restart();
    let mut connection = Connection::open(broker.address());
    assert_eq!(txn_start_offset(&mut connection, topic, producer_id), Some(-1));
}
