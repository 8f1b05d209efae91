//! AlterConfigs: replaces a topic's whole set of overrides (keys left out return to defaults).

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};

use super::str_bytes;
use crate::shard_context::Shard;
use crate::security::session::Session;

pub async fn handle(shard: &Rc<Shard>, request: AlterConfigsRequest, session: &Session) -> AlterConfigsResponse {
    let mut responses = Vec::new();
    for resource in request.resources {
        let overrides: BTreeMap<String, String> =
            resource.configs.iter().filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string()))).collect();
        let outcome = super::incremental_alter_configs::apply_topic_overrides(
            shard,
            session,
            resource.resource_type,
            resource.resource_name.as_str(),
            |_| Ok(overrides.clone()),
            request.validate_only,
        )
        .await;
        let mut response = AlterConfigsResourceResponse::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone())
            .with_error_message(None);
        if let Err((error, message)) = outcome {
            response = response.with_error_code(error.code()).with_error_message(Some(str_bytes(&message)));
        }
        responses.push(response);
    }
    AlterConfigsResponse::default().with_responses(responses)
}
