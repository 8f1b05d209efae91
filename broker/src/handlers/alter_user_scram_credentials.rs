//! AlterUserScramCredentials: upserts and deletes SCRAM credentials, checked as Kafka checks
//! them (one result per user; a user named twice, an unknown mechanism, iterations out of
//! range and deleting what is not there are errors). Standalone the store is rewritten on a
//! blocking thread before the answer, so an acknowledged change survives a crash; in cluster mode
//! each user's change is written to ZooKeeper (`/config/users/<user>` and a change notification,
//! as Kafka's ZkAdminManager) before the answer, and every broker follows it from there.

use std::collections::BTreeMap;

use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::{AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::security::credentials::{ScramCredential, ScramMechanism};
use crate::shard_context::Shard;
use crate::security::acl::model::Operation;
use crate::security::session::Session;

fn result(user: &str, error: Option<ResponseError>, message: Option<String>) -> AlterUserScramCredentialsResult {
    AlterUserScramCredentialsResult::default()
        .with_user(str_bytes(user))
        .with_error_code(error.map_or(0, |e| e.code()))
        .with_error_message(message.map(|m| str_bytes(&m)))
}

type Errors = BTreeMap<String, (ResponseError, String)>;

fn fail(errors: &mut Errors, user: &str, error: ResponseError, message: String) {
    errors.entry(user.to_string()).or_insert((error, message));
}

pub async fn handle(shard: &Shard, request: AlterUserScramCredentialsRequest, session: &Session) -> AlterUserScramCredentialsResponse {
    let store = shard.broker.security.credentials.clone();
    // Each user's first error wins; users with none are applied.
    let mut errors = Errors::new();
    let cluster_denied = !session.authorize_cluster(Operation::Alter);
    let mut named: BTreeMap<String, usize> = BTreeMap::new();
    for user in request.deletions.iter().map(|d| &d.name).chain(request.upsertions.iter().map(|u| &u.name)) {
        *named.entry(user.to_string()).or_default() += 1;
    }
    for (user, count) in &named {
        if cluster_denied {
            fail(&mut errors, user, ResponseError::ClusterAuthorizationFailed, "Cluster authorization failed.".into());
        } else if user.is_empty() {
            fail(&mut errors, user, ResponseError::UnacceptableCredential, "Username must not be empty".into());
        } else if user.chars().any(char::is_control) {
            fail(&mut errors, user, ResponseError::UnacceptableCredential, "Username must not contain control characters".into());
        } else if *count > 1 {
            fail(&mut errors, user, ResponseError::DuplicateResource, "A user credential cannot be altered twice in the same request".into());
        }
    }
    for deletion in &request.deletions {
        match ScramMechanism::from_type(deletion.mechanism) {
            None => fail(&mut errors, &deletion.name, ResponseError::UnsupportedSaslMechanism, "Unknown SCRAM mechanism".into()),
            Some(m) if store.get(&deletion.name, m).is_none() => {
                fail(&mut errors, &deletion.name, ResponseError::ResourceNotFound, "Attempt to delete a user credential that does not exist".into())
            }
            Some(_) => {}
        }
    }
    for upsertion in &request.upsertions {
        let iterations = upsertion.iterations;
        if ScramMechanism::from_type(upsertion.mechanism).is_none() {
            fail(&mut errors, &upsertion.name, ResponseError::UnsupportedSaslMechanism, "Unknown SCRAM mechanism".into());
        } else if !(ScramMechanism::MIN_ITERATIONS..=ScramMechanism::MAX_ITERATIONS).contains(&iterations) {
            let message = format!("Iterations {iterations} must be between {} and {}", ScramMechanism::MIN_ITERATIONS, ScramMechanism::MAX_ITERATIONS);
            fail(&mut errors, &upsertion.name, ResponseError::UnacceptableCredential, message);
        } else if upsertion.salted_password.is_empty() || upsertion.salt.is_empty() {
            fail(&mut errors, &upsertion.name, ResponseError::UnacceptableCredential, "Salt and salted password must not be empty".into());
        }
    }
    if let Some(cluster) = &shard.broker.cluster {
        alter_in_zookeeper(cluster, &request, &mut errors, &named).await;
        return response(&named, &errors);
    }
    let mut changed = false;
    for deletion in request.deletions.iter().filter(|d| !errors.contains_key(d.name.as_str())) {
        let mechanism = ScramMechanism::from_type(deletion.mechanism).expect("checked above");
        changed |= store.delete(&deletion.name, mechanism);
    }
    for upsertion in request.upsertions.iter().filter(|u| !errors.contains_key(u.name.as_str())) {
        let mechanism = ScramMechanism::from_type(upsertion.mechanism).expect("checked above");
        let credential = ScramCredential::from_salted_password(mechanism, upsertion.salt.to_vec(), &upsertion.salted_password, upsertion.iterations);
        store.upsert(&upsertion.name, mechanism, credential);
        changed = true;
    }
    if changed {
        let saving = store.clone();
        if let Err(e) = glommio::executor().spawn_blocking(move || saving.save_blocking()).await {
            tracing::error!(error = %e, "saving SCRAM credentials");
            for user in named.keys() {
                fail(&mut errors, user, ResponseError::UnknownServerError, format!("the credentials could not be saved: {e}"));
            }
        }
    }
    response(&named, &errors)
}

fn response(named: &BTreeMap<String, usize>, errors: &Errors) -> AlterUserScramCredentialsResponse {
    let results = named
        .keys()
        .map(|user| match errors.get(user) {
            Some((error, message)) => result(user, Some(*error), Some(message.clone())),
            None => result(user, None, None),
        })
        .collect();
    AlterUserScramCredentialsResponse::default().with_results(results)
}

/// Cluster mode: one ZooKeeper change per user (their upsertions and deletions together).
async fn alter_in_zookeeper(cluster: &zk::CoordinatorHandle, request: &AlterUserScramCredentialsRequest, errors: &mut Errors, named: &BTreeMap<String, usize>) {
    let valid: Vec<&String> = named.keys().filter(|u| !errors.contains_key(u.as_str())).collect();
    for user in valid {
        let mut set = BTreeMap::new();
        for upsertion in request.upsertions.iter().filter(|u| u.name.as_str() == user) {
            let mechanism = ScramMechanism::from_type(upsertion.mechanism).expect("checked above");
            let credential = ScramCredential::from_salted_password(mechanism, upsertion.salt.to_vec(), &upsertion.salted_password, upsertion.iterations);
            set.insert(mechanism.name().to_string(), credential.to_kafka_string());
        }
        let remove: Vec<String> = request
            .deletions
            .iter()
            .filter(|d| d.name.as_str() == user)
            .map(|d| ScramMechanism::from_type(d.mechanism).expect("checked above").name().to_string())
            .collect();
        if let Err(e) = cluster.alter_user_config(user, set, remove).await {
            tracing::error!(user, error = %e, "writing SCRAM credentials to ZooKeeper");
            fail(errors, user, ResponseError::UnknownServerError, format!("the credentials could not be saved: {e}"));
        }
    }
}
