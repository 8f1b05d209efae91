use crate::batch::TimestampType;

/// Per-partition log settings, named after Kafka's topic configs (broker defaults in brackets
/// come from `log.*` properties at the broker layer).
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes` [`log.segment.bytes`, 1 GiB]: roll the active segment past this size.
    pub segment_bytes: u64,
    /// `segment.ms` [`log.roll.ms`, 7 days]: roll the active segment once it is this old.
    pub segment_ms: i64,
    /// `index.interval.bytes` [`log.index.interval.bytes`, 4096]: bytes between index entries.
    pub index_interval_bytes: u64,
    /// `retention.ms` [`log.retention.ms`, 7 days]; negative = keep forever.
    pub retention_ms: i64,
    /// `retention.bytes` [`log.retention.bytes`, -1]; negative = no size limit.
    pub retention_bytes: i64,
    /// `flush.messages` [`log.flush.interval.messages`, i64::MAX]: fdatasync after this many records.
    pub flush_messages: i64,
    /// `flush.ms` [`log.flush.interval.ms`, i64::MAX]: fdatasync once unflushed data is this old.
    pub flush_ms: i64,
    /// `max.message.bytes` [`message.max.bytes`, 1048588]: largest batch accepted.
    pub max_message_bytes: usize,
    /// `message.timestamp.type` [`log.message.timestamp.type`, CreateTime].
    pub timestamp_type: TimestampType,
    /// `compression.type` [`compression.type`, producer]: the codec batches are stored in, as
    /// the batch header numbers it (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd); None keeps what
    /// the producer sent. The broker recompresses before appending; storage stores what it is
    /// given.
    pub compression_codec: Option<i16>,
    /// `file.delete.delay.ms` [`log.segment.delete.delay.ms`, 60000]: how long a deleted
    /// segment's files wait, renamed `.deleted`, before they are removed (`file_deletion`).
    pub file_delete_delay_ms: u64,
    /// `cleanup.policy` holds `compact` [`log.cleanup.policy`, delete]: the cleaner keeps the
    /// last record of every key (`cleaner`). Retention by time and size is the broker's to switch
    /// off for compact-only topics.
    pub compact: bool,
    /// `min.cleanable.dirty.ratio` [`log.cleaner.min.cleanable.ratio`, 0.5]: clean once the dirty
    /// part holds this share of the log's bytes.
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms` [`log.cleaner.min.compaction.lag.ms`, 0]: records younger than this
    /// (by their segment's max timestamp) are not cleaned yet.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms` [`log.cleaner.max.compaction.lag.ms`, i64::MAX]: a dirty record
    /// older than this forces a clean whatever the dirty ratio.
    pub max_compaction_lag_ms: i64,
    /// `delete.retention.ms` [`log.cleaner.delete.retention.ms`, 1 day]: how long a tombstone
    /// stays after the clean that first kept it.
    pub delete_retention_ms: i64,
    /// `segment.index.bytes` [`log.index.size.max.bytes`, 10 MiB]: the cleaner groups segments
    /// only while their indexes together stay within it.
    pub segment_index_bytes: u64,
}

/// `compression.type`'s values, as Kafka names them, and the codec each stores batches in.
pub fn parse_compression_type(value: &str) -> Option<Option<i16>> {
    match value {
        "producer" => Some(None),
        "uncompressed" | "none" => Some(Some(0)),
        "gzip" => Some(Some(1)),
        "snappy" => Some(Some(2)),
        "lz4" => Some(Some(3)),
        "zstd" => Some(Some(4)),
        _ => None,
    }
}

impl LogConfig {
    /// Kafka's `maxSegmentMs`: a compacted log's active segment also rolls once
    /// `max.compaction.lag.ms` old, since the active segment is never cleaned (without it a
    /// record could wait `segment.ms`, 7 days, for its clean whatever the lag says).
    pub fn max_segment_ms(&self) -> i64 {
        if self.compact && self.max_compaction_lag_ms > 0 {
            self.segment_ms.min(self.max_compaction_lag_ms)
        } else {
            self.segment_ms
        }
    }
}

pub const DEFAULT_SEGMENT_BYTES: u64 = 1 << 30;
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_048_588;
pub const DEFAULT_SEGMENT_INDEX_BYTES: u64 = 10 * 1024 * 1024;
const SEVEN_DAYS_MS: i64 = 7 * 24 * 60 * 60 * 1000;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            segment_ms: SEVEN_DAYS_MS,
            index_interval_bytes: 4096,
            retention_ms: SEVEN_DAYS_MS,
            retention_bytes: -1,
            flush_messages: i64::MAX,
            flush_ms: i64::MAX,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            timestamp_type: TimestampType::CreateTime,
            compression_codec: None,
            file_delete_delay_ms: 60_000,
            compact: false,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            delete_retention_ms: 24 * 60 * 60 * 1000,
            segment_index_bytes: DEFAULT_SEGMENT_INDEX_BYTES,
        }
    }
}
