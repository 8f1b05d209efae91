//! DescribeAcls (Kafka's AclApis.handleDescribeAcls): DESCRIBE on the cluster; the ACLs the
//! filter matches, grouped by resource pattern. INVALID_REQUEST for a filter with unknown
//! elements, SECURITY_DISABLED without an authorizer.

use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{DescribeAclsRequest, DescribeAclsResponse};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::security::acl::model::Operation;
use crate::security::session::Session;

fn error(error: ResponseError, message: &str) -> DescribeAclsResponse {
    DescribeAclsResponse::default().with_error_code(error.code()).with_error_message(Some(str_bytes(message)))
}

pub fn handle(request: DescribeAclsRequest, session: &Session) -> DescribeAclsResponse {
    if !session.authorize_cluster(Operation::Describe) {
        return error(ResponseError::ClusterAuthorizationFailed, "Cluster authorization failed.");
    }
    let Some(authorizer) = session.authorizer() else {
        return error(ResponseError::SecurityDisabled, "No Authorizer is configured.");
    };
    let filter = match acl_filter_of!(request) {
        Ok(filter) => filter,
        Err(message) => return error(ResponseError::InvalidRequest, &message),
    };
    let acls = authorizer.acls();
    let mut resources: Vec<DescribeAclsResource> = Vec::new();
    for (pattern, entries) in acls.patterns() {
        let matching: Vec<AclDescription> = entries
            .iter()
            .filter(|entry| filter.matches(&crate::security::acl::model::AclBinding { pattern: pattern.clone(), entry: (*entry).clone() }))
            .map(|e| {
                AclDescription::default()
                    .with_principal(str_bytes(&e.principal))
                    .with_host(str_bytes(&e.host))
                    .with_operation(e.operation.code())
                    .with_permission_type(e.permission.code())
            })
            .collect();
        if !matching.is_empty() {
            resources.push(
                DescribeAclsResource::default()
                    .with_resource_type(pattern.resource_type.code())
                    .with_resource_name(str_bytes(&pattern.name))
                    .with_pattern_type(pattern.pattern_type.code())
                    .with_acls(matching),
            );
        }
    }
    DescribeAclsResponse::default().with_resources(resources)
}
