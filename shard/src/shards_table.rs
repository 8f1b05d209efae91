//! Which shard owns a partition: a pure function of (topic, partition, shard count), so every
//! shard computes the same answer without asking anyone and without a lock, and the answer is
//! the same after a restart with the same shard count.
//!
//! The mapping: CRC-32C of the topic name, plus the partition number, modulo the shard count.
//! Adding the partition number spreads a topic's partitions round-robin over the shards.

pub fn shard_for_partition(topic: &str, partition: i32, shard_count: usize) -> usize {
    assert!(shard_count > 0);
    let topic_hash = crc32c::crc32c(topic.as_bytes()) as u64;
    ((topic_hash + partition as u64) % shard_count as u64) as usize
}

/// Which shard coordinates a consumer group (the group's __consumer_offsets partition decides).
pub fn shard_for_key(key: &str, shard_count: usize) -> usize {
    (crc32c::crc32c(key.as_bytes()) as u64 % shard_count as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_of_a_topic_spread_round_robin() {
        let shards: Vec<usize> = (0..8).map(|p| shard_for_partition("orders", p, 4)).collect();
        for pair in shards.windows(2) {
            assert_eq!((pair[0] + 1) % 4, pair[1]);
        }
        assert_eq!(shard_for_partition("orders", 3, 1), 0);
    }
}
