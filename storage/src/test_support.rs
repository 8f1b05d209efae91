//! Batch builders for tests and benchmarks, here once so every test builds batches the same way.
//! Not used by the broker itself.

use crate::record::write_varint;

/// A valid uncompressed RecordBatch v2 of `record_count` records with null keys and
/// `value_size_bytes` values filled with `fill`; record i has timestamp `base_timestamp + i`.
pub fn build_batch(record_count: i32, value_size_bytes: usize, base_timestamp: i64, fill: u8) -> Vec<u8> {
    let mut records = Vec::with_capacity(record_count as usize * (value_size_bytes + 16));
    let mut body = Vec::with_capacity(value_size_bytes + 16);
    for i in 0..record_count {
        body.clear();
        body.push(0u8); // attributes
        write_varint(&mut body, i as i64); // timestamp delta
        write_varint(&mut body, i as i64); // offset delta
        write_varint(&mut body, -1); // null key
        write_varint(&mut body, value_size_bytes as i64);
        body.extend(std::iter::repeat(fill).take(value_size_bytes));
        write_varint(&mut body, 0); // no headers
        write_varint(&mut records, body.len() as i64);
        records.extend_from_slice(&body);
    }
    let mut batch = vec![0u8; crate::batch::BATCH_HEADER_SIZE_BYTES];
    batch.extend(records);
    let length = (batch.len() - crate::batch::LOG_OVERHEAD_BYTES) as i32;
    batch[8..12].copy_from_slice(&length.to_be_bytes());
    batch[12..16].copy_from_slice(&(-1i32).to_be_bytes());
    batch[16] = crate::batch::MAGIC_V2 as u8;
    batch[23..27].copy_from_slice(&(record_count - 1).to_be_bytes());
    batch[27..35].copy_from_slice(&base_timestamp.to_be_bytes());
    batch[35..43].copy_from_slice(&(base_timestamp + record_count as i64 - 1).to_be_bytes());
    batch[43..51].copy_from_slice(&(-1i64).to_be_bytes());
    batch[51..53].copy_from_slice(&(-1i16).to_be_bytes());
    batch[53..57].copy_from_slice(&(-1i32).to_be_bytes());
    batch[57..61].copy_from_slice(&record_count.to_be_bytes());
    let crc = crate::batch::compute_crc(&batch);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    batch
}

/// The record codec of storage's own tests: uncompressed batches only (the broker's codec in
/// `broker/src/partition/record_codec.rs` opens every Kafka codec).
pub struct UncompressedCodec;

impl crate::record::RecordCodec for UncompressedCodec {
    fn decompress<'a>(&self, codec: i16, _payload: &'a [u8]) -> crate::Result<std::borrow::Cow<'a, [u8]>> {
        Err(crate::StorageError::CorruptBatch(format!("codec {codec} needs the broker's record codec")))
    }
    fn compress(&self, codec: i16, _records: &[u8]) -> crate::Result<Vec<u8>> {
        Err(crate::StorageError::CorruptBatch(format!("codec {codec} needs the broker's record codec")))
    }
}

/// A valid uncompressed RecordBatch v2 of keyed records (`None` value: a tombstone; `None` key:
/// keyless); record i has timestamp `base_timestamp + i`. With `producer`, (id, epoch, base sequence).
pub fn build_keyed_batch(records: &[(Option<&[u8]>, Option<&[u8]>)], base_timestamp: i64, producer: Option<(i64, i16, i32)>) -> Vec<u8> {
    let mut section = Vec::new();
    let mut body = Vec::new();
    for (i, (key, value)) in records.iter().enumerate() {
        body.clear();
        body.push(0u8);
        write_varint(&mut body, i as i64);
        write_varint(&mut body, i as i64);
        for field in [key, value] {
            match field {
                Some(bytes) => {
                    write_varint(&mut body, bytes.len() as i64);
                    body.extend_from_slice(bytes);
                }
                None => write_varint(&mut body, -1),
            }
        }
        write_varint(&mut body, 0);
        write_varint(&mut section, body.len() as i64);
        section.extend_from_slice(&body);
    }
    let count = records.len() as i32;
    let (producer_id, producer_epoch, base_sequence) = producer.unwrap_or((-1, -1, -1));
    let header = crate::batch::BatchHeader {
        base_offset: 0,
        batch_length: 0,
        partition_leader_epoch: -1,
        magic: crate::batch::MAGIC_V2,
        crc: 0,
        attributes: 0,
        last_offset_delta: count - 1,
        base_timestamp,
        max_timestamp: base_timestamp + count as i64 - 1,
        producer_id,
        producer_epoch,
        base_sequence,
        record_count: count,
    };
    crate::batch::assemble(&header, &section)
}

/// A transactional batch of `producer_id` (epoch 0): `record_count` keyless records, or with
/// `control` one COMMIT (true) / ABORT (false) marker record in Kafka's EndTransactionMarker format.
pub fn build_txn_batch(producer_id: i64, record_count: i32, control: Option<bool>, base_timestamp: i64) -> Vec<u8> {
    let marker_key = [0u8, 0, 0, control.map_or(0, |commit| commit as u8)];
    let marker_value = [0u8; 6];
    let records: Vec<(Option<&[u8]>, Option<&[u8]>)> = match control {
        Some(_) => vec![(Some(&marker_key[..]), Some(&marker_value[..]))],
        None => (0..record_count).map(|_| (None, Some(&b"txn"[..]))).collect(),
    };
    let mut batch = build_keyed_batch(&records, base_timestamp, Some((producer_id, 0, if control.is_some() { -1 } else { 0 })));
    let attributes: i16 = if control.is_some() { 0x30 } else { 0x10 }; // transactional (bit 4), control (bit 5)
    batch[21..23].copy_from_slice(&attributes.to_be_bytes());
    let crc = crate::batch::compute_crc(&batch);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    batch
}
