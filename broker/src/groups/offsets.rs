//! Committed offsets: OffsetCommit, OffsetFetch, OffsetDelete, and offsets retention
//! (`offsets.retention.minutes`).
//!
//! Contract: an OffsetCommit is answered once its records are in `__consumer_offsets` (cluster
//! mode: in the partition's ISR), and the in-memory offsets change only after that, so a fetch
//! never reports an offset a failover or restart could lose. Deleted and expired offsets leave
//! memory at once and their tombstones go through the same ordered queue as the commits.

use std::time::Instant;

use bytes::Bytes;
use kafka_protocol::ResponseError;

use super::coordinator::{code, coordinator_error, GroupCoordinator, NONE};
use super::group::{CommittedOffset, Group, GroupState};
use super::membership::validate_member;
use super::offsets_topic;
use super::offsets_writer::{write_all, write_and_wait};
use crate::clock::now_ms;

pub struct CommitRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    /// (topic, partition, offset, leader epoch, metadata)
    pub offsets: Vec<(String, i32, i64, i32, Option<String>)>,
}

/// One partition's committed offset as OffsetFetch reports it.
pub struct FetchedOffset {
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub error_code: i16,
}

pub async fn commit(coordinator: &GroupCoordinator, request: CommitRequest) -> Vec<i16> {
    if let Some(error) = coordinator_error(coordinator, &request.group_id) {
        return vec![error; request.offsets.len()];
    }
    let group_error = {
        let now = Instant::now();
        let mut groups = coordinator.groups.borrow_mut();
        match groups.get_mut(&request.group_id) {
            None if request.generation_id < 0 => {
                // A group that only stores offsets (`assign()`): Kafka creates it on commit.
                groups.insert(request.group_id.clone(), Group::new(&request.group_id, now_ms()));
                NONE
            }
            None => code(ResponseError::IllegalGeneration),
            Some(group) if request.generation_id < 0 && group.state == GroupState::Empty => NONE,
            Some(group) if group.state == GroupState::CompletingRebalance => code(ResponseError::RebalanceInProgress),
            Some(group) => match validate_member(group, &request.member_id, request.group_instance_id.as_deref(), request.generation_id) {
                Ok(()) => {
                    let index = group.member_index(&request.member_id).expect("validated member");
                    group.members[index].touch(now);
                    NONE
                }
                Err(error) => error,
            },
        }
    };
    if group_error != NONE {
        return vec![group_error; request.offsets.len()];
    }
    let now = now_ms();
    let mut errors = Vec::with_capacity(request.offsets.len());
    let mut accepted = Vec::new();
    {
        for (topic, partition, offset, leader_epoch, metadata) in &request.offsets {
            let metadata = metadata.clone().unwrap_or_default();
            let error = offset_commit_error(coordinator, topic, *partition, &metadata);
            if error == NONE {
                accepted.push((
                    topic.clone(),
                    *partition,
                    CommittedOffset { offset: *offset, leader_epoch: *leader_epoch, metadata, commit_timestamp_ms: now },
                ));
            }
            errors.push(error);
        }
    }
    if accepted.is_empty() {
        return errors;
    }
    let records = accepted
        .iter()
        .map(|(topic, partition, value)| {
            (offsets_topic::offset_key(&request.group_id, topic, *partition), Some(offsets_topic::offset_value(value)))
        })
        .collect();
    if let Err(error) = write_and_wait(coordinator, &request.group_id, records).await {
        return errors.into_iter().map(|e| if e == NONE { error } else { e }).collect();
    }
    if let Some(group) = coordinator.groups.borrow_mut().get_mut(&request.group_id) {
        for (topic, partition, value) in accepted {
            group.offsets.insert((topic, partition), value);
        }
    }
    errors
}

