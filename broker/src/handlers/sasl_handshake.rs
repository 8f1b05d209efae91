//! SaslHandshake (v0-1): the client names its mechanism. v1 wraps the tokens that follow in
//! SaslAuthenticate requests; v0 sends them bare (`connection.rs`).

use kafka_protocol::messages::{SaslHandshakeRequest, SaslHandshakeResponse};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::security::session::Session;
use crate::shard_context::Shard;

pub fn handle(shard: &Shard, request: SaslHandshakeRequest, version: i16, session: &mut Session) -> SaslHandshakeResponse {
    let settings = shard.broker.security.listeners[session.listener].sasl.as_ref();
    let error = match session.handshake(settings, request.mechanism.as_str(), version) {
        Ok(()) => 0,
        Err(enabled) => {
            // Not a SASL listener, or a second handshake: as Kafka, ILLEGAL_SASL_STATE.
            let offered = settings.is_some_and(|s| s.mechanisms.iter().any(|m| m.name() == request.mechanism.as_str()));
            if settings.is_none() || offered {
                session.close_after_response = true;
                ResponseError::IllegalSaslState.code()
            } else {
                tracing::warn!(mechanism = %request.mechanism, ?enabled, client = session.client_host, "SASL mechanism not enabled");
                ResponseError::UnsupportedSaslMechanism.code()
            }
        }
    };
    let mechanisms = settings.map(|s| s.mechanisms.iter().map(|m| str_bytes(m.name())).collect()).unwrap_or_default();
    SaslHandshakeResponse::default().with_error_code(error).with_mechanisms(mechanisms)
}
