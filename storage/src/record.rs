//! The records inside a RecordBatch v2, for the cleaner: walking them (offset, timestamp, key,
//! value) and rebuilding a batch with some of them. Storage knows the record layout (as it knows
//! the batch header) but not the codecs: compressed record sections are opened and closed by the
//! caller's `RecordCodec` (the broker's uses kafka-protocol's gzip, snappy, lz4 and zstd).
//!
//! Why not rebuild batches with a generic record encoder: a filtered batch must keep its base
//! offset and last offset delta (the producer's last sequence is derived from them) even when its
//! first and last records go, as Kafka's `MemoryRecords.filterTo` does. Records are copied byte
//! for byte here; only the timestamp delta changes, when the base timestamp becomes a delete horizon.
//!
//! Record layout (varints zigzag-encoded):
//! ```text
//! length varint | attributes i8 | timestamp_delta varlong | offset_delta varint |
//! key_length varint | key | value_length varint | value | header_count varint | headers
//! ```

use std::borrow::Cow;

use crate::batch::{self, BatchHeader, BATCH_HEADER_SIZE_BYTES};
use crate::error::{Result, StorageError};

/// One record as the cleaner sees it.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<&'a [u8]>,
    /// None: a tombstone.
    pub value: Option<&'a [u8]>,
}

/// Opens and closes compressed record sections; the rest is provided over storage's record layout.
pub trait RecordCodec {
    /// The records section of a batch in `codec` (1 gzip, 2 snappy, 3 lz4, 4 zstd), decompressed.
    fn decompress<'a>(&self, codec: i16, payload: &'a [u8]) -> Result<Cow<'a, [u8]>>;
    /// `records` (an uncompressed records section) compressed with `codec`.
    fn compress(&self, codec: i16, records: &[u8]) -> Result<Vec<u8>>;

    /// Calls `visit` for every record of `batch` (whole and CRC-valid), in offset order.
    fn for_each_record(&self, batch: &[u8], visit: &mut dyn FnMut(RecordView<'_>)) -> Result<()> {
        let header = BatchHeader::parse(batch)?;
        let payload = &batch[BATCH_HEADER_SIZE_BYTES..];
        let records = match header.compression_codec() {
            0 => Cow::Borrowed(payload),
            codec => self.decompress(codec, payload)?,
        };
        walk(&header, &records, |record, _| visit(record))
    }

    /// `batch` with only the records at `keep_offsets` (ascending, each one of the batch's; at
    /// least one), as Kafka's cleaner rebuilds a filtered batch: base offset, last offset delta,
    /// producer id, epoch and base sequence, leader epoch, codec, timestamp type and flags kept.
    /// With `delete_horizon_ms` the base timestamp becomes the horizon (KIP-534, attribute bit 6)
    /// and the records' timestamp deltas are rewritten against it, so their timestamps stay.
    fn retain(&self, batch: &[u8], keep_offsets: &[i64], delete_horizon_ms: Option<i64>) -> Result<Vec<u8>> {
        assert!(!keep_offsets.is_empty(), "an empty batch is batch::empty_copy");
        let header = BatchHeader::parse(batch)?;
        let payload = &batch[BATCH_HEADER_SIZE_BYTES..];
        let codec = header.compression_codec();
        let records = match codec {
            0 => Cow::Borrowed(payload),
            codec => self.decompress(codec, payload)?,
        };
        let base_timestamp = delete_horizon_ms.unwrap_or(header.base_timestamp);
        let mut out = Vec::with_capacity(records.len());
        let mut kept = 0usize;
        let mut max_timestamp = i64::MIN;
        walk(&header, &records, |record, raw| {
            if kept < keep_offsets.len() && keep_offsets[kept] == record.offset {
                kept += 1;
                max_timestamp = max_timestamp.max(record.timestamp_ms);
                rewrite_record(&mut out, raw, record.timestamp_ms - base_timestamp);
            }
        })?;
        if kept != keep_offsets.len() {
            return Err(StorageError::CorruptBatch(format!(
                "retain: {} of {} offsets are records of the batch at {}",
                kept,
                keep_offsets.len(),
                header.base_offset
            )));
        }
        let payload = match codec {
            0 => out,
            codec => self.compress(codec, &out)?,
        };
        let mut attributes = header.attributes;
        if delete_horizon_ms.is_some() {
            attributes |= batch::DELETE_HORIZON_BIT;
        }
        // LogAppendTime batches carry the append time as their max timestamp whatever remains.
        let max_timestamp = if header.timestamp_type() == batch::TimestampType::LogAppendTime { header.max_timestamp } else { max_timestamp };
        let rebuilt = BatchHeader { attributes, base_timestamp, max_timestamp, record_count: kept as i32, ..header };
        Ok(batch::assemble(&rebuilt, &payload))
    }
}

