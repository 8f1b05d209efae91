//! The group coordinator of one shard: the groups whose `__consumer_offsets` partition this shard
//! owns, the operations of the group APIs on them, the timers that expire members, and the
//! writes to `__consumer_offsets`.
//!
//! Everything here runs on the owning shard's thread; the group map is borrowed only between
//! awaits. A request that waits (JoinGroup until the rebalance completes, SyncGroup until the
//! leader's assignment arrives) parks a oneshot sender in its member and awaits the receiver.
//! Error precedence follows Kafka's GroupCoordinator.scala so clients react as they do there.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::{mpsc, oneshot};
use futures_lite::StreamExt;
use kafka_protocol::ResponseError;

use super::group::{CommittedOffset, Group, GroupState, JoinResult, Member, SyncResult};
use super::offsets_topic::{self, StoredGroup, StoredMember, StoredRecord};
use super::{offsets_partition_count, partition_for_group};
use crate::handlers::now_ms;
use crate::shard_context::{HighWatermarkWaitError, Partition, PartitionError, Shard};
use crate::topics::CONSUMER_OFFSETS_TOPIC;

const NONE: i16 = 0;

/// A batch of records for one `__consumer_offsets` partition, and who waits for it.
pub struct OffsetsWrite {
    pub partition: i32,
    pub records: Vec<(Bytes, Option<Bytes>)>,
    pub done: Option<oneshot::Sender<Result<(), i16>>>,
}

/// Cluster mode: where this shard stands with one `__consumer_offsets` partition it leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PartitionLoad {
    /// Its groups are being read from the log: COORDINATOR_LOAD_IN_PROGRESS meanwhile.
    Loading,
    Loaded,
}

pub struct GroupCoordinator {
    groups: RefCell<HashMap<String, Group>>,
    /// Cluster mode: the `__consumer_offsets` partitions whose groups this shard holds (this
    /// broker leads them). Standalone coordinates every group of its partitions from start-up.
    partitions: RefCell<HashMap<i32, PartitionLoad>>,
    /// Writes go through one queue per shard so they reach the log in the order they were made
    /// (a tombstone never overtakes the commit it deletes).
    writes: RefCell<Option<mpsc::UnboundedSender<OffsetsWrite>>>,
    writes_receiver: RefCell<Option<mpsc::UnboundedReceiver<OffsetsWrite>>>,
}

impl Default for GroupCoordinator {
    fn default() -> Self {
        let (sender, receiver) = mpsc::unbounded();
        GroupCoordinator {
            groups: RefCell::new(HashMap::new()),
            partitions: RefCell::new(HashMap::new()),
            writes: RefCell::new(Some(sender)),
            writes_receiver: RefCell::new(Some(receiver)),
        }
    }
}

pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new member first gets its id with MEMBER_ID_REQUIRED, then rejoins.
    pub require_known_member_id: bool,
}

pub struct SyncRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignments: Vec<(String, Bytes)>,
}

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

pub struct DescribedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

pub struct Described {
    pub error_code: i16,
    pub state: String,
    pub protocol_type: String,
    pub protocol_name: String,
    pub members: Vec<DescribedMember>,
}

pub struct Listed {
    pub group_id: String,
    pub protocol_type: String,
    pub state: String,
}

fn code(error: ResponseError) -> i16 {
    error.code()
}

fn new_member_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}

/// None when this shard coordinates `group_id`; else the error every group API answers with
/// (clients then look for the coordinator again). Standalone: always this shard (the handlers
/// route there).
pub fn coordinator_error(shard: &Shard, group_id: &str) -> Option<i16> {
    shard.broker.cluster.as_ref()?;
    let partition = partition_for_group(group_id, offsets_partition_count(&shard.broker));
    match shard.groups.partitions.borrow().get(&partition) {
        Some(PartitionLoad::Loaded) => None,
        Some(PartitionLoad::Loading) => Some(code(ResponseError::CoordinatorLoadInProgress)),
        None => Some(code(ResponseError::NotCoordinator)),
    }
}

// ---------------------------------------------------------------------------------------------
// JoinGroup

pub async fn join(shard: &Shard, request: JoinRequest) -> JoinResult {
    let member_id = request.member_id.clone();
    match join_now(shard, request) {
        Ok(result) => result,
        Err(receiver) => receiver.await.unwrap_or_else(|_| JoinResult::error(code(ResponseError::UnknownMemberId), &member_id)),
    }
}

