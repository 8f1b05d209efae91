//! One file per Kafka API, each alike: take the decoded request, find the owning shard for each
//! partition (`Shard::owner_of`), hand the work to it, and build the response.
//!
//! `dispatch` is the single entry: it checks the API key and version against what we advertise,
//! decodes with the kafka-protocol crate, calls the handler and encodes the response.

mod add_offsets_to_txn;
mod add_partitions_to_txn;
mod alter_configs;
mod api_versions;
mod create_partitions;
pub mod create_topics;
mod delete_groups;
mod delete_topics;
mod describe_cluster;
mod describe_configs;
mod describe_groups;
mod describe_log_dirs;
mod describe_producers;
mod describe_transactions;
mod end_txn;
mod fetch;
pub mod fetch_framing;
mod find_coordinator;
mod heartbeat;
mod incremental_alter_configs;
mod init_producer_id;
mod join_group;
mod leave_group;
mod list_groups;
mod list_offsets;
mod list_transactions;
mod delete_records;
mod metadata;
mod offset_commit;
mod offset_delete;
mod offset_fetch;
mod offset_for_leader_epoch;
mod produce;
mod sync_group;
mod txn_offset_commit;
mod write_txn_markers;
// Security (issue 20).
mod alter_user_scram_credentials;
mod describe_user_scram_credentials;
mod sasl_authenticate;
mod sasl_handshake;
// Authorisation (issue 20, security/acl/).
/// DescribeAcls' request and DeleteAcls' filters carry the same filter fields.
macro_rules! acl_filter_of {
    ($f:expr) => {
        crate::security::acl::filter_from_fields(
            $f.resource_type_filter,
            $f.resource_name_filter.as_deref(),
            $f.pattern_type_filter,
            $f.principal_filter.as_deref(),
            $f.host_filter.as_deref(),
            $f.operation,
            $f.permission_type,
        )
    };
}
mod create_acls;
mod delete_acls;
mod describe_acls;

use std::rc::Rc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ProduceRequest, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::ResponseError;
use storage::StorageError;

use crate::partition::PartitionError;
use crate::security::session::Session;
use crate::shard_context::Shard;

/// The APIs and versions we serve, as Apache Kafka 3.x advertises them. Produce v0-v2 and Fetch
/// v0-v3 are older than kafka-protocol's schemas and handled by hand (see `dispatch`): librdkafka up to 2.0 (Debian's
/// kcat) compresses gzip, snappy and lz4 only towards brokers that advertise Produce v0 and v2 and
/// Fetch v2, then speaks v3+/v4+ anyway.
pub const SUPPORTED_APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 0, 12),
    // v13+ name topics by id (KIP-516): fetch.rs, fetch_framing.rs.
    (ApiKey::Fetch, 0, fetch_framing::MAX_VERSION),
    // v8's earliest local (-4) and v9's latest tiered (-5) offsets: list_offsets.rs.
    (ApiKey::ListOffsets, 1, 9),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeCluster, 0, 1),
    // Transactions (txn/, txn_router.rs). WriteTxnMarkers from v1: kafka-protocol has no v0 (our
    // brokers send v1; Kafka 3.9's since 2.8 too).
    (ApiKey::AddPartitionsToTxn, 0, 4),
    (ApiKey::AddOffsetsToTxn, 0, 4),
    (ApiKey::EndTxn, 0, 4),
    (ApiKey::WriteTxnMarkers, 1, 1),
    (ApiKey::TxnOffsetCommit, 0, 4),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 1),
    // Cluster mode only (api_versions.rs leaves it out of a single broker's list). From v2 (KIP-320,
    // what librdkafka and the Java client need): kafka-protocol decodes no older one.
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    // Security (security/): SASL, and SCRAM credentials.
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    // ACLs (security/acl/): kafka-protocol has v1-v3 (v0, pre-KIP-290, left out as Kafka 4 does).
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
];

pub fn supported_versions(api_key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED_APIS.iter().find(|(k, _, _)| *k == api_key).map(|&(_, min, max)| (min, max))
}

