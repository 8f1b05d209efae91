//! DescribeGroups: state, protocol and members of each group, from its shard.

use std::rc::Rc;

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

use super::str_bytes;
use crate::group_router::shard_for_group;
use crate::groups::admin;
use crate::shard_context::Shard;
use crate::security::acl::model::{Operation, ResourceType};
use crate::security::session::Session;

/// Kafka's "operations unknown" when the client did not ask for them.
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

pub async fn handle(shard: &Rc<Shard>, request: DescribeGroupsRequest, version: i16, session: &Session) -> DescribeGroupsResponse {
    let mut groups = Vec::new();
    for group_id in request.groups {
        let id = group_id.0.to_string();
        if !session.authorize(Operation::Describe, ResourceType::Group, &id) {
            let denied = kafka_protocol::ResponseError::GroupAuthorizationFailed.code();
            groups.push(DescribedGroup::default().with_group_id(group_id).with_error_code(denied).with_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED));
            continue;
        }
        let operations = session.authorized_operations(ResourceType::Group, &id);
        let owner = shard_for_group(shard, &id);
        let described = shard.router.call(owner, move |owner| async move { admin::describe(&owner.groups, &id) }).await;
        let members = described
            .members
            .into_iter()
            .map(|m| {
                let mut member = DescribedGroupMember::default()
                    .with_member_id(str_bytes(&m.member_id))
                    .with_client_id(str_bytes(&m.client_id))
                    .with_client_host(str_bytes(&m.client_host))
                    .with_member_metadata(m.metadata)
                    .with_member_assignment(m.assignment);
                if version >= 4 {
                    member = member.with_group_instance_id(m.group_instance_id.as_deref().map(str_bytes));
                }
                member
            })
            .collect();
        let mut group = DescribedGroup::default()
            .with_error_code(described.error_code)
            .with_group_id(group_id)
            .with_group_state(str_bytes(&described.state))
            .with_protocol_type(str_bytes(&described.protocol_type))
            .with_protocol_data(str_bytes(&described.protocol_name))
            .with_members(members);
        if version >= 3 {
            group = group.with_authorized_operations(if request.include_authorized_operations {
                operations
            } else {
                AUTHORIZED_OPERATIONS_OMITTED
            });
        }
        groups.push(group);
    }
    DescribeGroupsResponse::default().with_groups(groups)
}
