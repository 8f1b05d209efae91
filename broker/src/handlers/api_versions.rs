//! ApiVersions: what we serve. No tagged fields beyond the empty count (librdkafka 2.0.2, in
//! Debian's kcat, cannot parse them), which is what a default-built response encodes.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};
use kafka_protocol::ResponseError;

use super::SUPPORTED_APIS;

/// OffsetForLeaderEpoch only in cluster mode: librdkafka validates consumer positions with it
/// once a broker offers it, and a single broker stamps no leader epochs to validate against.
fn api_keys(cluster_mode: bool) -> Vec<ApiVersion> {
    SUPPORTED_APIS
        .iter()
        .filter(|(key, _, _)| cluster_mode || *key != ApiKey::OffsetForLeaderEpoch)
        .map(|&(key, min, max)| ApiVersion::default().with_api_key(key as i16).with_min_version(min).with_max_version(max))
        .collect()
}

pub fn handle(cluster_mode: bool) -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(api_keys(cluster_mode))
}

pub fn unsupported_version_response(cluster_mode: bool) -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_error_code(ResponseError::UnsupportedVersion.code()).with_api_keys(api_keys(cluster_mode))
}
