//! The broker's `storage::record::RecordCodec`: opens and closes compressed record sections with
//! kafka-protocol's codecs (gzip, snappy in xerial framing, lz4 frames, zstd), so the cleaner and
//! the compacted-topic key check see the records of every batch. Storage walks and rebuilds the
//! records itself (it keeps a filtered batch's base and last offset, which kafka-protocol's
//! RecordBatchEncoder recomputes from the records left).

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Decompressor, Gzip, Lz4, Snappy, Zstd};
use storage::record::RecordCodec;
use storage::StorageError;

pub struct KafkaRecordCodec;

fn corrupt(codec: i16, what: &str) -> impl FnOnce(anyhow::Error) -> StorageError + '_ {
    move |e| StorageError::CorruptBatch(format!("{what} codec {codec}: {e}"))
}

impl RecordCodec for KafkaRecordCodec {
    fn decompress<'a>(&self, codec: i16, payload: &'a [u8]) -> storage::Result<Cow<'a, [u8]>> {
        let mut input = Bytes::copy_from_slice(payload);
        let take = |buf: &mut Bytes| Ok(buf.to_vec());
        let records = match codec {
            0 => return Ok(Cow::Borrowed(payload)),
            1 => Gzip::decompress(&mut input, take),
            2 => Snappy::decompress(&mut input, take),
            3 => Lz4::decompress(&mut input, take),
            4 => Zstd::decompress(&mut input, take),
            other => return Err(StorageError::CorruptBatch(format!("unknown compression codec {other}"))),
        }
        .map_err(corrupt(codec, "decompressing"))?;
        Ok(Cow::Owned(records))
    }

    fn compress(&self, codec: i16, records: &[u8]) -> storage::Result<Vec<u8>> {
        let mut out = BytesMut::with_capacity(records.len() / 2 + 64);
        let put = |buf: &mut BytesMut| {
            buf.put_slice(records);
            Ok(())
        };
        match codec {
            0 => out.put_slice(records),
            1 => Gzip::compress(&mut out, put).map_err(corrupt(codec, "compressing"))?,
            2 => Snappy::compress(&mut out, put).map_err(corrupt(codec, "compressing"))?,
            3 => Lz4::compress(&mut out, put).map_err(corrupt(codec, "compressing"))?,
            4 => Zstd::compress(&mut out, put).map_err(corrupt(codec, "compressing"))?,
            other => return Err(StorageError::CorruptBatch(format!("unknown compression codec {other}"))),
        }
        Ok(out.to_vec())
    }
}

/// Indexes (within their batch, as Kafka's RecordError counts) of the records without a key in
/// `records` (a produce partition's batches, checked already): a compacted topic refuses them.
pub fn keyless_records(records: &[u8]) -> storage::Result<Vec<i32>> {
    let mut keyless = Vec::new();
    for batch in storage::batch::split_batches(records)? {
        let header = storage::batch::BatchHeader::parse(batch)?;
        if header.is_control() {
            continue;
        }
        let mut index = 0i32;
        KafkaRecordCodec.for_each_record(batch, &mut |record| {
            if record.key.is_none() {
                keyless.push(index);
            }
            index += 1;
        })?;
    }
    Ok(keyless)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::{Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

    fn batch(compression: Compression, keys: &[Option<&str>], producer_id: i64) -> Vec<u8> {
        let records: Vec<Record> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id,
                producer_epoch: 0,
                timestamp_type: TimestampType::Creation,
                offset: 100 + i as i64,
                sequence: if producer_id >= 0 { 5 + i as i32 } else { -1 },
                timestamp: 1_000 + i as i64,
                key: key.map(|k| Bytes::from(k.to_string())),
                value: if i % 3 == 2 { None } else { Some(Bytes::from(vec![b'v'; 300])) },
                headers: Default::default(),
            })
            .collect();
        let mut out = BytesMut::new();
        RecordBatchEncoder::encode(&mut out, records.iter(), &RecordEncodeOptions { version: 2, compression }).unwrap();
        out.to_vec()
    }

    #[test]
    fn every_codec_keeps_offsets_producer_fields_and_timestamps_when_filtered() {
        for (codec, compression) in [(0, Compression::None), (1, Compression::Gzip), (2, Compression::Snappy), (3, Compression::Lz4), (4, Compression::Zstd)] {
            let input = batch(compression, &[Some("a"), Some("b"), Some("c"), Some("d"), Some("e")], 42);
            let mut seen = Vec::new();
            KafkaRecordCodec.for_each_record(&input, &mut |r| seen.push((r.offset, r.key.map(<[u8]>::to_vec), r.value.is_none()))).unwrap();
            assert_eq!(seen.len(), 5, "codec {codec}");
            assert_eq!(seen[2], (102, Some(b"c".to_vec()), true));
            // Keep the middle only: base and last offset stay, so does the producer's sequence.
            let kept = KafkaRecordCodec.retain(&input, &[102], Some(9_999)).unwrap();
            let header = storage::batch::validate(&kept, storage::batch::Validation::FromLog).unwrap();
            assert_eq!(header.compression_codec(), codec);
            assert_eq!((header.base_offset, header.last_offset(), header.record_count), (100, 104, 1));
            assert_eq!((header.producer_id, header.base_sequence), (42, 5));
            assert_eq!(header.delete_horizon_ms(), Some(9_999));
            let set = RecordBatchDecoder::decode(&mut Bytes::from(kept)).unwrap();
            assert_eq!(set.records.len(), 1);
            assert_eq!((set.records[0].offset, set.records[0].timestamp), (102, 1_002), "timestamps survive the horizon");
            assert_eq!(set.records[0].key.as_deref(), Some(&b"c"[..]));
        }
    }

    #[test]
    fn keyless_records_are_found_in_compressed_batches() {
        // Idempotent, so kafka-protocol's encoder keeps the four records in one batch.
        let records = batch(Compression::Lz4, &[Some("a"), None, Some("c"), None], 7);
        assert_eq!(keyless_records(&records).unwrap(), vec![1, 3]);
        assert!(keyless_records(&batch(Compression::Zstd, &[Some("a")], -1)).unwrap().is_empty());
    }
}
