//! The records the coordinator keeps in `__consumer_offsets`, in Apache Kafka's own formats so
//! Kafka's tools can read them: OffsetCommitKey v1 -> OffsetCommitValue v3 (one per group, topic
//! and partition) and GroupMetadataKey v2 -> GroupMetadataValue v3 (one per group). A null value
//! is a tombstone. The latest record for a key wins; the coordinator rebuilds its state by reading
//! its partitions from the start when the broker starts.
//!
//! Written by hand: kafka-protocol carries the client-facing messages only, and these are four
//! small fixed layouts (Kafka's group-coordinator module has the JSON schemas).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::records::RecordBatchDecoder;

use super::group::CommittedOffset;
use crate::partition::own_batch::{encode_own_batch, BatchOwner};
use crate::stored_reader::StoredReader as Reader;

const OFFSET_COMMIT_KEY_VERSION: i16 = 1;
const OFFSET_COMMIT_VALUE_VERSION: i16 = 3;
const GROUP_METADATA_KEY_VERSION: i16 = 2;
const GROUP_METADATA_VALUE_VERSION: i16 = 3;

/// A group's membership as stored: enough to resume a Stable group after a broker restart
/// without a rebalance, and to keep generation ids growing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredGroup {
    pub protocol_type: String,
    pub generation_id: i32,
    pub protocol_name: Option<String>,
    pub leader_id: Option<String>,
    pub state_timestamp_ms: i64,
    pub members: Vec<StoredMember>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, PartialEq, Eq)]
pub enum StoredRecord {
    Offset { group_id: String, topic: String, partition: i32, value: Option<CommittedOffset> },
    Group { group_id: String, value: Option<StoredGroup> },
}

fn put_string(buffer: &mut BytesMut, text: &str) {
    buffer.put_i16(text.len() as i16);
    buffer.put_slice(text.as_bytes());
}

fn put_nullable_string(buffer: &mut BytesMut, text: Option<&str>) {
    match text {
        Some(text) => put_string(buffer, text),
        None => buffer.put_i16(-1),
    }
}

fn put_bytes(buffer: &mut BytesMut, bytes: &[u8]) {
    buffer.put_i32(bytes.len() as i32);
    buffer.put_slice(bytes);
}

pub fn offset_key(group_id: &str, topic: &str, partition: i32) -> Bytes {
    let mut buffer = BytesMut::new();
    buffer.put_i16(OFFSET_COMMIT_KEY_VERSION);
    put_string(&mut buffer, group_id);
    put_string(&mut buffer, topic);
    buffer.put_i32(partition);
    buffer.freeze()
}

pub fn offset_value(offset: &CommittedOffset) -> Bytes {
    let mut buffer = BytesMut::new();
    buffer.put_i16(OFFSET_COMMIT_VALUE_VERSION);
    buffer.put_i64(offset.offset);
    buffer.put_i32(offset.leader_epoch);
    put_string(&mut buffer, &offset.metadata);
    buffer.put_i64(offset.commit_timestamp_ms);
    buffer.freeze()
}

pub fn group_key(group_id: &str) -> Bytes {
    let mut buffer = BytesMut::new();
    buffer.put_i16(GROUP_METADATA_KEY_VERSION);
    put_string(&mut buffer, group_id);
    buffer.freeze()
}

pub fn group_value(group: &StoredGroup) -> Bytes {
    let mut buffer = BytesMut::new();
    buffer.put_i16(GROUP_METADATA_VALUE_VERSION);
    put_string(&mut buffer, &group.protocol_type);
    buffer.put_i32(group.generation_id);
    put_nullable_string(&mut buffer, group.protocol_name.as_deref());
    put_nullable_string(&mut buffer, group.leader_id.as_deref());
    buffer.put_i64(group.state_timestamp_ms);
    buffer.put_i32(group.members.len() as i32);
    for member in &group.members {
        put_string(&mut buffer, &member.member_id);
        put_nullable_string(&mut buffer, member.group_instance_id.as_deref());
        put_string(&mut buffer, &member.client_id);
        put_string(&mut buffer, &member.client_host);
        buffer.put_i32(member.rebalance_timeout_ms);
        buffer.put_i32(member.session_timeout_ms);
        put_bytes(&mut buffer, &member.subscription);
        put_bytes(&mut buffer, &member.assignment);
    }
    buffer.freeze()
}

