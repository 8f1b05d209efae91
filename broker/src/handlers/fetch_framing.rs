//! The Fetch response (v4-v17), written by hand: the one response not encoded with kafka-protocol.
//! kafka-protocol wants every partition's records as bytes in memory; the zero-copy path sends
//! them straight from segment files (splice), so the response is laid out as framing pieces with
//! record runs between them, and its size prefix is computed from the runs' lengths without
//! reading them. The unit tests check it byte for byte against kafka-protocol's encoding.

use bytes::{BufMut, Bytes, BytesMut};

/// How many bytes a run of records is, without touching them.
pub trait RecordsLength {
    fn length_bytes(&self) -> u64;
}

impl RecordsLength for Bytes {
    fn length_bytes(&self) -> u64 {
        self.len() as u64
    }
}

/// A run of whole batches as the connection sends it: bytes already in memory (the copy path),
/// or a region of a segment file that the splice sender moves to the socket without reading it.
pub enum Records {
    InMemory(Bytes),
    InFile(storage::FileRegion),
}

impl RecordsLength for Records {
    fn length_bytes(&self) -> u64 {
        match self {
            Records::InMemory(bytes) => bytes.len() as u64,
            Records::InFile(region) => region.length_bytes,
        }
    }
}

pub struct PartitionFrame<R> {
    pub partition_index: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// (producer id, first offset) of every aborted transaction overlapping the records: a
    /// read_committed fetch's (maybe empty); None (null, as Kafka) for read_uncommitted.
    pub aborted_transactions: Option<Vec<(i64, i64)>>,
    /// KIP-951 (v16+, set beside NOT_LEADER_OR_FOLLOWER): the partition's leader and leader
    /// epoch as this broker knows them, so the client need not ask Metadata first.
    pub current_leader: Option<(i32, i32)>,
    /// Whole batches, sent back to back as the partition's records field.
    pub records: Vec<R>,
}

pub struct TopicFrame<R> {
    /// v4-v12 name the topic, v13+ give its id (KIP-516).
    pub name: Bytes,
    pub topic_id: [u8; 16],
    pub partitions: Vec<PartitionFrame<R>>,
}

/// KIP-951 (v16+): the address of a leader named in a partition's `current_leader`, on the
/// listener the fetch came in on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeEndpoint {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

/// A response frame in sending order: the size prefix and framing in `Framing`, records between.
pub enum Piece<R> {
    Framing(Bytes),
    Records(R),
}

/// The response's top level beside its topics (v7+, KIP-227): a session error, or the fetch
/// session's id (0: none).
#[derive(Clone, Copy, Default)]
pub struct SessionFields {
    pub error_code: i16,
    pub session_id: i32,
}

/// The newest Fetch version framed here.
pub const MAX_VERSION: i16 = 17;

