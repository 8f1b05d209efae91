//! The cleaner against a model: random keyed writes (tombstones among them) over small segments,
//! cleans at random moments with a small offset map, reopens; after each step the log must replay
//! to the model's dictionary of latest values, offsets must strictly increase, and the cleaned
//! part must hold only each key's last record; tombstones go once delete.retention.ms passed.

mod common;

use std::collections::BTreeMap;

use common::*;
use glommio::sync::RwLock;
use storage::cleaner::{CleanLimits, CleanOutcome, Cleaner, CleanerConfig};
use storage::record::RecordCodec;
use storage::test_support::{build_keyed_batch, UncompressedCodec};
use storage::txn_index::AbortedTxn;
use storage::{Log, LogConfig};

const DELETE_RETENTION_MS: i64 = 10_000;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 128,
        compact: true,
        min_cleanable_dirty_ratio: 0.0,
        delete_retention_ms: DELETE_RETENTION_MS,
        retention_ms: -1,
        ..LogConfig::default()
    }
}

/// (offset, key, value) of every record, in offset order (batch offsets strictly increase).
async fn read_records(log: &Log) -> Vec<(i64, Option<Vec<u8>>, Option<Vec<u8>>)> {
    let mut last_batch_offset = -1;
    let mut records = Vec::new();
    for (header, batch_records) in read_batches(log).await {
        assert!(header.base_offset > last_batch_offset, "batch offsets strictly increase");
        last_batch_offset = header.last_offset();
        records.extend(batch_records);
    }
    records
}

/// Checks the log against `history` (every write, in offset order) after a clean up to `clean_end`.
async fn check(log: &Log, history: &[(i64, Vec<u8>, Option<Vec<u8>>)], clean_end: i64) {
    let records = read_records(log).await;
    let mut previous = -1;
    for (offset, _, _) in &records {
        assert!(*offset > previous, "offsets strictly increase");
        previous = *offset;
    }
    // Replaying the log gives the model's latest value of every key.
    let mut replayed: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
    for (_, key, value) in &records {
        replayed.insert(key.clone().expect("keyed"), value.clone());
    }
    let mut model: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
    for (_, key, value) in history {
        model.insert(key.clone(), value.clone());
    }
    let live = |m: &BTreeMap<Vec<u8>, Option<Vec<u8>>>| m.iter().filter(|(_, v)| v.is_some()).map(|(k, v)| (k.clone(), v.clone())).collect::<BTreeMap<_, _>>();
    assert_eq!(live(&replayed), live(&model), "every key's latest value survives, nothing else does");
    // In the cleaned part, every surviving record is its key's last below the clean's end.
    let mut last_below_end: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
    for (offset, key, _) in history.iter().filter(|(o, _, _)| *o < clean_end) {
        last_below_end.insert(key.clone(), *offset);
    }
    for (offset, key, value) in records.iter().filter(|(o, _, _)| *o < clean_end) {
        let key = key.clone().unwrap();
        assert_eq!(last_below_end.get(&key), Some(offset), "record at {offset} survived a later version of its key");
        let written = history.iter().find(|(o, _, _)| o == offset).unwrap();
        assert_eq!(&written.2, value, "the value at {offset} is the one written");
    }
}

