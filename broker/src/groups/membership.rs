//! Group membership, Kafka's classic rebalance protocol: JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, the rebalance itself, and the timers that expire members (session timeout,
//! rebalance timeout, initial delay, pending-sync timeout).
//!
//! Contract: a request that must wait (JoinGroup until the rebalance completes, SyncGroup until
//! the leader's assignment arrives) parks a oneshot sender in its member and awaits the receiver
//! outside any borrow of the group map; every such wait ends (answered, failed with an error, or
//! the member removed by a timer). Generation ids only grow. A group that reaches Stable or Empty
//! records its membership in `__consumer_offsets` without waiting for the write.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;
use kafka_protocol::ResponseError;

use super::coordinator::{code, coordinator_error, GroupCoordinator, NONE};
use super::group::{Group, GroupState, JoinResult, Member, SyncResult};
use super::offsets_topic::{self, StoredGroup, StoredMember};
use super::offsets_writer::write_unless_full;
use crate::clock::now_ms;

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

fn new_member_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}

// ---------------------------------------------------------------------------------------------
// JoinGroup

pub async fn join(coordinator: &GroupCoordinator, request: JoinRequest) -> JoinResult {
    let member_id = request.member_id.clone();
    match join_now(coordinator, request) {
        Ok(result) => result,
        Err(receiver) => receiver.await.unwrap_or_else(|_| JoinResult::error(code(ResponseError::UnknownMemberId), &member_id)),
    }
}

/// Ok: the answer now. Err: the answer comes when the rebalance completes.
fn join_now(coordinator: &GroupCoordinator, request: JoinRequest) -> Result<JoinResult, oneshot::Receiver<JoinResult>> {
    let config = &coordinator.broker.config;
    if request.group_id.is_empty() {
        return Ok(JoinResult::error(code(ResponseError::InvalidGroupId), &request.member_id));
    }
    if let Some(error) = coordinator_error(coordinator, &request.group_id) {
        return Ok(JoinResult::error(error, &request.member_id));
    }
    if request.session_timeout_ms < config.group_min_session_timeout_ms
        || request.session_timeout_ms > config.group_max_session_timeout_ms
    {
        return Ok(JoinResult::error(code(ResponseError::InvalidSessionTimeout), &request.member_id));
    }
    let now = Instant::now();
    let mut groups = coordinator.groups.borrow_mut();
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
                return replace_static_member(coordinator, group, index, request, now);
            }
            if group.members.len() >= config.group_max_size {
                return Ok(JoinResult::error(code(ResponseError::GroupMaxSizeReached), ""));
            }
            let member_id = new_member_id(&instance);
            return Err(add_member_and_rebalance(coordinator, group, member_id, request, now));
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
        return Err(add_member_and_rebalance(coordinator, group, member_id, request, now));
    }

    if group.pending_members.remove(&request.member_id).is_some() {
        let member_id = request.member_id.clone();
        return Err(add_member_and_rebalance(coordinator, group, member_id, request, now));
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
            try_complete_join(coordinator, group, now);
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
    coordinator: &GroupCoordinator,
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
    let delay = Duration::from_millis(coordinator.broker.config.group_initial_rebalance_delay_ms);
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
    try_complete_join(coordinator, group, now);
    receiver
}

