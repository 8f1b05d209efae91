//! SyncGroup: the leader hands in the assignment; every member waits for its share.

use std::rc::Rc;

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use super::str_bytes;
use crate::groups::membership::{self, SyncRequest};
use crate::group_router::shard_for_group;
use crate::shard_context::Shard;
use crate::security::acl::model::{Operation, ResourceType};
use crate::security::session::Session;

pub async fn handle(shard: &Rc<Shard>, request: SyncGroupRequest, version: i16, session: &Session) -> SyncGroupResponse {
    if !session.authorize(Operation::Read, ResourceType::Group, &request.group_id) {
        return SyncGroupResponse::default().with_error_code(kafka_protocol::ResponseError::GroupAuthorizationFailed.code());
    }
    let sync = SyncRequest {
        group_id: request.group_id.0.to_string(),
        generation_id: request.generation_id,
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
        protocol_type: request.protocol_type.as_ref().map(|s| s.to_string()),
        protocol_name: request.protocol_name.as_ref().map(|s| s.to_string()),
        assignments: request.assignments.iter().map(|a| (a.member_id.to_string(), a.assignment.clone())).collect(),
    };
    let owner = shard_for_group(shard, &sync.group_id);
    let result = shard.router.call(owner, move |owner| async move { membership::sync(&owner.groups, sync).await }).await;
    let mut response = SyncGroupResponse::default().with_error_code(result.error_code).with_assignment(result.assignment);
    if version >= 5 {
        response = response
            .with_protocol_type(result.protocol_type.as_deref().map(str_bytes))
            .with_protocol_name(result.protocol_name.as_deref().map(str_bytes));
    }
    response
}
