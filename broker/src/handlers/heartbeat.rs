//! Heartbeat: keeps a member's session alive; REBALANCE_IN_PROGRESS tells it to rejoin.

use std::rc::Rc;

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use crate::group_router::shard_for_group;
use crate::groups::membership;
use crate::shard_context::Shard;
use crate::security::acl::model::{Operation, ResourceType};
use crate::security::session::Session;

pub async fn handle(shard: &Rc<Shard>, request: HeartbeatRequest, session: &Session) -> HeartbeatResponse {
    if !session.authorize(Operation::Read, ResourceType::Group, &request.group_id) {
        return HeartbeatResponse::default().with_error_code(kafka_protocol::ResponseError::GroupAuthorizationFailed.code());
    }
    let group_id = request.group_id.0.to_string();
    let owner = shard_for_group(shard, &group_id);
    let error_code = shard
        .router
        .call(owner, move |owner| async move {
            let instance = request.group_instance_id.as_ref().map(|s| s.to_string());
            membership::heartbeat(&owner.groups, &group_id, &request.member_id, instance.as_deref(), request.generation_id)
        })
        .await;
    HeartbeatResponse::default().with_error_code(error_code)
}
