//! What a broker knows of its listeners' security (built once at start), and one connection's
//! security state: its listener, its principal, where it stands in the SASL exchange.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::ApiKey;

use super::acl::model::{operations_bits, Operation, ResourceType};
use super::acl::{Authorizer, DecisionCache};
use super::credentials::CredentialStore;
use super::sasl::{self, Exchange, Mechanism, SaslSettings};
use super::tls::{self, TlsSettings};
use super::{principal, Listener};

pub struct ListenerSecurity {
    pub listener: Listener,
    pub tls: Option<TlsSettings>,
    pub sasl: Option<SaslSettings>,
    /// `connections.max.reauth.ms` (KIP-368; 0, Kafka's default, turns it off): how long a SASL
    /// authentication lasts before the client must re-authenticate on the same connection.
    pub reauth_ms: u64,
}

pub struct Security {
    pub listeners: Vec<ListenerSecurity>,
    pub credentials: Arc<CredentialStore>,
    /// `connection.failed.authentication.delay.ms` (KIP-306, Kafka's default 100): a failed
    /// authentication's response goes out at once, the close this much later. Clients that read
    /// the response and the close in one go (kafka-python over TLS) otherwise see only the
    /// close and report a lost connection instead of the authentication error.
    pub failed_authentication_delay_ms: u64,
    /// Cluster mode: how this broker connects to the others (`client.rs`).
    pub inter_broker: Option<super::client::InterBrokerClient>,
    /// `authorizer.class.name` set: the ACLs and the policy. None: every request is allowed.
    pub authorizer: Option<Arc<Authorizer>>,
}

/// Kafka's default for `connection.failed.authentication.delay.ms`.
const FAILED_AUTHENTICATION_DELAY_MS: u64 = 100;

impl Security {
    /// Reads key and trust stores and SCRAM credentials: at start, on the main thread. Errors
    /// name the key at fault.
    pub fn build(
        configured: &[Listener],
        properties: &std::collections::BTreeMap<String, String>,
        fetch_zero_copy: bool,
        credentials_file: std::path::PathBuf,
        inter_broker: Option<&Listener>,
        users_in_zookeeper: Option<Arc<zk::ClusterView>>,
        acl_file: std::path::PathBuf,
        cluster: Option<zk::CoordinatorHandle>,
    ) -> Result<Security, String> {
        let kernel_tls = tls::kernel_tls_available();
        let mut listeners = Vec::with_capacity(configured.len());
        for listener in configured {
            let protocol = listener.protocol;
            let tls = if protocol.uses_tls() {
                let settings = tls::server_config(properties, &listener.name).map_err(|e| format!("listener {}: {e}", listener.name))?;
                // Splicing sends file bytes to the socket untouched: over TLS they must be
                // encrypted first, which only kernel TLS could do without a copy.
                tracing::info!(
                    listener = listener.name,
                    client_auth = ?settings.client_auth,
                    kernel_tls,
                    "TLS listener: fetches take the copy path (read the file region, write through TLS); zero-copy over TLS needs kernel TLS{}",
                    if kernel_tls { ", not used yet" } else { ", which this kernel does not offer (no tls in tcp_available_ulp)" }
                );
                Some(settings)
            } else {
                tracing::info!(listener = listener.name, zero_copy = fetch_zero_copy, "plaintext listener: fetches splice file regions when fetch.zero.copy");
                None
            };
            let sasl = if protocol.uses_sasl() {
                let settings = sasl::settings(properties, &listener.name).map_err(|e| format!("listener {}: {e}", listener.name))?;
                tracing::info!(
                    listener = listener.name,
                    mechanisms = ?settings.mechanisms.iter().map(|m| m.name()).collect::<Vec<_>>(),
                    plain_users = settings.plain_users.len(),
                    "SASL listener"
                );
                Some(settings)
            } else {
                None
            };
            let reauth_ms = match super::listener_property(properties, &listener.name, "connections.max.reauth.ms") {
                Some(text) if protocol.uses_sasl() => text
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| format!("listener {}: connections.max.reauth.ms={text}: expected milliseconds", listener.name))?,
                _ => 0,
            };
            listeners.push(ListenerSecurity { listener: listener.clone(), tls, sasl, reauth_ms });
        }
        let failed_authentication_delay_ms = match properties.get("connection.failed.authentication.delay.ms") {
            None => FAILED_AUTHENTICATION_DELAY_MS,
            Some(text) => text
                .trim()
                .parse::<u64>()
                .map_err(|_| format!("connection.failed.authentication.delay.ms={text}: expected milliseconds"))?,
        };
        let inter_broker = match inter_broker {
            Some(listener) => Some(super::client::InterBrokerClient::build(listener, properties).map_err(|e| format!("inter-broker client: {e}"))?),
            None => None,
        };
        let credentials = match users_in_zookeeper {
            Some(view) => CredentialStore::in_zookeeper(view),
            None => CredentialStore::load(credentials_file)?,
        };
        let authorizer = Authorizer::build(properties, acl_file, cluster)?;
        Ok(Security { listeners, credentials: Arc::new(credentials), failed_authentication_delay_ms, inter_broker, authorizer })
    }
}

