mod common;

use common::*;
use storage::{Log, LogConfig, StorageError};

fn small_segments() -> LogConfig {
    LogConfig { segment_bytes: 4096, index_interval_bytes: 512, ..LogConfig::default() }
}

/// Random appends and reads checked against a model: a Vec of (base offset, stored bytes).
#[test]
fn random_appends_and_reads_match_a_simple_model() {
    for seed in 1..=12u64 {
        run(move || async move {
            let mut rng = Rng::new(seed);
            let dir = TempDir::new("model");
            let config = LogConfig {
                segment_bytes: 1024 + rng.below(8192),
                index_interval_bytes: 1 + rng.below(2048),
                ..LogConfig::default()
            };
            let mut log = Log::open(&dir.partition(), config.clone(), false).await.unwrap();
            let mut model: Vec<(i64, Vec<u8>)> = Vec::new();
            let mut next = 0i64;
            for step in 0..300 {
                match rng.below(10) {
                    0..=5 => {
                        let batches = 1 + rng.below(3);
                        let mut bytes = Vec::new();
                        let mut stored = Vec::new();
                        let mut offset = next;
                        for _ in 0..batches {
                            let count = 1 + rng.below(5) as i32;
                            let batch = build_batch(count, rng.below(300) as usize, 1000 + step, (step % 251) as u8);
                            stored.push((offset, with_base_offset(batch.clone(), offset)));
                            offset += count as i64;
                            bytes.extend(batch);
                        }
                        let info = log.append(bytes, 1000 + step as i64).await.unwrap();
                        assert_eq!(info.base_offset, next, "seed {seed}");
                        assert_eq!(info.last_offset, offset - 1);
                        next = offset;
                        model.extend(stored);
                    }
                    6 => {
                        // Reopen, cleanly or not: nothing may change.
                        log = reopen(log, &dir.partition(), config.clone(), rng.below(2) == 0).await;
                    }
                    _ => {
                        if model.is_empty() {
                            continue;
                        }
                        let target = rng.below(next as u64) as i64;
                        let max_bytes = rng.below(3000);
                        let upper = if rng.below(3) == 0 { rng.below(next as u64 + 1) as i64 } else { i64::MAX };
                        let result = log.read(target, max_bytes, upper, true).await.unwrap();
                        let mut got = Vec::new();
                        for slice in &result.slices {
                            got.extend(slice.read_bytes().await.unwrap());
                        }
                        // Expected: batches from the one holding `target`, whole, while under the
                        // upper bound, within max_bytes except the first one. Reads stay in one segment,
                        // so the model may hold more; the read must be a prefix of what it holds.
                        let start = model.iter().position(|(base, b)| {
                            let count = i32::from_be_bytes(b[57..61].try_into().unwrap()) as i64;
                            base + count > target
                        }).unwrap();
                        let mut expected = Vec::new();
                        for (base, b) in &model[start..] {
                            let count = i32::from_be_bytes(b[57..61].try_into().unwrap()) as i64;
                            if base + count - 1 >= upper {
                                break;
                            }
                            if !expected.is_empty() && (expected.len() + b.len()) as u64 > max_bytes {
                                break;
                            }
                            expected.extend_from_slice(b);
                        }
                        assert!(expected.starts_with(&got), "seed {seed} step {step}: read is not a prefix of the model");
                        if !expected.is_empty() {
                            assert!(!got.is_empty(), "seed {seed} step {step}: read returned nothing, model had data");
                        }
                    }
                }
                assert_eq!(log.log_end_offset(), next);
            }
            // Everything, segment by segment, equals the model byte for byte.
            let mut all = Vec::new();
            let mut offset = 0;
            while offset < next {
                let result = log.read(offset, u64::MAX, i64::MAX, true).await.unwrap();
                for slice in &result.slices {
                    all.extend(slice.read_bytes().await.unwrap());
                    offset = slice.last_offset + 1;
                }
            }
            let expected: Vec<u8> = model.iter().flat_map(|(_, b)| b.iter().copied()).collect();
            assert_eq!(all, expected, "seed {seed}");
        });
    }
}

