//! RecordBatch v2 (magic 2) header: the unit the log stores, byte for byte as the wire carries it.
//!
//! Layout (all big-endian), offsets from the start of the batch:
//! ```text
//!  0 base_offset i64          -- rewritten by the broker, outside the CRC
//!  8 batch_length i32         -- bytes after this field
//! 12 partition_leader_epoch i32 -- rewritten by the leader, outside the CRC
//! 16 magic i8 (= 2)
//! 17 crc u32                  -- CRC-32C of bytes 21..end
//! 21 attributes i16           -- bits 0-2 compression, 3 timestamp type, 4 transactional, 5 control
//! 23 last_offset_delta i32
//! 27 base_timestamp i64
//! 35 max_timestamp i64
//! 43 producer_id i64
//! 51 producer_epoch i16
//! 53 base_sequence i32
//! 57 record_count i32
//! 61 records ...
//! ```

use crate::error::StorageError;
use crate::record::read_varint;

pub const BATCH_HEADER_SIZE_BYTES: usize = 61;
/// The smallest prefix that tells where a batch ends: base offset + length.
pub const LOG_OVERHEAD_BYTES: usize = 12;
pub const MAGIC_V2: i8 = 2;
const CRC_OFFSET: usize = 17;
const ATTRIBUTES_OFFSET: usize = 21;
const TIMESTAMP_TYPE_LOG_APPEND_TIME_BIT: i16 = 1 << 3;
const TRANSACTIONAL_BIT: i16 = 1 << 4;
const CONTROL_BIT: i16 = 1 << 5;
/// KIP-534: the batch's base timestamp is the delete horizon of its tombstones.
pub const DELETE_HORIZON_BIT: i16 = 1 << 6;
pub const NO_PRODUCER_ID: i64 = -1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// The decoded fixed header of one batch. Cheap to copy; the bytes stay where they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

fn i16_at(bytes: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([bytes[at], bytes[at + 1]])
}
fn i32_at(bytes: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(bytes[at..at + 4].try_into().unwrap())
}
fn i64_at(bytes: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(bytes[at..at + 8].try_into().unwrap())
}

impl BatchHeader {
    /// Parses the fixed header. `bytes` must hold at least `BATCH_HEADER_SIZE_BYTES`.
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader, StorageError> {
        if bytes.len() < BATCH_HEADER_SIZE_BYTES {
            return Err(StorageError::CorruptBatch(format!(
                "batch shorter than its {BATCH_HEADER_SIZE_BYTES}-byte header: {} bytes",
                bytes.len()
            )));
        }
        Ok(BatchHeader {
            base_offset: i64_at(bytes, 0),
            batch_length: i32_at(bytes, 8),
            partition_leader_epoch: i32_at(bytes, 12),
            magic: bytes[16] as i8,
            crc: u32::from_be_bytes(bytes[17..21].try_into().unwrap()),
            attributes: i16_at(bytes, 21),
            last_offset_delta: i32_at(bytes, 23),
            base_timestamp: i64_at(bytes, 27),
            max_timestamp: i64_at(bytes, 35),
            producer_id: i64_at(bytes, 43),
            producer_epoch: i16_at(bytes, 51),
            base_sequence: i32_at(bytes, 53),
            record_count: i32_at(bytes, 57),
        })
    }

    /// Whole size of the batch on disk and on the wire.
    pub fn size_bytes(&self) -> usize {
        LOG_OVERHEAD_BYTES + self.batch_length as usize
    }
    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }
    pub fn compression_codec(&self) -> i16 {
        self.attributes & 0x07
    }
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & TIMESTAMP_TYPE_LOG_APPEND_TIME_BIT != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }
    /// KIP-534: when the cleaner first kept this batch's tombstones, it stored the time after
    /// which they may go in the base timestamp and set the attribute bit.
    pub fn delete_horizon_ms(&self) -> Option<i64> {
        (self.attributes & DELETE_HORIZON_BIT != 0).then_some(self.base_timestamp)
    }
    pub fn has_producer_id(&self) -> bool {
        self.producer_id != NO_PRODUCER_ID
    }
    /// Sequence number of the last record, wrapping at i32::MAX as Kafka does.
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence < 0 {
            return self.base_sequence;
        }
        let last = self.base_sequence as i64 + self.last_offset_delta as i64;
        (last % (i32::MAX as i64 + 1)) as i32
    }
}

/// The CRC-32C the batch should carry, computed over attributes..end.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[ATTRIBUTES_OFFSET..])
}

/// How strictly `validate` checks a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validation {
    /// A batch from a producer: also requires `record_count == last_offset_delta + 1`
    /// (a producer never sends gaps; only compaction creates them).
    FromProducer,
    /// A batch read back from our own log or copied from a leader: gaps are legal.
    FromLog,
}

