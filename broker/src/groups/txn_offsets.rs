//! Transactional offset commits (TxnOffsetCommit, KIP-98/447): a transactional producer commits
//! a group's offsets as part of its transaction. As in Kafka, they are written to the group's
//! `__consumer_offsets` partition as a transactional batch of the producer (durable at once),
//! held pending beside the group (not visible to OffsetFetch), and become the group's offsets
//! when the transaction's COMMIT marker lands in that partition, or are dropped by its ABORT
//! marker (`complete`, called after the marker append: `txn_router::write_marker_here`, and by
//! the loader when it replays a marker).
//!
//! OffsetFetch with `require_stable` (KIP-447) answers UNSTABLE_OFFSET_COMMIT for a partition
//! with pending offsets here (`has_pending`), as Kafka's `hasPendingOffsetCommitsForTopicPartition`.

use bytes::Bytes;
use kafka_protocol::ResponseError;

use super::coordinator::{code, coordinator_error, GroupCoordinator, NONE};
use super::group::{CommittedOffset, Group};
use super::offsets_topic::{self, StoredRecord};
use super::offsets_writer::write_transactional_and_wait;
use crate::clock::now_ms;

/// One offset waiting for its transaction's marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingOffset {
    /// The `__consumer_offsets` partition it was written to: its marker lands there.
    pub offsets_partition: i32,
    pub group_id: String,
    pub topic: String,
    pub partition: i32,
    pub value: CommittedOffset,
}

pub struct TxnCommitRequest {
    pub group_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// -1 (v0-v2, or a producer that does not send its consumer's metadata): not checked.
    pub generation_id: i32,
    /// Empty: not checked.
    pub member_id: String,
    /// (topic, partition, offset, leader epoch, metadata)
    pub offsets: Vec<(String, i32, i64, i32, Option<String>)>,
}

/// Writes the offsets as a transactional batch and holds them pending; an error code per offset.
pub async fn commit(coordinator: &GroupCoordinator, request: TxnCommitRequest) -> Vec<i16> {
    if let Some(error) = coordinator_error(coordinator, &request.group_id) {
        return vec![error; request.offsets.len()];
    }
    let group_error = {
        let mut groups = coordinator.groups.borrow_mut();
        // Kafka creates an unknown group here (a producer may commit for a group that has no
        // member yet, or only uses assign()).
        let group = groups.entry(request.group_id.clone()).or_insert_with(|| Group::new(&request.group_id, now_ms()));
        if !request.member_id.is_empty() && group.member_index(&request.member_id).is_none() {
            code(ResponseError::UnknownMemberId)
        } else if request.generation_id >= 0 && request.generation_id != group.generation_id {
            code(ResponseError::IllegalGeneration)
        } else {
            NONE
        }
    };
    if group_error != NONE {
        return vec![group_error; request.offsets.len()];
    }
    let offsets_partition = coordinator.offsets_partition(&request.group_id);
    let now = now_ms();
    let mut errors = Vec::with_capacity(request.offsets.len());
    let mut accepted = Vec::new();
    for (topic, partition, offset, leader_epoch, metadata) in &request.offsets {
        let metadata = metadata.clone().unwrap_or_default();
        let error = super::offsets::offset_commit_error(coordinator, topic, *partition, &metadata);
        errors.push(error);
        if error == NONE {
            accepted.push(PendingOffset {
                offsets_partition,
                group_id: request.group_id.clone(),
                topic: topic.clone(),
                partition: *partition,
                value: CommittedOffset { offset: *offset, leader_epoch: *leader_epoch, metadata, commit_timestamp_ms: now },
            });
        }
    }
    if accepted.is_empty() {
        return errors;
    }
    let records = accepted
        .iter()
        .map(|p| (offsets_topic::offset_key(&p.group_id, &p.topic, p.partition), Some(offsets_topic::offset_value(&p.value))))
        .collect();
    let producer = (request.producer_id, request.producer_epoch);
    if let Err(error) = write_transactional_and_wait(coordinator, &request.group_id, records, producer).await {
        return errors.into_iter().map(|e| if e == NONE { error } else { e }).collect();
    }
    coordinator.pending_txn_offsets.borrow_mut().entry(request.producer_id).or_default().extend(accepted);
    errors
}

/// The loader found transactional offset records of `producer_id` in `offsets_partition`.
pub(super) fn load_pending(coordinator: &GroupCoordinator, offsets_partition: i32, producer_id: i64, records: Vec<(Bytes, Option<Bytes>)>) {
    let mut pending = coordinator.pending_txn_offsets.borrow_mut();
    for (key, value) in records {
        match offsets_topic::decode_record(key, value) {
            Ok(StoredRecord::Offset { group_id, topic, partition, value: Some(value) }) => {
                pending.entry(producer_id).or_default().push(PendingOffset { offsets_partition, group_id, topic, partition, value });
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = e, "skipping an unreadable transactional __consumer_offsets record"),
        }
    }
}

/// The transaction of `producer_id` ended in `offsets_partition`: its pending offsets there
/// become the groups' offsets (commit) or are dropped (abort).
pub fn complete(coordinator: &GroupCoordinator, offsets_partition: i32, producer_id: i64, commit: bool) {
    let ended: Vec<PendingOffset> = {
        let mut pending = coordinator.pending_txn_offsets.borrow_mut();
        let Some(list) = pending.get_mut(&producer_id) else { return };
        let (ended, kept): (Vec<PendingOffset>, Vec<PendingOffset>) =
            std::mem::take(list).into_iter().partition(|p| p.offsets_partition == offsets_partition);
        *list = kept;
        if list.is_empty() {
            pending.remove(&producer_id);
        }
        ended
    };
    if !commit || ended.is_empty() {
        return;
    }
    let mut groups = coordinator.groups.borrow_mut();
    for offset in ended {
        let group = groups.entry(offset.group_id.clone()).or_insert_with(|| Group::new(&offset.group_id, offset.value.commit_timestamp_ms));
        group.offsets.insert((offset.topic, offset.partition), offset.value);
    }
}

/// Whether `group_id` has an offset of an open transaction for `topic`-`partition`
/// (OffsetFetch's require_stable).
pub fn has_pending(coordinator: &GroupCoordinator, group_id: &str, topic: &str, partition: i32) -> bool {
    coordinator.pending_txn_offsets.borrow().values().flatten().any(|p| p.group_id == group_id && p.topic == topic && p.partition == partition)
}

/// Leadership of `offsets_partition` moved: its pending offsets go with it (the new
/// coordinator reloads them from the log).
pub(super) fn drop_partition(coordinator: &GroupCoordinator, offsets_partition: i32) {
    let mut pending = coordinator.pending_txn_offsets.borrow_mut();
    for list in pending.values_mut() {
        list.retain(|p| p.offsets_partition != offsets_partition);
    }
    pending.retain(|_, list| !list.is_empty());
}