#[test]
fn random_writes_and_cleans_match_the_model() {
    for seed in 1..=4u64 {
        run(move || async move {
            let dir = TempDir::new("cleaner-model");
            let mut rng = Rng::new(seed);
            let mut now_ms = 1_000_000i64;
            let lock = RwLock::new(Log::open(&dir.partition(), config(), false).await.unwrap());
            // A small map (a few dozen keys), so cleans also stop where the map filled.
            let mut cleaner = Cleaner::new(&CleanerConfig { dedupe_buffer_bytes: 25 * 64, ..CleanerConfig::default() });
            let mut history: Vec<(i64, Vec<u8>, Option<Vec<u8>>)> = Vec::new();
            let mut cleans = 0;
            let mut written_bytes = 0u64;
            for step in 0..600 {
                now_ms += rng.below(50) as i64;
                let count = 1 + rng.below(4) as usize;
                let keys: Vec<Vec<u8>> = (0..count).map(|_| format!("key-{}", rng.below(40)).into_bytes()).collect();
                let values: Vec<Option<Vec<u8>>> =
                    (0..count).map(|i| if rng.below(10) == 0 { None } else { Some(format!("value-{step}-{i}-{}", "x".repeat(rng.below(60) as usize)).into_bytes()) }).collect();
                let records: Vec<(Option<&[u8]>, Option<&[u8]>)> = keys.iter().zip(&values).map(|(k, v)| (Some(&k[..]), v.as_deref())).collect();
                let batch = build_keyed_batch(&records, now_ms, None);
                written_bytes += batch.len() as u64;
                let info = lock.write().await.unwrap().append(batch, now_ms).await.unwrap();
                for (i, (key, value)) in keys.into_iter().zip(values).enumerate() {
                    history.push((info.base_offset + i as i64, key, value));
                }
                if rng.below(40) == 0 {
                    let limits = CleanLimits { last_stable_offset: i64::MAX, ..CleanLimits::default() };
                    let outcome = cleaner.clean(&lock, &UncompressedCodec, now_ms, &limits, &|| false).await.unwrap();
                    if let CleanOutcome::Cleaned(stats) = outcome {
                        cleans += 1;
                        check(&lock.read().await.unwrap(), &history, stats.end_offset).await;
                    }
                }
                if rng.below(150) == 0 {
                    // Reopen without a clean shutdown: the cleaned segments are recovered as any.
                    let log = lock.write().await.unwrap();
                    drop(log);
                    let reopened = Log::open(&dir.partition(), config(), false).await.unwrap();
                    *lock.write().await.unwrap() = reopened;
                    check(&lock.read().await.unwrap(), &history, 0).await;
                }
            }
            assert!(cleans >= 5, "seed {seed}: {cleans} cleans");

            // Tombstones: a clean stamps their horizon, one after delete.retention.ms removes them.
            let limits = CleanLimits { last_stable_offset: i64::MAX, ..CleanLimits::default() };
            let mut end = 0;
            for round in 0..3 {
                now_ms += if round == 2 { DELETE_RETENTION_MS + 1 } else { 1 };
                // Enough writes of other keys to roll, so there is a dirty closed segment.
                for i in 0..20 {
                    let key = format!("filler-{round}-{i}").into_bytes();
                    let value = vec![b'f'; 80];
                    let batch = build_keyed_batch(&[(Some(&key[..]), Some(&value[..]))], now_ms, None);
                    let info = lock.write().await.unwrap().append(batch, now_ms).await.unwrap();
                    history.push((info.base_offset, key, Some(value)));
                }
                // The map must hold the whole dirty part for this check.
                let mut big = Cleaner::new(&CleanerConfig::default());
                while let CleanOutcome::Cleaned(stats) = big.clean(&lock, &UncompressedCodec, now_ms, &limits, &|| false).await.unwrap() {
                    end = stats.end_offset;
                    check(&lock.read().await.unwrap(), &history, end).await;
                }
            }
            let records = read_records(&lock.read().await.unwrap()).await;
            let tombstones = records.iter().filter(|(o, _, v)| *o < end && v.is_none()).count();
            assert_eq!(tombstones, 0, "seed {seed}: tombstones past delete.retention.ms are gone");
            let size_after = lock.read().await.unwrap().size_bytes();
            assert!(size_after < written_bytes / 2, "seed {seed}: the log shrank ({written_bytes} written, {size_after} kept)");
            // The checkpoint survives a reopen: nothing left to clean.
            drop(lock);
            let log = Log::open(&dir.partition(), config(), false).await.unwrap();
            assert_eq!(log.cleaner_checkpoint(), Some(end));
        });
    }
}

