//! DescribeUserScramCredentials: each user's mechanisms and iterations (never the keys).

use kafka_protocol::messages::describe_user_scram_credentials_response::{CredentialInfo, DescribeUserScramCredentialsResult};
use kafka_protocol::messages::{DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::shard_context::Shard;
use crate::security::acl::model::Operation;
use crate::security::session::Session;

pub fn handle(shard: &Shard, request: DescribeUserScramCredentialsRequest, session: &Session) -> DescribeUserScramCredentialsResponse {
    if !session.authorize_cluster(Operation::Describe) {
        return DescribeUserScramCredentialsResponse::default()
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
            .with_error_message(Some(str_bytes("Cluster authorization failed.")));
    }
    let described = shard.broker.security.credentials.describe();
    let wanted: Vec<String> = match &request.users {
        Some(users) if !users.is_empty() => users.iter().map(|u| u.name.to_string()).collect(),
        _ => described.keys().cloned().collect(),
    };
    let results = wanted
        .iter()
        .map(|user| match described.get(user) {
            Some(infos) => DescribeUserScramCredentialsResult::default().with_user(str_bytes(user)).with_credential_infos(
                infos.iter().map(|(m, iterations)| CredentialInfo::default().with_mechanism(m.type_id()).with_iterations(*iterations)).collect(),
            ),
            None => DescribeUserScramCredentialsResult::default()
                .with_user(str_bytes(user))
                .with_error_code(ResponseError::ResourceNotFound.code())
                .with_error_message(Some(str_bytes("Attempt to describe a user credential that does not exist"))),
        })
        .collect();
    DescribeUserScramCredentialsResponse::default().with_results(results)
}
