//! Group administration: DescribeGroups, ListGroups, DeleteGroups.
//!
//! Contract: reads answer from this shard's groups as they are now (as Kafka: protocol,
//! subscriptions and assignments only once a group is Stable); only an Empty group can be
//! deleted, and DeleteGroups is answered once its tombstones are in `__consumer_offsets`.

use bytes::Bytes;
use kafka_protocol::ResponseError;

use super::coordinator::{code, coordinator_error, GroupCoordinator, NONE};
use super::group::GroupState;
use super::offsets_topic;
use super::offsets_writer::write_and_wait;

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

pub fn describe(coordinator: &GroupCoordinator, group_id: &str) -> Described {
    let dead = |error_code| Described {
        error_code,
        state: "Dead".into(),
        protocol_type: String::new(),
        protocol_name: String::new(),
        members: Vec::new(),
    };
    if let Some(error) = coordinator_error(coordinator, group_id) {
        return dead(error);
    }
    let groups = coordinator.groups.borrow();
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

pub fn list(coordinator: &GroupCoordinator) -> Vec<Listed> {
    coordinator
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

pub async fn delete_group(coordinator: &GroupCoordinator, group_id: &str) -> i16 {
    if let Some(error) = coordinator_error(coordinator, group_id) {
        return error;
    }
    let records = {
        let mut groups = coordinator.groups.borrow_mut();
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
    match write_and_wait(coordinator, group_id, records).await {
        Ok(()) => NONE,
        Err(error) => error,
    }
}