#[test]
fn an_interrupted_swap_is_finished_or_discarded_at_open() {
    run(|| async {
        let dir = TempDir::new("cleaner-swap");
        let lock = RwLock::new(Log::open(&dir.partition(), config(), false).await.unwrap());
        let mut history = Vec::new();
        for i in 0..200i64 {
            let key = format!("k{}", i % 7).into_bytes();
            let value = format!("v{i}-{}", "y".repeat(40)).into_bytes();
            let batch = build_keyed_batch(&[(Some(&key[..]), Some(&value[..]))], i, None);
            let info = lock.write().await.unwrap().append(batch, i).await.unwrap();
            history.push((info.base_offset, key, Some(value)));
        }
        let mut cleaner = Cleaner::new(&CleanerConfig::default());
        let limits = CleanLimits { last_stable_offset: i64::MAX, ..CleanLimits::default() };
        let CleanOutcome::Cleaned(_) = cleaner.clean(&lock, &UncompressedCodec, 1_000, &limits, &|| false).await.unwrap() else { panic!("cleaned") };
        let log = lock.into_inner().unwrap();
        drop(log);
        let partition = dir.partition();
        let first = partition.join("00000000000000000000.log");
        // A crash after the commit point: the cleaned segment as `.swap`, an old segment back
        // under its name (as if its retirement had not happened) and a stray `.cleaned`.
        std::fs::rename(&first, partition.join("00000000000000000000.log.swap")).unwrap();
        std::fs::write(&first, storage::test_support::build_batch(1, 10, 0, 1)).unwrap();
        std::fs::write(partition.join("00000000000000000050.log.cleaned"), b"half").unwrap();
        let log = Log::open(&partition, config(), false).await.unwrap();
        check(&log, &history, 0).await;
        let names: Vec<String> = std::fs::read_dir(&partition).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        assert!(!names.iter().any(|n| n.ends_with(".swap") || n.ends_with(".cleaned")), "{names:?}");
    });
}

/// Transactions: the records of an aborted transaction go (and never hide an earlier committed
/// value of their key), its marker and `.txnindex` entry stay, carried into the cleaned segment.
#[test]
fn aborted_records_go_and_their_marker_stays() {
    run(|| async {
        let dir = TempDir::new("cleaner-txn");
        let now_ms = 1_000_000i64;
        let lock = RwLock::new(Log::open(&dir.partition(), config(), false).await.unwrap());
        {
            let mut log = lock.write().await.unwrap();
            log.append(build_keyed_batch(&[(Some(b"k"), Some(b"committed"))], now_ms, None), now_ms).await.unwrap();
            let mut aborted = build_keyed_batch(&[(Some(b"k"), Some(b"aborted")), (Some(b"j"), Some(b"aborted"))], now_ms, Some((7, 0, 0)));
            aborted[21..23].copy_from_slice(&0x10i16.to_be_bytes()); // transactional
            let crc = storage::batch::compute_crc(&aborted);
            aborted[17..21].copy_from_slice(&crc.to_be_bytes());
            assert_eq!(log.append(aborted, now_ms).await.unwrap().base_offset, 1);
            let marker = log.append(storage::test_support::build_txn_batch(7, 1, Some(false), now_ms), now_ms).await.unwrap();
            assert_eq!(marker.base_offset, 3);
            log.append_aborted_txn(AbortedTxn { producer_id: 7, first_offset: 1, last_offset: 3, last_stable_offset: 4 });
            // Later segments, so the first is closed and cleanable.
            for i in 0..30 {
                let value = format!("pad-{i}-{}", "x".repeat(100));
                log.append(build_keyed_batch(&[(Some(b"pad"), Some(value.as_bytes()))], now_ms, None), now_ms).await.unwrap();
            }
            assert!(log.segment_count() > 2);
        }
        let mut cleaner = Cleaner::new(&CleanerConfig::default());
        let limits = CleanLimits { last_stable_offset: i64::MAX, ..CleanLimits::default() };
        let outcome = cleaner.clean(&lock, &UncompressedCodec, now_ms, &limits, &|| false).await.unwrap();
        assert!(matches!(outcome, CleanOutcome::Cleaned(_)), "{outcome:?}");
        let log = lock.read().await.unwrap();
        let records = read_records(&log).await;
        assert!(records.iter().any(|(_, key, value)| key.as_deref() == Some(b"k") && value.as_deref() == Some(b"committed")), "{records:?}");
        assert!(!records.iter().any(|(_, _, value)| value.as_deref() == Some(b"aborted")), "{records:?}");
        assert!(records.iter().any(|(offset, _, _)| *offset == 3), "the marker stays: {records:?}");
        assert_eq!(log.collect_aborted_txns(0, 10), vec![AbortedTxn { producer_id: 7, first_offset: 1, last_offset: 3, last_stable_offset: 4 }]);
    });
}