pub fn decode_record(key: Bytes, value: Option<Bytes>) -> Result<StoredRecord, String> {
    let mut key = Reader(key);
    match key.i16()? {
        0 | 1 => {
            let group_id = key.string(false)?;
            let topic = key.string(false)?;
            let partition = key.i32()?;
            let value = match value {
                None => None,
                Some(value) => Some(decode_offset_value(value)?),
            };
            Ok(StoredRecord::Offset { group_id, topic, partition, value })
        }
        2 => {
            let group_id = key.string(false)?;
            let value = match value {
                None => None,
                Some(value) => Some(decode_group_value(value)?),
            };
            Ok(StoredRecord::Group { group_id, value })
        }
        other => Err(format!("unknown __consumer_offsets key version {other}")),
    }
}

fn decode_offset_value(value: Bytes) -> Result<CommittedOffset, String> {
    let mut value = Reader(value);
    let version = value.i16()?;
    if !(0..=3).contains(&version) {
        return Err(format!("unknown offset commit value version {version}"));
    }
    let offset = value.i64()?;
    let leader_epoch = if version >= 3 { value.i32()? } else { -1 };
    let metadata = value.string(false)?;
    let commit_timestamp_ms = value.i64()?;
    Ok(CommittedOffset { offset, leader_epoch, metadata, commit_timestamp_ms })
}

fn decode_group_value(value: Bytes) -> Result<StoredGroup, String> {
    let mut value = Reader(value);
    let version = value.i16()?;
    if !(0..=3).contains(&version) {
        return Err(format!("unknown group metadata value version {version}"));
    }
    let protocol_type = value.string(false)?;
    let generation_id = value.i32()?;
    let protocol_name = value.nullable_string()?;
    let leader_id = value.nullable_string()?;
    let state_timestamp_ms = if version >= 2 { value.i64()? } else { -1 };
    let count = value.i32()?;
    let mut members = Vec::new();
    for _ in 0..count.max(0) {
        let member_id = value.string(false)?;
        let group_instance_id = if version >= 3 { value.nullable_string()? } else { None };
        let client_id = value.string(false)?;
        let client_host = value.string(false)?;
        let rebalance_timeout_ms = if version >= 1 { value.i32()? } else { -1 };
        let session_timeout_ms = value.i32()?;
        let rebalance_timeout_ms = if rebalance_timeout_ms < 0 { session_timeout_ms } else { rebalance_timeout_ms };
        let subscription = value.bytes()?;
        let assignment = value.bytes()?;
        members.push(StoredMember {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms,
            session_timeout_ms,
            subscription,
            assignment,
        });
    }
    Ok(StoredGroup { protocol_type, generation_id, protocol_name, leader_id, state_timestamp_ms, members })
}

/// One uncompressed v2 batch holding `records` (key, value or tombstone), offsets from 0: the
/// log assigns the real ones.
pub fn encode_batch(records: &[(Bytes, Option<Bytes>)], now_ms: i64) -> Result<Vec<u8>, String> {
    encode(records, now_ms, None)
}

/// The same, as a transactional batch of `producer` (id, epoch): a TxnOffsetCommit, pending
/// until the transaction's marker in this partition (Kafka writes them so).
pub fn encode_transactional_batch(records: &[(Bytes, Option<Bytes>)], now_ms: i64, producer: (i64, i16)) -> Result<Vec<u8>, String> {
    encode(records, now_ms, Some(producer))
}

fn encode(records: &[(Bytes, Option<Bytes>)], now_ms: i64, producer: Option<(i64, i16)>) -> Result<Vec<u8>, String> {
    let owner = match producer {
        Some((producer_id, producer_epoch)) => BatchOwner { producer_id, producer_epoch, transactional: true, control: false },
        None => BatchOwner::BROKER,
    };
    encode_own_batch(records, now_ms, owner).map_err(|e| format!("__consumer_offsets: {e}"))
}

/// What a stored batch holds, transactions included (the loader's view).
#[derive(Debug, PartialEq, Eq)]
pub enum LoggedBatch {
    /// Records; `producer_id` is Some for a transactional batch (a TxnOffsetCommit, pending
    /// until its marker).
    Records { producer_id: Option<i64>, records: Vec<(Bytes, Option<Bytes>)> },
    /// A transaction marker of `producer_id`.
    Marker { producer_id: i64, commit: bool },
}

