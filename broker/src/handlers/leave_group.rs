//! LeaveGroup: one member (v0-2) or a batch of members by id or instance id (v3+).

use std::rc::Rc;

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::str_bytes;
use crate::group_router::shard_for_group;
use crate::groups::membership;
use crate::shard_context::Shard;
use crate::security::acl::model::{Operation, ResourceType};
use crate::security::session::Session;

pub async fn handle(shard: &Rc<Shard>, request: LeaveGroupRequest, version: i16, session: &Session) -> LeaveGroupResponse {
    if !session.authorize(Operation::Read, ResourceType::Group, &request.group_id) {
        return LeaveGroupResponse::default().with_error_code(kafka_protocol::ResponseError::GroupAuthorizationFailed.code());
    }
    let group_id = request.group_id.0.to_string();
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        request.members.iter().map(|m| (m.member_id.to_string(), m.group_instance_id.as_ref().map(|s| s.to_string()))).collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    let owner = shard_for_group(shard, &group_id);
    let leaving = members.clone();
    let errors = shard.router.call(owner, move |owner| async move { membership::leave(&owner.groups, &group_id, &leaving) }).await;
    if version < 3 {
        return LeaveGroupResponse::default().with_error_code(errors.first().copied().unwrap_or(0));
    }
    let members = members
        .into_iter()
        .zip(errors)
        .map(|((member_id, instance), error_code)| {
            MemberResponse::default()
                .with_member_id(str_bytes(&member_id))
                .with_group_instance_id(instance.as_deref().map(str_bytes))
                .with_error_code(error_code)
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}