/// `max.compaction.lag.ms` bounds how long a record waits for its clean: the active segment is
/// never cleaned, so a compacted log rolls it once that old (Kafka's maxSegmentMs), and the
/// rolled segment is then due whatever the dirty ratio.
#[test]
fn max_compaction_lag_rolls_the_active_segment_and_forces_its_clean() {
    run(|| async {
        let dir = TempDir::new("cleaner-max-lag");
        const LAG_MS: i64 = 60_000;
        // Big segments, a week's segment.ms, a ratio never reached: only the lag can do it.
        let config = LogConfig { segment_bytes: 1 << 20, segment_ms: 7 * 24 * 3_600_000, min_cleanable_dirty_ratio: 0.99, max_compaction_lag_ms: LAG_MS, ..config() };
        let mut log = Log::open(&dir.partition(), config.clone(), false).await.unwrap();
        let start_ms = 1_000_000i64;
        let append = |key: &str, now_ms: i64| build_keyed_batch(&[(Some(key.as_bytes()), Some(b"value".as_slice()))], now_ms, None);
        log.append(append("a", start_ms), start_ms).await.unwrap();
        log.append(append("a", start_ms + LAG_MS - 1), start_ms + LAG_MS - 1).await.unwrap();
        assert_eq!(log.segment_count(), 1, "younger than the lag: no roll");
        log.append(append("b", start_ms + LAG_MS), start_ms + LAG_MS).await.unwrap();
        assert_eq!(log.segment_count(), 2, "the active segment rolled once max.compaction.lag.ms old");
        let plan = storage::cleaner::log_to_clean(&log, start_ms + 2 * LAG_MS, i64::MAX).await.unwrap().unwrap();
        assert!(plan.needs_compaction_now && plan.worth_cleaning(config.min_cleanable_dirty_ratio), "{plan:?}");
        // Without compaction the lag means nothing: segment.ms alone rolls.
        let dir = TempDir::new("cleaner-max-lag-delete");
        let mut log = Log::open(&dir.partition(), LogConfig { compact: false, ..config }, false).await.unwrap();
        log.append(append("a", start_ms), start_ms).await.unwrap();
        log.append(append("a", start_ms + LAG_MS), start_ms + LAG_MS).await.unwrap();
        assert_eq!(log.segment_count(), 1);
    });
}

/// `log.cleaner.io.max.bytes.per.second`: a clean of N dirty bytes (read twice: the map, then the
/// rewrite) at a limit of 2N per second takes about a second; unthrottled, a fraction of it.
#[test]
fn the_cleaners_io_is_throttled() {
    run(|| async {
        let mut elapsed = Vec::new();
        for limit in [f64::MAX, 0.0] {
            let dir = TempDir::new("cleaner-throttle");
            let lock = RwLock::new(Log::open(&dir.partition(), LogConfig { segment_bytes: 256 * 1024, ..config() }, false).await.unwrap());
            for i in 0..10_000i64 {
                let key = format!("k{}", i % 20).into_bytes();
                let value = vec![b'v'; 400];
                let batch = build_keyed_batch(&[(Some(&key[..]), Some(&value[..]))], i, None);
                lock.write().await.unwrap().append(batch, i).await.unwrap();
            }
            let dirty_bytes = lock.read().await.unwrap().size_bytes();
            // The map pass reads the dirty part once, the rewrite reads and writes it again.
            let limit = if limit == 0.0 { dirty_bytes as f64 * 2.0 } else { limit };
            let mut cleaner = Cleaner::new(&CleanerConfig { io_max_bytes_per_second: limit, ..CleanerConfig::default() });
            let limits = CleanLimits { last_stable_offset: i64::MAX, ..CleanLimits::default() };
            let started = std::time::Instant::now();
            let CleanOutcome::Cleaned(stats) = cleaner.clean(&lock, &UncompressedCodec, 1_000, &limits, &|| false).await.unwrap() else { panic!("cleaned") };
            elapsed.push(started.elapsed());
            assert!(stats.bytes_read >= dirty_bytes, "{stats:?}");
        }
        let (free, throttled) = (elapsed[0], elapsed[1]);
        // The throttle looks every 100 ms or every 100 ms worth of bytes, whichever comes first.
        assert!(throttled >= std::time::Duration::from_millis(700), "at twice the dirty bytes per second: {throttled:?}");
        assert!(free * 2 < throttled, "unthrottled {free:?}, throttled {throttled:?}");
    });
}