/// The batches of stored bytes, in log order, with their transactional meaning.
pub fn decode_logged_batches(mut bytes: Bytes) -> Result<Vec<LoggedBatch>, String> {
    let mut batches = Vec::new();
    while bytes.has_remaining() {
        let set = RecordBatchDecoder::decode(&mut bytes).map_err(|e| format!("decoding a __consumer_offsets batch: {e}"))?;
        let Some(first) = set.records.first() else { continue };
        let (producer_id, transactional, control) = (first.producer_id, first.transactional, first.control);
        if control {
            // The COMMIT / ABORT marker: key (version, type 0 abort / 1 commit).
            let commit = first.key.as_ref().is_some_and(|k| k.len() >= 4 && i16::from_be_bytes([k[2], k[3]]) == 1);
            batches.push(LoggedBatch::Marker { producer_id, commit });
            continue;
        }
        let records = set.records.into_iter().filter_map(|r| Some((r.key?, r.value))).collect();
        batches.push(LoggedBatch::Records { producer_id: transactional.then_some(producer_id), records });
    }
    Ok(batches)
}

/// The (key, value) pairs of stored batches, in log order. Records without a key are skipped.
/// (The loader reads `decode_logged_batches`, which keeps the transactional meaning.)
#[cfg(test)]
pub fn decode_batches(mut bytes: Bytes) -> Result<Vec<(Bytes, Option<Bytes>)>, String> {
    let mut records = Vec::new();
    while bytes.has_remaining() {
        let set = RecordBatchDecoder::decode(&mut bytes).map_err(|e| format!("decoding a __consumer_offsets batch: {e}"))?;
        if set.records.first().map(|r| r.control).unwrap_or(false) {
            continue;
        }
        records.extend(set.records.into_iter().filter_map(|r| Some((r.key?, r.value))));
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_records_round_trip() {
        let offset = CommittedOffset { offset: 42, leader_epoch: 3, metadata: "m".into(), commit_timestamp_ms: 1700 };
        let decoded = decode_record(offset_key("g", "t", 7), Some(offset_value(&offset))).unwrap();
        assert_eq!(decoded, StoredRecord::Offset { group_id: "g".into(), topic: "t".into(), partition: 7, value: Some(offset) });
        let tombstone = decode_record(offset_key("g", "t", 7), None).unwrap();
        assert!(matches!(tombstone, StoredRecord::Offset { value: None, .. }));
    }

    #[test]
    fn group_records_round_trip_through_a_batch() {
        let group = StoredGroup {
            protocol_type: "consumer".into(),
            generation_id: 9,
            protocol_name: Some("range".into()),
            leader_id: Some("a-1".into()),
            state_timestamp_ms: 5,
            members: vec![StoredMember {
                member_id: "a-1".into(),
                group_instance_id: Some("a".into()),
                client_id: "a".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300_000,
                session_timeout_ms: 45_000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"assign"),
            }],
        };
        let batch = encode_batch(&[(group_key("g"), Some(group_value(&group))), (group_key("h"), None)], 1).unwrap();
        // The encoder may cut the records into several batches; each must be valid.
        for one in storage::batch::split_batches(&batch).unwrap() {
            storage::batch::validate(one, storage::batch::Validation::FromProducer).unwrap();
        }
        let records = decode_batches(Bytes::from(batch)).unwrap();
        assert_eq!(records.len(), 2);
        let (key, value) = records[0].clone();
        assert_eq!(decode_record(key, value).unwrap(), StoredRecord::Group { group_id: "g".into(), value: Some(group) });
        let (key, value) = records[1].clone();
        assert_eq!(decode_record(key, value).unwrap(), StoredRecord::Group { group_id: "h".into(), value: None });
    }

    #[test]
    fn truncated_values_are_errors() {
        let value = offset_value(&CommittedOffset { offset: 1, leader_epoch: -1, metadata: String::new(), commit_timestamp_ms: 0 });
        assert!(decode_record(offset_key("g", "t", 0), Some(value.slice(..value.len() - 1))).is_err());
        assert!(decode_record(Bytes::from_static(&[0, 9]), None).is_err());
    }
}
