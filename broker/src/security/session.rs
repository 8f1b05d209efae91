//! What a broker knows of its listeners' security (built once at start), and one connection's
//! security state: its listener, its principal, where it stands in the SASL exchange.

use std::sync::Arc;

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
}

pub struct Security {
    pub listeners: Vec<ListenerSecurity>,
    pub credentials: Arc<CredentialStore>,
    /// `authorizer.class.name` set: the ACLs and the policy. None: every request is allowed.
    pub authorizer: Option<Arc<Authorizer>>,
}

impl Security {
    /// Reads key and trust stores and SCRAM credentials: at start, on the main thread. Errors
    /// name the key at fault.
    pub fn build(
        configured: &[Listener],
        properties: &std::collections::BTreeMap<String, String>,
        fetch_zero_copy: bool,
        credentials_file: std::path::PathBuf,
        acl_file: std::path::PathBuf,
        cluster: Option<zk::CoordinatorHandle>,
    ) -> Result<Security, String> {
        let kernel_tls = tls::kernel_tls_available();
        let mut listeners = Vec::with_capacity(configured.len());
        for listener in configured {
            let protocol = listener.protocol;
            let tls = if protocol.uses_tls() {
                principal::check_mapping_rules(super::listener_property(properties, &listener.name, "ssl.principal.mapping.rules"))?;
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
            listeners.push(ListenerSecurity { listener: listener.clone(), tls, sasl });
        }
        let authorizer = Authorizer::build(properties, acl_file, cluster)?;
        Ok(Security { listeners, credentials: Arc::new(CredentialStore::load(credentials_file)?), authorizer })
    }
}

enum SaslState {
    /// PLAINTEXT and SSL listeners: nothing to do.
    NotNeeded,
    AwaitingHandshake,
    /// After SaslHandshake: the mechanism chosen, and whether tokens come wrapped in
    /// SaslAuthenticate requests (handshake v1) or bare (v0).
    Exchanging { mechanism: Mechanism, exchange: Exchange, wrapped: bool },
    Authenticated,
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

    pub fn authenticated(&self) -> bool {
        matches!(self.sasl, SaslState::NotNeeded | SaslState::Authenticated)
    }

    /// Before authenticating, only ApiVersions and the SASL exchange, as Kafka.
    pub fn may_call(&self, api_key: ApiKey) -> bool {
        match self.sasl {
            SaslState::NotNeeded | SaslState::Authenticated => true,
            SaslState::AwaitingHandshake => matches!(api_key, ApiKey::ApiVersions | ApiKey::SaslHandshake),
            SaslState::Exchanging { wrapped, .. } => wrapped && api_key == ApiKey::SaslAuthenticate,
        }
    }

    /// Handshake v0: the next frames are bare SASL tokens, not Kafka requests.
    pub fn expects_bare_token(&self) -> bool {
        matches!(self.sasl, SaslState::Exchanging { wrapped: false, .. })
    }

    /// Picks the mechanism; Err with the enabled ones when it is not offered.
    pub fn handshake(&mut self, settings: Option<&SaslSettings>, mechanism: &str, version: i16) -> Result<(), Vec<&'static str>> {
        let enabled: Vec<&'static str> = settings.map(|s| s.mechanisms.iter().map(|m| m.name()).collect()).unwrap_or_default();
        let chosen = settings.and_then(|s| s.mechanisms.iter().copied().find(|m| m.name() == mechanism));
        match (&self.sasl, chosen) {
            (SaslState::AwaitingHandshake, Some(chosen)) => {
                self.sasl = SaslState::Exchanging { mechanism: chosen, exchange: Exchange::start(chosen), wrapped: version >= 1 };
                Ok(())
            }
            _ => Err(enabled),
        }
    }

    /// One token of the exchange (from SaslAuthenticate, or bare after handshake v0).
    pub fn authenticate(&mut self, token: &[u8], settings: Option<&SaslSettings>, credentials: &Arc<CredentialStore>) -> Authenticated {
        let (SaslState::Exchanging { mechanism, exchange, .. }, Some(settings)) = (&mut self.sasl, settings) else {
            self.close_after_response = true;
            return Authenticated::Failed("SaslAuthenticate before SaslHandshake".into());
        };
        let mechanism = *mechanism;
        match exchange.step(token, settings, credentials) {
            sasl::Step::Challenge(bytes) => Authenticated::Continue(bytes),
            sasl::Step::Done { user, last } => {
                self.principal = format!("User:{user}");
                self.sasl = SaslState::Authenticated;
                tracing::info!(principal = self.principal, mechanism = mechanism.name(), listener = self.listener, client = self.client_host, "authenticated");
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
