//! The broker at the wire level: versions, error codes as Kafka returns them, and bad input.

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use storage::test_support::build_batch;
use tests::wire::Connection;
use tests::{Broker, TempDir};

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

fn create_topic(connection: &mut Connection, name: &str, partitions: i32) -> i16 {
    let request = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(topic_name(name))
        .with_num_partitions(partitions)
        .with_replication_factor(-1)]);
    let response: CreateTopicsResponse = connection.call(ApiKey::CreateTopics, 5, &request);
    response.topics[0].error_code
}

fn produce(connection: &mut Connection, topic: &str, partition: i32, records: Vec<u8>, acks: i16) -> (i16, i64) {
    let request = ProduceRequest::default().with_acks(acks).with_timeout_ms(5000).with_topic_data(vec![TopicProduceData::default()
        .with_name(topic_name(topic))
        .with_partition_data(vec![PartitionProduceData::default().with_index(partition).with_records(Some(Bytes::from(records)))])]);
    let response: ProduceResponse = connection.call(ApiKey::Produce, 8, &request);
    let partition = &response.responses[0].partition_responses[0];
    (partition.error_code, partition.base_offset)
}

fn fetch(connection: &mut Connection, topic: &str, partition: i32, offset: i64) -> (i16, i64, Bytes) {
    let request = FetchRequest::default().with_max_wait_ms(0).with_min_bytes(0).with_max_bytes(1 << 20).with_topics(vec![FetchTopic::default()
        .with_topic(topic_name(topic))
        .with_partitions(vec![FetchPartition::default().with_partition(partition).with_fetch_offset(offset).with_partition_max_bytes(1 << 20)])]);
    let response: FetchResponse = connection.call(ApiKey::Fetch, 11, &request);
    let data = &response.responses[0].partitions[0];
    (data.error_code, data.high_watermark, data.records.clone().unwrap_or_default())
}

fn code(error: ResponseError) -> i16 {
    error.code()
}

#[test]
fn api_versions_v0_to_v3_and_unsupported_versions_get_the_list() {
    let dir = TempDir::new("versions");
    let broker = Broker::start(&dir.0, 2, &[]);
    let mut connection = Connection::open(broker.address());
    for version in 0..=3 {
        let response: ApiVersionsResponse = connection.call(ApiKey::ApiVersions, version, &ApiVersionsRequest::default());
        assert_eq!(response.error_code, 0, "v{version}");
        let produce = response.api_keys.iter().find(|k| k.api_key == ApiKey::Produce as i16).expect("Produce listed");
        assert!(produce.max_version >= 8);
    }
    // v4 is beyond what we advertise: a v0 response with UNSUPPORTED_VERSION and the list.
    let header = RequestHeader::default().with_request_api_key(ApiKey::ApiVersions as i16).with_request_api_version(4).with_correlation_id(77);
    let mut body = bytes::BytesMut::new();
    kafka_protocol::protocol::Encodable::encode(&header, &mut body, 2).unwrap();
    kafka_protocol::protocol::Encodable::encode(&ApiVersionsRequest::default(), &mut body, 4).unwrap();
    connection.send_frame(&body);
    let mut frame = connection.read_frame().expect("a response");
    let response_header = <ResponseHeader as kafka_protocol::protocol::Decodable>::decode(&mut frame, 0).unwrap();
    assert_eq!(response_header.correlation_id, 77);
    let response = <ApiVersionsResponse as kafka_protocol::protocol::Decodable>::decode(&mut frame, 0).unwrap();
    assert_eq!(response.error_code, code(ResponseError::UnsupportedVersion));
    assert!(!response.api_keys.is_empty());
}

