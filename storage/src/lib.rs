//! Partition logs on disk, in Kafka's layout: see ARCHITECTURE.md.

pub mod batch;
pub mod cleaner;
pub mod config;
pub mod error;
pub mod file_deletion;
pub mod leader_epoch_cache;
pub mod log;
pub mod log_manager;
pub mod record;
pub mod segment;
pub mod segment_file;
pub mod segment_index;
pub mod test_support;
pub mod txn_index;

pub use crate::config::LogConfig;
pub use crate::error::{Result, StorageError};
pub use crate::log::{AppendInfo, CheckedBatches, Log, ReadResult};
pub use crate::segment::{FileRegion, FileSlice};
