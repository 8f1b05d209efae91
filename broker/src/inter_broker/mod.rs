//! This broker's calls to other brokers that are not replication (the replica fetcher keeps its
//! own connection per leader, `replication/follower.rs`): `pool.rs` keeps each shard's reusable
//! connections per destination broker (authenticated through `security::client`, the one door
//! for broker-to-broker connections), `marker_channel.rs` batches transaction markers per
//! destination as Kafka's TransactionMarkerChannelManager. Callers: `txn_router.rs` (markers,
//! KIP-890 verification).
//!
//! Layer: beside `groups` and `txn` (below `shard_context`, which holds a shard's pool and
//! channel); it imports only `state`, `security::client` and `partition`'s marker type.

pub mod marker_channel;
pub mod pool;
