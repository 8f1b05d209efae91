//! One consumer group as the coordinator holds it: its state in Kafka's classic rebalance
//! protocol, its members and their assignments, and its committed offsets.
//!
//! The state machine is Kafka's (GroupMetadata.scala):
//! Empty -> PreparingRebalance (someone joins) -> CompletingRebalance (every member rejoined, or
//! the rebalance timeout passed; the leader now computes the assignment) -> Stable (the leader's
//! SyncGroup arrived) -> PreparingRebalance (a member joins, leaves, changes its subscription or
//! misses its session timeout) ... -> Empty (the last member left).

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use bytes::Bytes;
use futures_channel::oneshot;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    /// The names Kafka's admin APIs use (DescribeGroups, ListGroups states filter).
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// What a JoinGroup answers.
#[derive(Debug, Clone)]
pub struct JoinResult {
    pub error_code: i16,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader_id: String,
    pub member_id: String,
    /// Only the leader gets the members and their subscriptions.
    pub members: Vec<JoinedMember>,
}

#[derive(Debug, Clone)]
pub struct JoinedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

impl JoinResult {
    pub fn error(error_code: i16, member_id: &str) -> JoinResult {
        JoinResult {
            error_code,
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader_id: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

/// What a SyncGroup answers.
#[derive(Debug, Clone, Default)]
pub struct SyncResult {
    pub error_code: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    pub fn error(error_code: i16) -> SyncResult {
        SyncResult { error_code, ..SyncResult::default() }
    }
}

pub struct Member {
    pub member_id: String,
    /// Static membership (KIP-345): the same instance id gets its assignment back after a restart.
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub protocol_type: String,
    /// (protocol name, subscription metadata), in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    /// Removed from the group when this passes without a heartbeat (unless it is waiting on us).
    pub session_deadline: Instant,
    pub awaiting_join: Option<oneshot::Sender<JoinResult>>,
    pub awaiting_sync: Option<oneshot::Sender<SyncResult>>,
}

impl Member {
    pub fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols.iter().find(|(name, _)| name == protocol).map(|(_, m)| m.clone()).unwrap_or_default()
    }

    pub fn touch(&mut self, now: Instant) {
        self.session_deadline = now + std::time::Duration::from_millis(self.session_timeout_ms.max(0) as u64);
    }

    /// A member we owe an answer to is not expired: it is waiting on us, not the other way round.
    pub fn is_waiting(&self) -> bool {
        self.awaiting_join.is_some() || self.awaiting_sync.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

pub struct Group {
    pub group_id: String,
    pub state: GroupState,
    pub generation_id: i32,
    /// None for a group that only stores offsets (consumers that `assign()` by hand).
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader_id: Option<String>,
    /// In join order; the first member becomes leader when there is none.
    pub members: Vec<Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED (JoinGroup v4+), with the time by which the
    /// client must rejoin with it. A rebalance waits for them.
    pub pending_members: HashMap<String, Instant>,
    pub offsets: BTreeMap<(String, i32), CommittedOffset>,
    /// PreparingRebalance ends here even if some members have not rejoined (rebalance timeout).
    pub join_deadline: Option<Instant>,
    /// A new group waits `group.initial.rebalance.delay.ms` for more members before its first
    /// generation; every new member restarts the wait, up to `join_deadline`.
    pub initial_delay_until: Option<Instant>,
    /// CompletingRebalance ends here: members that have not sent SyncGroup are removed.
    pub sync_deadline: Option<Instant>,
    /// When the group entered its current state (offsets of an Empty group expire from here).
    pub state_since_ms: i64,
}

impl Group {
    pub fn new(group_id: &str, now_ms: i64) -> Group {
        Group {
            group_id: group_id.to_string(),
            state: GroupState::Empty,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader_id: None,
            members: Vec::new(),
            pending_members: HashMap::new(),
            offsets: BTreeMap::new(),
            join_deadline: None,
            initial_delay_until: None,
            sync_deadline: None,
            state_since_ms: now_ms,
        }
    }

    pub fn member_index(&self, member_id: &str) -> Option<usize> {
        self.members.iter().position(|m| m.member_id == member_id)
    }

    pub fn member_index_by_instance(&self, group_instance_id: &str) -> Option<usize> {
        self.members.iter().position(|m| m.group_instance_id.as_deref() == Some(group_instance_id))
    }

    pub fn is_leader(&self, member_id: &str) -> bool {
        self.leader_id.as_deref() == Some(member_id)
    }

    pub fn set_state(&mut self, state: GroupState, now_ms: i64) {
        if self.state != state {
            tracing::debug!(group = self.group_id, from = self.state.name(), to = state.name(), "group state");
            self.state = state;
            self.state_since_ms = now_ms;
        }
    }

    /// Kafka's check: a member may join when its protocol type matches the group's and it
    /// supports at least one protocol every other member supports.
    pub fn accepts_protocols(&self, member_id: &str, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if protocol_type.is_empty() || protocols.is_empty() {
            return false;
        }
        let others: Vec<&Member> = self.members.iter().filter(|m| m.member_id != member_id).collect();
        if others.is_empty() {
            return true;
        }
        if others[0].protocol_type != protocol_type {
            return false;
        }
        protocols.iter().any(|(name, _)| others.iter().all(|m| m.protocols.iter().any(|(n, _)| n == name)))
    }

    /// The protocol every member supports that most members prefer (ties: the first member's
    /// preference order), as Kafka's `selectProtocol`.
    pub fn select_protocol(&self) -> Option<String> {
        let candidates: Vec<&String> = self.members.first()?.protocols.iter().map(|(name, _)| name)
            .filter(|name| self.members.iter().all(|m| m.protocols.iter().any(|(n, _)| n == *name)))
            .collect();
        let mut best: Option<(&String, usize)> = None;
        for candidate in &candidates {
            let votes = self.members.iter()
                .filter(|m| m.protocols.iter().map(|(n, _)| n).find(|n| candidates.contains(n)) == Some(*candidate))
                .count();
            if best.map(|(_, v)| votes > v).unwrap_or(true) {
                best = Some((candidate, votes));
            }
        }
        best.map(|(name, _)| name.clone())
    }

    pub fn max_rebalance_timeout_ms(&self) -> u64 {
        self.members.iter().map(|m| m.rebalance_timeout_ms.max(0) as u64).max().unwrap_or(0)
    }

    /// Every member has rejoined and nobody holds a member id we are still waiting for.
    pub fn all_members_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.iter().all(|m| m.awaiting_join.is_some())
    }

    /// The answer a member gets for the current generation (a repeated JoinGroup in
    /// CompletingRebalance or Stable with unchanged metadata).
    pub fn current_join_result(&self, member_id: &str) -> JoinResult {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        JoinResult {
            error_code: 0,
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader_id: self.leader_id.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members: if self.is_leader(member_id) {
                self.members
                    .iter()
                    .map(|m| JoinedMember {
                        member_id: m.member_id.clone(),
                        group_instance_id: m.group_instance_id.clone(),
                        metadata: m.metadata_for(&protocol),
                    })
                    .collect()
            } else {
                Vec::new()
            },
        }
    }
}
