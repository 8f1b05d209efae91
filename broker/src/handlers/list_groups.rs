//! ListGroups: every shard's groups, optionally filtered by state (v4+).

use std::rc::Rc;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::str_bytes;
use crate::groups::coordinator;
use crate::shard_context::Shard;

pub async fn handle(shard: &Rc<Shard>, request: ListGroupsRequest, version: i16) -> ListGroupsResponse {
    let states: Vec<String> = request.states_filter.iter().map(|s| s.to_ascii_lowercase()).collect();
    let mut groups = Vec::new();
    for owner in 0..shard.router.shard_count() {
        let listed = shard.router.call(owner, |owner| async move { coordinator::list(&owner) }).await;
        for group in listed {
            if !states.is_empty() && !states.contains(&group.state.to_ascii_lowercase()) {
                continue;
            }
            let mut listed = ListedGroup::default()
                .with_group_id(GroupId(str_bytes(&group.group_id)))
                .with_protocol_type(str_bytes(&group.protocol_type));
            if version >= 4 {
                listed = listed.with_group_state(str_bytes(&group.state));
            }
            groups.push(listed);
        }
    }
    ListGroupsResponse::default().with_groups(groups)
}