#[test]
fn reads_outside_the_log_are_out_of_range_and_at_the_end_are_empty() {
    run(|| async {
        let dir = TempDir::new("range");
        let mut log = Log::open(&dir.partition(), small_segments(), false).await.unwrap();
        log.append(build_batch(3, 10, 0, 1), 0).await.unwrap();
        assert!(log.read(3, 100, i64::MAX, true).await.unwrap().slices.is_empty());
        assert!(matches!(log.read(4, 100, i64::MAX, true).await, Err(StorageError::OffsetOutOfRange { .. })));
        assert!(matches!(log.read(-1, 100, i64::MAX, true).await, Err(StorageError::OffsetOutOfRange { .. })));
        // Without min_one_batch a batch larger than the budget is not returned.
        assert!(log.read(0, 10, i64::MAX, false).await.unwrap().slices.is_empty());
        // The upper bound (high watermark) hides batches that reach it.
        assert!(log.read(0, 1000, 2, true).await.unwrap().slices.is_empty());
    });
}

#[test]
fn invalid_and_oversized_batches_write_nothing() {
    run(|| async {
        let dir = TempDir::new("invalid");
        let config = LogConfig { max_message_bytes: 500, ..small_segments() };
        let mut log = Log::open(&dir.partition(), config, false).await.unwrap();
        let good = build_batch(1, 10, 0, 1);
        let mut bad = build_batch(1, 10, 0, 1);
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        let mut both = good.clone();
        both.extend(bad);
        assert!(matches!(log.append(both, 0).await, Err(StorageError::CorruptBatch(_))));
        assert!(matches!(log.append(build_batch(1, 600, 0, 1), 0).await, Err(StorageError::RecordTooLarge { .. })));
        assert!(matches!(log.append(good[..good.len() - 3].to_vec(), 0).await, Err(StorageError::CorruptBatch(_))));
        assert_eq!(log.log_end_offset(), 0);
        assert_eq!(log.size_bytes(), 0);
    });
}

#[test]
fn segments_roll_at_size_and_age_and_retention_deletes_closed_ones() {
    run(|| async {
        let dir = TempDir::new("roll");
        let mut config = small_segments();
        config.segment_ms = 1_000;
        let mut log = Log::open(&dir.partition(), config.clone(), false).await.unwrap();
        let batch = build_batch(1, 900, 0, 1); // about 970 bytes: four fit in a 4 KiB segment
        for _ in 0..4 {
            log.append(batch.clone(), 0).await.unwrap();
        }
        assert_eq!(log.segment_count(), 1, "four batches fit");
        log.append(batch.clone(), 0).await.unwrap();
        assert_eq!(log.segment_base_offsets(), vec![0, 4], "the fifth rolls");
        log.append(batch.clone(), 999).await.unwrap();
        assert_eq!(log.segment_count(), 2, "not old enough yet");
        log.append(batch.clone(), 1000).await.unwrap();
        assert_eq!(log.segment_base_offsets(), vec![0, 4, 6], "segment.ms rolls");
        for name in ["00000000000000000000.log", "00000000000000000000.index", "00000000000000000000.timeindex"] {
            assert!(dir.partition().join(name).exists(), "{name}");
        }

        // retention.bytes: delete the oldest closed segment while the rest still reach the limit
        // (exactly at it here; one byte more and nothing goes).
        config.retention_bytes = log.size_bytes() as i64 - 4 * batch.len() as i64 + 1;
        log.set_config(config.clone());
        assert_eq!(log.apply_retention(0).await.unwrap(), 0);
        config.retention_bytes -= 1;
        log.set_config(config.clone());
        assert_eq!(log.apply_retention(0).await.unwrap(), 1);
        assert_eq!(log.log_start_offset(), 4);
        assert!(!dir.partition().join("00000000000000000000.log").exists());
        assert!(matches!(log.read(0, 100, i64::MAX, true).await, Err(StorageError::OffsetOutOfRange { .. })));

        // retention.ms by max timestamp (records carry timestamps 0..): everything closed expires,
        // the active segment never does.
        config.retention_bytes = -1;
        config.retention_ms = 10;
        log.set_config(config);
        assert_eq!(log.apply_retention(1_000_000).await.unwrap(), 1);
        assert_eq!(log.segment_base_offsets(), vec![6]);
        assert_eq!(log.apply_retention(1_000_000).await.unwrap(), 0);
        assert_eq!(log.log_start_offset(), 6);
        assert_eq!(log.log_end_offset(), 7);
    });
}

