mod common;

use std::io::{Seek, SeekFrom, Write};

use common::*;
use storage::{Log, LogConfig, StorageError};

fn config() -> LogConfig {
    LogConfig { segment_bytes: 8192, index_interval_bytes: 256, ..LogConfig::default() }
}

/// Appends `count` batches of 3 records each and returns the stored bytes per batch.
async fn fill(log: &mut Log, count: usize) -> Vec<Vec<u8>> {
    let mut stored = Vec::new();
    for i in 0..count {
        let batch = build_batch(3, 200, i as i64, i as u8);
        let info = log.append(batch.clone(), 0).await.unwrap();
        log.flush_if_due().await.unwrap();
        stored.push(with_base_offset(batch, info.base_offset));
    }
    stored
}

async fn read_all(log: &Log) -> Vec<u8> {
    let mut all = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let result = log.read(offset, u64::MAX, i64::MAX, true).await.unwrap();
        for slice in &result.slices {
            all.extend(slice.read_bytes().await.unwrap());
            offset = slice.last_offset + 1;
        }
    }
    all
}

fn last_segment(dir: &std::path::Path) -> std::path::PathBuf {
    let mut logs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.pop().unwrap()
}

#[test]
fn a_truncated_tail_is_cut_back_to_the_last_whole_batch() {
    for cut in [1u64, 11, 12, 60, 61, 150] {
        run(move || async move {
            let dir = TempDir::new("torn");
            let mut log = Log::open(&dir.partition(), config(), false).await.unwrap();
            let stored = fill(&mut log, 10).await;
            drop(log); // no close: unclean
            let path = last_segment(&dir.partition());
            let size = std::fs::metadata(&path).unwrap().len();
            std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(size - cut).unwrap();
            let log = Log::open(&dir.partition(), config(), false).await.unwrap();
            let expected: Vec<u8> = stored[..9].concat();
            assert_eq!(log.log_end_offset(), 27, "cut {cut}");
            assert_eq!(read_all(&log).await, expected, "cut {cut}");
        });
    }
}

#[test]
fn a_bit_flip_in_the_tail_truncates_from_that_batch() {
    run(|| async {
        let dir = TempDir::new("flip");
        let mut log = Log::open(&dir.partition(), config(), false).await.unwrap();
        let stored = fill(&mut log, 10).await;
        drop(log);
        let path = last_segment(&dir.partition());
        let size = std::fs::metadata(&path).unwrap().len();
        // Flip one bit inside the records of the second-to-last batch.
        let position = size - stored[9].len() as u64 - 100;
        let mut file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        file.seek(SeekFrom::Start(position)).unwrap();
        let mut byte = [0u8];
        std::io::Read::read_exact(&mut file, &mut byte).unwrap();
        file.seek(SeekFrom::Start(position)).unwrap();
        file.write_all(&[byte[0] ^ 0x10]).unwrap();
        drop(file);
        let mut log = Log::open(&dir.partition(), config(), false).await.unwrap();
        assert_eq!(log.log_end_offset(), 24);
        assert_eq!(read_all(&log).await, stored[..8].concat());
        // The log carries on from there.
        let info = log.append(build_batch(1, 1, 0, 0), 0).await.unwrap();
        assert_eq!(info.base_offset, 24);
    });
}

#[test]
fn garbage_after_the_last_batch_is_removed() {
    run(|| async {
        let dir = TempDir::new("garbage");
        let mut log = Log::open(&dir.partition(), config(), false).await.unwrap();
        let stored = fill(&mut log, 4).await;
        drop(log);
        let path = last_segment(&dir.partition());
        let mut file = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[0xAB; 300]).unwrap();
        drop(file);
        let log = Log::open(&dir.partition(), config(), false).await.unwrap();
        assert_eq!(read_all(&log).await, stored.concat());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), stored.concat().len() as u64);
    });
}