/// One transaction of the transactional model.
struct ModelTxn {
    producer_id: i64,
    first_offset: i64,
    marker_offset: Option<i64>,
    committed: bool,
}

/// One record of the transactional model: `txn` is the index of its transaction, None for a
/// plain write.
struct ModelRecord {
    offset: i64,
    key: Vec<u8>,
    value: Option<Vec<u8>>,
    txn: Option<usize>,
}

#[derive(Default)]
struct TxnModel {
    records: Vec<ModelRecord>,
    txns: Vec<ModelTxn>,
    open: std::collections::HashMap<i64, usize>,
    producer_last_offsets: std::collections::HashMap<i64, i64>,
    sequences: std::collections::HashMap<i64, i32>,
}

impl TxnModel {
    fn last_stable_offset(&self, log_end_offset: i64) -> i64 {
        self.open.values().map(|&t| self.txns[t].first_offset).min().unwrap_or(log_end_offset)
    }

    fn limits(&self, log_end_offset: i64) -> CleanLimits {
        CleanLimits { last_stable_offset: self.last_stable_offset(log_end_offset), producer_last_offsets: self.producer_last_offsets.values().copied().collect() }
    }

    /// Whether a record is visible to read_committed once stable: plain, or of a committed transaction.
    fn committed(&self, record: &ModelRecord) -> bool {
        record.txn.map_or(true, |t| self.txns[t].marker_offset.is_some() && self.txns[t].committed)
    }

    async fn write(&mut self, log: &mut Log, records: &[(Vec<u8>, Option<Vec<u8>>)], producer_id: Option<i64>, now_ms: i64) {
        let pairs: Vec<(Option<&[u8]>, Option<&[u8]>)> = records.iter().map(|(k, v)| (Some(&k[..]), v.as_deref())).collect();
        let batch = match producer_id {
            None => build_keyed_batch(&pairs, now_ms, None),
            Some(pid) => {
                let sequence = self.sequences.entry(pid).or_insert(0);
                let mut batch = build_keyed_batch(&pairs, now_ms, Some((pid, 0, *sequence)));
                *sequence += records.len() as i32;
                batch[21..23].copy_from_slice(&0x10i16.to_be_bytes()); // transactional
                let crc = storage::batch::compute_crc(&batch);
                batch[17..21].copy_from_slice(&crc.to_be_bytes());
                batch
            }
        };
        let info = log.append(batch, now_ms).await.unwrap();
        let txn = producer_id.map(|pid| {
            *self.open.entry(pid).or_insert_with(|| {
                self.txns.push(ModelTxn { producer_id: pid, first_offset: info.base_offset, marker_offset: None, committed: false });
                self.txns.len() - 1
            })
        });
        if let Some(pid) = producer_id {
            self.producer_last_offsets.insert(pid, info.last_offset);
        }
        for (i, (key, value)) in records.iter().enumerate() {
            self.records.push(ModelRecord { offset: info.base_offset + i as i64, key: key.clone(), value: value.clone(), txn });
        }
    }

    /// Ends `producer_id`'s open transaction with a marker, as the partition does (an ABORT
    /// indexed with the last stable offset after it).
    async fn end_txn(&mut self, log: &mut Log, producer_id: i64, commit: bool, now_ms: i64) {
        let Some(t) = self.open.remove(&producer_id) else { return };
        let marker = log.append(storage::test_support::build_txn_batch(producer_id, 1, Some(commit), now_ms), now_ms).await.unwrap().base_offset;
        self.txns[t].marker_offset = Some(marker);
        self.txns[t].committed = commit;
        self.producer_last_offsets.insert(producer_id, marker);
        if !commit {
            let last_stable_offset = self.last_stable_offset(marker + 1);
            log.append_aborted_txn(AbortedTxn { producer_id, first_offset: self.txns[t].first_offset, last_offset: marker, last_stable_offset });
        }
    }
}

