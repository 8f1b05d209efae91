//! Producers: one thread and one librdkafka producer each, sending as fast as the client takes
//! records or at a fixed rate, recording publish latency (send to acknowledgement).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use crate::clients;
use crate::monitor::Progress;
use crate::target::Target;
use crate::workload::{KeyDistribution, Workload};

/// How long the last acknowledgements may take once sending stops.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);
/// How long init_transactions and commit_transaction may take before the run fails.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);
/// How long to wait before retrying a send refused because librdkafka's queue is full.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_micros(200);

pub struct ProduceOutcome {
    pub acked_messages: u64,
    pub acked_bytes: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// From the first send to the last acknowledgement, longest over the producers.
    pub elapsed: Duration,
    /// Microseconds from `send()` to its delivery report.
    pub publish_latency_us: Histogram<u64>,
    /// Transactions committed (transactional workloads; 0 otherwise).
    pub transactions: u64,
    /// Microseconds each `commit_transaction()` call took.
    pub commit_latency_us: Histogram<u64>,
}

pub fn new_latency_histogram() -> Histogram<u64> {
    // 1 us to 10 min at 3 significant digits; larger values are clamped by saturating_record.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Nanoseconds since the Unix epoch: the send time written into each payload, comparable across
/// the producer and consumer threads of this process.
pub fn wall_clock_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_nanos() as u64).unwrap_or(0)
}

/// Runs `workload.producers` producers over `topics` until the duration or message count is
/// reached, then waits for every acknowledgement.
pub fn produce(
    target: &Target,
    workload: &Workload,
    topics: &[String],
    progress: Arc<Progress>,
    extra: &[(String, String)],
) -> Result<ProduceOutcome, String> {
    let producers = workload.producers.max(1) as u64;
    let handles: Vec<_> = (0..producers)
        .map(|index| {
            let (target, workload, topics, progress, extra) =
                (target.clone(), workload.clone(), topics.to_vec(), progress.clone(), extra.to_vec());
            std::thread::spawn(move || {
                let rate = workload.rate_messages_per_second / producers
                    + u64::from(index < workload.rate_messages_per_second % producers);
                let count = workload
                    .message_count
                    .map(|count| count / producers + u64::from(index < count % producers));
                run_producer(&target, &workload, &topics, index, rate, count, progress, &extra)
            })
        })
        .collect();
    let mut total: Option<ProduceOutcome> = None;
    for handle in handles {
        let outcome = handle.join().map_err(|_| "a producer thread panicked".to_string())??;
        total = Some(match total {
            None => outcome,
            Some(mut total) => {
                total.acked_messages += outcome.acked_messages;
                total.acked_bytes += outcome.acked_bytes;
                total.errors += outcome.errors;
                total.first_error = total.first_error.or(outcome.first_error);
                total.elapsed = total.elapsed.max(outcome.elapsed);
                total.publish_latency_us.add(&outcome.publish_latency_us).expect("same histogram bounds");
                total.transactions += outcome.transactions;
                total.commit_latency_us.add(&outcome.commit_latency_us).expect("same histogram bounds");
                total
            }
        });
    }
    total.ok_or_else(|| "no producers".to_string())
}

/// Counts what librdkafka acknowledges. The callbacks run on the ThreadedProducer's polling
/// thread as reports arrive (a BaseProducer's `poll(0)` serves one report event per call, which
/// let reports pile up behind a fast send loop and inflated publish latency).
struct DeliveryRecorder {
    clock_start: Instant,
    latency_us: Mutex<Histogram<u64>>,
    acked_messages: AtomicU64,
    acked_bytes: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
    progress: Arc<Progress>,
}

impl ClientContext for DeliveryRecorder {}

