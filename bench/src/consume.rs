//! Consumers: one thread and one librdkafka consumer each, the partitions dealt out among them by
//! hand (no group rebalance in the measurement), reading from the beginning.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::clients;
use crate::monitor::Progress;
use crate::produce::{new_latency_histogram, payload_send_time_nanos, wall_clock_nanos};
use crate::soak::{self, WindowClock};
use crate::target::Target;
use crate::workload::Workload;

/// A consumer that receives nothing for this long while records are still expected gives up.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_TIMEOUT: Duration = Duration::from_millis(100);

/// When consumers stop.
#[derive(Clone)]
pub enum Until {
    /// At the high watermarks read when they start: a read-back of what is stored.
    CaughtUp,
    /// When told to: the end-to-end run stops them once the producers' records have arrived.
    Stopped(Arc<AtomicBool>),
}

pub struct ConsumeOutcome {
    pub messages: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    /// Microseconds from the producer's send to this consumer's receipt (end-to-end runs).
    pub end_to_end_latency_us: Histogram<u64>,
    /// The same per soak window, by send time (soak runs; empty otherwise).
    pub end_to_end_windows_us: Vec<Histogram<u64>>,
}

/// A soak's windows, set by the end-to-end run once the consumers are ready and before the
/// producers start (so the consumers' threads exist before the clock does).
pub type Windows = Arc<OnceLock<WindowClock>>;

#[allow(clippy::too_many_arguments)]
pub fn consume(
    target: &Target,
    workload: &Workload,
    topics: &[String],
    until: Until,
    ready: Option<Arc<std::sync::Barrier>>,
    windows: Option<Windows>,
    progress: Arc<Progress>,
    extra: &[(String, String)],
) -> Result<ConsumeOutcome, String> {
    let consumers = workload.consumers.max(1);
    let partitions: Vec<(String, i32)> = topics
        .iter()
        .flat_map(|topic| (0..workload.partitions_per_topic).map(move |partition| (topic.clone(), partition)))
        .collect();
    let handles: Vec<_> = (0..consumers)
        .map(|index| {
            let mine: Vec<(String, i32)> =
                partitions.iter().skip(index).step_by(consumers).cloned().collect();
            let (target, until, ready, windows, progress, extra) =
                (target.clone(), until.clone(), ready.clone(), windows.clone(), progress.clone(), extra.to_vec());
            let rate = workload.consume_rate_bytes_per_second;
            std::thread::spawn(move || run_consumer(&target, &mine, until, ready, windows, progress, &extra, rate))
        })
        .collect();
    let mut total = ConsumeOutcome {
        messages: 0,
        bytes: 0,
        elapsed: Duration::ZERO,
        end_to_end_latency_us: new_latency_histogram(),
        end_to_end_windows_us: Vec::new(),
    };
    for handle in handles {
        let outcome = handle.join().map_err(|_| "a consumer thread panicked".to_string())??;
        total.messages += outcome.messages;
        total.bytes += outcome.bytes;
        total.elapsed = total.elapsed.max(outcome.elapsed);
        total.end_to_end_latency_us.add(&outcome.end_to_end_latency_us).expect("same histogram bounds");
        soak::merge_windows(&mut total.end_to_end_windows_us, &outcome.end_to_end_windows_us);
    }
    Ok(total)
}

/// The consumer, assigned its partitions from the beginning, and (reading up to the watermarks)
/// the offset each partition must reach.
fn assign(
    target: &Target,
    partitions: &[(String, i32)],
    until: &Until,
    extra: &[(String, String)],
) -> Result<(BaseConsumer, Vec<(String, i32, i64)>), String> {
    let consumer: BaseConsumer =
        clients::consumer_config(target, extra).create().map_err(|error| format!("consumer: {error}"))?;
    let mut assignment = TopicPartitionList::new();
    // A consumer holds a handful of partitions: a list searched per record allocates nothing.
    let mut remaining_until: Vec<(String, i32, i64)> = Vec::new();
    for (topic, partition) in partitions {
        assignment
            .add_partition_offset(topic, *partition, Offset::Beginning)
            .map_err(|error| format!("assign {topic}-{partition}: {error}"))?;
        if matches!(until, Until::CaughtUp) {
            let (low, high) = consumer
                .fetch_watermarks(topic, *partition, Duration::from_secs(10))
                .map_err(|error| format!("watermarks of {topic}-{partition} at {}: {error}", target.bootstrap))?;
            if high > low {
                remaining_until.push((topic.clone(), *partition, high));
            }
        }
    }
    consumer.assign(&assignment).map_err(|error| format!("assign: {error}"))?;
    Ok((consumer, remaining_until))
}

