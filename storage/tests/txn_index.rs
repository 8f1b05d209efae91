//! The aborted-transaction index against a simple reference: random transactional appends,
//! commits, aborts, plain appends, truncations and clean or unclean reopens; after each step
//! every search (`Log::collect_aborted_txns`) answers what a scan of the reference's list of
//! aborted transactions answers, and recovery's replay (`OpenTxns`) agrees with the reference on
//! the first unstable offset (what the partition's last stable offset is computed from).

mod common;

use std::collections::BTreeMap;

use common::*;
use storage::test_support::build_txn_batch;
use storage::txn_index::{AbortedTxn, OpenTxns};
use storage::{Log, LogConfig};

/// What the log holds, as the reference sees it: (producer id, offset, kind) per batch.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Data,
    Commit,
    Abort,
    Plain,
}

/// The reference: replays the batches below `end` for the open transactions and the aborted ones.
fn reference(batches: &[(i64, i64, i64, Kind)]) -> (BTreeMap<i64, i64>, Vec<AbortedTxn>) {
    let mut open = BTreeMap::new();
    let mut aborted = Vec::new();
    for &(producer_id, offset, _, kind) in batches {
        match kind {
            Kind::Data => {
                open.entry(producer_id).or_insert(offset);
            }
            Kind::Commit | Kind::Abort => {
                let first_offset = open.remove(&producer_id).unwrap_or(offset);
                if kind == Kind::Abort {
                    let last_stable_offset = open.values().copied().min().unwrap_or(offset + 1);
                    aborted.push(AbortedTxn { producer_id, first_offset, last_offset: offset, last_stable_offset });
                }
            }
            Kind::Plain => {}
        }
    }
    (open, aborted)
}

#[test]
fn aborted_transactions_match_a_simple_reference() {
    for seed in 1..=16u64 {
        run(move || async move {
            let mut rng = Rng::new(seed);
            let dir = TempDir::new("txn-model");
            let config = LogConfig { segment_bytes: 512 + rng.below(2048), index_interval_bytes: 256, ..LogConfig::default() };
            let mut log = Log::open(&dir.partition(), config.clone(), false).await.unwrap();
            // (producer id, base offset, record count, kind) of every batch in the log.
            let mut batches: Vec<(i64, i64, i64, Kind)> = Vec::new();
            for step in 0..250i64 {
                let producer_id = 1 + rng.below(4) as i64;
                match rng.below(12) {
                    0..=4 => {
                        let count = 1 + rng.below(3) as i32;
                        let info = log.append(build_txn_batch(producer_id, count, None, step), step).await.unwrap();
                        batches.push((producer_id, info.base_offset, count as i64, Kind::Data));
                    }
                    5 => {
                        let info = log.append(build_batch(1, 10, step, 1), step).await.unwrap();
                        batches.push((-1, info.base_offset, 1, Kind::Plain));
                    }
                    6..=8 => {
                        let commit = rng.below(2) == 0;
                        let info = log.append(build_txn_batch(producer_id, 1, Some(commit), step), step).await.unwrap();
                        batches.push((producer_id, info.base_offset, 1, if commit { Kind::Commit } else { Kind::Abort }));
                        if !commit {
                            // As the partition does: the entry from what it knows of the transaction.
                            let entry = *reference(&batches).1.last().unwrap();
                            log.append_aborted_txn(entry);
                        }
                    }
                    9 => {
                        let end = log.log_end_offset();
                        let target = log.log_start_offset() + rng.below((end - log.log_start_offset()) as u64 + 1) as i64;
                        log.truncate_to(target).await.unwrap();
                        batches.retain(|&(_, offset, _, _)| offset < log.log_end_offset());
                    }
                    _ => log = reopen(log, &dir.partition(), config.clone(), rng.below(2) == 0).await,
                }
                let (open, aborted) = reference(&batches);
                let end = log.log_end_offset();
                for _ in 0..4 {
                    let fetch_offset = rng.below(end as u64 + 1) as i64;
                    let upper_bound = fetch_offset + 1 + rng.below((end - fetch_offset) as u64 + 1) as i64;
                    let expected: Vec<AbortedTxn> =
                        aborted.iter().copied().filter(|t| t.last_offset >= fetch_offset && t.first_offset < upper_bound).collect();
                    assert_eq!(log.collect_aborted_txns(fetch_offset, upper_bound), expected, "seed {seed} step {step}: [{fetch_offset}, {upper_bound})");
                }
                let mut replay = OpenTxns::default();
                for header in log.batch_headers_since(0).await.unwrap() {
                    replay.record(&header);
                }
                assert_eq!(replay.first_unstable_offset(), open.values().copied().min(), "seed {seed} step {step}");
            }
        });
    }
}
