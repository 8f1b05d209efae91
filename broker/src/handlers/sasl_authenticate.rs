//! SaslAuthenticate (v0-2): one token of the exchange the handshake chose. A failure answers
//! SASL_AUTHENTICATION_FAILED with Kafka's message, then the connection closes.

use bytes::Bytes;
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslAuthenticateResponse};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::security::session::{Authenticated, Session};
use crate::shard_context::Shard;

pub fn handle(shard: &Shard, request: SaslAuthenticateRequest, session: &mut Session) -> SaslAuthenticateResponse {
    let security = &shard.broker.security;
    let settings = security.listeners[session.listener].sasl.as_ref();
    match session.authenticate(&request.auth_bytes, settings, &security.credentials) {
        Authenticated::Continue(bytes) => SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(bytes)),
        // v1+: when the session ends (KIP-368), so the client re-authenticates before.
        Authenticated::Done(bytes) => SaslAuthenticateResponse::default()
            .with_auth_bytes(Bytes::from(bytes))
            .with_session_lifetime_ms(session.session_lifetime_ms()),
        Authenticated::Failed(message) => SaslAuthenticateResponse::default()
            .with_error_code(ResponseError::SaslAuthenticationFailed.code())
            .with_error_message(Some(str_bytes(&message))),
    }
}
