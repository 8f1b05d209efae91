//! JoinGroup: the member goes to its group's shard; the answer comes when the rebalance
//! completes, or at once (MEMBER_ID_REQUIRED, an error, a repeated join).

use std::rc::Rc;

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};

use super::{str_bytes, Client};
use crate::groups::membership::{self, JoinRequest};
use crate::group_router::shard_for_group;
use crate::topic_admin::ensure_offsets_topic;
use crate::shard_context::Shard;
use crate::security::acl::model::{Operation, ResourceType};
use crate::security::session::Session;

pub async fn handle(shard: &Rc<Shard>, request: JoinGroupRequest, version: i16, client: &Client<'_>, session: &Session) -> JoinGroupResponse {
    if !session.authorize(Operation::Read, ResourceType::Group, &request.group_id) {
        return JoinGroupResponse::default().with_error_code(kafka_protocol::ResponseError::GroupAuthorizationFailed.code()).with_generation_id(-1);
    }
    ensure_offsets_topic(shard).await;
    let join = JoinRequest {
        group_id: request.group_id.0.to_string(),
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
        client_id: client.id.to_string(),
        client_host: client.host.to_string(),
        session_timeout_ms: request.session_timeout_ms,
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout_ms: if version >= 1 { request.rebalance_timeout_ms } else { request.session_timeout_ms },
        protocol_type: request.protocol_type.to_string(),
        protocols: request.protocols.iter().map(|p| (p.name.to_string(), p.metadata.clone())).collect(),
        require_known_member_id: version >= 4,
    };
    let owner = shard_for_group(shard, &join.group_id);
    let result = shard.router.call(owner, move |owner| async move { membership::join(&owner.groups, join).await }).await;
    let members = result
        .members
        .into_iter()
        .map(|m| {
            let mut member = JoinGroupResponseMember::default().with_member_id(str_bytes(&m.member_id)).with_metadata(m.metadata);
            if version >= 5 {
                member = member.with_group_instance_id(m.group_instance_id.as_deref().map(str_bytes));
            }
            member
        })
        .collect();
    let mut response = JoinGroupResponse::default()
        .with_error_code(result.error_code)
        .with_generation_id(result.generation_id)
        .with_leader(str_bytes(&result.leader_id))
        .with_member_id(str_bytes(&result.member_id))
        .with_members(members);
    response = if version >= 7 {
        response
            .with_protocol_type(result.protocol_type.as_deref().map(str_bytes))
            .with_protocol_name(result.protocol_name.as_deref().map(str_bytes))
    } else {
        response.with_protocol_name(Some(str_bytes(result.protocol_name.as_deref().unwrap_or(""))))
    };
    response
}