/// Ok: the answer now. Err: the answer comes when the rebalance completes.
fn join_now(shard: &Shard, request: JoinRequest) -> Result<JoinResult, oneshot::Receiver<JoinResult>> {
    let config = &shard.broker.config;
    if request.group_id.is_empty() {
        return Ok(JoinResult::error(code(ResponseError::InvalidGroupId), &request.member_id));
    }
    if let Some(error) = coordinator_error(shard, &request.group_id) {
        return Ok(JoinResult::error(error, &request.member_id));
    }
    if request.session_timeout_ms < config.group_min_session_timeout_ms
        || request.session_timeout_ms > config.group_max_session_timeout_ms
    {
        return Ok(JoinResult::error(code(ResponseError::InvalidSessionTimeout), &request.member_id));
    }
    let now = Instant::now();
    let mut groups = shard.groups.groups.borrow_mut();
    if !request.member_id.is_empty() && !groups.contains_key(&request.group_id) {
        return Ok(JoinResult::error(code(ResponseError::UnknownMemberId), &request.member_id));
    }
    let group = groups.entry(request.group_id.clone()).or_insert_with(|| Group::new(&request.group_id, now_ms()));
    if !group.accepts_protocols(&request.member_id, &request.protocol_type, &request.protocols) {
        return Ok(JoinResult::error(code(ResponseError::InconsistentGroupProtocol), &request.member_id));
    }

    if request.member_id.is_empty() {
        if let Some(instance) = request.group_instance_id.clone() {
            if let Some(index) = group.member_index_by_instance(&instance) {
                return replace_static_member(shard, group, index, request, now);
            }
            if group.members.len() >= config.group_max_size {
                return Ok(JoinResult::error(code(ResponseError::GroupMaxSizeReached), ""));
            }
            let member_id = new_member_id(&instance);
            return Err(add_member_and_rebalance(shard, group, member_id, request, now));
        }
        if group.members.len() + group.pending_members.len() >= config.group_max_size {
            return Ok(JoinResult::error(code(ResponseError::GroupMaxSizeReached), ""));
        }
        let member_id = new_member_id(&request.client_id);
        if request.require_known_member_id {
            let deadline = now + Duration::from_millis(request.session_timeout_ms as u64);
            group.pending_members.insert(member_id.clone(), deadline);
            return Ok(JoinResult::error(code(ResponseError::MemberIdRequired), &member_id));
        }
        return Err(add_member_and_rebalance(shard, group, member_id, request, now));
    }

    if group.pending_members.remove(&request.member_id).is_some() {
        let member_id = request.member_id.clone();
        return Err(add_member_and_rebalance(shard, group, member_id, request, now));
    }
    let Some(index) = group.member_index(&request.member_id) else {
        return Ok(JoinResult::error(code(ResponseError::UnknownMemberId), &request.member_id));
    };
    if request.group_instance_id.is_some() && group.members[index].group_instance_id != request.group_instance_id {
        return Ok(JoinResult::error(code(ResponseError::FencedInstanceId), &request.member_id));
    }
    let unchanged = group.members[index].protocols == request.protocols;
    match group.state {
        GroupState::Empty => Ok(JoinResult::error(code(ResponseError::UnknownMemberId), &request.member_id)),
        GroupState::CompletingRebalance | GroupState::Stable
            if unchanged && !(group.state == GroupState::Stable && group.is_leader(&request.member_id)) =>
        {
            // The member lost our answer (or rejoins without a change): give it again.
            group.members[index].touch(now);
            Ok(group.current_join_result(&request.member_id))
        }
        _ => {
            let (sender, receiver) = oneshot::channel();
            let member = &mut group.members[index];
            update_member(member, &request, now);
            member.awaiting_join = Some(sender);
            if group.state != GroupState::PreparingRebalance {
                prepare_rebalance(group, now, "a member rejoined with new metadata");
            }
            try_complete_join(shard, group, now);
            Err(receiver)
        }
    }
}

fn update_member(member: &mut Member, request: &JoinRequest, now: Instant) {
    member.protocols = request.protocols.clone();
    member.protocol_type = request.protocol_type.clone();
    member.session_timeout_ms = request.session_timeout_ms;
    member.rebalance_timeout_ms = request.rebalance_timeout_ms;
    member.client_id = request.client_id.clone();
    member.client_host = request.client_host.clone();
    member.touch(now);
}

fn add_member_and_rebalance(
    shard: &Shard,
    group: &mut Group,
    member_id: String,
    request: JoinRequest,
    now: Instant,
) -> oneshot::Receiver<JoinResult> {
    let (sender, receiver) = oneshot::channel();
    let mut member = Member {
        member_id: member_id.clone(),
        group_instance_id: request.group_instance_id.clone(),
        client_id: String::new(),
        client_host: String::new(),
        rebalance_timeout_ms: 0,
        session_timeout_ms: 0,
        protocol_type: String::new(),
        protocols: Vec::new(),
        assignment: Bytes::new(),
        session_deadline: now,
        awaiting_join: Some(sender),
        awaiting_sync: None,
    };
    update_member(&mut member, &request, now);
    group.members.push(member);
    tracing::info!(group = group.group_id, member = member_id, members = group.members.len(), "member joins");
    let delay = Duration::from_millis(shard.broker.config.group_initial_rebalance_delay_ms);
    match group.state {
        GroupState::Empty => {
            // Kafka's InitialDelayedJoin: a new group waits for more members before generation 1,
            // so consumers started together do not rebalance once per arrival.
            group.set_state(GroupState::PreparingRebalance, now_ms());
            let join_deadline = now + Duration::from_millis(group.max_rebalance_timeout_ms());
            group.join_deadline = Some(join_deadline);
            group.initial_delay_until = (!delay.is_zero()).then(|| (now + delay).min(join_deadline));
        }
        GroupState::PreparingRebalance => {
            if let (Some(_), Some(deadline)) = (group.initial_delay_until, group.join_deadline) {
                group.initial_delay_until = Some((now + delay).min(deadline));
            }
        }
        GroupState::CompletingRebalance | GroupState::Stable => prepare_rebalance(group, now, "a member joined"),
    }
    try_complete_join(shard, group, now);
    receiver
}

