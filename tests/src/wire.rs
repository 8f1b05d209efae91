//! A minimal Kafka wire client for tests that need exact requests (error codes, bad frames):
//! encodes with the kafka-protocol crate's client side, over a blocking std TcpStream.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

pub struct Connection {
    stream: TcpStream,
    next_correlation_id: i32,
}

impl Connection {
    pub fn open(address: SocketAddr) -> Connection {
        let stream = TcpStream::connect(address).expect("connect to the broker");
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Connection { stream, next_correlation_id: 1 }
    }

    /// Sends `request` as `api_key` v`version` and decodes the response as `R`.
    pub fn call<Q: Encodable + HeaderVersion, R: Decodable + HeaderVersion>(&mut self, api_key: ApiKey, version: i16, request: &Q) -> R {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("e2e-wire")));
        let mut body = BytesMut::new();
        header.encode(&mut body, Q::header_version(version)).unwrap();
        request.encode(&mut body, version).unwrap();
        self.send_frame(&body);
        let mut response = self.read_frame().expect("a response");
        let response_header = ResponseHeader::decode(&mut response, R::header_version(version)).unwrap();
        assert_eq!(response_header.correlation_id, correlation_id);
        R::decode(&mut response, version).unwrap()
    }

    /// Produces one batch (acks=1, Produce v8) to `topic`-`partition` and checks it is taken.
    pub fn produce(&mut self, topic: &str, partition: i32, batch: Vec<u8>) {
        use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
        use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
        let request = ProduceRequest::default().with_acks(1).with_timeout_ms(5000).with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default().with_index(partition).with_records(Some(Bytes::from(batch)))])]);
        let response: ProduceResponse = self.call(ApiKey::Produce, 8, &request);
        assert_eq!(response.responses[0].partition_responses[0].error_code, 0, "produce to {topic}-{partition}");
    }

    pub fn local_port(&self) -> u16 {
        self.stream.local_addr().unwrap().port()
    }

    /// Writes a size-prefixed frame.
    pub fn send_frame(&mut self, body: &[u8]) {
        let mut frame = (body.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(body);
        self.stream.write_all(&frame).unwrap();
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next size-prefixed frame, or None when the broker closed the connection.
    pub fn read_frame(&mut self) -> Option<Bytes> {
        let mut size = [0u8; 4];
        if self.stream.read_exact(&mut size).is_err() {
            return None;
        }
        let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut body).ok()?;
        Some(Bytes::from(body))
    }

    /// True if the broker closed the connection (EOF) within the read timeout.
    pub fn is_closed_by_peer(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.stream.read(&mut byte), Ok(0)) || matches!(self.stream.read(&mut byte), Err(ref e) if e.kind() == std::io::ErrorKind::ConnectionReset)
    }
}
