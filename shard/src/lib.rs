//! Thread-per-core runtime: one glommio executor (a *shard*) per chosen core, the stable
//! partition -> shard table, and calls from one shard to another over a mesh of glommio shared channels (mesh.rs).

pub mod cpus;
pub mod mesh;
pub mod notify;
pub mod runtime;
pub mod shards_table;

pub use runtime::{start_shards, Router, ShardPlacement};