enum SaslState {
    /// PLAINTEXT and SSL listeners: nothing to do.
    NotNeeded,
    AwaitingHandshake,
    /// After SaslHandshake: the mechanism chosen, and whether tokens come wrapped in
    /// SaslAuthenticate requests (handshake v1) or bare (v0). `reauthenticating` (KIP-368): the
    /// connection was authenticated already and keeps its principal until this exchange ends.
    Exchanging { mechanism: Mechanism, exchange: Exchange, wrapped: bool, reauthenticating: bool },
    /// With the mechanism (a re-authentication must use the same) and, under
    /// `connections.max.reauth.ms`, when the session ends.
    Authenticated { mechanism: Mechanism, expires_at: Option<Instant> },
}

/// One connection's security state.
pub struct Session {
    pub listener: usize,
    pub principal: String,
    /// Kafka reports a member's host as "/<ip>" (Java's InetAddress.toString).
    pub client_host: String,
    sasl: SaslState,
    /// A failed authentication: the connection closes once the error is sent.
    pub close_after_response: bool,
    /// The listener's `connections.max.reauth.ms` (0: sessions do not expire).
    pub reauth_ms: u64,
    authorizer: Option<Arc<Authorizer>>,
    decisions: std::cell::RefCell<DecisionCache>,
}

/// What SaslAuthenticate answers.
pub enum Authenticated {
    Continue(Vec<u8>),
    Done(Vec<u8>),
    Failed(String),
}

impl Session {
    pub fn new(listener: usize, uses_sasl: bool, client_host: String, authorizer: Option<Arc<Authorizer>>) -> Session {
        Session {
            listener,
            principal: principal::ANONYMOUS.to_string(),
            client_host,
            sasl: if uses_sasl { SaslState::AwaitingHandshake } else { SaslState::NotNeeded },
            close_after_response: false,
            reauth_ms: 0,
            authorizer,
            decisions: Default::default(),
        }
    }

    /// May this connection's principal do `operation` on the resource? Always yes without an
    /// authorizer. The one door every handler's check goes through (cached per connection).
    pub fn authorize(&self, operation: Operation, resource_type: ResourceType, name: &str) -> bool {
        let Some(authorizer) = &self.authorizer else { return true };
        self.decisions.borrow_mut().authorize(authorizer, &self.principal, self.host(), operation, resource_type, name)
    }

    /// May the principal do `operation` on some resource of the type (Kafka's
    /// authorizeByResourceType)?
    pub fn authorize_any(&self, operation: Operation, resource_type: ResourceType) -> bool {
        let Some(authorizer) = &self.authorizer else { return true };
        authorizer.authorize_by_resource_type(&self.principal, self.host(), operation, resource_type)
    }

    /// The client's IP as ACLs name it (no leading '/').
    fn host(&self) -> &str {
        self.client_host.strip_prefix('/').unwrap_or(&self.client_host)
    }

    /// CLUSTER's one resource (`kafka-cluster`).
    pub fn authorize_cluster(&self, operation: Operation) -> bool {
        self.authorize(operation, ResourceType::Cluster, super::acl::model::CLUSTER_NAME)
    }

    /// KIP-430: the operations of the resource's type this principal holds, as a bit set (every
    /// supported one without an authorizer, as Kafka's AuthHelper).
    pub fn authorized_operations(&self, resource_type: ResourceType, name: &str) -> i32 {
        let supported = resource_type.supported_operations();
        operations_bits(supported.iter().copied().filter(|op| self.authorize(*op, resource_type, name)))
    }

    pub fn authorizer(&self) -> Option<&Arc<Authorizer>> {
        self.authorizer.as_ref()
    }

    /// Whether the connection holds an authenticated principal (also while it re-authenticates).
    pub fn authenticated(&self) -> bool {
        matches!(self.sasl, SaslState::NotNeeded | SaslState::Authenticated { .. } | SaslState::Exchanging { reauthenticating: true, .. })
    }