/// Every batch of the log: its header and its records (offset, key, value).
async fn read_batches(log: &Log) -> Vec<(storage::batch::BatchHeader, Vec<(i64, Option<Vec<u8>>, Option<Vec<u8>>)>)> {
    let mut batches = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let result = log.read(offset, u64::MAX, i64::MAX, true).await.unwrap();
        if result.slices.is_empty() {
            break;
        }
        for slice in &result.slices {
            let bytes = slice.read_bytes().await.unwrap();
            for batch in storage::batch::split_batches(&bytes).unwrap() {
                let header = storage::batch::validate(batch, storage::batch::Validation::FromLog).unwrap();
                let mut records = Vec::new();
                UncompressedCodec.for_each_record(batch, &mut |r| records.push((r.offset, r.key.map(<[u8]>::to_vec), r.value.map(<[u8]>::to_vec)))).unwrap();
                batches.push((header, records));
            }
            offset = slice.last_offset + 1;
        }
    }
    batches
}

/// A marker as the log holds it: None when its record is gone (a bare header is no marker),
/// else its delete horizon.
fn marker_in(batches: &[(storage::batch::BatchHeader, Vec<(i64, Option<Vec<u8>>, Option<Vec<u8>>)>)], offset: i64) -> Option<Option<i64>> {
    batches.iter().find(|(h, r)| h.is_control() && h.base_offset == offset && !r.is_empty()).map(|(h, _)| h.delete_horizon_ms())
}

/// Whether a data batch of `txn` is in the log.
fn txn_has_data(batches: &[(storage::batch::BatchHeader, Vec<(i64, Option<Vec<u8>>, Option<Vec<u8>>)>)], txn: &ModelTxn) -> bool {
    let end = txn.marker_offset.unwrap_or(i64::MAX);
    batches.iter().any(|(h, _)| !h.is_control() && h.is_transactional() && h.producer_id == txn.producer_id && h.base_offset >= txn.first_offset && h.base_offset < end)
}

/// The read_committed view of the log (records below the last stable offset, those of the
/// aborted transactions its `.txnindex` lists dropped, as a consumer drops them) replays to the
/// model's committed latest values, and holds no record the model knows aborted.
async fn check_committed(log: &Log, model: &TxnModel) {
    let batches = read_batches(log).await;
    let last_stable_offset = model.last_stable_offset(log.log_end_offset());
    let aborted = log.collect_aborted_txns(log.log_start_offset(), log.log_end_offset());
    let mut previous = -1;
    let mut replayed: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
    for (header, records) in &batches {
        assert!(header.base_offset > previous, "batch offsets strictly increase");
        previous = header.last_offset();
        if header.is_control() {
            continue;
        }
        let aborted_batch = header.is_transactional()
            && aborted.iter().any(|t| t.producer_id == header.producer_id && t.first_offset <= header.base_offset && header.last_offset() < t.last_offset);
        for (offset, key, value) in records.iter().filter(|(o, _, _)| *o < last_stable_offset) {
            let written = model.records.iter().find(|r| r.offset == *offset).expect("every record was written");
            assert_eq!((&written.key, &written.value), (key.as_ref().unwrap(), value), "the record at {offset} is the one written");
            if aborted_batch {
                continue;
            }
            assert!(model.committed(written), "read_committed sees the aborted record at {offset}: its .txnindex entry went before it");
            replayed.insert(key.clone().unwrap(), value.clone());
        }
    }
    let mut expected: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
    for record in model.records.iter().filter(|r| r.offset < last_stable_offset && model.committed(r)) {
        expected.insert(record.key.clone(), record.value.clone());
    }
    let live = |m: &BTreeMap<Vec<u8>, Option<Vec<u8>>>| m.iter().filter(|(_, v)| v.is_some()).map(|(k, v)| (k.clone(), v.clone())).collect::<BTreeMap<_, _>>();
    assert_eq!(live(&replayed), live(&expected), "read_committed replays to the committed latest values");
}