/// Who sent a request: consumer groups report it (DescribeGroups' client id and host).
pub struct Client<'a> {
    pub id: &'a str,
    pub host: &'a str,
}

/// What to do with a frame.
pub enum Outcome {
    Respond(BytesMut),
    /// A Fetch response: framing with record runs between, some of them file regions to splice.
    RespondPieces(Vec<fetch_framing::Piece<fetch_framing::Records>>),
    /// acks=0 produce: Kafka sends nothing back.
    NoResponse,
    /// Malformed or unsupported: log the reason and close the connection.
    Close(String),
}

pub async fn dispatch(shard: &Rc<Shard>, mut frame: Bytes, session: &mut Session) -> Outcome {
    if frame.len() < 8 {
        return Outcome::Close(format!("request of {} bytes is shorter than a request header", frame.len()));
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let Ok(api_key) = ApiKey::try_from(key) else {
        return Outcome::Close(format!("unknown API key {key}"));
    };
    if !session.may_call(api_key) {
        // As Kafka: anything but ApiVersions and the SASL exchange before authenticating closes.
        return Outcome::Close(format!("unexpected {api_key:?} request before SASL authentication"));
    }
    let Some((min, max)) = supported_versions(api_key) else {
        return Outcome::Close(format!("API {api_key:?} is not supported"));
    };
    if version < min || version > max {
        if api_key == ApiKey::ApiVersions {
            // Kafka answers with a v0 response listing what it supports, so the client can retry.
            let response = api_versions::unsupported_version_response(shard.broker.cluster.is_some());
            return encode(ApiKey::ApiVersions, 0, correlation_id, ResponseKind::ApiVersions(response));
        }
        return Outcome::Close(format!("{api_key:?} v{version} is not supported (v{min}-v{max})"));
    }
    let header = match RequestHeader::decode(&mut frame, api_key.request_header_version(version)) {
        Ok(header) => header,
        Err(e) => return Outcome::Close(format!("bad {api_key:?} request header: {e}")),
    };
    let (mut frame, version) = match (api_key, version) {
        // Produce v3 is v0-v2 with a transactional id in front: decode as v3 without one.
        (ApiKey::Produce, 0..=2) => {
            let mut body = BytesMut::with_capacity(frame.len() + 2);
            body.put_i16(-1);
            body.put_slice(&frame);
            let mut body = body.freeze();
            let request = match ProduceRequest::decode(&mut body, 3) {
                Ok(request) => request,
                Err(e) => return Outcome::Close(format!("bad Produce v{version} request: {e}")),
            };
            return match produce::handle(shard, request, 3, session).await {
                Some(response) => produce::encode_pre_v3(&response, version, header.correlation_id),
                None => Outcome::NoResponse,
            };
        }
        (ApiKey::Fetch, 0..=3) => return fetch::answer_pre_v4(frame, version, header.correlation_id),
        _ => (frame, version),
    };
    let request = match RequestKind::decode(api_key, &mut frame, version) {
        Ok(request) => request,
        Err(e) => return Outcome::Close(format!("bad {api_key:?} v{version} request: {e}")),
    };
    let client_id = header.client_id.as_ref().map(|id| id.to_string()).unwrap_or_default();
    let client = Client { id: &client_id, host: &session.client_host };
    let listener = &shard.broker.security.listeners[session.listener];
    let response = match request {
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(api_versions::handle(shard.broker.cluster.is_some())),
        RequestKind::Metadata(r) => ResponseKind::Metadata(metadata::handle(shard, r, version, &listener.listener, session).await),
        RequestKind::Produce(r) => match produce::handle(shard, r, version, session).await {
            Some(response) => ResponseKind::Produce(response),
            None => return Outcome::NoResponse,
        },
        RequestKind::Fetch(r) => {
            let answer = fetch::handle(shard, r, version, listener.tls.is_none(), session).await;
            return Outcome::RespondPieces(fetch_framing::frame(version, header.correlation_id, answer.session, answer.topics, &answer.node_endpoints));
        }
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(find_coordinator::handle(shard, r, version, &listener.listener, session).await)
        }
        RequestKind::ListOffsets(r) => ResponseKind::ListOffsets(list_offsets::handle(shard, r, version, session).await),
        RequestKind::DeleteRecords(r) => ResponseKind::DeleteRecords(delete_records::handle(shard, r, session).await),
        RequestKind::CreateTopics(r) => ResponseKind::CreateTopics(create_topics::handle(shard, r, version, session).await),
        RequestKind::DeleteTopics(r) => ResponseKind::DeleteTopics(delete_topics::handle(shard, r, version, session).await),
        RequestKind::CreatePartitions(r) => ResponseKind::CreatePartitions(create_partitions::handle(shard, r, session).await),
        RequestKind::InitProducerId(r) => ResponseKind::InitProducerId(init_producer_id::handle(shard, r, session).await),
        RequestKind::DescribeConfigs(r) => ResponseKind::DescribeConfigs(describe_configs::handle(shard, r, version, session)),
        RequestKind::AlterConfigs(r) => ResponseKind::AlterConfigs(alter_configs::handle(shard, r, session).await),
        RequestKind::IncrementalAlterConfigs(r) => {
            ResponseKind::IncrementalAlterConfigs(incremental_alter_configs::handle(shard, r, session).await)
        }
        RequestKind::JoinGroup(r) => ResponseKind::JoinGroup(join_group::handle(shard, r, version, &client, session).await),
        RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(sync_group::handle(shard, r, version, session).await),
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(heartbeat::handle(shard, r, session).await),
        RequestKind::LeaveGroup(r) => ResponseKind::LeaveGroup(leave_group::handle(shard, r, version, session).await),
        RequestKind::OffsetCommit(r) => ResponseKind::OffsetCommit(offset_commit::handle(shard, r, session).await),
        RequestKind::OffsetFetch(r) => ResponseKind::OffsetFetch(offset_fetch::handle(shard, r, version, session).await),
        RequestKind::ListGroups(r) => ResponseKind::ListGroups(list_groups::handle(shard, r, version, session).await),
        RequestKind::DescribeGroups(r) => ResponseKind::DescribeGroups(describe_groups::handle(shard, r, version, session).await),
        RequestKind::DeleteGroups(r) => ResponseKind::DeleteGroups(delete_groups::handle(shard, r, session).await),
        RequestKind::OffsetDelete(r) => ResponseKind::OffsetDelete(offset_delete::handle(shard, r, session).await),
        RequestKind::DescribeCluster(r) => ResponseKind::DescribeCluster(describe_cluster::handle(shard, r, version, &listener.listener, session)),
        RequestKind::DescribeLogDirs(r) => ResponseKind::DescribeLogDirs(describe_log_dirs::handle(shard, r, session).await),
        RequestKind::AddPartitionsToTxn(r) => ResponseKind::AddPartitionsToTxn(add_partitions_to_txn::handle(shard, r, version, session).await),
        RequestKind::AddOffsetsToTxn(r) => ResponseKind::AddOffsetsToTxn(add_offsets_to_txn::handle(shard, r, session).await),
        RequestKind::EndTxn(r) => ResponseKind::EndTxn(end_txn::handle(shard, r, session).await),
        RequestKind::WriteTxnMarkers(r) => ResponseKind::WriteTxnMarkers(write_txn_markers::handle(shard, r, session).await),
        RequestKind::TxnOffsetCommit(r) => ResponseKind::TxnOffsetCommit(txn_offset_commit::handle(shard, r, session).await),
        RequestKind::DescribeProducers(r) => ResponseKind::DescribeProducers(describe_producers::handle(shard, r, session).await),
        RequestKind::DescribeTransactions(r) => ResponseKind::DescribeTransactions(describe_transactions::handle(shard, r, session).await),
        RequestKind::ListTransactions(r) => ResponseKind::ListTransactions(list_transactions::handle(shard, r, session).await),
        RequestKind::OffsetForLeaderEpoch(r) => ResponseKind::OffsetForLeaderEpoch(offset_for_leader_epoch::handle(shard, r, session).await),
        RequestKind::SaslHandshake(r) => ResponseKind::SaslHandshake(sasl_handshake::handle(shard, r, version, session)),
        RequestKind::SaslAuthenticate(r) => ResponseKind::SaslAuthenticate(sasl_authenticate::handle(shard, r, session)),
        RequestKind::AlterUserScramCredentials(r) => {
            ResponseKind::AlterUserScramCredentials(alter_user_scram_credentials::handle(shard, r, session).await)
        }
        RequestKind::DescribeUserScramCredentials(r) => {
            ResponseKind::DescribeUserScramCredentials(describe_user_scram_credentials::handle(shard, r, session))
        }
        RequestKind::CreateAcls(r) => ResponseKind::CreateAcls(create_acls::handle(r, session).await),
        RequestKind::DescribeAcls(r) => ResponseKind::DescribeAcls(describe_acls::handle(r, session)),
        RequestKind::DeleteAcls(r) => ResponseKind::DeleteAcls(delete_acls::handle(r, session).await),
        other => return Outcome::Close(format!("no handler for {other:?}")),
    };
    encode(api_key, version, header.correlation_id, response)
}