/// Checks one whole batch: `batch` must be exactly one batch (length field agrees with the slice).
/// Returns the parsed header. Every failure maps to CORRUPT_MESSAGE.
pub fn validate(batch: &[u8], validation: Validation) -> Result<BatchHeader, StorageError> {
    let header = BatchHeader::parse(batch)?;
    if header.batch_length < (BATCH_HEADER_SIZE_BYTES - LOG_OVERHEAD_BYTES) as i32 {
        return Err(StorageError::CorruptBatch(format!(
            "batch length {} is smaller than the header",
            header.batch_length
        )));
    }
    if header.size_bytes() != batch.len() {
        return Err(StorageError::CorruptBatch(format!(
            "batch length field says {} bytes, the batch holds {}",
            header.size_bytes(),
            batch.len()
        )));
    }
    if header.magic != MAGIC_V2 {
        return Err(StorageError::CorruptBatch(format!(
            "unsupported magic {} (only RecordBatch v2 is stored)",
            header.magic
        )));
    }
    let computed = compute_crc(batch);
    if computed != header.crc {
        return Err(StorageError::CorruptBatch(format!(
            "CRC mismatch: batch carries {:#010x}, bytes give {:#010x}",
            header.crc, computed
        )));
    }
    if header.last_offset_delta < 0 || header.record_count < 0 {
        return Err(StorageError::CorruptBatch(format!(
            "negative last offset delta {} or record count {}",
            header.last_offset_delta, header.record_count
        )));
    }
    if validation == Validation::FromProducer {
        if header.record_count == 0 {
            return Err(StorageError::CorruptBatch("batch holds no records".into()));
        }
        if header.record_count as i64 != header.last_offset_delta as i64 + 1 {
            return Err(StorageError::CorruptBatch(format!(
                "record count {} disagrees with last offset delta {}",
                header.record_count, header.last_offset_delta
            )));
        }
    }
    Ok(header)
}

/// A whole batch from header fields and its (possibly compressed) records section: lengths and
/// CRC computed here. `header.batch_length` and `header.crc` are ignored.
pub fn assemble(header: &BatchHeader, payload: &[u8]) -> Vec<u8> {
    let mut batch = Vec::with_capacity(BATCH_HEADER_SIZE_BYTES + payload.len());
    batch.extend_from_slice(&header.base_offset.to_be_bytes());
    let length = (BATCH_HEADER_SIZE_BYTES - LOG_OVERHEAD_BYTES + payload.len()) as i32;
    batch.extend_from_slice(&length.to_be_bytes());
    batch.extend_from_slice(&header.partition_leader_epoch.to_be_bytes());
    batch.push(header.magic as u8);
    batch.extend_from_slice(&[0; 4]);
    batch.extend_from_slice(&header.attributes.to_be_bytes());
    batch.extend_from_slice(&header.last_offset_delta.to_be_bytes());
    batch.extend_from_slice(&header.base_timestamp.to_be_bytes());
    batch.extend_from_slice(&header.max_timestamp.to_be_bytes());
    batch.extend_from_slice(&header.producer_id.to_be_bytes());
    batch.extend_from_slice(&header.producer_epoch.to_be_bytes());
    batch.extend_from_slice(&header.base_sequence.to_be_bytes());
    batch.extend_from_slice(&header.record_count.to_be_bytes());
    debug_assert_eq!(batch.len(), BATCH_HEADER_SIZE_BYTES);
    batch.extend_from_slice(payload);
    let crc = compute_crc(&batch);
    batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    batch
}

/// Kafka's `writeEmptyHeader`: the batch without records, keeping its offsets (base and last),
/// producer fields, timestamps and flags, uncompressed. The cleaner keeps such a batch where the
/// offsets or a producer's last sequence must survive although every record went.
pub fn empty_copy(header: &BatchHeader) -> Vec<u8> {
    let empty = BatchHeader { attributes: header.attributes & !0x07, record_count: 0, ..*header };
    assemble(&empty, &[])
}

/// Rewrites the base offset in place (outside the CRC, so the CRC stays valid).
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Rewrites the partition leader epoch in place (outside the CRC).
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[12..16].copy_from_slice(&epoch.to_be_bytes());
}