/// A static member restarted (same `group.instance.id`, no member id): it takes over the old
/// member's place and, when nothing else changed, its assignment, without a rebalance.
fn replace_static_member(
    coordinator: &GroupCoordinator,
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
    // Kafka (updateStaticMemberAndRebalance): in Stable, new metadata alone (a consumer's owned
    // partitions and generation differ between its runs) rebalances only if it changes the
    // protocol the group would select.
    let keeps_protocol = unchanged || (group.protocol_name.is_some() && group.select_protocol() == group.protocol_name);
    if group.state == GroupState::Stable && keeps_protocol {
        store_group(coordinator, group);
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
    try_complete_join(coordinator, group, now);
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

fn try_complete_join(coordinator: &GroupCoordinator, group: &mut Group, now: Instant) {
    if group.state == GroupState::PreparingRebalance && group.initial_delay_until.is_none() && group.all_members_joined() {
        complete_join(coordinator, group, now);
    }
}

/// Ends PreparingRebalance: members that did not rejoin are dropped, the generation advances,
/// and every waiting member gets its JoinGroup answer (the leader with everyone's subscription).
fn complete_join(coordinator: &GroupCoordinator, group: &mut Group, now: Instant) {
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
        store_group(coordinator, group);
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

pub async fn sync(coordinator: &GroupCoordinator, request: SyncRequest) -> SyncResult {
    match sync_now(coordinator, request) {
        Ok(result) => result,
        Err(receiver) => receiver.await.unwrap_or_else(|_| SyncResult::error(code(ResponseError::RebalanceInProgress))),
    }
}

fn sync_now(coordinator: &GroupCoordinator, request: SyncRequest) -> Result<SyncResult, oneshot::Receiver<SyncResult>> {
    if let Some(error) = coordinator_error(coordinator, &request.group_id) {
        return Ok(SyncResult::error(error));
    }
    let now = Instant::now();
    let mut groups = coordinator.groups.borrow_mut();
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
                store_group(coordinator, group);
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
pub(super) fn validate_member(group: &Group, member_id: &str, group_instance_id: Option<&str>, generation_id: i32) -> Result<(), i16> {
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

pub fn heartbeat(coordinator: &GroupCoordinator, group_id: &str, member_id: &str, group_instance_id: Option<&str>, generation_id: i32) -> i16 {
    if let Some(error) = coordinator_error(coordinator, group_id) {
        return error;
    }
    let mut groups = coordinator.groups.borrow_mut();
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
pub fn leave(coordinator: &GroupCoordinator, group_id: &str, members: &[(String, Option<String>)]) -> Vec<i16> {
    if let Some(error) = coordinator_error(coordinator, group_id) {
        return vec![error; members.len()];
    }
    let now = Instant::now();
    let mut groups = coordinator.groups.borrow_mut();
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
                remove_member(coordinator, group, index, now);
                errors.push(NONE);
            }
            Ok(None) => {
                try_complete_join(coordinator, group, now);
                errors.push(NONE);
            }
            Err(error) => errors.push(error),
        }
    }
    errors
}

fn remove_member(coordinator: &GroupCoordinator, group: &mut Group, index: usize, now: Instant) {
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
            try_complete_join(coordinator, group, now);
        }
        GroupState::PreparingRebalance => {
            if group.members.is_empty() {
                // Nobody left to wait for, not even the initial delay.
                group.initial_delay_until = None;
            }
            try_complete_join(coordinator, group, now)
        }
        GroupState::Empty => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Timers: session timeouts, rebalance deadlines

/// Called every few tens of milliseconds by the shard's group task.
pub fn expire(coordinator: &GroupCoordinator, now: Instant) {
    let mut groups = coordinator.groups.borrow_mut();
    for group in groups.values_mut() {
        group.pending_members.retain(|_, deadline| *deadline > now);
        while let Some(index) = group.members.iter().position(|m| !m.is_waiting() && m.session_deadline <= now) {
            tracing::info!(group = group.group_id, member = group.members[index].member_id, "session timeout: member removed");
            remove_member(coordinator, group, index, now);
        }
        match group.state {
            GroupState::PreparingRebalance => {
                if group.initial_delay_until.map(|t| t <= now).unwrap_or(false) {
                    group.initial_delay_until = None;
                }
                if group.join_deadline.map(|t| t <= now).unwrap_or(false) {
                    complete_join(coordinator, group, now);
                } else {
                    try_complete_join(coordinator, group, now);
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
                    store_group(coordinator, group);
                } else {
                    prepare_rebalance(group, now, "members missed the sync deadline");
                }
            }
            _ => {}
        }
    }
}

/// Answers every waiting JoinGroup and SyncGroup with NOT_COORDINATOR (the broker is stopping):
/// clients look for the coordinator again.
pub fn fail_waiting(coordinator: &GroupCoordinator) {
    for group in coordinator.groups.borrow_mut().values_mut() {
        fail_waiting_members(group);
    }
}

pub(super) fn fail_waiting_members(group: &mut Group) {
    for member in &mut group.members {
        if let Some(waiting) = member.awaiting_join.take() {
            let _ = waiting.send(JoinResult::error(code(ResponseError::NotCoordinator), &member.member_id));
        }
        if let Some(waiting) = member.awaiting_sync.take() {
            let _ = waiting.send(SyncResult::error(code(ResponseError::NotCoordinator)));
        }
    }
}

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

/// Records the group's membership (Stable or Empty); nobody waits for it. Called with the group
/// map borrowed, so it cannot wait for room in the queue: dropped with a warning when the queue
/// is full (`offsets_writer` says why no offset is lost).
fn store_group(coordinator: &GroupCoordinator, group: &Group) {
    let records = vec![(offsets_topic::group_key(&group.group_id), Some(offsets_topic::group_value(&stored(group))))];
    write_unless_full(coordinator, &group.group_id, records);
}