#[test]
fn errors_as_kafka_returns_them() {
    let dir = TempDir::new("errors");
    let broker = Broker::start(&dir.0, 4, &["message.max.bytes=2000", "auto.create.topics.enable=false"]);
    let mut connection = Connection::open(broker.address());
    assert_eq!(create_topic(&mut connection, "orders", 3), 0);
    assert_eq!(create_topic(&mut connection, "orders", 3), code(ResponseError::TopicAlreadyExists));
    assert_eq!(create_topic(&mut connection, "bad name!", 1), code(ResponseError::InvalidTopicException));
    assert_eq!(create_topic(&mut connection, "zero", 0), code(ResponseError::InvalidPartitions));

    let (error, base) = produce(&mut connection, "orders", 1, build_batch(3, 10, 1, 1), -1);
    assert_eq!((error, base), (0, 0));
    let (error, base) = produce(&mut connection, "orders", 1, build_batch(2, 10, 1, 1), 1);
    assert_eq!((error, base), (0, 3));
    assert_eq!(produce(&mut connection, "orders", 1, build_batch(1, 3000, 1, 1), 1).0, code(ResponseError::MessageTooLarge));
    let mut corrupt = build_batch(2, 10, 1, 1);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x40;
    assert_eq!(produce(&mut connection, "orders", 1, corrupt, 1).0, code(ResponseError::CorruptMessage));
    assert_eq!(produce(&mut connection, "orders", 1, build_batch(1, 10, 1, 1), 2).0, code(ResponseError::InvalidRequiredAcks));
    assert_eq!(produce(&mut connection, "orders", 99, build_batch(1, 10, 1, 1), 1).0, code(ResponseError::UnknownTopicOrPartition));
    assert_eq!(produce(&mut connection, "nope", 0, build_batch(1, 10, 1, 1), 1).0, code(ResponseError::UnknownTopicOrPartition));

    // Nothing of the rejected batches reached the log.
    let (error, high_watermark, records) = fetch(&mut connection, "orders", 1, 0);
    assert_eq!((error, high_watermark), (0, 5));
    let batches = storage::batch::split_batches(&records).unwrap();
    assert_eq!(batches.len(), 2);
    assert_eq!(fetch(&mut connection, "orders", 1, 6).0, code(ResponseError::OffsetOutOfRange));
    assert_eq!(fetch(&mut connection, "orders", 1, 5).2.len(), 0, "at the end: empty, no error");

    let request = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![ListOffsetsTopic::default()
        .with_name(topic_name("orders"))
        .with_partitions(vec![
            ListOffsetsPartition::default().with_partition_index(1).with_timestamp(-2),
            ListOffsetsPartition::default().with_partition_index(1).with_timestamp(-1),
        ])]);
    let response: ListOffsetsResponse = connection.call(ApiKey::ListOffsets, 5, &request);
    let offsets: Vec<i64> = response.topics[0].partitions.iter().map(|p| p.offset).collect();
    assert_eq!(offsets, vec![0, 5]);

    // acks=0 gets no response: the next request's response is the next frame.
    let request = ProduceRequest::default().with_acks(0).with_timeout_ms(5000).with_topic_data(vec![TopicProduceData::default()
        .with_name(topic_name("orders"))
        .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(Bytes::from(build_batch(1, 1, 1, 1))))])]);
    let header = RequestHeader::default().with_request_api_key(ApiKey::Produce as i16).with_request_api_version(8).with_correlation_id(999);
    let mut body = bytes::BytesMut::new();
    kafka_protocol::protocol::Encodable::encode(&header, &mut body, 1).unwrap();
    kafka_protocol::protocol::Encodable::encode(&request, &mut body, 8).unwrap();
    connection.send_frame(&body);
    let _: ApiVersionsResponse = connection.call(ApiKey::ApiVersions, 2, &ApiVersionsRequest::default());
    assert_eq!(fetch(&mut connection, "orders", 0, 0).1, 1, "the acks=0 record was appended");
}

#[test]
fn bad_frames_close_only_their_connection() {
    let dir = TempDir::new("badframes");
    let mut broker = Broker::start(&dir.0, 2, &["socket.request.max.bytes=100000"]);
    let mut healthy = Connection::open(broker.address());
    let _: ApiVersionsResponse = healthy.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("oversized", 200_000i32.to_be_bytes().to_vec()),
        ("negative size", (-5i32).to_be_bytes().to_vec()),
        ("garbage", {
            let mut frame = 40i32.to_be_bytes().to_vec();
            frame.extend((0..40u8).map(|i| i.wrapping_mul(97)));
            frame
        }),
        ("unknown api key", {
            let mut frame = 12i32.to_be_bytes().to_vec();
            frame.extend_from_slice(&999i16.to_be_bytes());
            frame.extend_from_slice(&0i16.to_be_bytes());
            frame.extend_from_slice(&1i32.to_be_bytes());
            frame.extend_from_slice(&(-1i16).to_be_bytes());
            frame.extend_from_slice(&[0, 0]);
            frame
        }),
        ("truncated produce", {
            let mut frame = 5000i32.to_be_bytes().to_vec();
            frame.extend_from_slice(&(ApiKey::Produce as i16).to_be_bytes());
            frame.extend_from_slice(&8i16.to_be_bytes());
            frame
        }),
        ("short header", {
            let mut frame = 3i32.to_be_bytes().to_vec();
            frame.extend_from_slice(&[0, 1, 2]);
            frame
        }),
    ];
    for (name, bytes) in cases {
        let mut connection = Connection::open(broker.address());
        connection.send_raw(&bytes);
        if name == "truncated produce" {
            drop(connection); // the client goes away mid-frame
        } else {
            assert!(connection.is_closed_by_peer(), "{name}: the broker should close the connection");
        }
        assert!(broker.is_running(), "{name}: the broker died:\n{}", broker.log());
        let response: ApiVersionsResponse = healthy.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
        assert_eq!(response.error_code, 0, "{name}: other connections carry on");
    }
    assert_eq!(broker.stop(), 0);
}

