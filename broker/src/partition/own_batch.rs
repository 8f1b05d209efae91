//! The batches the broker writes itself, not a producer: the coordinators' records
//! (`__consumer_offsets`, `__transaction_state`) and transaction markers. Uncompressed
//! RecordBatch v2 (Kafka writes its internal topics uncompressed), offsets from 0 (the log
//! assigns them), no sequence, create time `now_ms`.

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

/// Who the batch is from, as its header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOwner {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub transactional: bool,
    pub control: bool,
}

impl BatchOwner {
    /// No producer: the coordinators' plain records.
    pub const BROKER: BatchOwner = BatchOwner { producer_id: -1, producer_epoch: -1, transactional: false, control: false };
}

/// One batch of `records` (key, value), in order.
pub fn encode_own_batch(records: &[(Bytes, Option<Bytes>)], now_ms: i64, owner: BatchOwner) -> Result<Vec<u8>, String> {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(index, (key, value))| Record {
            transactional: owner.transactional,
            control: owner.control,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: owner.producer_id,
            producer_epoch: owner.producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: index as i64,
            sequence: -1,
            timestamp: now_ms,
            key: Some(key.clone()),
            value: value.clone(),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buffer = BytesMut::new();
    RecordBatchEncoder::encode(&mut buffer, &records, &RecordEncodeOptions { version: 2, compression: Compression::None })
        .map_err(|e| format!("encoding a batch: {e}"))?;
    Ok(buffer.to_vec())
}
