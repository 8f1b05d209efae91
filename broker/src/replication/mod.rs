//! Cluster mode replication, as Kafka did it with ZooKeeper: leaders track their followers and
//! the ISR (`leader.rs`), followers fetch from their leaders (`follower.rs`).
//!
//! Both work on `partition::Partition`: a follower's copy goes through `Partition::append` like
//! any write; the high watermark is computed by the partition from what `leader.rs` records.
//!
//! Never: this module does not import `handlers` (the fetch handler calls `leader`, not the
//! other way round) or `groups`.

pub mod follower;
pub mod leader;