/// Lays out a Fetch response of `version` (4..=MAX_VERSION), size prefix and header included.
/// `node_endpoints` (v16+) are those of the leaders named in `current_leader`s.
pub fn frame<R: RecordsLength>(
    version: i16,
    correlation_id: i32,
    session: SessionFields,
    topics: Vec<TopicFrame<R>>,
    node_endpoints: &[NodeEndpoint],
) -> Vec<Piece<R>> {
    assert!((4..=MAX_VERSION).contains(&version), "Fetch v{version} framing is not hand-written");
    let flexible = version >= 12;
    let mut pieces = Vec::new();
    let mut buffer = BytesMut::with_capacity(256);
    buffer.put_i32(0); // size, filled in at the end
    buffer.put_i32(correlation_id);
    if flexible {
        put_unsigned_varint(&mut buffer, 0); // response header tagged fields
    }
    buffer.put_i32(0); // throttle_time_ms
    if version >= 7 {
        buffer.put_i16(session.error_code);
        buffer.put_i32(session.session_id);
    }
    put_array_length(&mut buffer, flexible, topics.len());
    let mut records_bytes = 0u64;
    for topic in topics {
        if version >= 13 {
            buffer.put_slice(&topic.topic_id);
        } else if flexible {
            put_unsigned_varint(&mut buffer, topic.name.len() as u32 + 1);
            buffer.put_slice(&topic.name);
        } else {
            buffer.put_i16(topic.name.len() as i16);
            buffer.put_slice(&topic.name);
        }
        put_array_length(&mut buffer, flexible, topic.partitions.len());
        for partition in topic.partitions {
            buffer.put_i32(partition.partition_index);
            buffer.put_i16(partition.error_code);
            buffer.put_i64(partition.high_watermark);
            buffer.put_i64(partition.last_stable_offset);
            if version >= 5 {
                buffer.put_i64(partition.log_start_offset);
            }
            match &partition.aborted_transactions {
                None => put_null_array(&mut buffer, flexible),
                Some(aborted) => {
                    put_array_length(&mut buffer, flexible, aborted.len());
                    for &(producer_id, first_offset) in aborted {
                        buffer.put_i64(producer_id);
                        buffer.put_i64(first_offset);
                        if flexible {
                            put_unsigned_varint(&mut buffer, 0); // aborted transaction tagged fields
                        }
                    }
                }
            }
            if version >= 11 {
                buffer.put_i32(-1); // preferred_read_replica
            }
            let length: u64 = partition.records.iter().map(RecordsLength::length_bytes).sum();
            records_bytes += length;
            if flexible {
                put_unsigned_varint(&mut buffer, u32::try_from(length + 1).expect("records under 4 GiB"));
            } else {
                buffer.put_i32(i32::try_from(length).expect("records under 2 GiB"));
            }
            if length > 0 {
                pieces.push(Piece::Framing(buffer.split().freeze()));
                pieces.extend(partition.records.into_iter().map(Piece::Records));
            }
            match partition.current_leader.filter(|_| flexible) {
                // Tag 1, LeaderIdAndEpoch: leader id, leader epoch, its own (empty) tagged fields.
                Some((leader_id, leader_epoch)) => {
                    put_unsigned_varint(&mut buffer, 1); // one tagged field
                    put_unsigned_varint(&mut buffer, 1); // its tag
                    put_unsigned_varint(&mut buffer, 9); // its size
                    buffer.put_i32(leader_id);
                    buffer.put_i32(leader_epoch);
                    put_unsigned_varint(&mut buffer, 0);
                }
                None if flexible => put_unsigned_varint(&mut buffer, 0), // partition tagged fields
                None => {}
            }
        }
        if flexible {
            put_unsigned_varint(&mut buffer, 0); // topic tagged fields
        }
    }
    if version >= 16 && !node_endpoints.is_empty() {
        // Tag 0, NodeEndpoints: a compact array, written aside first for its size.
        let mut endpoints = BytesMut::new();
        put_array_length(&mut endpoints, true, node_endpoints.len());
        for node in node_endpoints {
            endpoints.put_i32(node.node_id);
            put_compact_string(&mut endpoints, Some(&node.host));
            endpoints.put_i32(node.port);
            put_compact_string(&mut endpoints, node.rack.as_deref());
            put_unsigned_varint(&mut endpoints, 0); // node endpoint tagged fields
        }
        put_unsigned_varint(&mut buffer, 1); // one tagged field
        put_unsigned_varint(&mut buffer, 0); // its tag
        put_unsigned_varint(&mut buffer, endpoints.len() as u32);
        buffer.put_slice(&endpoints);
    } else if flexible {
        put_unsigned_varint(&mut buffer, 0); // response tagged fields
    }
    pieces.push(Piece::Framing(buffer.freeze()));

    let framing_bytes: u64 =
        pieces.iter().map(|piece| if let Piece::Framing(bytes) = piece { bytes.len() as u64 } else { 0 }).sum();
    let size = i32::try_from(framing_bytes + records_bytes - 4).expect("a fetch response under 2 GiB");
    let Some(Piece::Framing(first)) = pieces.first_mut() else { unreachable!("the header is the first piece") };
    let mut with_size = BytesMut::from(&first[..]);
    with_size[0..4].copy_from_slice(&size.to_be_bytes());
    *first = with_size.freeze();
    pieces
}

