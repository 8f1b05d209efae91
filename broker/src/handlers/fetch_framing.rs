//! The Fetch response (v4-v12), written by hand: the one response not encoded with kafka-protocol.
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
    /// Whole batches, sent back to back as the partition's records field.
    pub records: Vec<R>,
}

pub struct TopicFrame<R> {
    pub name: Bytes,
    pub partitions: Vec<PartitionFrame<R>>,
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

/// Lays out a Fetch response of `version` (4..=12), size prefix and header included.
pub fn frame<R: RecordsLength>(version: i16, correlation_id: i32, session: SessionFields, topics: Vec<TopicFrame<R>>) -> Vec<Piece<R>> {
    assert!((4..=12).contains(&version), "Fetch v{version} framing is not hand-written");
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
        if flexible {
            put_unsigned_varint(&mut buffer, topic.name.len() as u32 + 1);
        } else {
            buffer.put_i16(topic.name.len() as i16);
        }
        buffer.put_slice(&topic.name);
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
            if flexible {
                put_unsigned_varint(&mut buffer, 0); // partition tagged fields
            }
        }
        if flexible {
            put_unsigned_varint(&mut buffer, 0); // topic tagged fields
        }
    }
    if flexible {
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
    use kafka_protocol::messages::fetch_response::{AbortedTransaction, FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{FetchResponse, ProducerId, ResponseHeader, TopicName};
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
                        records: records_a.to_vec(),
                    },
                    PartitionFrame {
                        partition_index: 3,
                        error_code: 6,
                        high_watermark: -1,
                        last_stable_offset: -1,
                        log_start_offset: -1,
                        aborted_transactions: None,
                        records: Vec::new(),
                    },
                ],
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
                    records: records_b.to_vec(),
                }],
            },
        ]
    }

    /// What kafka-protocol encodes for the same response.
    fn reference(version: i16, correlation_id: i32, session: SessionFields, topics: &[TopicFrame<Bytes>]) -> Vec<u8> {
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
                            .with_records(Some(p.records.iter().flat_map(|r| r.iter().copied()).collect::<Vec<u8>>().into()))
                    })
                    .collect();
                let name = StrBytes::from_utf8(topic.name.clone()).unwrap();
                FetchableTopicResponse::default().with_topic(TopicName(name)).with_partitions(partitions)
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
            .encode(&mut body, version)
            .unwrap();
        let mut frame = (body.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        frame
    }

    #[test]
    fn matches_kafka_protocol_for_every_version() {
        let records_a = [Bytes::from(vec![1u8; 300]), Bytes::from(vec![2u8; 50])];
        let records_b = [Bytes::from(vec![3u8; 70])];
        for version in 4..=12 {
            // v4-v6 have no session fields: the handler answers them sessionless.
            let session = if version >= 7 { SessionFields { error_code: 0, session_id: 12345 } } else { SessionFields::default() };
            let framed = concatenate(frame(version, 42, session, sample(&records_a, &records_b)));
            assert_eq!(&framed[..], &reference(version, 42, session, &sample(&records_a, &records_b))[..], "Fetch v{version}");
            // No records anywhere: one framing piece.
            let pieces = frame(version, 7, SessionFields::default(), sample(&[], &[]));
            assert_eq!(pieces.len(), 1);
            assert_eq!(&concatenate(pieces)[..], &reference(version, 7, SessionFields::default(), &sample(&[], &[]))[..], "Fetch v{version}, empty");
            // A session error: no topics.
            let error = if version >= 7 { SessionFields { error_code: 70, session_id: 0 } } else { SessionFields::default() };
            assert_eq!(&concatenate(frame::<Bytes>(version, 8, error, Vec::new()))[..], &reference(version, 8, error, &[])[..], "Fetch v{version}, session error");
        }
    }

    #[test]
    fn records_stay_separate_pieces() {
        let records = [Bytes::from(vec![1u8; 10]), Bytes::from(vec![2u8; 20])];
        let pieces = frame(11, 1, SessionFields::default(), sample(&records, &[]));
        let runs: Vec<usize> = pieces
            .iter()
            .filter_map(|piece| if let Piece::Records(bytes) = piece { Some(bytes.len()) } else { None })
            .collect();
        assert_eq!(runs, vec![10, 20]);
    }
}