/// What Kafka's rule says became of every marker in the part a clean rewrote (the segments below
/// `cleaned_upper`), from the log before the clean: a marker stays while a batch of its
/// transaction was in the log; then the first clean stamps its horizon (now +
/// delete.retention.ms) and a clean at or past the horizon removes it. An ABORT keeps its
/// `.txnindex` entry exactly while its data stays; aborted data in the rewritten part is gone.
#[derive(Default)]
struct MarkerCounts {
    stamped: usize,
    removed: usize,
    kept_for_data: usize,
}

fn check_markers(
    before: &[(storage::batch::BatchHeader, Vec<(i64, Option<Vec<u8>>, Option<Vec<u8>>)>)],
    after: &[(storage::batch::BatchHeader, Vec<(i64, Option<Vec<u8>>, Option<Vec<u8>>)>)],
    aborted_after: &[AbortedTxn],
    model: &TxnModel,
    cleaned_upper: i64,
    now_ms: i64,
    counts: &mut MarkerCounts,
) {
    for txn in &model.txns {
        let Some(marker) = txn.marker_offset else { continue };
        let (was, is) = (marker_in(before, marker), marker_in(after, marker));
        if marker >= cleaned_upper {
            assert_eq!(is, was, "a marker past the rewritten part is untouched ({marker})");
            continue;
        }
        let had_data = txn_has_data(before, txn);
        let expected = match was {
            None => None,
            Some(_) if had_data => Some(None),
            Some(None) => Some(Some(now_ms + DELETE_RETENTION_MS)),
            Some(Some(horizon)) if horizon <= now_ms => None,
            Some(Some(horizon)) => Some(Some(horizon)),
        };
        assert_eq!(is, expected, "marker at {marker} (data before the clean: {had_data}, was {was:?}, now {now_ms})");
        match (was, is) {
            (Some(None), Some(Some(_))) => counts.stamped += 1,
            (Some(_), None) => counts.removed += 1,
            (Some(_), Some(None)) => counts.kept_for_data += 1,
            _ => {}
        }
        if !txn.committed {
            let indexed = aborted_after.iter().any(|t| t.producer_id == txn.producer_id && t.last_offset == marker);
            assert_eq!(indexed, had_data, "the .txnindex entry of the abort at {marker} stays exactly while its data does");
            assert!(
                !after.iter().any(|(h, r)| !r.is_empty() && !h.is_control() && h.producer_id == txn.producer_id && h.base_offset >= txn.first_offset && h.base_offset < marker),
                "the aborted data before {marker} is gone"
            );
        }
    }
}

/// One clean at `now_ms` with the model's limits, checked (`check_markers`, `check_committed`).
/// Returns whether it cleaned.
async fn clean_and_check(lock: &RwLock<Log>, cleaner: &mut Cleaner, model: &TxnModel, now_ms: i64, counts: &mut MarkerCounts) -> bool {
    let (before, bases, limits) = {
        let log = lock.read().await.unwrap();
        (read_batches(&log).await, log.segment_base_offsets(), model.limits(log.log_end_offset()))
    };
    let outcome = cleaner.clean(lock, &UncompressedCodec, now_ms, &limits, &|| false).await.unwrap();
    let CleanOutcome::Cleaned(stats) = outcome else { return false };
    let log = lock.read().await.unwrap();
    let cleaned_upper = bases.iter().copied().find(|&b| b >= stats.end_offset).unwrap_or(i64::MAX);
    let after = read_batches(&log).await;
    let aborted = log.collect_aborted_txns(log.log_start_offset(), log.log_end_offset());
    check_markers(&before, &after, &aborted, model, cleaned_upper, now_ms, counts);
    check_committed(&log, model).await;
    true
}

