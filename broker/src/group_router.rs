//! Which shard coordinates a group: the owner of the group's `__consumer_offsets` partition
//! (Kafka's `abs(hash(group)) % offsets.topic.num.partitions`, then the shard table). Group
//! handlers route every request there with `Router::call`, as Redpanda's group_router does over
//! its shard table; `groups/` itself never routes and never sees a handler.

use crate::groups::{offsets_partition_count, partition_for_group};
use crate::shard_context::Shard;
use crate::topics::CONSUMER_OFFSETS_TOPIC;

/// The shard coordinating `group_id`.
pub fn shard_for_group(shard: &Shard, group_id: &str) -> usize {
    shard.owner_of(CONSUMER_OFFSETS_TOPIC, partition_for_group(group_id, offsets_partition_count(&shard.broker)))
}
