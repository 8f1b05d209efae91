//! DeleteAcls (Kafka's AclApis.handleDeleteAcls): ALTER on the cluster; each filter's matches
//! removed and answered. INVALID_REQUEST for a filter with unknown elements, SECURITY_DISABLED
//! without an authorizer.

use kafka_protocol::messages::delete_acls_response::{DeleteAclsFilterResult, DeleteAclsMatchingAcl};
use kafka_protocol::messages::{DeleteAclsRequest, DeleteAclsResponse};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::security::acl::model::{AclFilter, Operation};
use crate::security::session::Session;

fn failed(error: ResponseError, message: &str) -> DeleteAclsFilterResult {
    DeleteAclsFilterResult::default().with_error_code(error.code()).with_error_message(Some(str_bytes(message)))
}

pub async fn handle(request: DeleteAclsRequest, session: &Session) -> DeleteAclsResponse {
    let every = |error: ResponseError, message: &str| {
        DeleteAclsResponse::default().with_filter_results(request.filters.iter().map(|_| failed(error, message)).collect())
    };
    if !session.authorize_cluster(Operation::Alter) {
        return every(ResponseError::ClusterAuthorizationFailed, "Cluster authorization failed.");
    }
    let Some(authorizer) = session.authorizer() else {
        return every(ResponseError::SecurityDisabled, "No Authorizer is configured.");
    };
    let parsed: Vec<Result<AclFilter, String>> = request
        .filters
        .iter()
        .map(|f| acl_filter_of!(f))
        .collect();
    let valid: Vec<AclFilter> = parsed.iter().filter_map(|p| p.as_ref().ok().cloned()).collect();
    let deleted = authorizer.delete(&valid).await;
    let mut matched = match deleted {
        Ok(matched) => matched.into_iter(),
        Err(e) => {
            tracing::error!(error = %e, "deleting ACLs");
            return every(ResponseError::UnknownServerError, &format!("the ACLs could not be stored: {e}"));
        }
    };
    let results = parsed
        .iter()
        .map(|parsed| match parsed {
            Err(message) => failed(ResponseError::InvalidRequest, message),
            Ok(_) => {
                let bindings = matched.next().unwrap_or_default();
                if !bindings.is_empty() {
                    tracing::info!(principal = session.principal, ?bindings, "ACLs deleted");
                }
                DeleteAclsFilterResult::default().with_matching_acls(
                    bindings
                        .iter()
                        .map(|b| {
                            DeleteAclsMatchingAcl::default()
                                .with_resource_type(b.pattern.resource_type.code())
                                .with_resource_name(str_bytes(&b.pattern.name))
                                .with_pattern_type(b.pattern.pattern_type.code())
                                .with_principal(str_bytes(&b.entry.principal))
                                .with_host(str_bytes(&b.entry.host))
                                .with_operation(b.entry.operation.code())
                                .with_permission_type(b.entry.permission.code())
                        })
                        .collect(),
                )
            }
        })
        .collect();
    DeleteAclsResponse::default().with_filter_results(results)
}
