//! Transactions across shards and brokers: which shard coordinates a transactional id (the
//! owner of its `__transaction_state` partition, as `group_router.rs` does for groups), the
//! delivery of the coordinator's COMMIT/ABORT markers to every partition of a transaction
//! (Kafka's TransactionMarkerChannelManager), and the shard's transaction tasks (load or follow
//! leadership, deliver markers, abort timed-out transactions, expire idle ids).
//!
//! Markers: standalone, each goes straight to the partition's owning shard (`Router::call` ->
//! `write_marker_here`); in cluster mode to the partition's leader, this broker's own shard
//! likewise, another broker with WriteTxnMarkers (v1) through the shard's marker channel
//! (`inter_broker/marker_channel.rs`: batched per destination, over pooled connections), every
//! destination at once. A
//! partition that fails retriably is retried (50 ms doubling to 1 s) until every marker is in,
//! or until this shard stops coordinating the id (the next coordinator resends them after
//! loading); a partition whose topic is gone counts as done, as in Kafka.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use futures_lite::StreamExt;
use kafka_protocol::messages::{ApiKey, ProducerId, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::clock::now_ms;
use crate::partition::{AppendError, HighWatermarkWaitError, PartitionError, TxnMarker};
use crate::shard_context::Shard;
use crate::topics::CONSUMER_OFFSETS_TOPIC;
use crate::txn::{partition_for_transactional_id, transaction_state_partition_count, MarkerJob, TRANSACTION_STATE_TOPIC};

/// How long a marker append waits for the ISR in cluster mode (Kafka writes markers acks=-1).
const MARKER_REPLICATION_TIMEOUT_MS: i32 = 30_000;
const RETRY_FIRST_MS: u64 = 50;
const RETRY_MAX_MS: u64 = 1_000;
/// A KIP-890 verification by another broker (waiting for a pooled connection, connecting, the
/// round trip): past it the produce is answered retriably and the client retries.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(15);

/// The shard coordinating `transactional_id`.
pub fn shard_for_transactional_id(shard: &Shard, transactional_id: &str) -> usize {
    let partition = partition_for_transactional_id(transactional_id, transaction_state_partition_count(&shard.broker));
    shard.owner_of(TRANSACTION_STATE_TOPIC, partition)
}

/// The shard's transaction tasks, for its life (spawned by `tasks.rs`, dropped at shutdown).
pub async fn run_transaction_tasks(shard: Rc<Shard>) {
    let loader = glommio::spawn_local(crate::txn::loader::run(shard.txns.clone()));
    let timers = glommio::spawn_local(expire_transactions(shard.clone()));
    deliver_markers(shard).await;
    drop(timers);
    drop(loader);
}

/// Every `transaction.abort.timed.out.transaction.cleanup.interval.ms`: aborts transactions past
/// their timeout; every `transaction.remove.expired.transaction.cleanup.interval.ms`: removes
/// idle transactional ids past `transactional.id.expiration.ms`.
async fn expire_transactions(shard: Rc<Shard>) {
    let config = &shard.broker.config;
    let abort_every_ms = config.transaction_abort_timed_out_transaction_cleanup_interval_ms.max(10);
    let remove_every_ms = config.transaction_remove_expired_transaction_cleanup_interval_ms.max(10) as i64;
    let mut last_removal_ms = now_ms();
    loop {
        glommio::timer::sleep(Duration::from_millis(abort_every_ms)).await;
        let now = now_ms();
        shard.txns.abort_timed_out(now).await;
        if now - last_removal_ms >= remove_every_ms {
            last_removal_ms = now;
            shard.txns.expire_transactional_ids(now).await;
        }
    }
}

/// Takes the coordinator's marker jobs; each runs as its own task (a slow broker holds up only
/// its own transactions). At most one job per transactional id exists (see `txn::coordinator`).
async fn deliver_markers(shard: Rc<Shard>) {
    let Some(mut jobs) = shard.txns.take_marker_jobs() else { return };
    while let Some(job) = jobs.next().await {
        glommio::spawn_local(deliver(shard.clone(), job)).detach();
    }
}

async fn deliver(shard: Rc<Shard>, job: MarkerJob) {
    let marker = TxnMarker { producer_id: job.producer_id, producer_epoch: job.producer_epoch, coordinator_epoch: job.coordinator_epoch, commit: job.commit };
    let mut remaining = job.partitions.clone();
    let mut backoff_ms = RETRY_FIRST_MS;
    while !remaining.is_empty() {
        if !shard.txns.still_coordinates(&job) {
            return;
        }
        remaining = match write_markers(&shard, &marker, remaining).await {
            Ok(retry) => retry,
            Err(error) => {
                // Kafka's abortSending: a partition knows a newer producer or coordinator epoch,
                // so this coordinator is stale; the current one finishes the transaction.
                tracing::warn!(transactional_id = job.transactional_id, error, "markers refused as stale; leaving the transaction to the current coordinator");
                return;
            }
        };
        if !remaining.is_empty() {
            tracing::debug!(transactional_id = job.transactional_id, left = remaining.len(), "markers to retry");
            glommio::timer::sleep(Duration::from_millis(backoff_ms)).await;
            backoff_ms = (backoff_ms * 2).min(RETRY_MAX_MS);
        }
    }
    let mut backoff_ms = RETRY_FIRST_MS;
    loop {
        match shard.txns.complete_markers(&job).await {
            Ok(()) | Err(None) => return,
            Err(Some(error)) => {
                tracing::warn!(transactional_id = job.transactional_id, error, "completing a transaction failed; retrying");
                glommio::timer::sleep(Duration::from_millis(backoff_ms)).await;
                backoff_ms = (backoff_ms * 2).min(RETRY_MAX_MS);
            }
        }
    }
}

/// One round: writes `marker` to each partition; returns those to retry, or the error of a
/// partition that refuses this coordinator's marker as stale.
async fn write_markers(shard: &Rc<Shard>, marker: &TxnMarker, partitions: BTreeSet<(String, i32)>) -> Result<BTreeSet<(String, i32)>, i16> {
    let mut retry = BTreeSet::new();
    let mut remote: BTreeMap<i32, Vec<(String, i32)>> = BTreeMap::new();
    for (topic, partition) in partitions {
        if let Some(cluster) = &shard.broker.cluster {
            match cluster.view.snapshot().leader(&topic, partition) {
                Some(leader) if leader != shard.broker.config.broker_id => {
                    remote.entry(leader).or_default().push((topic, partition));
                    continue;
                }
                Some(_) => {}
                None if !cluster.view.snapshot().topics.contains_key(&topic) => continue, // deleted
                None => {
                    retry.insert((topic, partition));
                    continue;
                }
            }
        }
        let owner = shard.owner_of(&topic, partition);
        let (name, marker_copy) = (topic.clone(), *marker);
        let error = shard.router.call(owner, move |owner| async move { write_marker_here(&owner, &name, partition, marker_copy).await }).await;
        if is_stale(error) {
            return Err(error);
        }
        if !marker_done(error) {
            tracing::debug!(topic, partition, error, "marker not written");
            retry.insert((topic, partition));
        }
    }
    // Every destination at once: each broker's request waits for that broker's ISR.
    let sends = remote.into_iter().map(|(broker_id, partitions)| async move {
        let answer = shard.marker_channel.send(broker_id, *marker, partitions.clone()).await;
        (broker_id, partitions, answer)
    });
    for (broker_id, partitions, answer) in futures_util::future::join_all(sends).await {
        match answer {
            Ok(errors) => {
                for ((topic, partition), error) in partitions.into_iter().zip(errors) {
                    if is_stale(error) {
                        return Err(error);
                    }
                    if !marker_done(error) {
                        retry.insert((topic, partition));
                    }
                }
            }
            Err(e) => {
                tracing::debug!(broker_id, error = e, "WriteTxnMarkers failed");
                retry.extend(partitions);
            }
        }
    }
    Ok(retry)
}

fn is_stale(error: i16) -> bool {
    error == ResponseError::InvalidProducerEpoch.code() || error == ResponseError::TransactionCoordinatorFenced.code()
}

/// Written, or nothing to write (the partition is gone).
fn marker_done(error: i16) -> bool {
    error == 0 || error == ResponseError::UnknownTopicOrPartition.code()
}

/// On the partition's owning shard: appends the marker through the partition's one door
/// (`Partition::append_txn_marker`), waits for the ISR in cluster mode, then, for a
/// `__consumer_offsets` partition, makes the transaction's offsets visible (commit) or drops
/// them (abort). Returns a Kafka error code (0: written). Used by the standalone coordinator
/// and by the WriteTxnMarkers handler alike.
pub async fn write_marker_here(shard: &Shard, topic: &str, partition: i32, marker: TxnMarker) -> i16 {
    let handle = match shard.partition(topic, partition).await {
        Ok(handle) => handle,
        Err(e) => return partition_error_code(&e),
    };
    let appended = match handle.append_txn_marker(&marker).await {
        Ok(appended) => appended,
        Err(AppendError::Partition(e)) => return partition_error_code(&e),
        Err(AppendError::ProducerFenced { .. }) => return ResponseError::InvalidProducerEpoch.code(),
        Err(AppendError::CoordinatorFenced { .. }) => return ResponseError::TransactionCoordinatorFenced.code(),
        Err(e @ AppendError::OutOfOrderSequence { .. }) => {
            tracing::error!(topic, partition, error = %e, "a marker append checked sequences");
            return ResponseError::UnknownServerError.code();
        }
    };
    if shard.broker.cluster.is_some() {
        match handle.wait_for_high_watermark(appended.end_offset, MARKER_REPLICATION_TIMEOUT_MS).await {
            Ok(()) => {}
            Err(HighWatermarkWaitError::LeadershipMoved(e)) => return partition_error_code(&e),
            Err(HighWatermarkWaitError::TimedOut) => return ResponseError::RequestTimedOut.code(),
        }
    }
    if topic == CONSUMER_OFFSETS_TOPIC {
        crate::groups::txn_offsets::complete(&shard.groups, partition, marker.producer_id, marker.commit);
    }
    0
}

/// KIP-890 part 1 (Kafka 3.9's AddPartitionsToTxnManager): before a transaction's first
/// transactional append to a partition, its leader asks the transactional id's coordinator
/// whether the partition was added to the producer's ongoing transaction: this broker's
/// coordinating shard directly, another broker with an AddPartitionsToTxn v4 `verify_only`.
/// Ok when it was; else the code the produce is answered, as Kafka maps them for produce
/// versions before 12: coordinator trouble is retriable (NOT_ENOUGH_REPLICAS), a fenced epoch
/// INVALID_PRODUCER_EPOCH, anything else INVALID_TXN_STATE.
pub async fn verify_partition_in_transaction(shard: &Shard, transactional_id: &str, producer_id: i64, epoch: i16, topic: &str, partition: i32) -> Result<(), i16> {
    let state_partition = partition_for_transactional_id(transactional_id, transaction_state_partition_count(&shard.broker));
    let remote = match &shard.broker.cluster {
        Some(cluster) => match cluster.view.snapshot().leader(TRANSACTION_STATE_TOPIC, state_partition) {
            Some(leader) if leader != shard.broker.config.broker_id => Some(leader),
            Some(_) => None,
            None => return Err(ResponseError::NotEnoughReplicas.code()),
        },
        None => None,
    };
    let answer = match remote {
        Some(broker_id) => verify_remotely(shard, broker_id, transactional_id, producer_id, epoch, topic, partition).await.map_err(|e| {
            tracing::debug!(broker_id, error = e, "AddPartitionsToTxn verify_only failed");
            ResponseError::NotEnoughReplicas.code()
        })?,
        None => {
            let owner = shard.owner_of(TRANSACTION_STATE_TOPIC, state_partition);
            let (id, partitions) = (transactional_id.to_string(), vec![(topic.to_string(), partition)]);
            shard
                .router
                .call(owner, move |owner| async move {
                    owner.txns.verify_partitions(&id, producer_id, epoch, &partitions).map(|found| if found[0] { 0 } else { ResponseError::TransactionAbortable.code() })
                })
                .await
                .unwrap_or_else(|code| code)
        }
    };
    const RETRIABLE: [ResponseError; 4] = [
        ResponseError::CoordinatorNotAvailable,
        ResponseError::NotCoordinator,
        ResponseError::CoordinatorLoadInProgress,
        ResponseError::ConcurrentTransactions,
    ];
    match answer {
        0 => Ok(()),
        code if RETRIABLE.iter().any(|e| e.code() == code) => Err(ResponseError::NotEnoughReplicas.code()),
        code if code == ResponseError::ProducerFenced.code() || code == ResponseError::InvalidProducerEpoch.code() => Err(ResponseError::InvalidProducerEpoch.code()),
        _ => Err(ResponseError::InvalidTxnState.code()),
    }
}

/// One AddPartitionsToTxn v4 `verify_only` to the coordinator's broker: the partition's code.
async fn verify_remotely(shard: &Shard, broker_id: i32, transactional_id: &str, producer_id: i64, epoch: i16, topic: &str, partition: i32) -> Result<i16, String> {
    use kafka_protocol::messages::add_partitions_to_txn_request::{AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction};
    use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, TransactionalId};
    let request = AddPartitionsToTxnRequest::default().with_transactions(vec![AddPartitionsToTxnTransaction::default()
        .with_transactional_id(TransactionalId(StrBytes::from_string(transactional_id.to_string())))
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(epoch)
        .with_verify_only(true)
        .with_topics(vec![AddPartitionsToTxnTopic::default().with_name(TopicName(StrBytes::from_string(topic.to_string()))).with_partitions(vec![partition])])]);
    let response: AddPartitionsToTxnResponse = shard.inter_broker.call(broker_id, ApiKey::AddPartitionsToTxn, 4, &request, VERIFY_TIMEOUT).await?;
    if response.error_code != 0 {
        return Ok(response.error_code);
    }
    response
        .results_by_transaction
        .iter()
        .flat_map(|t| t.topic_results.iter())
        .flat_map(|t| t.results_by_partition.iter())
        .find(|p| p.partition_index == partition)
        .map(|p| p.partition_error_code)
        .ok_or_else(|| "the AddPartitionsToTxn response lacks the partition".to_string())
}

/// The code a partition's error answers with (the handlers' mapping; this layer does not import
/// them).
fn partition_error_code(error: &PartitionError) -> i16 {
    match error {
        PartitionError::UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition.code(),
        PartitionError::NotLeaderOrFollower | PartitionError::ShuttingDown => ResponseError::NotLeaderOrFollower.code(),
        PartitionError::Storage(_) => ResponseError::KafkaStorageError.code(),
    }
}