/// Transactions against the model: random plain and transactional keyed writes (tombstones among
/// them) by three producers, commits and aborts, cleans at random moments on a moving clock,
/// crashes and reopens. After each clean: read_committed replays to the committed latest values
/// and every marker is where Kafka's rule puts it (`check_markers`); in the end, with every
/// transaction closed and delete.retention.ms passed, only markers whose data stays are left.
#[test]
fn transactional_writes_and_cleans_match_the_committed_model() {
    for seed in 1..=4u64 {
        run(move || async move {
            let dir = TempDir::new("cleaner-txn-model");
            let mut rng = Rng::new(seed);
            let mut now_ms = 1_000_000i64;
            let lock = RwLock::new(Log::open(&dir.partition(), config(), false).await.unwrap());
            let mut cleaner = Cleaner::new(&CleanerConfig { dedupe_buffer_bytes: 25 * 64, ..CleanerConfig::default() });
            let mut model = TxnModel::default();
            let mut counts = MarkerCounts::default();
            let mut cleans = 0;
            for step in 0..700 {
                now_ms += rng.below(300) as i64;
                let producer = 1 + rng.below(3) as i64;
                let action = rng.below(10);
                if action >= 8 {
                    model.end_txn(&mut *lock.write().await.unwrap(), producer, action == 8 || rng.below(2) == 0, now_ms).await;
                } else {
                    let count = 1 + rng.below(3) as usize;
                    let records: Vec<(Vec<u8>, Option<Vec<u8>>)> = (0..count)
                        .map(|i| {
                            let key = format!("key-{}", rng.below(30)).into_bytes();
                            let value = (rng.below(8) != 0).then(|| format!("value-{step}-{i}-{}", "x".repeat(rng.below(50) as usize)).into_bytes());
                            (key, value)
                        })
                        .collect();
                    let producer_id = (action >= 4).then_some(producer);
                    model.write(&mut *lock.write().await.unwrap(), &records, producer_id, now_ms).await;
                }
                if rng.below(25) == 0 && clean_and_check(&lock, &mut cleaner, &model, now_ms, &mut counts).await {
                    cleans += 1;
                }
                if rng.below(150) == 0 {
                    // A crash and reopen: the cleaned segments and their .txnindex come back.
                    drop(lock.write().await.unwrap());
                    let reopened = Log::open(&dir.partition(), config(), false).await.unwrap();
                    *lock.write().await.unwrap() = reopened;
                    check_committed(&lock.read().await.unwrap(), &model).await;
                }
            }
            assert!(cleans >= 10, "seed {seed}: {cleans} cleans");

            // Every transaction closed, then rounds of writes and cleans delete.retention.ms apart:
            // a transaction's last data goes in one round's clean, the next stamps its marker's
            // horizon, the one after removes it.
            for producer in 1..=3 {
                model.end_txn(&mut *lock.write().await.unwrap(), producer, rng.below(2) == 0, now_ms).await;
            }
            let mut big = Cleaner::new(&CleanerConfig::default());
            for round in 0..5 {
                now_ms += DELETE_RETENTION_MS + 1;
                for i in 0..20 {
                    let records = vec![(format!("filler-{round}-{i}").into_bytes(), Some(vec![b'f'; 80]))];
                    model.write(&mut *lock.write().await.unwrap(), &records, None, now_ms).await;
                }
                while clean_and_check(&lock, &mut big, &model, now_ms, &mut counts).await {}
            }
            let log = lock.read().await.unwrap();
            let batches = read_batches(&log).await;
            let clean_end = log.cleaner_checkpoint().unwrap();
            for txn in model.txns.iter().filter(|t| t.marker_offset.is_some_and(|m| m < clean_end)) {
                let marker = txn.marker_offset.unwrap();
                assert_eq!(marker_in(&batches, marker).is_some(), txn_has_data(&batches, txn), "seed {seed}: the marker at {marker} stays exactly while its data does");
            }
            assert!(counts.stamped > 0 && counts.removed > 0 && counts.kept_for_data > 0, "seed {seed}: every case of the rule ran");
            eprintln!("seed {seed}: {cleans} cleans, {} transactions, markers stamped {} removed {} kept for their data {}", model.txns.len(), counts.stamped, counts.removed, counts.kept_for_data);
        });
    }
}