fn put_array_length(buffer: &mut BytesMut, flexible: bool, length: usize) {
    if flexible {
        put_unsigned_varint(buffer, length as u32 + 1);
    } else {
        buffer.put_i32(length as i32);
    }
}

fn put_null_array(buffer: &mut BytesMut, flexible: bool) {
    if flexible {
        put_unsigned_varint(buffer, 0);
    } else {
        buffer.put_i32(-1);
    }
}

/// A compact (nullable) string: length + 1 as a varint, 0 for null.
fn put_compact_string(buffer: &mut BytesMut, text: Option<&str>) {
    match text {
        Some(text) => {
            put_unsigned_varint(buffer, text.len() as u32 + 1);
            buffer.put_slice(text.as_bytes());
        }
        None => put_unsigned_varint(buffer, 0),
    }
}

fn put_unsigned_varint(buffer: &mut BytesMut, mut value: u32) {
    while value >= 0x80 {
        buffer.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    buffer.put_u8(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{AbortedTransaction, FetchableTopicResponse, LeaderIdAndEpoch, PartitionData};
    use kafka_protocol::messages::{BrokerId, FetchResponse, ProducerId, ResponseHeader, TopicName};
    use kafka_protocol::protocol::{Encodable, StrBytes};

    /// All pieces in one buffer, to compare with kafka-protocol's encoding.
    fn concatenate(pieces: Vec<Piece<Bytes>>) -> BytesMut {
        let mut frame = BytesMut::new();
        for piece in pieces {
            match piece {
                Piece::Framing(bytes) | Piece::Records(bytes) => frame.put_slice(&bytes),
            }
        }
        frame
    }

    fn sample(records_a: &[Bytes], records_b: &[Bytes]) -> Vec<TopicFrame<Bytes>> {
        vec![
            TopicFrame {
                name: Bytes::from_static(b"orders"),
                partitions: vec![
                    PartitionFrame {
                        partition_index: 0,
                        error_code: 0,
                        high_watermark: 1000,
                        last_stable_offset: 990,
                        log_start_offset: 7,
                        aborted_transactions: Some(vec![(42, 12), (43, 900)]),
                        current_leader: None,
                        records: records_a.to_vec(),
                    },
                    PartitionFrame {
                        partition_index: 3,
                        error_code: 6,
                        high_watermark: -1,
                        last_stable_offset: -1,
                        log_start_offset: -1,
                        aborted_transactions: None,
                        current_leader: Some((2, 7)),
                        records: Vec::new(),
                    },
                ],
                topic_id: [7; 16],
            },
            TopicFrame {
                name: Bytes::from(vec![b'x'; 200]), // a name whose compact length needs two bytes
                partitions: vec![PartitionFrame {
                    partition_index: 1,
                    error_code: 0,
                    high_watermark: 5,
                    last_stable_offset: 5,
                    log_start_offset: 0,
                    aborted_transactions: Some(Vec::new()),
                    current_leader: None,
                    records: records_b.to_vec(),
                }],
                topic_id: [9; 16],
            },
        ]
    }

    /// What kafka-protocol encodes for the same response.
    fn reference(version: i16, correlation_id: i32, session: SessionFields, topics: &[TopicFrame<Bytes>], nodes: &[NodeEndpoint]) -> Vec<u8> {
        let responses = topics
            .iter()
            .map(|topic| {
                let partitions = topic
                    .partitions
                    .iter()
                    .map(|p| {
                        PartitionData::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(p.error_code)
                            .with_high_watermark(p.high_watermark)
                            .with_last_stable_offset(p.last_stable_offset)
                            .with_log_start_offset(p.log_start_offset)
                            .with_aborted_transactions(p.aborted_transactions.as_ref().map(|list| {
                                list.iter()
                                    .map(|&(producer_id, first_offset)| {
                                        AbortedTransaction::default().with_producer_id(ProducerId(producer_id)).with_first_offset(first_offset)
                                    })
                                    .collect()
                            }))
                            .with_current_leader(match p.current_leader {
                                // Only flexible versions have the (tagged) field.
                                Some((id, epoch)) if version >= 12 => LeaderIdAndEpoch::default().with_leader_id(BrokerId(id)).with_leader_epoch(epoch),
                                _ => LeaderIdAndEpoch::default(),
                            })
                            .with_records(Some(p.records.iter().flat_map(|r| r.iter().copied()).collect::<Vec<u8>>().into()))
                    })
                    .collect();
                let name = StrBytes::from_utf8(topic.name.clone()).unwrap();
                FetchableTopicResponse::default()
                    .with_topic(TopicName(if version >= 13 { StrBytes::default() } else { name }))
                    .with_topic_id(uuid::Uuid::from_bytes(topic.topic_id))
                    .with_partitions(partitions)
            })
            .collect();
        let mut body = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(correlation_id)
            .encode(&mut body, if version >= 12 { 1 } else { 0 })
            .unwrap();
        FetchResponse::default()
            .with_error_code(session.error_code)
            .with_session_id(session.session_id)
            .with_responses(responses)
            .with_node_endpoints(if version >= 16 { nodes.iter().map(node_endpoint).collect() } else { Vec::new() })
            .encode(&mut body, version)
            .unwrap();
        let mut frame = (body.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        frame
    }

    fn node_endpoint(node: &NodeEndpoint) -> kafka_protocol::messages::fetch_response::NodeEndpoint {
        kafka_protocol::messages::fetch_response::NodeEndpoint::default()
            .with_node_id(BrokerId(node.node_id))
            .with_host(StrBytes::from_string(node.host.clone()))
            .with_port(node.port)
            .with_rack(node.rack.clone().map(StrBytes::from_string))
    }

    #[test]
    fn matches_kafka_protocol_for_every_version() {
        let records_a = [Bytes::from(vec![1u8; 300]), Bytes::from(vec![2u8; 50])];
        let records_b = [Bytes::from(vec![3u8; 70])];
        let nodes = [
            NodeEndpoint { node_id: 2, host: "127.0.0.1".to_string(), port: 9093, rack: None },
            NodeEndpoint { node_id: 3, host: "b3.example".to_string(), port: 9094, rack: Some("r1".to_string()) },
        ];
        for version in 4..=MAX_VERSION {
            // v4-v6 have no session fields: the handler answers them sessionless.
            let session = if version >= 7 { SessionFields { error_code: 0, session_id: 12345 } } else { SessionFields::default() };
            let framed = concatenate(frame(version, 42, session, sample(&records_a, &records_b), &nodes));
            assert_eq!(&framed[..], &reference(version, 42, session, &sample(&records_a, &records_b), &nodes)[..], "Fetch v{version}");
            // No records anywhere: one framing piece.
            let pieces = frame(version, 7, SessionFields::default(), sample(&[], &[]), &[]);
            assert_eq!(pieces.len(), 1);
            assert_eq!(&concatenate(pieces)[..], &reference(version, 7, SessionFields::default(), &sample(&[], &[]), &[])[..], "Fetch v{version}, empty");
            // A session error: no topics.
            let error = if version >= 7 { SessionFields { error_code: 70, session_id: 0 } } else { SessionFields::default() };
            assert_eq!(
                &concatenate(frame::<Bytes>(version, 8, error, Vec::new(), &[]))[..],
                &reference(version, 8, error, &[], &[])[..],
                "Fetch v{version}, session error"
            );
        }
    }

    #[test]
    fn records_stay_separate_pieces() {
        let records = [Bytes::from(vec![1u8; 10]), Bytes::from(vec![2u8; 20])];
        let pieces = frame(11, 1, SessionFields::default(), sample(&records, &[]), &[]);
        let runs: Vec<usize> = pieces
            .iter()
            .filter_map(|piece| if let Piece::Records(bytes) = piece { Some(bytes.len()) } else { None })
            .collect();
        assert_eq!(runs, vec![10, 20]);
    }
}