/// A static member restarted (same `group.instance.id`, no member id): it takes over the old
/// member's place and, when nothing else changed, its assignment, without a rebalance.
fn replace_static_member(
    shard: &Shard,
    group: &mut Group,
    index: usize,
    request: JoinRequest,
    now: Instant,
) -> Result<JoinResult, oneshot::Receiver<JoinResult>> {
    let new_id = new_member_id(request.group_instance_id.as_deref().unwrap_or_default());
    let member = &mut group.members[index];
    let old_id = std::mem::replace(&mut member.member_id, new_id.clone());
    if let Some(waiting) = member.awaiting_join.take() {
        let _ = waiting.send(JoinResult::error(code(ResponseError::FencedInstanceId), &old_id));
    }
    if let Some(waiting) = member.awaiting_sync.take() {
        let _ = waiting.send(SyncResult::error(code(ResponseError::FencedInstanceId)));
    }
    let unchanged = member.protocols == request.protocols;
    update_member(member, &request, now);
    if group.leader_id.as_deref() == Some(old_id.as_str()) {
        group.leader_id = Some(new_id.clone());
    }
    tracing::info!(group = group.group_id, old_id, new_id, "static member rejoins");
    if group.state == GroupState::Stable && unchanged {
        store_group(shard, group);
        let mut result = group.current_join_result(&new_id);
        // The assignment stands: the leader need not compute a new one.
        result.members.clear();
        return Ok(result);
    }
    let (sender, receiver) = oneshot::channel();
    group.members[index].awaiting_join = Some(sender);
    if group.state != GroupState::PreparingRebalance {
        prepare_rebalance(group, now, "a static member rejoined with new metadata");
    }
    try_complete_join(shard, group, now);
    Err(receiver)
}

fn prepare_rebalance(group: &mut Group, now: Instant, reason: &str) {
    if group.state == GroupState::CompletingRebalance {
        for member in &mut group.members {
            member.assignment = Bytes::new();
            if let Some(waiting) = member.awaiting_sync.take() {
                let _ = waiting.send(SyncResult::error(code(ResponseError::RebalanceInProgress)));
            }
        }
    }
    tracing::info!(group = group.group_id, generation = group.generation_id, reason, "rebalance");
    group.set_state(GroupState::PreparingRebalance, now_ms());
    group.join_deadline = Some(now + Duration::from_millis(group.max_rebalance_timeout_ms()));
    group.initial_delay_until = None;
    group.sync_deadline = None;
}

fn try_complete_join(shard: &Shard, group: &mut Group, now: Instant) {
    if group.state == GroupState::PreparingRebalance && group.initial_delay_until.is_none() && group.all_members_joined() {
        complete_join(shard, group, now);
    }
}