#[allow(clippy::too_many_arguments)]
fn run_consumer(
    target: &Target,
    partitions: &[(String, i32)],
    until: Until,
    ready: Option<Arc<std::sync::Barrier>>,
    windows: Option<Windows>,
    progress: Arc<Progress>,
    extra: &[(String, String)],
    rate_bytes_per_second: u64,
) -> Result<ConsumeOutcome, String> {
    let setup = assign(target, partitions, &until, extra);
    if let Some(ready) = ready {
        // End-to-end: fetch once so connections are up before the producers start. The barrier
        // is passed even when setup failed, so the producers' side is never left waiting.
        if let Ok((consumer, _)) = &setup {
            consumer.poll(Duration::from_millis(500));
        }
        ready.wait();
    }
    let (consumer, mut remaining_until) = setup?;

    let start = Instant::now();
    let mut outcome = ConsumeOutcome {
        messages: 0,
        bytes: 0,
        elapsed: Duration::ZERO,
        end_to_end_latency_us: new_latency_histogram(),
        end_to_end_windows_us: Vec::new(),
    };
    let mut last_message = Instant::now();
    loop {
        match &until {
            Until::CaughtUp if remaining_until.is_empty() => break,
            Until::Stopped(stop) if stop.load(Ordering::Relaxed) => break,
            _ => {}
        }
        match consumer.poll(POLL_TIMEOUT) {
            Some(Ok(message)) => {
                let bytes = message.payload_len() as u64;
                outcome.messages += 1;
                outcome.bytes += bytes;
                progress.messages.fetch_add(1, Ordering::Relaxed);
                progress.bytes.fetch_add(bytes, Ordering::Relaxed);
                if matches!(until, Until::Stopped(_)) {
                    if let Some(sent) = message.payload().and_then(payload_send_time_nanos) {
                        let latency_nanos = wall_clock_nanos().saturating_sub(sent);
                        outcome.end_to_end_latency_us.saturating_record(latency_nanos / 1000);
                        if let Some(clock) = windows.as_ref().and_then(|windows| windows.get()) {
                            if outcome.end_to_end_windows_us.is_empty() {
                                outcome.end_to_end_windows_us = (0..clock.count).map(|_| new_latency_histogram()).collect();
                            }
                            outcome.end_to_end_windows_us[clock.window_of_send(sent)].saturating_record(latency_nanos / 1000);
                        }
                    }
                }
                let caught_up = remaining_until.iter().position(|(topic, partition, high)| {
                    *partition == message.partition() && message.offset() + 1 >= *high && topic == message.topic()
                });
                if let Some(index) = caught_up {
                    remaining_until.swap_remove(index);
                }
                last_message = Instant::now();
                if rate_bytes_per_second > 0 {
                    // Paced: librdkafka stops fetching once its queue is full, so the broker
                    // sees a reader at this rate.
                    let due = start + Duration::from_secs_f64(outcome.bytes as f64 / rate_bytes_per_second as f64);
                    if let Some(ahead) = due.checked_duration_since(last_message) {
                        if ahead > Duration::from_millis(1) {
                            std::thread::sleep(ahead);
                        }
                    }
                }
            }
            Some(Err(error)) => return Err(format!("consume from {}: {error}", target.bootstrap)),
            None => {
                if matches!(until, Until::CaughtUp) && last_message.elapsed() > STALL_TIMEOUT {
                    return Err(format!(
                        "consumer received nothing for {STALL_TIMEOUT:?} with {} partition(s) not caught up",
                        remaining_until.len()
                    ));
                }
            }
        }
    }
    outcome.elapsed = start.elapsed();
    Ok(outcome)
}
