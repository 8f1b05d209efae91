//! The records of `__transaction_state`, in Apache Kafka's format so its tools read them
//! (kafka-dump-log --transaction-log-decoder): key TransactionLogKey v0 (version, transactional
//! id), value TransactionLogValue v0 (what Kafka 3.9 writes at transaction.version 0: producer id,
//! epoch, timeout, state, partitions by topic, last update and start timestamps). A null value is
//! a tombstone (an expired id). Value v1 (flexible, Kafka 4's transaction.version 2) is read too.
//!
//! Written by hand as `groups/offsets_topic.rs` does: kafka-protocol has no schemas for these.

use std::collections::BTreeSet;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::stored_reader::StoredReader as Reader;
use super::state::{Transit, TxnState, NO_PRODUCER_EPOCH, NO_PRODUCER_ID};

const KEY_VERSION: i16 = 0;
const VALUE_VERSION: i16 = 0;

pub fn key(transactional_id: &str) -> Bytes {
    let mut buffer = BytesMut::with_capacity(4 + transactional_id.len());
    buffer.put_i16(KEY_VERSION);
    buffer.put_i16(transactional_id.len() as i16);
    buffer.put_slice(transactional_id.as_bytes());
    buffer.freeze()
}

/// TransactionLogValue v0. Empty stores null partitions, as Kafka does.
pub fn value(transit: &Transit) -> Bytes {
    let mut buffer = BytesMut::with_capacity(64);
    buffer.put_i16(VALUE_VERSION);
    buffer.put_i64(transit.producer_id);
    buffer.put_i16(transit.producer_epoch);
    buffer.put_i32(transit.timeout_ms);
    buffer.put_i8(transit.state.id());
    if transit.state == TxnState::Empty {
        buffer.put_i32(-1);
    } else {
        let topics = by_topic(&transit.partitions);
        buffer.put_i32(topics.len() as i32);
        for (topic, partitions) in topics {
            buffer.put_i16(topic.len() as i16);
            buffer.put_slice(topic.as_bytes());
            buffer.put_i32(partitions.len() as i32);
            for partition in partitions {
                buffer.put_i32(partition);
            }
        }
    }
    buffer.put_i64(transit.last_update_timestamp_ms);
    buffer.put_i64(transit.start_timestamp_ms);
    buffer.freeze()
}

fn by_topic(partitions: &BTreeSet<(String, i32)>) -> Vec<(&str, Vec<i32>)> {
    let mut topics: Vec<(&str, Vec<i32>)> = Vec::new();
    for (topic, partition) in partitions {
        match topics.last_mut() {
            Some((last, list)) if *last == topic.as_str() => list.push(*partition),
            _ => topics.push((topic, vec![*partition])),
        }
    }
    topics
}

pub fn decode_key(key: Bytes) -> Result<String, String> {
    let mut key = Reader(key);
    match key.i16()? {
        0 => key.string(false),
        other => Err(format!("unknown __transaction_state key version {other}")),
    }
}