/// Committed offsets of `topics` (None: every partition the group has an offset for); Err is
/// the group's error code.
pub fn fetch_offsets(
    coordinator: &GroupCoordinator,
    group_id: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> Result<Vec<(String, Vec<FetchedOffset>)>, i16> {
    if let Some(error) = coordinator_error(coordinator, group_id) {
        return Err(error);
    }
    let groups = coordinator.groups.borrow();
    let group = groups.get(group_id);
    let fetched = |topic: &str, partition: i32| {
        match group.and_then(|g| g.offsets.get(&(topic.to_string(), partition))) {
            Some(c) => FetchedOffset {
                partition,
                offset: c.offset,
                leader_epoch: c.leader_epoch,
                metadata: c.metadata.clone(),
                error_code: NONE,
            },
            None => FetchedOffset { partition, offset: -1, leader_epoch: -1, metadata: String::new(), error_code: NONE },
        }
    };
    Ok(match topics {
        Some(topics) => {
            topics.into_iter().map(|(topic, partitions)| {
                let answers = partitions.into_iter().map(|p| fetched(&topic, p)).collect();
                (topic, answers)
            }).collect()
        }
        None => {
            let mut by_topic: Vec<(String, Vec<FetchedOffset>)> = Vec::new();
            for (topic, partition) in group.map(|g| g.offsets.keys().cloned().collect::<Vec<_>>()).unwrap_or_default() {
                let answer = fetched(&topic, partition);
                match by_topic.last_mut() {
                    Some((last, answers)) if *last == topic => answers.push(answer),
                    _ => by_topic.push((topic, vec![answer])),
                }
            }
            by_topic
        }
    })
}

/// OffsetDelete: (group error, per-partition errors). Offsets of topics the group's consumers
/// subscribe to stay (GROUP_SUBSCRIBED_TO_TOPIC), as in Kafka.
pub async fn delete_offsets(coordinator: &GroupCoordinator, group_id: &str, topics: Vec<(String, Vec<i32>)>) -> (i16, Vec<(String, Vec<(i32, i16)>)>) {
    if let Some(error) = coordinator_error(coordinator, group_id) {
        return (error, Vec::new());
    }
    let (results, records) = {
        let mut groups = coordinator.groups.borrow_mut();
        let Some(group) = groups.get_mut(group_id) else {
            return (code(ResponseError::GroupIdNotFound), Vec::new());
        };
        let subscribed = subscribed_topics(group);
        if group.state != GroupState::Empty && subscribed.is_none() {
            return (code(ResponseError::NonEmptyGroup), Vec::new());
        }
        let subscribed = subscribed.unwrap_or_default();
        let mut records = Vec::new();
        let results: Vec<(String, Vec<(i32, i16)>)> = topics
            .into_iter()
            .map(|(topic, partitions)| {
                let errors = partitions
                    .into_iter()
                    .map(|partition| {
                        if group.state != GroupState::Empty && subscribed.contains(&topic) {
                            return (partition, code(ResponseError::GroupSubscribedToTopic));
                        }
                        if group.offsets.remove(&(topic.clone(), partition)).is_some() {
                            records.push((offsets_topic::offset_key(group_id, &topic, partition), None));
                        }
                        (partition, NONE)
                    })
                    .collect();
                (topic, errors)
            })
            .collect();
        (results, records)
    };
    if !records.is_empty() {
        if let Err(error) = write_and_wait(coordinator, group_id, records).await {
            return (error, Vec::new());
        }
    }
    (NONE, results)
}

/// Topics the members of a `consumer` group subscribe to; None for other protocol types.
fn subscribed_topics(group: &Group) -> Option<Vec<String>> {
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::Decodable;
    if group.protocol_type.as_deref() != Some("consumer") {
        return if group.members.is_empty() { Some(Vec::new()) } else { None };
    }
    let protocol = group.protocol_name.clone().unwrap_or_default();
    let mut topics = Vec::new();
    for member in &group.members {
        let mut metadata = member.metadata_for(&protocol);
        if metadata.len() < 2 {
            continue;
        }
        let version = bytes::Buf::get_i16(&mut metadata);
        if let Ok(subscription) = ConsumerProtocolSubscription::decode(&mut metadata, version.clamp(0, 3)) {
            topics.extend(subscription.topics.iter().map(|t| t.to_string()));
        }
    }
    Some(topics)
}

/// `offsets.retention.minutes`: offsets of a group that has been Empty that long go (a group
/// that only stores offsets: each offset that long after its commit), then the group itself.
///
/// The tombstones wait for room in the write queue (the caller, the shard's group timer task, is
/// async). They take their turn in the queue as soon as they are made, so a later write (a new
/// commit of a removed group) waits behind them and never reaches the log before them.
pub async fn expire_offsets(coordinator: &GroupCoordinator, now_ms: i64) {
    let retention_ms = coordinator.broker.config.offsets_retention_ms;
    let mut writes: Vec<(String, Vec<(Bytes, Option<Bytes>)>)> = Vec::new();
    let mut groups = coordinator.groups.borrow_mut();
    groups.retain(|group_id, group| {
        if group.state != GroupState::Empty {
            return true;
        }
        let group_expired = group.protocol_type.is_some() && now_ms - group.state_since_ms >= retention_ms;
        let expired: Vec<(String, i32)> = group
            .offsets
            .iter()
            .filter(|(_, c)| group_expired || group.protocol_type.is_none() && now_ms - c.commit_timestamp_ms >= retention_ms)
            .map(|(k, _)| k.clone())
            .collect();
        let mut records: Vec<(Bytes, Option<Bytes>)> = Vec::new();
        for key in expired {
            group.offsets.remove(&key);
            records.push((offsets_topic::offset_key(group_id, &key.0, key.1), None));
        }
        let keep = !group.offsets.is_empty() || !(group_expired || group.protocol_type.is_none());
        if !keep {
            records.push((offsets_topic::group_key(group_id), None));
            tracing::info!(group = group_id, "offsets expired; group removed");
        }
        if !records.is_empty() {
            writes.push((group_id.clone(), records));
        }
        keep
    });
    drop(groups);
    if !writes.is_empty() {
        write_all(coordinator, writes).await;
    }
}

/// Kafka's per-partition checks of an offset commit, plain or transactional: the partition
/// exists, the metadata fits `offset.metadata.max.bytes`. NONE when the offset may be written.
pub(super) fn offset_commit_error(coordinator: &GroupCoordinator, topic: &str, partition: i32, metadata: &str) -> i16 {
    let known = coordinator.broker.partition_count(topic).is_some_and(|count| partition >= 0 && partition < count);
    if !known {
        code(ResponseError::UnknownTopicOrPartition)
    } else if metadata.len() > coordinator.broker.config.offset_metadata_max_bytes {
        code(ResponseError::OffsetMetadataTooLarge)
    } else {
        NONE
    }
}