/// A request header v1 (key, version, correlation id, client id) followed by `body`.
fn raw_request(api_key: ApiKey, version: i16, correlation_id: i32, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&(api_key as i16).to_be_bytes());
    frame.extend_from_slice(&version.to_be_bytes());
    frame.extend_from_slice(&correlation_id.to_be_bytes());
    frame.extend_from_slice(&4i16.to_be_bytes());
    frame.extend_from_slice(b"test");
    frame.extend_from_slice(body);
    frame
}

fn put_string(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as i16).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// Produce v0-v2 and Fetch v0-v3 are advertised (librdkafka 2.0 compresses gzip, snappy and lz4
/// only towards brokers that do). Produce v0-v2 with a RecordBatch v2 is appended; a message set
/// v1 is refused with UNSUPPORTED_FOR_MESSAGE_FORMAT; Fetch v0-v3 get UNSUPPORTED_VERSION per
/// partition, as Kafka answers when it does not down-convert.
#[test]
fn produce_v0_v2_and_fetch_v0_v3_are_served_by_hand() {
    let dir = TempDir::new("pre-v3");
    let broker = Broker::start(&dir.0, 2, &[]);
    let mut connection = Connection::open(broker.address());
    assert_eq!(create_topic(&mut connection, "old", 1), 0);

    let produce_old = |version: i16, records: &[u8]| {
        let mut body = Vec::new();
        body.extend_from_slice(&1i16.to_be_bytes()); // acks
        body.extend_from_slice(&5000i32.to_be_bytes()); // timeout
        body.extend_from_slice(&1i32.to_be_bytes());
        put_string(&mut body, "old");
        body.extend_from_slice(&1i32.to_be_bytes());
        body.extend_from_slice(&0i32.to_be_bytes()); // partition
        body.extend_from_slice(&(records.len() as i32).to_be_bytes());
        body.extend_from_slice(records);
        raw_request(ApiKey::Produce, version, 7, &body)
    };
    // Response: correlation id, [topic [partition, error, base offset, (v2) log append time]],
    // (v1+) throttle.
    let read_produce = |connection: &mut Connection, version: i16| {
        let frame = connection.read_frame().expect("a Produce response");
        assert_eq!(frame.len(), 4 + 4 + 5 + 4 + 14 + if version >= 2 { 8 } else { 0 } + if version >= 1 { 4 } else { 0 });
        assert_eq!(i32::from_be_bytes(frame[0..4].try_into().unwrap()), 7);
        let name_end = 4 + 4 + 2 + 3;
        let partition = &frame[name_end + 4..];
        let error = i16::from_be_bytes(partition[4..6].try_into().unwrap());
        let base_offset = i64::from_be_bytes(partition[6..14].try_into().unwrap());
        (error, base_offset)
    };
    for version in 0..=2i16 {
        connection.send_frame(&produce_old(version, &build_batch(3, 100, 1_000, 7)));
        assert_eq!(read_produce(&mut connection, version), (0, 3 * version as i64));
    }
    let mut message_set_v1 = build_batch(1, 100, 1_000, 7);
    message_set_v1[16] = 1;
    connection.send_frame(&produce_old(2, &message_set_v1));
    assert_eq!(read_produce(&mut connection, 2).0, code(ResponseError::UnsupportedForMessageFormat));
    let (error, high_watermark, _) = fetch(&mut connection, "old", 0, 0);
    assert_eq!((error, high_watermark), (0, 9), "the RecordBatch v2 produces landed, the v1 message set did not");

    for version in 0..=3i16 {
        let mut body = Vec::new();
        body.extend_from_slice(&(-1i32).to_be_bytes()); // replica id
        body.extend_from_slice(&0i32.to_be_bytes()); // max wait
        body.extend_from_slice(&0i32.to_be_bytes()); // min bytes
        if version == 3 {
            body.extend_from_slice(&(1i32 << 20).to_be_bytes()); // max bytes
        }
        body.extend_from_slice(&1i32.to_be_bytes());
        put_string(&mut body, "old");
        body.extend_from_slice(&1i32.to_be_bytes());
        body.extend_from_slice(&0i32.to_be_bytes()); // partition
        body.extend_from_slice(&0i64.to_be_bytes()); // fetch offset
        body.extend_from_slice(&(1i32 << 20).to_be_bytes());
        connection.send_frame(&raw_request(ApiKey::Fetch, version, 9, &body));
        let frame = connection.read_frame().expect("a Fetch response");
        // correlation id, (v1+) throttle, topic count, "old", partition count, partition, error
        let error_at = 4 + if version >= 1 { 4 } else { 0 } + 4 + 2 + 3 + 4 + 4;
        assert_eq!(i16::from_be_bytes(frame[error_at..error_at + 2].try_into().unwrap()), code(ResponseError::UnsupportedVersion));
    }
    // A truncated Fetch v3 closes only that connection.
    connection.send_frame(&raw_request(ApiKey::Fetch, 3, 10, &[0, 0, 0]));
    assert!(connection.is_closed_by_peer());
}
