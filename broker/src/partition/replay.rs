//! Replaying a partition from its log start: how the coordinators (groups, transactions) rebuild
//! their state from their internal topic when they take one of its partitions.
//!
//! Contract: `apply` sees the stored bytes of every batch from the log start offset to the log
//! end offset, in log order, under the partition's read lock (appends wait, as they must: the
//! coordinator serves nothing before its state is whole). A chunk that cannot be read is logged
//! and skipped, as the loaders always did: the rest of the log still counts.

use bytes::Bytes;

use super::table::PartitionTable;

/// The bytes one log read hands over at most.
const REPLAY_CHUNK_BYTES: u64 = 1 << 20;

/// Reads `topic`-`partition` (served by this broker) from its start, handing each slice's bytes
/// to `apply`. False when the partition cannot be served (logged).
pub async fn replay(table: &PartitionTable, topic: &str, partition: i32, mut apply: impl FnMut(Bytes)) -> bool {
    let handle = match table.serving(topic, partition).await {
        Ok(handle) => handle,
        Err(e) => {
            tracing::error!(topic, partition, error = ?e, "partition cannot be loaded");
            return false;
        }
    };
    let log = handle.log.read().await.expect("partition lock");
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let chunk = match log.read(offset, REPLAY_CHUNK_BYTES, i64::MAX, true).await {
            Ok(read) => read,
            Err(e) => {
                tracing::error!(topic, partition, offset, error = %e, "reading a partition to load it");
                break;
            }
        };
        let Some(last) = chunk.slices.last().map(|s| s.last_offset) else { break };
        for slice in chunk.slices {
            match slice.read_bytes().await {
                Ok(bytes) => apply(Bytes::from(bytes)),
                Err(e) => {
                    tracing::error!(topic, partition, error = %e, "reading a partition to load it");
                    break;
                }
            }
        }
        offset = last + 1;
    }
    true
}
