//! A topic's `compression.type` other than `producer`: a producer's batches in another codec are
//! stored recompressed, as Kafka's LogValidator does. Records keep everything but their codec:
//! keys, values, headers, timestamps, offset deltas, producer id, epoch and sequences (so
//! idempotence holds), the transactional flag. Batches already in the topic's codec are kept
//! byte for byte.
//!
//! Written over kafka-protocol's record decoder and encoder (which compress with flate2, snap,
//! lz4 and zstd at their default levels): a decode-and-encode, not a copy, so it costs CPU per
//! byte appended; `compression.type=producer` (Kafka's default) never comes here.

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{Compression, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions};
use storage::batch::{self, BatchHeader};
use storage::StorageError;

fn compression_of(codec: i16) -> Compression {
    match codec {
        1 => Compression::Gzip,
        2 => Compression::Snappy,
        3 => Compression::Lz4,
        4 => Compression::Zstd,
        _ => Compression::None,
    }
}

/// The batches of `records` in `codec`; None when every batch is in it already.
pub fn recompress(records: &[u8], codec: i16) -> Result<Option<Vec<u8>>, StorageError> {
    let batches = batch::split_batches(records)?;
    let mut headers = Vec::with_capacity(batches.len());
    for batch in &batches {
        headers.push(BatchHeader::parse(batch)?);
    }
    if headers.iter().all(|h| h.compression_codec() == codec || h.is_control()) {
        return Ok(None);
    }
    let corrupt = |e: anyhow::Error| StorageError::CorruptBatch(format!("recompressing to codec {codec}: {e}"));
    let mut out = BytesMut::with_capacity(records.len());
    for (bytes, header) in batches.iter().zip(&headers) {
        if header.compression_codec() == codec || header.is_control() {
            out.extend_from_slice(bytes);
            continue;
        }
        // The decoder checks the batch's CRC, so a corrupt batch is refused here, never
        // re-encoded with a fresh, valid checksum.
        let set = RecordBatchDecoder::decode(&mut Bytes::copy_from_slice(bytes)).map_err(corrupt)?;
        let options = RecordEncodeOptions { version: 2, compression: compression_of(codec) };
        let before = out.len();
        RecordBatchEncoder::encode(&mut out, set.records.iter(), &options).map_err(corrupt)?;
        // One batch in, one batch out: the producer's sequence range stays one batch.
        let written = batch::split_batches(&out[before..])?.len();
        if written != 1 {
            return Err(StorageError::CorruptBatch(format!("recompressing one batch gave {written}")));
        }
    }
    Ok(Some(out.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::{Record, TimestampType};

    fn records(count: i64, producer_id: i64, compression: Compression) -> Vec<u8> {
        let records: Vec<Record> = (0..count)
            .map(|i| Record {
                transactional: false,
                control: false,
                partition_leader_epoch: 0,
                producer_id,
                producer_epoch: 0,
                timestamp_type: TimestampType::Creation,
                offset: i,
                sequence: if producer_id >= 0 { 7 + i as i32 } else { -1 },
                timestamp: 1_000 + i,
                key: Some(Bytes::from(format!("key-{i}"))),
                value: Some(Bytes::from(vec![b'v'; 200])),
                headers: Default::default(),
                delete_horizon: false,
            })
            .collect();
        let mut out = BytesMut::new();
        RecordBatchEncoder::encode(&mut out, records.iter(), &RecordEncodeOptions { version: 2, compression }).unwrap();
        out.to_vec()
    }

    #[test]
    fn every_codec_round_trips_with_producer_state_kept() {
        for (codec, compression) in [(0, Compression::None), (1, Compression::Gzip), (2, Compression::Snappy), (3, Compression::Lz4), (4, Compression::Zstd)] {
            for source in [Compression::None, Compression::Gzip, Compression::Zstd] {
                let input = records(20, 42, source);
                let output = match recompress(&input, codec).unwrap() {
                    Some(output) => output,
                    None => {
                        assert_eq!(compression, source, "left alone only when already in the codec");
                        continue;
                    }
                };
                let header = batch::validate(&output, batch::Validation::FromProducer).unwrap();
                assert_eq!(header.compression_codec(), codec);
                assert_eq!((header.producer_id, header.base_sequence, header.record_count), (42, 7, 20));
                let set = RecordBatchDecoder::decode(&mut Bytes::from(output)).unwrap();
                assert_eq!(set.records.len(), 20);
                assert_eq!(set.records[19].key.as_deref(), Some(&b"key-19"[..]));
                assert_eq!(set.records[19].timestamp, 1_019);
            }
        }
    }

    #[test]
    fn a_corrupt_batch_is_refused_not_reencoded() {
        let mut input = records(3, -1, Compression::None);
        let last = input.len() - 1;
        input[last] ^= 0xff;
        assert!(matches!(recompress(&input, 1), Err(StorageError::CorruptBatch(_))));
    }
}