/// Marks the batch LogAppendTime with `now_ms` as its max timestamp, as Kafka's LogValidator does,
/// and recomputes the CRC (both fields are inside it).
pub fn set_log_append_time(batch: &mut [u8], now_ms: i64) {
    let attributes = i16_at(batch, ATTRIBUTES_OFFSET) | TIMESTAMP_TYPE_LOG_APPEND_TIME_BIT;
    batch[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[35..43].copy_from_slice(&now_ms.to_be_bytes());
    let crc = compute_crc(batch);
    batch[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

/// `set_log_append_time` for a batch whose header is a separate copy (the append path rewrites
/// headers without copying the records): the CRC runs over the header's tail, then `body`
/// (the batch's bytes after its header).
pub fn set_log_append_time_split(header: &mut [u8; BATCH_HEADER_SIZE_BYTES], body: &[u8], now_ms: i64) {
    let attributes = i16_at(header, ATTRIBUTES_OFFSET) | TIMESTAMP_TYPE_LOG_APPEND_TIME_BIT;
    header[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    header[35..43].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&header[ATTRIBUTES_OFFSET..]), body);
    header[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Splits a buffer holding consecutive batches (a produce request's `records`) into whole batches.
/// Fails if the buffer does not end on a batch boundary.
pub fn split_batches(mut bytes: &[u8]) -> Result<Vec<&[u8]>, StorageError> {
    let mut batches = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < LOG_OVERHEAD_BYTES {
            return Err(StorageError::CorruptBatch(format!(
                "{} trailing bytes do not hold a batch",
                bytes.len()
            )));
        }
        let length = i32_at(bytes, 8);
        if length < 0 || LOG_OVERHEAD_BYTES + length as usize > bytes.len() {
            return Err(StorageError::CorruptBatch(format!(
                "batch length {length} runs past the {} bytes given",
                bytes.len()
            )));
        }
        let (batch, rest) = bytes.split_at(LOG_OVERHEAD_BYTES + length as usize);
        batches.push(batch);
        bytes = rest;
    }
    Ok(batches)
}

/// For ListOffsets by timestamp: the offset and timestamp of the first record in `batch` whose
/// timestamp is at least `target_ms`. Uncompressed batches are walked record by record; for compressed ones the
/// records would have to be decompressed, so the batch's base offset is returned (a consumer then
/// sees a few earlier records of that one batch, never misses one).
pub fn first_offset_at_or_after(batch: &[u8], header: &BatchHeader, target_ms: i64) -> (i64, i64) {
    let whole_batch = (header.base_offset, header.max_timestamp);
    if header.compression_codec() != 0 || header.timestamp_type() == TimestampType::LogAppendTime {
        return whole_batch;
    }
    let mut at = BATCH_HEADER_SIZE_BYTES;
    for _ in 0..header.record_count {
        let start = at;
        let Some(length) = read_varint(batch, &mut at) else { break };
        let body_start = at;
        at += 1; // attributes
        let Some(timestamp_delta) = read_varint(batch, &mut at) else { break };
        let Some(offset_delta) = read_varint(batch, &mut at) else { break };
        if header.base_timestamp + timestamp_delta >= target_ms {
            return (header.base_offset + offset_delta, header.base_timestamp + timestamp_delta);
        }
        at = body_start + length as usize;
        if at <= start || at > batch.len() {
            break;
        }
    }
    whole_batch
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_support::build_batch;

    #[test]
    fn a_built_batch_validates_and_reports_its_fields() {
        let batch = build_batch(5, 10, 1000, 7);
        let header = validate(&batch, Validation::FromProducer).unwrap();
        assert_eq!(header.record_count, 5);
        assert_eq!(header.last_offset_delta, 4);
        assert_eq!(header.max_timestamp, 1004);
        assert_eq!(header.size_bytes(), batch.len());
    }

    #[test]
    fn every_flipped_bit_after_the_length_is_caught() {
        let batch = build_batch(3, 20, 0, 1);
        for byte in 12..batch.len() {
            // base offset and partition leader epoch sit outside the CRC by design.
            if (12..16).contains(&byte) {
                continue;
            }
            for bit in 0..8 {
                let mut corrupted = batch.clone();
                corrupted[byte] ^= 1 << bit;
                assert!(validate(&corrupted, Validation::FromProducer).is_err(), "byte {byte} bit {bit}");
            }
        }
    }

    #[test]
    fn count_must_match_last_offset_delta_from_a_producer_only() {
        let mut batch = build_batch(3, 1, 0, 1);
        batch[57..61].copy_from_slice(&2i32.to_be_bytes());
        let crc = compute_crc(&batch);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(validate(&batch, Validation::FromProducer).is_err());
        assert!(validate(&batch, Validation::FromLog).is_ok());
    }

    #[test]
    fn log_append_time_keeps_the_batch_valid() {
        let mut batch = build_batch(2, 1, 5, 1);
        let mut header: [u8; BATCH_HEADER_SIZE_BYTES] = batch[..BATCH_HEADER_SIZE_BYTES].try_into().unwrap();
        set_log_append_time_split(&mut header, &batch[BATCH_HEADER_SIZE_BYTES..], 99);
        set_log_append_time(&mut batch, 99);
        assert_eq!(&header[..], &batch[..BATCH_HEADER_SIZE_BYTES], "the split form writes the same header");
        let header = validate(&batch, Validation::FromProducer).unwrap();
        assert_eq!(header.timestamp_type(), TimestampType::LogAppendTime);
        assert_eq!(header.max_timestamp, 99);
    }

    #[test]
    fn split_rejects_a_torn_tail() {
        let mut bytes = build_batch(1, 1, 0, 1);
        bytes.extend(build_batch(2, 1, 0, 1));
        assert_eq!(split_batches(&bytes).unwrap().len(), 2);
        assert!(split_batches(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn timestamp_lookup_walks_records() {
        let batch = build_batch(10, 3, 100, 1);
        let header = validate(&batch, Validation::FromLog).unwrap();
        assert_eq!(first_offset_at_or_after(&batch, &header, 0), (0, 100));
        assert_eq!(first_offset_at_or_after(&batch, &header, 104), (4, 104));
        assert_eq!(first_offset_at_or_after(&batch, &header, 109), (9, 109));
    }
}