/// None for a tombstone.
pub fn decode_value(value: Option<Bytes>) -> Result<Option<Transit>, String> {
    let Some(value) = value else { return Ok(None) };
    let mut value = Reader(value);
    let version = value.i16()?;
    let flexible = match version {
        0 => false,
        1 => true,
        other => return Err(format!("unknown __transaction_state value version {other}")),
    };
    let producer_id = value.i64()?;
    let producer_epoch = value.i16()?;
    let timeout_ms = value.i32()?;
    let state_id = value.i8()?;
    let state = TxnState::from_id(state_id).ok_or_else(|| format!("unknown transaction state {state_id}"))?;
    let mut partitions = BTreeSet::new();
    if let Some(topics) = value.array_length(flexible)? {
        for _ in 0..topics {
            let topic = value.string(flexible)?;
            let count = value.array_length(flexible)?.unwrap_or(0);
            for _ in 0..count {
                partitions.insert((topic.clone(), value.i32()?));
            }
            if flexible {
                value.tagged_fields()?;
            }
        }
    }
    let last_update_timestamp_ms = value.i64()?;
    let start_timestamp_ms = value.i64()?;
    let mut previous_producer_id = NO_PRODUCER_ID;
    if flexible {
        for (tag, mut bytes) in value.tagged_fields()? {
            if tag == 0 && bytes.remaining() >= 8 {
                previous_producer_id = bytes.get_i64();
            }
        }
    }
    if state == TxnState::Empty {
        partitions.clear();
    }
    Ok(Some(Transit {
        producer_id,
        previous_producer_id,
        producer_epoch,
        last_producer_epoch: NO_PRODUCER_EPOCH,
        timeout_ms,
        state,
        partitions,
        start_timestamp_ms,
        last_update_timestamp_ms,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transit(state: TxnState, partitions: &[(&str, i32)]) -> Transit {
        Transit {
            producer_id: 1000,
            previous_producer_id: NO_PRODUCER_ID,
            producer_epoch: 3,
            last_producer_epoch: NO_PRODUCER_EPOCH,
            timeout_ms: 60_000,
            state,
            partitions: partitions.iter().map(|(t, p)| (t.to_string(), *p)).collect(),
            start_timestamp_ms: 5,
            last_update_timestamp_ms: 6,
        }
    }

    #[test]
    fn round_trip() {
        assert_eq!(decode_key(key("my-txn")).unwrap(), "my-txn");
        for (state, partitions) in [
            (TxnState::Empty, vec![]),
            (TxnState::Ongoing, vec![("a", 0), ("a", 2), ("b", 1)]),
            (TxnState::PrepareCommit, vec![("a", 0)]),
            (TxnState::CompleteAbort, vec![]),
        ] {
            let stored = transit(state, &partitions);
            assert_eq!(decode_value(Some(value(&stored))).unwrap(), Some(stored));
        }
        assert_eq!(decode_value(None).unwrap(), None);
    }

    #[test]
    fn kafka_bytes() {
        // TransactionLogKey v0 "t" and TransactionLogValue v0 of an Ongoing transaction on a-0,
        // laid out field by field as Kafka's generated serializer writes them.
        assert_eq!(&key("t")[..], &[0, 0, 0, 1, b't']);
        let bytes = value(&transit(TxnState::Ongoing, &[("a", 0)]));
        let mut expected = vec![0, 0];
        expected.extend(1000i64.to_be_bytes());
        expected.extend(3i16.to_be_bytes());
        expected.extend(60_000i32.to_be_bytes());
        expected.push(1);
        expected.extend(1i32.to_be_bytes());
        expected.extend([0, 1, b'a']);
        expected.extend(1i32.to_be_bytes());
        expected.extend(0i32.to_be_bytes());
        expected.extend(6i64.to_be_bytes());
        expected.extend(5i64.to_be_bytes());
        assert_eq!(&bytes[..], &expected[..]);
        // Empty stores null partitions.
        let empty = value(&transit(TxnState::Empty, &[]));
        assert_eq!(&empty[17..21], &(-1i32).to_be_bytes());
    }

    #[test]
    fn flexible_v1_is_read() {
        let mut bytes = vec![0, 1];
        bytes.extend(1000i64.to_be_bytes());
        bytes.extend(3i16.to_be_bytes());
        bytes.extend(60_000i32.to_be_bytes());
        bytes.push(1);
        bytes.push(2); // one topic (compact: n + 1)
        bytes.extend([2, b'a']); // "a"
        bytes.push(2); // one partition
        bytes.extend(4i32.to_be_bytes());
        bytes.push(0); // the topic's tagged fields
        bytes.extend(6i64.to_be_bytes());
        bytes.extend(5i64.to_be_bytes());
        bytes.push(1); // one tagged field: PreviousProducerId
        bytes.extend([0, 8]);
        bytes.extend(999i64.to_be_bytes());
        let decoded = decode_value(Some(Bytes::from(bytes))).unwrap().unwrap();
        assert_eq!(decoded.partitions, [("a".to_string(), 4)].into_iter().collect());
        assert_eq!(decoded.previous_producer_id, 999);
    }

    #[test]
    fn truncated_is_an_error() {
        let bytes = value(&transit(TxnState::Ongoing, &[("a", 0)]));
        assert!(decode_value(Some(bytes.slice(..bytes.len() - 1))).is_err());
        assert!(decode_key(Bytes::from_static(&[0, 5])).is_err());
    }
}
