//! CreateAcls (Kafka's AclApis.handleCreateAcls): ALTER on the cluster, then each creation
//! checked (INVALID_REQUEST for unknown or ANY elements, an empty name, a CLUSTER resource not
//! named kafka-cluster, a principal not TYPE:NAME) and the valid ones stored together.
//! SECURITY_DISABLED without an authorizer.

use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::{CreateAclsRequest, CreateAclsResponse};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::security::acl::model::{AclBinding, Entry, Operation, PatternType, Permission, ResourcePattern, ResourceType};
use crate::security::session::Session;

fn result(error: Option<(ResponseError, String)>) -> AclCreationResult {
    match error {
        None => AclCreationResult::default(),
        Some((error, message)) => AclCreationResult::default().with_error_code(error.code()).with_error_message(Some(str_bytes(&message))),
    }
}

fn binding(creation: &AclCreation) -> Result<AclBinding, String> {
    let unknown = || "Invalid ACL creation: ACL binding contains unknown elements".to_string();
    let binding = AclBinding {
        pattern: ResourcePattern {
            resource_type: ResourceType::from_code(creation.resource_type).ok_or_else(unknown)?,
            pattern_type: PatternType::from_code(creation.resource_pattern_type).ok_or_else(unknown)?,
            name: creation.resource_name.to_string(),
        },
        entry: Entry {
            principal: creation.principal.to_string(),
            host: creation.host.to_string(),
            operation: Operation::from_code(creation.operation).ok_or_else(unknown)?,
            permission: Permission::from_code(creation.permission_type).ok_or_else(unknown)?,
        },
    };
    binding.validate()?;
    Ok(binding)
}

pub async fn handle(request: CreateAclsRequest, session: &Session) -> CreateAclsResponse {
    let every = |error: ResponseError, message: &str| {
        let results = request.creations.iter().map(|_| result(Some((error, message.to_string())))).collect();
        CreateAclsResponse::default().with_results(results)
    };
    if !session.authorize_cluster(Operation::Alter) {
        return every(ResponseError::ClusterAuthorizationFailed, "Cluster authorization failed.");
    }
    let Some(authorizer) = session.authorizer() else {
        return every(ResponseError::SecurityDisabled, "No Authorizer is configured.");
    };
    let checked: Vec<Result<AclBinding, String>> = request.creations.iter().map(binding).collect();
    let valid: Vec<AclBinding> = checked.iter().filter_map(|c| c.as_ref().ok().cloned()).collect();
    let saved = if valid.is_empty() { Ok(()) } else { authorizer.create(valid).await };
    if let Err(e) = &saved {
        tracing::error!(error = %e, "storing ACLs");
    }
    let results = checked
        .into_iter()
        .map(|checked| match (checked, &saved) {
            (Err(message), _) => result(Some((ResponseError::InvalidRequest, message))),
            (Ok(_), Err(e)) => result(Some((ResponseError::UnknownServerError, format!("the ACLs could not be stored: {e}")))),
            (Ok(binding), Ok(())) => {
                tracing::info!(principal = session.principal, ?binding, "ACL created");
                result(None)
            }
        })
        .collect();
    CreateAclsResponse::default().with_results(results)
}