/// Ends PreparingRebalance: members that did not rejoin are dropped, the generation advances,
/// and every waiting member gets its JoinGroup answer (the leader with everyone's subscription).
fn complete_join(shard: &Shard, group: &mut Group, now: Instant) {
    group.members.retain(|m| {
        if m.awaiting_join.is_none() {
            tracing::info!(group = group.group_id, member = m.member_id, "member did not rejoin in time; removed");
        }
        m.awaiting_join.is_some()
    });
    group.pending_members.clear();
    group.join_deadline = None;
    group.initial_delay_until = None;
    group.generation_id += 1;
    if group.members.is_empty() {
        group.protocol_name = None;
        group.leader_id = None;
        group.set_state(GroupState::Empty, now_ms());
        store_group(shard, group);
        return;
    }
    group.protocol_type = Some(group.members[0].protocol_type.clone());
    group.protocol_name = group.select_protocol();
    if !group.leader_id.as_ref().map(|l| group.member_index(l).is_some()).unwrap_or(false) {
        group.leader_id = Some(group.members[0].member_id.clone());
    }
    group.set_state(GroupState::CompletingRebalance, now_ms());
    group.sync_deadline = Some(now + Duration::from_millis(group.max_rebalance_timeout_ms()));
    tracing::info!(
        group = group.group_id,
        generation = group.generation_id,
        members = group.members.len(),
        protocol = group.protocol_name.as_deref().unwrap_or(""),
        "rebalance: every member joined"
    );
    let results: Vec<JoinResult> = group.members.iter().map(|m| group.current_join_result(&m.member_id)).collect();
    for (member, result) in group.members.iter_mut().zip(results) {
        member.touch(now);
        if let Some(waiting) = member.awaiting_join.take() {
            let _ = waiting.send(result);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SyncGroup, Heartbeat, LeaveGroup

pub async fn sync(shard: &Shard, request: SyncRequest) -> SyncResult {
    match sync_now(shard, request) {
        Ok(result) => result,
        Err(receiver) => receiver.await.unwrap_or_else(|_| SyncResult::error(code(ResponseError::RebalanceInProgress))),
    }
}

fn sync_now(shard: &Shard, request: SyncRequest) -> Result<SyncResult, oneshot::Receiver<SyncResult>> {
    if let Some(error) = coordinator_error(shard, &request.group_id) {
        return Ok(SyncResult::error(error));
    }
    let now = Instant::now();
    let mut groups = shard.groups.groups.borrow_mut();
    let Some(group) = groups.get_mut(&request.group_id) else {
        return Ok(SyncResult::error(code(ResponseError::UnknownMemberId)));
    };
    if let Err(error) = validate_member(group, &request.member_id, request.group_instance_id.as_deref(), request.generation_id) {
        return Ok(SyncResult::error(error));
    }
    if request.protocol_type.is_some() && request.protocol_type != group.protocol_type
        || request.protocol_name.is_some() && request.protocol_name != group.protocol_name
    {
        return Ok(SyncResult::error(code(ResponseError::InconsistentGroupProtocol)));
    }
    let index = group.member_index(&request.member_id).expect("validated member");
    group.members[index].touch(now);
    let answer = |group: &Group, index: usize| SyncResult {
        error_code: NONE,
        protocol_type: group.protocol_type.clone(),
        protocol_name: group.protocol_name.clone(),
        assignment: group.members[index].assignment.clone(),
    };
    match group.state {
        GroupState::Empty => Ok(SyncResult::error(code(ResponseError::UnknownMemberId))),
        GroupState::PreparingRebalance => Ok(SyncResult::error(code(ResponseError::RebalanceInProgress))),
        GroupState::Stable => Ok(answer(group, index)),
        GroupState::CompletingRebalance => {
            let (sender, receiver) = oneshot::channel();
            group.members[index].awaiting_sync = Some(sender);
            if group.is_leader(&request.member_id) {
                let assignments: HashMap<String, Bytes> = request.assignments.into_iter().collect();
                for member in &mut group.members {
                    member.assignment = assignments.get(&member.member_id).cloned().unwrap_or_default();
                }
                group.set_state(GroupState::Stable, now_ms());
                group.sync_deadline = None;
                store_group(shard, group);
                tracing::info!(group = group.group_id, generation = group.generation_id, "group stable");
                for index in 0..group.members.len() {
                    let result = answer(group, index);
                    if let Some(waiting) = group.members[index].awaiting_sync.take() {
                        let _ = waiting.send(result);
                    }
                }
            }
            Err(receiver)
        }
    }
}

/// Kafka's member checks: known member, its instance id, its generation.
fn validate_member(group: &Group, member_id: &str, group_instance_id: Option<&str>, generation_id: i32) -> Result<(), i16> {
    if let Some(instance) = group_instance_id {
        match group.member_index_by_instance(instance) {
            Some(index) if group.members[index].member_id != member_id => return Err(code(ResponseError::FencedInstanceId)),
            _ => {}
        }
    }
    if group.member_index(member_id).is_none() {
        return Err(code(ResponseError::UnknownMemberId));
    }
    if generation_id != group.generation_id {
        return Err(code(ResponseError::IllegalGeneration));
    }
    Ok(())
}

pub fn heartbeat(shard: &Shard, group_id: &str, member_id: &str, group_instance_id: Option<&str>, generation_id: i32) -> i16 {
    if let Some(error) = coordinator_error(shard, group_id) {
        return error;
    }
    let mut groups = shard.groups.groups.borrow_mut();
    let Some(group) = groups.get_mut(group_id) else {
        return code(ResponseError::UnknownMemberId);
    };
    if group.state == GroupState::Empty {
        return code(ResponseError::UnknownMemberId);
    }
    if let Err(error) = validate_member(group, member_id, group_instance_id, generation_id) {
        return error;
    }
    let index = group.member_index(member_id).expect("validated member");
    group.members[index].touch(Instant::now());
    match group.state {
        GroupState::PreparingRebalance => code(ResponseError::RebalanceInProgress),
        _ => NONE,
    }
}

/// Removes the members named by (member id, instance id); one error code per member.
pub fn leave(shard: &Shard, group_id: &str, members: &[(String, Option<String>)]) -> Vec<i16> {
    if let Some(error) = coordinator_error(shard, group_id) {
        return vec![error; members.len()];
    }
    let now = Instant::now();
    let mut groups = shard.groups.groups.borrow_mut();
    let Some(group) = groups.get_mut(group_id) else {
        return vec![code(ResponseError::UnknownMemberId); members.len()];
    };
    let mut errors = Vec::new();
    for (member_id, instance) in members {
        let found = match instance {
            Some(instance) => match group.member_index_by_instance(instance) {
                Some(index) if !member_id.is_empty() && group.members[index].member_id != *member_id => {
                    Err(code(ResponseError::FencedInstanceId))
                }
                Some(index) => Ok(Some(index)),
                None => Err(code(ResponseError::UnknownMemberId)),
            },
            None if group.pending_members.remove(member_id).is_some() => Ok(None),
            None => group.member_index(member_id).map(Some).ok_or(code(ResponseError::UnknownMemberId)),
        };
        match found {
            Ok(Some(index)) => {
                tracing::info!(group = group_id, member = group.members[index].member_id, "member leaves");
                remove_member(shard, group, index, now);
                errors.push(NONE);
            }
            Ok(None) => {
                try_complete_join(shard, group, now);
                errors.push(NONE);
            }
            Err(error) => errors.push(error),
        }
    }
    errors
}

fn remove_member(shard: &Shard, group: &mut Group, index: usize, now: Instant) {
    let member = group.members.remove(index);
    if let Some(waiting) = member.awaiting_join {
        let _ = waiting.send(JoinResult::error(code(ResponseError::UnknownMemberId), &member.member_id));
    }
    if let Some(waiting) = member.awaiting_sync {
        let _ = waiting.send(SyncResult::error(code(ResponseError::UnknownMemberId)));
    }
    if group.is_leader(&member.member_id) {
        group.leader_id = None;
    }
    match group.state {
        GroupState::Stable | GroupState::CompletingRebalance => {
            prepare_rebalance(group, now, "a member left");
            // With nobody left this ends at once, in Empty.
            try_complete_join(shard, group, now);
        }
        GroupState::PreparingRebalance => {
            if group.members.is_empty() {
                // Nobody left to wait for, not even the initial delay.
                group.initial_delay_until = None;
            }
            try_complete_join(shard, group, now)
        }
        GroupState::Empty => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Offsets

pub async fn commit(shard: &Shard, request: CommitRequest) -> Vec<i16> {
    if let Some(error) = coordinator_error(shard, &request.group_id) {
        return vec![error; request.offsets.len()];
    }
    let group_error = {
        let now = Instant::now();
        let mut groups = shard.groups.groups.borrow_mut();
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
    let config = &shard.broker.config;
    let now = now_ms();
    let mut errors = Vec::with_capacity(request.offsets.len());
    let mut accepted = Vec::new();
    {
        for (topic, partition, offset, leader_epoch, metadata) in &request.offsets {
            let metadata = metadata.clone().unwrap_or_default();
            let known = shard.broker.partition_count(topic).is_some_and(|count| *partition >= 0 && *partition < count);
            let error = if !known {
                code(ResponseError::UnknownTopicOrPartition)
            } else if metadata.len() > config.offset_metadata_max_bytes {
                code(ResponseError::OffsetMetadataTooLarge)
            } else {
                accepted.push((
                    topic.clone(),
                    *partition,
                    CommittedOffset { offset: *offset, leader_epoch: *leader_epoch, metadata, commit_timestamp_ms: now },
                ));
                NONE
            };
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
    if let Err(error) = write_and_wait(shard, &request.group_id, records).await {
        return errors.into_iter().map(|e| if e == NONE { error } else { e }).collect();
    }
    if let Some(group) = shard.groups.groups.borrow_mut().get_mut(&request.group_id) {
        for (topic, partition, value) in accepted {
            group.offsets.insert((topic, partition), value);
        }
    }
    errors
}

/// Committed offsets of `topics` (None: every partition the group has an offset for); Err is
/// the group's error code.
pub fn fetch_offsets(
    shard: &Shard,
    group_id: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> Result<Vec<(String, Vec<FetchedOffset>)>, i16> {
    if let Some(error) = coordinator_error(shard, group_id) {
        return Err(error);
    }
    let groups = shard.groups.groups.borrow();
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
pub async fn delete_offsets(shard: &Shard, group_id: &str, topics: Vec<(String, Vec<i32>)>) -> (i16, Vec<(String, Vec<(i32, i16)>)>) {
    if let Some(error) = coordinator_error(shard, group_id) {
        return (error, Vec::new());
    }
    let (results, records) = {
        let mut groups = shard.groups.groups.borrow_mut();
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
        if let Err(error) = write_and_wait(shard, group_id, records).await {
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

// ---------------------------------------------------------------------------------------------
// Admin: DescribeGroups, ListGroups, DeleteGroups

pub fn describe(shard: &Shard, group_id: &str) -> Described {
    let dead = |error_code| Described {
        error_code,
        state: "Dead".into(),
        protocol_type: String::new(),
        protocol_name: String::new(),
        members: Vec::new(),
    };
    if let Some(error) = coordinator_error(shard, group_id) {
        return dead(error);
    }
    let groups = shard.groups.groups.borrow();
    let Some(group) = groups.get(group_id) else {
        // Kafka describes an unknown group as Dead, without an error.
        return dead(NONE);
    };
    let stable = group.state == GroupState::Stable;
    let protocol = group.protocol_name.clone().unwrap_or_default();
    Described {
        error_code: NONE,
        state: group.state.name().to_string(),
        protocol_type: group.protocol_type.clone().unwrap_or_default(),
        // As Kafka: the protocol, subscriptions and assignments only once the group is Stable.
        protocol_name: if stable { protocol.clone() } else { String::new() },
        members: group
            .members
            .iter()
            .map(|m| DescribedMember {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: if stable { m.metadata_for(&protocol) } else { Bytes::new() },
                assignment: if stable { m.assignment.clone() } else { Bytes::new() },
            })
            .collect(),
    }
}

pub fn list(shard: &Shard) -> Vec<Listed> {
    shard
        .groups
        .groups
        .borrow()
        .values()
        .map(|g| Listed {
            group_id: g.group_id.clone(),
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            state: g.state.name().to_string(),
        })
        .collect()
}

pub async fn delete_group(shard: &Shard, group_id: &str) -> i16 {
    if let Some(error) = coordinator_error(shard, group_id) {
        return error;
    }
    let records = {
        let mut groups = shard.groups.groups.borrow_mut();
        match groups.get(group_id) {
            None => return code(ResponseError::GroupIdNotFound),
            Some(group) if group.state != GroupState::Empty => return code(ResponseError::NonEmptyGroup),
            Some(_) => {}
        }
        let group = groups.remove(group_id).expect("checked above");
        let mut records: Vec<(Bytes, Option<Bytes>)> =
            group.offsets.keys().map(|(topic, partition)| (offsets_topic::offset_key(group_id, topic, *partition), None)).collect();
        records.push((offsets_topic::group_key(group_id), None));
        records
    };
    tracing::info!(group = group_id, "group deleted");
    match write_and_wait(shard, group_id, records).await {
        Ok(()) => NONE,
        Err(error) => error,
    }
}

// ---------------------------------------------------------------------------------------------
// Timers: session timeouts, rebalance deadlines, offsets retention

/// Called every few tens of milliseconds by the shard's group task.
pub fn expire(shard: &Shard, now: Instant) {
    let mut groups = shard.groups.groups.borrow_mut();
    for group in groups.values_mut() {
        group.pending_members.retain(|_, deadline| *deadline > now);
        while let Some(index) = group.members.iter().position(|m| !m.is_waiting() && m.session_deadline <= now) {
            tracing::info!(group = group.group_id, member = group.members[index].member_id, "session timeout: member removed");
            remove_member(shard, group, index, now);
        }
        match group.state {
            GroupState::PreparingRebalance => {
                if group.initial_delay_until.map(|t| t <= now).unwrap_or(false) {
                    group.initial_delay_until = None;
                }
                if group.join_deadline.map(|t| t <= now).unwrap_or(false) {
                    complete_join(shard, group, now);
                } else {
                    try_complete_join(shard, group, now);
                }
            }
            GroupState::CompletingRebalance if group.sync_deadline.map(|t| t <= now).unwrap_or(false) => {
                // Kafka's pending-sync timeout: whoever did not send SyncGroup is gone.
                while let Some(index) = group.members.iter().position(|m| m.awaiting_sync.is_none()) {
                    tracing::info!(group = group.group_id, member = group.members[index].member_id, "no SyncGroup in time: member removed");
                    let member = group.members.remove(index);
                    if group.is_leader(&member.member_id) {
                        group.leader_id = None;
                    }
                }
                if group.members.is_empty() {
                    group.generation_id += 1;
                    group.set_state(GroupState::Empty, now_ms());
                    group.sync_deadline = None;
                    store_group(shard, group);
                } else {
                    prepare_rebalance(group, now, "members missed the sync deadline");
                }
            }
            _ => {}
        }
    }
}

/// `offsets.retention.minutes`: offsets of a group that has been Empty that long go (a group
/// that only stores offsets: each offset that long after its commit), then the group itself.
pub fn expire_offsets(shard: &Shard, now_ms: i64) {
    let retention_ms = shard.broker.config.offsets_retention_ms;
    let mut writes: Vec<(String, Vec<(Bytes, Option<Bytes>)>)> = Vec::new();
    let mut groups = shard.groups.groups.borrow_mut();
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
    for (group_id, records) in writes {
        enqueue(shard, &group_id, records, None);
    }
}

/// Answers every waiting JoinGroup and SyncGroup with NOT_COORDINATOR (the broker is stopping):
/// clients look for the coordinator again.
pub fn fail_waiting(shard: &Shard) {
    for group in shard.groups.groups.borrow_mut().values_mut() {
        fail_waiting_members(group);
    }
}

fn fail_waiting_members(group: &mut Group) {
    for member in &mut group.members {
        if let Some(waiting) = member.awaiting_join.take() {
            let _ = waiting.send(JoinResult::error(code(ResponseError::NotCoordinator), &member.member_id));
        }
        if let Some(waiting) = member.awaiting_sync.take() {
            let _ = waiting.send(SyncResult::error(code(ResponseError::NotCoordinator)));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// __consumer_offsets: writes and start-up load

fn stored(group: &Group) -> StoredGroup {
    let protocol = group.protocol_name.clone().unwrap_or_default();
    StoredGroup {
        protocol_type: group.protocol_type.clone().unwrap_or_default(),
        generation_id: group.generation_id,
        protocol_name: group.protocol_name.clone(),
        leader_id: group.leader_id.clone(),
        state_timestamp_ms: group.state_since_ms,
        members: group
            .members
            .iter()
            .map(|m| StoredMember {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                session_timeout_ms: m.session_timeout_ms,
                subscription: m.metadata_for(&protocol),
                assignment: m.assignment.clone(),
            })
            .collect(),
    }
}

/// Records the group's membership (Stable or Empty); nobody waits for it.
fn store_group(shard: &Shard, group: &Group) {
    let records = vec![(offsets_topic::group_key(&group.group_id), Some(offsets_topic::group_value(&stored(group))))];
    enqueue(shard, &group.group_id, records, None);
}

fn enqueue(shard: &Shard, group_id: &str, records: Vec<(Bytes, Option<Bytes>)>, done: Option<oneshot::Sender<Result<(), i16>>>) {
    let partition = partition_for_group(group_id, offsets_partition_count(&shard.broker));
    let write = OffsetsWrite { partition, records, done };
    let sent = match shard.groups.writes.borrow().as_ref() {
        Some(sender) => sender.unbounded_send(write).map_err(|e| e.into_inner()),
        None => Err(write),
    };
    if let Err(write) = sent {
        if let Some(done) = write.done {
            let _ = done.send(Err(code(ResponseError::NotCoordinator)));
        }
    }
}

async fn write_and_wait(shard: &Shard, group_id: &str, records: Vec<(Bytes, Option<Bytes>)>) -> Result<(), i16> {
    let (sender, receiver) = oneshot::channel();
    enqueue(shard, group_id, records, Some(sender));
    receiver.await.unwrap_or(Err(code(ResponseError::NotCoordinator)))
}

/// Cluster mode: how long an offset commit waits for the ISR to have its records (Kafka's
/// `offsets.commit.timeout.ms` default) before it is answered REQUEST_TIMED_OUT.
const OFFSETS_COMMIT_TIMEOUT_MS: i32 = 5_000;

/// The shard's writer: appends queued records to `__consumer_offsets` in order, until the queue
/// is closed at shutdown and drained. In cluster mode a write someone waits for is answered
/// once the partition's ISR has it (Kafka commits offsets with acks=all), so a committed offset
/// survives the coordinator's failover; the wait runs beside the writer, so later writes do not
/// queue behind replication.
pub async fn run_writer(shard: Rc<Shard>) {
    let Some(mut receiver) = shard.groups.writes_receiver.borrow_mut().take() else { return };
    while let Some(write) = receiver.next().await {
        let partition = write.partition;
        if write.done.is_some() {
            if let Some(reason) = shard.broker.not_enough_replicas(CONSUMER_OFFSETS_TOPIC, partition, -1) {
                tracing::warn!(partition, reason, "offset commit refused");
                let _ = write.done.map(|done| done.send(Err(code(ResponseError::CoordinatorNotAvailable))));
                continue;
            }
        }
        let (handle, end_offset) = match append(&shard, partition, &write.records).await {
            Ok(appended) => appended,
            Err((error_code, error)) => {
                tracing::error!(partition, error, "writing to __consumer_offsets failed");
                let _ = write.done.map(|done| done.send(Err(error_code)));
                continue;
            }
        };
        let Some(done) = write.done else { continue };
        if shard.broker.cluster.is_none() {
            let _ = done.send(Ok(()));
            continue;
        }
        let shard = shard.clone();
        glommio::spawn_local(async move {
            let replicated = shard
                .wait_for_high_watermark(CONSUMER_OFFSETS_TOPIC, partition, &handle, end_offset, OFFSETS_COMMIT_TIMEOUT_MS)
                .await
                .map_err(|e| match e {
                    HighWatermarkWaitError::LeadershipMoved(_) => code(ResponseError::NotCoordinator),
                    HighWatermarkWaitError::TimedOut => code(ResponseError::RequestTimedOut),
                });
            let _ = done.send(replicated);
        })
        .detach();
    }
}

/// Closes the write queue: the writer finishes what is queued and returns.
pub fn close_writes(shard: &Shard) {
    shard.groups.writes.borrow_mut().take();
}

/// Appends one batch; Ok is the partition and the offset after the batch, Err the error code
/// for whoever waits (NOT_COORDINATOR when this broker no longer leads the partition).
async fn append(shard: &Shard, partition: i32, records: &[(Bytes, Option<Bytes>)]) -> Result<(Rc<Partition>, i64), (i16, String)> {
    let unavailable = |e: String| (code(ResponseError::CoordinatorNotAvailable), e);
    let now = now_ms();
    let batch = offsets_topic::encode_batch(records, now).map_err(unavailable)?;
    let handle = shard.partition(CONSUMER_OFFSETS_TOPIC, partition).await.map_err(|e| match e {
        PartitionError::NotLeaderOrFollower => (code(ResponseError::NotCoordinator), format!("{e:?}")),
        e => unavailable(format!("{e:?}")),
    })?;
    let mut log = handle.log.write().await.map_err(|e| unavailable(format!("{e:?}")))?;
    shard.sync_leader_epoch(CONSUMER_OFFSETS_TOPIC, partition, &mut log);
    let appended = log.append(batch, now).await.map_err(|e| unavailable(e.to_string()))?;
    log.flush_if_due().await.map_err(|e| unavailable(e.to_string()))?;
    drop(log);
    shard.appended.notify_all();
    Ok((handle, appended.last_offset + 1))
}

/// Standalone: rebuilds this shard's groups and offsets from its `__consumer_offsets`
/// partitions, at start. (Cluster mode loads a partition when this broker becomes its leader:
/// `follow_leadership`.)
pub async fn load(shard: &Shard) {
    if shard.broker.cluster.is_some() {
        return;
    }
    let count = match shard.broker.topics.read().unwrap().get(CONSUMER_OFFSETS_TOPIC) {
        Some(info) => info.partitions,
        None => return,
    };
    for partition in (0..count).filter(|p| shard.owner_of(CONSUMER_OFFSETS_TOPIC, *p) == shard.id()) {
        load_partition(shard, partition).await;
    }
}

/// How often a shard looks for a new cluster snapshot to follow `__consumer_offsets`
/// leadership (work happens only when it changed).
const LEADERSHIP_CHECK_INTERVAL_MS: u64 = 20;

/// Cluster mode, for the shard's life: this shard coordinates the groups of exactly the
/// `__consumer_offsets` partitions it owns and this broker leads. Gaining a partition loads its
/// groups from the log (requests meanwhile get COORDINATOR_LOAD_IN_PROGRESS); losing it drops
/// them (NOT_COORDINATOR from then on, and to every JoinGroup and SyncGroup waiting).
pub async fn follow_leadership(shard: Rc<Shard>) {
    let Some(cluster) = shard.broker.cluster.clone() else { return };
    let me = shard.broker.config.broker_id;
    let mut seen: Option<std::sync::Arc<zk::ClusterSnapshot>> = None;
    while !shard.broker.is_shutting_down() {
        let snapshot = cluster.view.snapshot();
        if seen.as_ref().is_some_and(|seen| std::sync::Arc::ptr_eq(seen, &snapshot)) {
            glommio::timer::sleep(Duration::from_millis(LEADERSHIP_CHECK_INTERVAL_MS)).await;
            continue;
        }
        seen = Some(snapshot.clone());
        let count = snapshot.topics.get(CONSUMER_OFFSETS_TOPIC).map(|t| t.replicas.len() as i32).unwrap_or(0);
        let led: Vec<i32> = (0..count)
            .filter(|&p| shard.owner_of(CONSUMER_OFFSETS_TOPIC, p) == shard.id())
            .filter(|&p| snapshot.leader(CONSUMER_OFFSETS_TOPIC, p) == Some(me))
            .collect();
        let held: Vec<i32> = shard.groups.partitions.borrow().keys().copied().collect();
        for &partition in held.iter().filter(|p| !led.contains(p)) {
            unload_partition(&shard, partition, count);
        }
        for &partition in led.iter().filter(|p| !held.contains(p)) {
            shard.groups.partitions.borrow_mut().insert(partition, PartitionLoad::Loading);
            load_partition(&shard, partition).await;
            shard.groups.partitions.borrow_mut().insert(partition, PartitionLoad::Loaded);
        }
        glommio::timer::sleep(Duration::from_millis(LEADERSHIP_CHECK_INTERVAL_MS)).await;
    }
}

/// Drops the groups of `partition` (leadership moved away): their members' waiting requests
/// get NOT_COORDINATOR and find the new coordinator.
fn unload_partition(shard: &Shard, partition: i32, partition_count: i32) {
    shard.groups.partitions.borrow_mut().remove(&partition);
    let mut groups = shard.groups.groups.borrow_mut();
    let leaving: Vec<String> =
        groups.keys().filter(|id| partition_for_group(id, partition_count) == partition).cloned().collect();
    for group_id in &leaving {
        if let Some(mut group) = groups.remove(group_id) {
            fail_waiting_members(&mut group);
        }
    }
    tracing::info!(shard = shard.id(), partition, groups = leaving.len(), "no longer coordinating a __consumer_offsets partition");
}

/// Reads one `__consumer_offsets` partition from its start and applies every record to the
/// shard's groups.
async fn load_partition(shard: &Shard, partition: i32) {
    let started = Instant::now();
    let mut records_read = 0usize;
    let handle = match shard.partition(CONSUMER_OFFSETS_TOPIC, partition).await {
        Ok(handle) => handle,
        Err(e) => {
            tracing::error!(partition, error = ?e, "__consumer_offsets partition cannot be loaded");
            return;
        }
    };
    let log = handle.log.read().await.expect("partition lock");
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let chunk = match log.read(offset, 1 << 20, i64::MAX, true).await {
            Ok(read) => read,
            Err(e) => {
                tracing::error!(partition, offset, error = %e, "reading __consumer_offsets");
                break;
            }
        };
        let Some(last) = chunk.slices.last().map(|s| s.last_offset) else { break };
        for slice in chunk.slices {
            let bytes = match slice.read_bytes().await {
                Ok(bytes) => Bytes::from(bytes),
                Err(e) => {
                    tracing::error!(partition, error = %e, "reading __consumer_offsets");
                    break;
                }
            };
            match offsets_topic::decode_batches(bytes) {
                Ok(records) => {
                    records_read += records.len();
                    for (key, value) in records {
                        apply_stored(shard, key, value);
                    }
                }
                Err(e) => tracing::error!(partition, error = e, "skipping undecodable __consumer_offsets batch"),
            }
        }
        offset = last + 1;
    }
    if records_read > 0 || shard.broker.cluster.is_some() {
        let elapsed_ms = started.elapsed().as_millis() as u64;
        tracing::info!(shard = shard.id(), partition, records_read, elapsed_ms, "groups loaded from __consumer_offsets");
    }
}

fn apply_stored(shard: &Shard, key: Bytes, value: Option<Bytes>) {
    let record = match offsets_topic::decode_record(key, value) {
        Ok(record) => record,
        Err(e) => {
            tracing::warn!(error = e, "skipping an unreadable __consumer_offsets record");
            return;
        }
    };
    let now = Instant::now();
    let mut groups = shard.groups.groups.borrow_mut();
    match record {
        StoredRecord::Offset { group_id, topic, partition, value } => match value {
            Some(value) => {
                let group = groups.entry(group_id.clone()).or_insert_with(|| Group::new(&group_id, value.commit_timestamp_ms));
                group.offsets.insert((topic, partition), value);
            }
            None => {
                if let Some(group) = groups.get_mut(&group_id) {
                    group.offsets.remove(&(topic, partition));
                }
            }
        },
        StoredRecord::Group { group_id, value: None } => {
            groups.remove(&group_id);
        }
        StoredRecord::Group { group_id, value: Some(stored) } => {
            let group = groups.entry(group_id.clone()).or_insert_with(|| Group::new(&group_id, now_ms()));
            group.protocol_type = Some(stored.protocol_type).filter(|t| !t.is_empty());
            group.generation_id = stored.generation_id;
            group.protocol_name = stored.protocol_name.clone();
            group.leader_id = stored.leader_id;
            group.state_since_ms = if stored.state_timestamp_ms >= 0 { stored.state_timestamp_ms } else { now_ms() };
            let protocol = stored.protocol_name.unwrap_or_default();
            // Members come back with a fresh session: those still alive carry on without a
            // rebalance, the others expire after their session timeout.
            group.members = stored
                .members
                .into_iter()
                .map(|m| {
                    let mut member = Member {
                        member_id: m.member_id,
                        group_instance_id: m.group_instance_id,
                        client_id: m.client_id,
                        client_host: m.client_host,
                        rebalance_timeout_ms: m.rebalance_timeout_ms,
                        session_timeout_ms: m.session_timeout_ms,
                        protocol_type: group.protocol_type.clone().unwrap_or_default(),
                        protocols: vec![(protocol.clone(), m.subscription)],
                        assignment: m.assignment,
                        session_deadline: now,
                        awaiting_join: None,
                        awaiting_sync: None,
                    };
                    member.touch(now);
                    member
                })
                .collect();
            group.state = if group.members.is_empty() { GroupState::Empty } else { GroupState::Stable };
        }
    }
}