/// A record's pieces inside its section: the bytes after its timestamp delta (offset delta, key,
/// value, headers), copied unchanged when the record is kept.
pub struct RawRecord<'a> {
    attributes: u8,
    after_timestamp: &'a [u8],
}

fn rewrite_record(out: &mut Vec<u8>, raw: RawRecord<'_>, timestamp_delta: i64) {
    let mut body = Vec::with_capacity(raw.after_timestamp.len() + 11);
    body.push(raw.attributes);
    write_varint(&mut body, timestamp_delta);
    body.extend_from_slice(raw.after_timestamp);
    write_varint(out, body.len() as i64);
    out.extend_from_slice(&body);
}

/// Walks an uncompressed records section of a batch with `header`: each record with its raw bytes.
pub fn walk<'a>(header: &BatchHeader, records: &'a [u8], mut visit: impl FnMut(RecordView<'a>, RawRecord<'a>)) -> Result<()> {
    let corrupt = |what: &str| StorageError::CorruptBatch(format!("record {what} in the batch at offset {}", header.base_offset));
    let mut at = 0usize;
    for _ in 0..header.record_count {
        let length = read_varint(records, &mut at).ok_or_else(|| corrupt("length"))?;
        if length < 0 || at + length as usize > records.len() {
            return Err(corrupt("length past the section"));
        }
        let end = at + length as usize;
        let body = &records[at..end];
        let mut p = 0usize;
        let attributes = *body.first().ok_or_else(|| corrupt("attributes"))?;
        p += 1;
        let timestamp_delta = read_varint(body, &mut p).ok_or_else(|| corrupt("timestamp"))?;
        let after_timestamp = &body[p..];
        let offset_delta = read_varint(body, &mut p).ok_or_else(|| corrupt("offset delta"))?;
        let key = read_bytes(body, &mut p).map_err(|_| corrupt("key"))?;
        let value = read_bytes(body, &mut p).map_err(|_| corrupt("value"))?;
        let record = RecordView {
            offset: header.base_offset + offset_delta,
            timestamp_ms: header.base_timestamp + timestamp_delta,
            key,
            value,
        };
        visit(record, RawRecord { attributes, after_timestamp });
        at = end;
    }
    Ok(())
}

fn read_bytes<'a>(body: &'a [u8], at: &mut usize) -> std::result::Result<Option<&'a [u8]>, ()> {
    let length = read_varint(body, at).ok_or(())?;
    if length < 0 {
        return Ok(None);
    }
    let end = *at + length as usize;
    if end > body.len() {
        return Err(());
    }
    let bytes = &body[*at..end];
    *at = end;
    Ok(Some(bytes))
}

pub fn read_varint(bytes: &[u8], at: &mut usize) -> Option<i64> {
    let mut value: u64 = 0;
    let mut shift = 0;
    loop {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
    Some(((value >> 1) as i64) ^ -((value & 1) as i64))
}

pub fn write_varint(out: &mut Vec<u8>, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    loop {
        if zigzag < 0x80 {
            out.push(zigzag as u8);
            return;
        }
        out.push((zigzag as u8 & 0x7f) | 0x80);
        zigzag >>= 7;
    }
}
