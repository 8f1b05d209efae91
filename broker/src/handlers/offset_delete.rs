//! OffsetDelete: drops committed offsets of partitions the group no longer consumes.

use std::rc::Rc;

use kafka_protocol::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse, TopicName};

use super::str_bytes;
use crate::group_router::shard_for_group;
use crate::groups::offsets;
use crate::shard_context::Shard;
use crate::security::acl::model::{Operation, ResourceType};
use crate::security::session::Session;

pub async fn handle(shard: &Rc<Shard>, request: OffsetDeleteRequest, session: &Session) -> OffsetDeleteResponse {
    if !session.authorize(Operation::Delete, ResourceType::Group, &request.group_id) {
        return OffsetDeleteResponse::default().with_error_code(kafka_protocol::ResponseError::GroupAuthorizationFailed.code());
    }
    let group_id = request.group_id.0.to_string();
    let topics: Vec<(String, Vec<i32>)> = request
        .topics
        .iter()
        .map(|t| (t.name.0.to_string(), t.partitions.iter().map(|p| p.partition_index).collect()))
        .collect();
    let owner = shard_for_group(shard, &group_id);
    let (error_code, results) =
        shard.router.call(owner, move |owner| async move { offsets::delete_offsets(&owner.groups, &group_id, topics).await }).await;
    let topics = results
        .into_iter()
        .map(|(name, partitions)| {
            OffsetDeleteResponseTopic::default().with_name(TopicName(str_bytes(&name))).with_partitions(
                partitions
                    .into_iter()
                    .map(|(index, code)| OffsetDeleteResponsePartition::default().with_partition_index(index).with_error_code(code))
                    .collect(),
            )
        })
        .collect();
    OffsetDeleteResponse::default().with_error_code(error_code).with_topics(topics)
}