#[test]
fn a_file_slice_survives_the_deletion_of_its_segment() {
    run(|| async {
        let dir = TempDir::new("slice");
        let config = LogConfig { retention_bytes: 0, ..small_segments() };
        let mut log = Log::open(&dir.partition(), config, false).await.unwrap();
        let batch = build_batch(1, 3000, 0, 9);
        log.append(batch.clone(), 0).await.unwrap();
        log.append(batch.clone(), 0).await.unwrap();
        let slice = log.read(0, 10_000, i64::MAX, true).await.unwrap().slices.remove(0);
        assert_eq!(log.apply_retention(0).await.unwrap(), 1);
        assert_eq!(slice.read_bytes().await.unwrap(), with_base_offset(batch, 0));
    });
}

#[test]
fn timestamp_lookup_finds_the_first_record_at_or_after() {
    run(|| async {
        let dir = TempDir::new("time");
        let mut log = Log::open(&dir.partition(), small_segments(), false).await.unwrap();
        // Batches of 5 records with timestamps 100.., 200.., ...: spread over several segments.
        for i in 0..20 {
            log.append(build_batch(5, 300, 100 * (i + 1), 1), 0).await.unwrap();
        }
        assert!(log.segment_count() > 2);
        assert_eq!(log.offset_for_timestamp(0).await.unwrap(), Some((0, 100)));
        assert_eq!(log.offset_for_timestamp(100).await.unwrap(), Some((0, 100)));
        assert_eq!(log.offset_for_timestamp(103).await.unwrap(), Some((3, 103)));
        assert_eq!(log.offset_for_timestamp(105).await.unwrap(), Some((5, 200)));
        assert_eq!(log.offset_for_timestamp(1504).await.unwrap(), Some((74, 1504)));
        assert_eq!(log.offset_for_timestamp(2004).await.unwrap(), Some((99, 2004)));
        assert_eq!(log.offset_for_timestamp(2005).await.unwrap(), None);
        assert_eq!(log.max_timestamp(), Some(2004));
        // After a clean reopen the indexes come from the files and answer the same.
        log.close().await.unwrap();
        let log = Log::open(&dir.partition(), small_segments(), true).await.unwrap();
        assert_eq!(log.offset_for_timestamp(1504).await.unwrap(), Some((74, 1504)));
        assert_eq!(log.offset_for_timestamp(105).await.unwrap(), Some((5, 200)));
    });
}

#[test]
fn log_append_time_topics_stamp_batches() {
    run(|| async {
        let dir = TempDir::new("lat");
        let config = LogConfig { timestamp_type: storage::batch::TimestampType::LogAppendTime, ..small_segments() };
        let mut log = Log::open(&dir.partition(), config, false).await.unwrap();
        let info = log.append(build_batch(2, 5, 7, 1), 123_456).await.unwrap();
        assert_eq!(info.log_append_time_ms, 123_456);
        let bytes = log.read_bytes(0, 1000).await.unwrap();
        let header = storage::batch::validate(&bytes, storage::batch::Validation::FromLog).unwrap();
        assert_eq!(header.max_timestamp, 123_456);
    });
}