    /// Before authenticating, only ApiVersions and the SASL exchange, as Kafka. Once a session
    /// has expired (KIP-368), only a SaslHandshake that starts re-authentication: Kafka closes
    /// the connection on any other request (SocketServer's expired-channel check).
    pub fn may_call(&self, api_key: ApiKey) -> bool {
        match self.sasl {
            SaslState::NotNeeded => true,
            SaslState::Authenticated { expires_at, .. } => {
                let expired = expires_at.is_some_and(|at| Instant::now() >= at);
                if expired && api_key != ApiKey::SaslHandshake {
                    tracing::info!(principal = self.principal, client = self.client_host, ?api_key, "SASL session expired without re-authentication (connections.max.reauth.ms)");
                    return false;
                }
                true
            }
            SaslState::AwaitingHandshake => matches!(api_key, ApiKey::ApiVersions | ApiKey::SaslHandshake),
            SaslState::Exchanging { wrapped, .. } => wrapped && api_key == ApiKey::SaslAuthenticate,
        }
    }

    /// Handshake v0: the next frames are bare SASL tokens, not Kafka requests.
    pub fn expects_bare_token(&self) -> bool {
        matches!(self.sasl, SaslState::Exchanging { wrapped: false, .. })
    }

    /// Picks the mechanism; Err with the enabled ones when it is not offered. On an
    /// authenticated connection a v1 handshake for the same mechanism starts re-authentication.
    pub fn handshake(&mut self, settings: Option<&SaslSettings>, mechanism: &str, version: i16) -> Result<(), Vec<&'static str>> {
        let enabled: Vec<&'static str> = settings.map(|s| s.mechanisms.iter().map(|m| m.name()).collect()).unwrap_or_default();
        let chosen = settings.and_then(|s| s.mechanisms.iter().copied().find(|m| m.name() == mechanism));
        let reauthenticating = match (&self.sasl, chosen) {
            (SaslState::AwaitingHandshake, Some(_)) => false,
            (SaslState::Authenticated { mechanism: current, .. }, Some(chosen)) if *current == chosen && version >= 1 => true,
            _ => return Err(enabled),
        };
        let chosen = chosen.expect("matched above");
        self.sasl = SaslState::Exchanging { mechanism: chosen, exchange: Exchange::start(chosen), wrapped: version >= 1, reauthenticating };
        Ok(())
    }

    /// What SaslAuthenticate v1+ answers in `session_lifetime_ms` once authenticated: the time
    /// left before the client must re-authenticate, 0 without `connections.max.reauth.ms`.
    pub fn session_lifetime_ms(&self) -> i64 {
        match self.sasl {
            SaslState::Authenticated { expires_at: Some(at), .. } => at.saturating_duration_since(Instant::now()).as_millis() as i64,
            _ => 0,
        }
    }

    /// One token of the exchange (from SaslAuthenticate, or bare after handshake v0).
    pub fn authenticate(&mut self, token: &[u8], settings: Option<&SaslSettings>, credentials: &Arc<CredentialStore>) -> Authenticated {
        let (SaslState::Exchanging { mechanism, exchange, reauthenticating, .. }, Some(settings)) = (&mut self.sasl, settings) else {
            self.close_after_response = true;
            return Authenticated::Failed("SaslAuthenticate before SaslHandshake".into());
        };
        let (mechanism, reauthenticating) = (*mechanism, *reauthenticating);
        match exchange.step(token, settings, credentials) {
            sasl::Step::Challenge(bytes) => Authenticated::Continue(bytes),
            sasl::Step::Done { user, last } => {
                let principal = format!("User:{user}");
                if reauthenticating && principal != self.principal {
                    // As Kafka's SaslServerAuthenticator: a session keeps its principal.
                    let message = format!("Cannot change principals during re-authentication from {}: {principal}", self.principal);
                    tracing::warn!(client = self.client_host, message, "SASL re-authentication failed");
                    self.close_after_response = true;
                    return Authenticated::Failed(message);
                }
                self.principal = principal;
                let expires_at = (self.reauth_ms > 0).then(|| Instant::now() + Duration::from_millis(self.reauth_ms));
                self.sasl = SaslState::Authenticated { mechanism, expires_at };
                tracing::info!(
                    principal = self.principal,
                    mechanism = mechanism.name(),
                    listener = self.listener,
                    client = self.client_host,
                    reauthenticated = reauthenticating,
                    "authenticated"
                );
                Authenticated::Done(last)
            }
            sasl::Step::Failed(message) => {
                tracing::warn!(mechanism = mechanism.name(), client = self.client_host, message, "SASL authentication failed");
                self.close_after_response = true;
                Authenticated::Failed(message)
            }
        }
    }
}