impl ProducerContext for DeliveryRecorder {
    /// Nanoseconds from `clock_start` to the `send()` call.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_at_nanos: usize) {
        match result {
            Ok(message) => {
                let bytes = message.payload_len() as u64;
                self.acked_messages.fetch_add(1, Ordering::Relaxed);
                self.acked_bytes.fetch_add(bytes, Ordering::Relaxed);
                self.progress.messages.fetch_add(1, Ordering::Relaxed);
                self.progress.bytes.fetch_add(bytes, Ordering::Relaxed);
                let latency_nanos = (self.clock_start.elapsed().as_nanos() as u64).saturating_sub(sent_at_nanos as u64);
                self.latency_us.lock().unwrap().saturating_record(latency_nanos / 1000);
            }
            Err((error, _)) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                self.first_error.lock().unwrap().get_or_insert_with(|| error.to_string());
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn run_producer(
    target: &Target,
    workload: &Workload,
    topics: &[String],
    index: u64,
    rate_messages_per_second: u64,
    message_count: Option<u64>,
    progress: Arc<Progress>,
    extra: &[(String, String)],
) -> Result<ProduceOutcome, String> {
    let recorder = DeliveryRecorder {
        clock_start: Instant::now(),
        latency_us: Mutex::new(new_latency_histogram()),
        acked_messages: AtomicU64::new(0),
        acked_bytes: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        first_error: Mutex::new(None),
        progress,
    };
    // One id per producer and run: the topic names are unique to the run.
    let transactional_id = workload.transactional_records.map(|_| format!("{}-p{index}", topics[0]));
    let producer: ThreadedProducer<DeliveryRecorder> = clients::producer_config(target, workload, transactional_id.as_deref(), extra)
        .create_with_context(recorder)
        .map_err(|error| format!("producer: {error}"))?;
    // Connections and topic metadata are set up before the clock starts.
    for topic in topics {
        producer
            .client()
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(|error| format!("metadata for {topic} from {}: {error}", target.bootstrap))?;
    }
    // So is the producer id: InitProducerId is paid once per producer, not per transaction.
    if transactional_id.is_some() {
        producer.init_transactions(TRANSACTION_TIMEOUT).map_err(|error| format!("init_transactions on {}: {error}", target.bootstrap))?;
    }

    let duration = Duration::from_secs_f64(workload.duration_seconds);
    let mut sender = Sender {
        producer: &producer,
        workload,
        topics,
        payload: Payload::new(workload.message_size_bytes, index),
        interval: (rate_messages_per_second > 0).then(|| Duration::from_secs_f64(1.0 / rate_messages_per_second as f64)),
        start: Instant::now(),
        sent: 0,
        key_buffer: String::new(),
    };
    let done = |sender: &Sender| sender.start.elapsed() >= duration || message_count.is_some_and(|count| sender.sent >= count);
    let mut commit_latency_us = new_latency_histogram();
    let mut transactions = 0u64;
    match workload.transactional_records {
        None => {
            while !done(&sender) {
                sender.send_next()?;
            }
            producer.flush(FLUSH_TIMEOUT).map_err(|error| format!("flush: {error}"))?;
        }
        // Whole transactions only: the clock is checked between them, so every transaction
        // counted holds its records (bar the last one of a --message-count run).
        Some(records_per_transaction) => {
            while !done(&sender) {
                producer.begin_transaction().map_err(|error| format!("begin_transaction: {error}"))?;
                for _ in 0..records_per_transaction {
                    if message_count.is_some_and(|count| sender.sent >= count) {
                        break;
                    }
                    sender.send_next()?;
                }
                // Commit latency is what the application waits for: librdkafka flushes the
                // transaction's last records, then EndTxn returns once the coordinator has
                // written PrepareCommit (the markers follow asynchronously, as in Kafka).
                let commit_start = Instant::now();
                commit_transaction(&producer, TRANSACTION_TIMEOUT)?;
                commit_latency_us.saturating_record(commit_start.elapsed().as_micros() as u64);
                transactions += 1;
            }
        }
    }
    let elapsed = sender.start.elapsed();
    let recorder = producer.context();
    let first_error = recorder.first_error.lock().unwrap().clone();
    let publish_latency_us = recorder.latency_us.lock().unwrap().clone();
    Ok(ProduceOutcome {
        acked_messages: recorder.acked_messages.load(Ordering::Relaxed),
        acked_bytes: recorder.acked_bytes.load(Ordering::Relaxed),
        errors: recorder.errors.load(Ordering::Relaxed),
        first_error,
        elapsed,
        publish_latency_us,
        transactions,
        commit_latency_us,
    })
}

/// librdkafka's `rd_kafka_commit_transaction`, called directly. rdkafka's own
/// `commit_transaction` first runs its `flush`, which waits up to 100 ms at a time for delivery
/// reports on the event queue; a ThreadedProducer's polling thread takes those reports first, so
/// every commit waited the whole 100 ms (measured: commit p50 100-101 ms against any broker, 2 ms
/// with confluent-kafka on the same librdkafka). librdkafka flushes the transaction's records
/// itself, and the polling thread serves the reports meanwhile, as librdkafka asks.
fn commit_transaction(producer: &ThreadedProducer<DeliveryRecorder>, timeout: Duration) -> Result<(), String> {
    use rdkafka::bindings;
    // SAFETY: the handle is a live producer for the whole call; the returned error object (if
    // any) is read, then destroyed once, as librdkafka's API says.
    unsafe {
        let error = bindings::rd_kafka_commit_transaction(producer.client().native_ptr(), timeout.as_millis() as i32);
        if error.is_null() {
            return Ok(());
        }
        let text = std::ffi::CStr::from_ptr(bindings::rd_kafka_error_string(error)).to_string_lossy().into_owned();
        bindings::rd_kafka_error_destroy(error);
        Err(format!("commit_transaction: {text}"))
    }
}

/// One producer's send loop state: the next record's payload, key and topic, and its pacing.
struct Sender<'a> {
    producer: &'a ThreadedProducer<DeliveryRecorder>,
    workload: &'a Workload,
    topics: &'a [String],
    payload: Payload,
    /// Between two sends at a fixed rate; None sends as fast as the client takes records.
    interval: Option<Duration>,
    start: Instant,
    sent: u64,
    key_buffer: String,
}

impl Sender<'_> {
    /// Hands the next record to librdkafka, waiting for its due time (fixed rate) and for room in
    /// its queue.
    fn send_next(&mut self) -> Result<(), String> {
        if let Some(interval) = self.interval {
            let due = self.start + interval.mul_f64(self.sent as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let clock_start = self.producer.context().clock_start;
        let give_up = Instant::now() + FLUSH_TIMEOUT;
        loop {
            self.payload.stamp(wall_clock_nanos());
            let key = match self.workload.key_distribution {
                KeyDistribution::None => None,
                KeyDistribution::RoundRobin => Some(self.sent),
                KeyDistribution::Random => Some(self.payload.next_random()),
            }
            .map(|key| self.workload.key_space.map_or(key, |space| key % space));
            let topic = &self.topics[(self.sent % self.topics.len() as u64) as usize];
            let sent_at = (Instant::now() - clock_start).as_nanos() as usize;
            let mut record = BaseRecord::<str, [u8], usize>::with_opaque_to(topic, sent_at).payload(self.payload.bytes());
            if let Some(key) = key {
                self.key_buffer.clear();
                let _ = write!(self.key_buffer, "{key}");
                record = record.key(self.key_buffer.as_str());
            }
            match self.producer.send(record) {
                Ok(()) => {
                    self.sent += 1;
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) if Instant::now() < give_up => {
                    std::thread::sleep(QUEUE_FULL_BACKOFF)
                }
                Err((error, _)) => return Err(format!("send to {topic}: {error}")),
            }
        }
    }
}

/// A record's value: pseudo-random bytes (so compression has work like real data would give it,
/// rather than a run of zeros) with the send time in the first 8 bytes.
struct Payload {
    bytes: Vec<u8>,
    random_state: u64,
}

impl Payload {
    fn new(size_bytes: usize, seed: u64) -> Payload {
        let mut payload = Payload { bytes: vec![0; size_bytes], random_state: 0x9E37_79B9_7F4A_7C15 ^ (seed + 1) };
        for chunk in 0..size_bytes.div_ceil(8) {
            let value = payload.next_random().to_le_bytes();
            let start = chunk * 8;
            let end = (start + 8).min(size_bytes);
            payload.bytes[start..end].copy_from_slice(&value[..end - start]);
        }
        payload
    }

    fn stamp(&mut self, wall_clock_nanos: u64) {
        if self.bytes.len() >= 8 {
            self.bytes[..8].copy_from_slice(&wall_clock_nanos.to_le_bytes());
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// xorshift64*: a payload filler and random keys need no cryptographic quality, so no
    /// dependency is added for them.
    fn next_random(&mut self) -> u64 {
        let mut x = self.random_state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.random_state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// The send time a producer wrote into a payload, if it is long enough to hold one.
pub fn payload_send_time_nanos(payload: &[u8]) -> Option<u64> {
    payload.get(..8).map(|stamp| u64::from_le_bytes(stamp.try_into().unwrap()))
}
