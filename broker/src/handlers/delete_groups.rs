//! DeleteGroups: an Empty group and its offsets go (tombstones in `__consumer_offsets`).

use std::rc::Rc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use crate::group_router::shard_for_group;
use crate::groups::admin;
use crate::shard_context::Shard;
use crate::security::acl::model::{Operation, ResourceType};
use crate::security::session::Session;

pub async fn handle(shard: &Rc<Shard>, request: DeleteGroupsRequest, session: &Session) -> DeleteGroupsResponse {
    let mut results = Vec::new();
    for group_id in request.groups_names {
        let id = group_id.0.to_string();
        if !session.authorize(Operation::Delete, ResourceType::Group, &id) {
            let denied = kafka_protocol::ResponseError::GroupAuthorizationFailed.code();
            results.push(DeletableGroupResult::default().with_group_id(group_id).with_error_code(denied));
            continue;
        }
        let owner = shard_for_group(shard, &id);
        let error_code = shard.router.call(owner, move |owner| async move { admin::delete_group(&owner.groups, &id).await }).await;
        results.push(DeletableGroupResult::default().with_group_id(group_id).with_error_code(error_code));
    }
    DeleteGroupsResponse::default().with_results(results)
}
