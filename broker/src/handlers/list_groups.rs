//! ListGroups: every shard's groups, optionally filtered by state (v4+) and by type (v5+,
//! KIP-848). Every group here is a classic one (the JoinGroup/SyncGroup protocol): its type is
//! `classic`, as Kafka 3.9 names it, and a filter without that type lists none.

use std::rc::Rc;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::str_bytes;
use crate::groups::admin;
use crate::shard_context::Shard;
use crate::security::acl::model::{Operation, ResourceType};
use crate::security::session::Session;

/// Kafka's `GroupType.CLASSIC`, as ListGroups v5 and DescribeGroups name it.
const CLASSIC_GROUP_TYPE: &str = "classic";

pub async fn handle(shard: &Rc<Shard>, request: ListGroupsRequest, version: i16, session: &Session) -> ListGroupsResponse {
    // Kafka: DESCRIBE on the cluster lists every group, else those the principal may describe.
    let all_groups = session.authorize_cluster(Operation::Describe);
    let states: Vec<String> = request.states_filter.iter().map(|s| s.to_ascii_lowercase()).collect();
    let types: Vec<String> = request.types_filter.iter().map(|t| t.to_ascii_lowercase()).collect();
    if !types.is_empty() && !types.iter().any(|t| t == CLASSIC_GROUP_TYPE) {
        return ListGroupsResponse::default();
    }
    let mut groups = Vec::new();
    for owner in 0..shard.router.shard_count() {
        let listed = shard.router.call(owner, |owner| async move { admin::list(&owner.groups) }).await;
        for group in listed {
            if !all_groups && !session.authorize(Operation::Describe, ResourceType::Group, &group.group_id) {
                continue;
            }
            if !states.is_empty() && !states.contains(&group.state.to_ascii_lowercase()) {
                continue;
            }
            let mut listed = ListedGroup::default()
                .with_group_id(GroupId(str_bytes(&group.group_id)))
                .with_protocol_type(str_bytes(&group.protocol_type));
            if version >= 4 {
                listed = listed.with_group_state(str_bytes(&group.state));
            }
            if version >= 5 {
                listed = listed.with_group_type(str_bytes(CLASSIC_GROUP_TYPE));
            }
            groups.push(listed);
        }
    }
    ListGroupsResponse::default().with_groups(groups)
}
