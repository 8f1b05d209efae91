//! The shard's log cleaner (Kafka's CleanerThread, one per shard): for the compacted partitions
//! this shard owns, each pass picks the dirtiest log worth cleaning (`min.cleanable.dirty.ratio`,
//! or `max.compaction.lag.ms` passed), cleans it (`storage::cleaner`), then yields; with nothing
//! to clean it sleeps `log.cleaner.backoff.ms`.
//!
//! It runs in its own glommio task queue with few shares and no latency requirement, so produce
//! and fetch on the core always go first; the partition's log lock is taken only to plan and to
//! swap, never while the cleaned copy is read or written. `log.cleaner.threads` has no meaning
//! here: the shard count is the cleaners' parallelism, and `log.cleaner.dedupe.buffer.size` and
//! `log.cleaner.io.max.bytes.per.second` are shared among the shards' cleaners (an equal share
//! each), as Kafka's are among its cleaner threads.

use std::rc::Rc;
use std::time::Duration;

use storage::cleaner::{log_to_clean, CleanOutcome, Cleaner, CleanerConfig};

use crate::clock::now_ms;
use crate::partition::record_codec::KafkaRecordCodec;
use crate::partition::Partition;
use crate::shard_context::Shard;

/// The cleaner queue's shares against the default queue's 1000: it gets the core's idle time.
const CLEANER_SHARES: usize = 10;
/// How often a sleeping cleaner looks at the shutdown flag.
const SHUTDOWN_POLL_MS: u64 = 100;

/// Starts the cleaner in its own low-priority task queue; None when `log.cleaner.enable=false`.
pub fn start(shard: Rc<Shard>) -> Option<glommio::Task<()>> {
    if !shard.broker.config.log_cleaner_enable {
        return None;
    }
    let queue = glommio::executor().create_task_queue(glommio::Shares::Static(CLEANER_SHARES), glommio::Latency::NotImportant, "log-cleaner");
    match glommio::spawn_local_into(run(shard), queue) {
        Ok(task) => Some(task),
        Err(e) => {
            tracing::error!(error = %e, "the log cleaner could not start");
            None
        }
    }
}

async fn run(shard: Rc<Shard>) {
    let config = &shard.broker.config;
    let shards = shard.router.shard_count().max(1) as u64;
    let mut cleaner = Cleaner::new(&CleanerConfig {
        dedupe_buffer_bytes: config.log_cleaner_dedupe_buffer_size / shards,
        dedupe_load_factor: config.log_cleaner_io_buffer_load_factor,
        // Kafka's throttler is one for all its cleaner threads: the limit is the broker's total.
        io_max_bytes_per_second: config.log_cleaner_io_max_bytes_per_second / shards as f64,
    });
    let backoff_ms = config.log_cleaner_backoff_ms.max(1);
    while !shard.broker.is_shutting_down() {
        let cleaned = match dirtiest(&shard).await {
            Some(partition) => clean(&shard, &mut cleaner, &partition).await,
            None => false,
        };
        if cleaned {
            glommio::executor().yield_task_queue_now().await;
            continue;
        }
        let mut slept_ms = 0;
        while slept_ms < backoff_ms && !shard.broker.is_shutting_down() {
            let step = SHUTDOWN_POLL_MS.min(backoff_ms - slept_ms);
            glommio::timer::sleep(Duration::from_millis(step)).await;
            slept_ms += step;
        }
    }
}

/// Kafka's grabFilthiestCompactedLog over this shard's open partitions.
async fn dirtiest(shard: &Shard) -> Option<Rc<Partition>> {
    let now = now_ms();
    let mut best: Option<(f64, Rc<Partition>)> = None;
    for partition in shard.partitions.all_open() {
        if partition.is_closed() {
            continue;
        }
        let log = partition.log.read().await.expect("partition lock");
        if !log.config().compact {
            continue;
        }
        let limits = partition.clean_limits(log.log_end_offset());
        let plan = match log_to_clean(&log, now, limits.last_stable_offset).await {
            Ok(Some(plan)) => plan,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(topic = partition.topic, partition = partition.index, error = %e, "the cleaner cannot assess a log");
                continue;
            }
        };
        if !plan.worth_cleaning(log.config().min_cleanable_dirty_ratio) {
            continue;
        }
        let ratio = plan.cleanable_ratio();
        drop(log);
        if best.as_ref().map_or(true, |(r, _)| ratio > *r) {
            best = Some((ratio, partition));
        }
        glommio::yield_if_needed().await;
    }
    best.map(|(_, partition)| partition)
}

/// Returns whether the log was cleaned.
async fn clean(shard: &Shard, cleaner: &mut Cleaner, partition: &Rc<Partition>) -> bool {
    let limits = {
        let log = partition.log.read().await.expect("partition lock");
        partition.clean_limits(log.log_end_offset())
    };
    let broker = shard.broker.clone();
    let stop = || partition.is_closed() || broker.is_shutting_down();
    let started = std::time::Instant::now();
    match cleaner.clean(&partition.log, &KafkaRecordCodec, now_ms(), &limits, &stop).await {
        Ok(CleanOutcome::Cleaned(stats)) => {
            tracing::info!(
                topic = partition.topic,
                partition = partition.index,
                from = stats.first_dirty_offset,
                to = stats.end_offset,
                keys = stats.map_entries,
                map_full = stats.map_full,
                records_read = stats.records_read,
                records_kept = stats.records_kept,
                bytes_read = stats.bytes_read,
                bytes_written = stats.bytes_written,
                segments_before = stats.segments_before,
                segments_after = stats.segments_after,
                swap_lock_max_us = stats.swap_lock_max_us,
                swap_lock_total_us = stats.swap_lock_total_us,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "cleaned a log"
            );
            true
        }
        Ok(CleanOutcome::Nothing) => false,
        Ok(CleanOutcome::Aborted(reason)) => {
            tracing::info!(topic = partition.topic, partition = partition.index, reason, "log cleaning aborted");
            false
        }
        Err(e) => {
            tracing::error!(topic = partition.topic, partition = partition.index, error = %e, "log cleaning failed");
            false
        }
    }
}