fn encode(api_key: ApiKey, version: i16, correlation_id: i32, response: ResponseKind) -> Outcome {
    let header_version = api_key.response_header_version(version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let mut buffer = BytesMut::with_capacity(256);
    buffer.put_i32(0); // length, filled in below
    if let Err(e) = header.encode(&mut buffer, header_version) {
        return Outcome::Close(format!("encoding the {api_key:?} response header: {e}"));
    }
    if let Err(e) = response.encode(&mut buffer, version) {
        // A bug on our side (a field set that this version lacks): say so loudly.
        tracing::error!(?api_key, version, error = %e, "cannot encode response");
        return Outcome::Close(format!("encoding the {api_key:?} v{version} response: {e}"));
    }
    respond_with_length(buffer)
}

/// A response frame whose first 4 bytes were reserved for its size: fills them in.
pub fn respond_with_length(mut frame: BytesMut) -> Outcome {
    let length = (frame.len() - 4) as i32;
    frame[0..4].copy_from_slice(&length.to_be_bytes());
    Outcome::Respond(frame)
}

pub fn storage_error_code(error: &StorageError) -> i16 {
    match error {
        StorageError::CorruptBatch(_) => ResponseError::CorruptMessage.code(),
        StorageError::RecordTooLarge { .. } => ResponseError::MessageTooLarge.code(),
        StorageError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange.code(),
        StorageError::Offline { .. } | StorageError::Io { .. } => ResponseError::KafkaStorageError.code(),
    }
}

pub fn partition_error_code(error: &PartitionError) -> i16 {
    match error {
        PartitionError::UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition.code(),
        PartitionError::NotLeaderOrFollower => ResponseError::NotLeaderOrFollower.code(),
        // Retriable: the client refreshes metadata and tries again after the restart.
        PartitionError::ShuttingDown => ResponseError::NotLeaderOrFollower.code(),
        PartitionError::Storage(e) => storage_error_code(e),
    }
}

pub fn str_bytes(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

#[cfg(test)]
mod advertised {
    use super::*;

    /// ApiVersions advertises only what `dispatch` can decode: kafka-protocol's range for each
    /// API, below it only the versions answered by hand (Produce v0-v2, Fetch v0-v3), and Fetch
    /// no higher than its hand-written response framing.
    #[test]
    fn every_advertised_version_is_served() {
        for &(key, min, max) in SUPPORTED_APIS {
            let by_hand = match key {
                ApiKey::Produce => 2,
                ApiKey::Fetch => 3,
                _ => -1,
            };
            let decodable = key.valid_versions();
            assert!(min.max(by_hand + 1) >= decodable.min && max <= decodable.max, "{key:?} v{min}-v{max}: kafka-protocol has {decodable:?}");
        }
        assert_eq!(supported_versions(ApiKey::Fetch), Some((0, fetch_framing::MAX_VERSION)));
    }
}