#[test]
fn corruption_inside_a_closed_segment_takes_the_partition_offline() {
    run(|| async {
        let dir = TempDir::new("offline");
        let mut log = Log::open(&dir.partition(), config(), false).await.unwrap();
        fill(&mut log, 40).await; // several segments
        assert!(log.segment_count() >= 3);
        drop(log);
        // Corrupt the first segment and lose the recovery point so recovery scans it.
        std::fs::remove_file(dir.partition().join("recovery-point-offset-checkpoint")).unwrap();
        let first = dir.partition().join("00000000000000000000.log");
        let mut file = std::fs::OpenOptions::new().write(true).open(&first).unwrap();
        file.seek(SeekFrom::Start(500)).unwrap();
        file.write_all(&[0xFF; 4]).unwrap();
        drop(file);
        match Log::open(&dir.partition(), config(), false).await {
            Err(StorageError::Offline { path, position, .. }) => {
                assert_eq!(path, first);
                assert!(position <= 500, "reported at the batch holding the bad bytes: {position}");
            }
            Err(other) => panic!("expected offline, got {other}"),
            Ok(_) => panic!("expected offline, the log opened"),
        }
        assert!(first.exists(), "nothing is silently dropped");
    });
}

#[test]
fn missing_or_corrupt_indexes_are_rebuilt_even_after_a_clean_shutdown() {
    run(|| async {
        let dir = TempDir::new("index");
        let mut log = Log::open(&dir.partition(), config(), false).await.unwrap();
        let stored = fill(&mut log, 40).await;
        let before: Vec<_> = {
            let mut v = Vec::new();
            for offset in [0i64, 1, 50, 77, 119] {
                v.push(log.read(offset, 500, i64::MAX, true).await.unwrap().slices[0].position);
            }
            v
        };
        log.close().await.unwrap();
        let first_index = dir.partition().join("00000000000000000000.index");
        let good_index = std::fs::read(&first_index).unwrap();
        assert!(good_index.len() >= 16, "the index has entries");
        std::fs::remove_file(&first_index).unwrap();
        let second_index = dir.partition().join(format!("{:020}.index", log_base(&dir, 1)));
        std::fs::write(&second_index, [1, 2, 3]).unwrap();
        let log = Log::open(&dir.partition(), config(), true).await.unwrap();
        for (i, offset) in [0i64, 1, 50, 77, 119].into_iter().enumerate() {
            assert_eq!(log.read(offset, 500, i64::MAX, true).await.unwrap().slices[0].position, before[i]);
        }
        assert_eq!(read_all(&log).await, stored.concat());
        assert_eq!(std::fs::read(&first_index).unwrap(), good_index, "rebuilt identically");
    });
}

fn log_base(dir: &TempDir, nth: usize) -> i64 {
    let mut logs: Vec<i64> = std::fs::read_dir(dir.partition())
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".log")?.parse().ok())
        .collect();
    logs.sort();
    logs[nth]
}

#[test]
fn a_clean_shutdown_skips_the_scan_and_keeps_everything() {
    run(|| async {
        let dir = TempDir::new("clean");
        let mut log = Log::open(&dir.partition(), config(), false).await.unwrap();
        let stored = fill(&mut log, 30).await;
        log.close().await.unwrap();
        let log = Log::open(&dir.partition(), config(), true).await.unwrap();
        assert_eq!(log.log_end_offset(), 90);
        assert_eq!(log.recovery_point(), 90);
        assert_eq!(read_all(&log).await, stored.concat());
    });
}

#[test]
fn flush_messages_advances_the_recovery_point_and_checkpoint_writes_it_down() {
    run(|| async {
        let dir = TempDir::new("flush");
        let config = LogConfig { flush_messages: 6, ..config() };
        let mut log = Log::open(&dir.partition(), config, false).await.unwrap();
        fill(&mut log, 1).await;
        assert_eq!(log.recovery_point(), 0);
        fill(&mut log, 1).await;
        assert_eq!(log.recovery_point(), 6, "six records reached flush.messages");
        let checkpoint_file = dir.partition().join("recovery-point-offset-checkpoint");
        let text = std::fs::read_to_string(&checkpoint_file).unwrap();
        assert_eq!(text, "0\n1\ntopic 0 0\n", "a flush only fdatasyncs the data");
        log.checkpoint().await.unwrap();
        let text = std::fs::read_to_string(&checkpoint_file).unwrap();
        assert_eq!(text, "0\n1\ntopic 0 6\n");
    });
}
