//! This broker's connections to other brokers (the replica fetchers, transaction markers and
//! KIP-890 verification: `replication/follower.rs`, `txn_router.rs`), to their inter-broker
//! listener as registered in ZooKeeper, speaking what that listener speaks as Kafka's
//! inter-broker clients do: TLS (`tls::client_config`: the trust store verifies the other broker,
//! the key store answers a request for a client certificate), then ApiVersions, then SASL with
//! `sasl.mechanism.inter.broker.protocol` and this broker's own username and password from the
//! listener's `listener.name.<l>.<mechanism>.sasl.jaas.config`.
//!
//! The transaction markers and KIP-890 verifications reuse these connections through each
//! shard's pool (`inter_broker/pool.rs`); the replica fetcher keeps one per leader itself.
//!
//! Never: a broker-to-broker connection made anywhere else (one door, so a new inter-broker
//! caller cannot forget the listener's security).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use futures_rustls::rustls::ClientConfig;
use futures_rustls::{TlsConnector, TlsStream};
use glommio::net::TcpStream;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader, SaslAuthenticateRequest, SaslAuthenticateResponse,
    SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use rustls_pki_types::ServerName;

use super::sasl::scram_client::ClientExchange;
use super::sasl::{parse_jaas_options, Mechanism};
use super::transport::Transport;
use super::{listener_property, Listener};

/// A response larger than this is refused (a follower's fetch asks for at most 10 MiB, and a
/// leader sends a first batch larger than the budget whole).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Connecting, TLS and SASL together; a broker that does not answer is retried by the caller.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const API_VERSIONS_VERSION: i16 = 3;
const SASL_HANDSHAKE_VERSION: i16 = 1;
const SASL_AUTHENTICATE_VERSION: i16 = 2;
/// SCRAM is three messages; PLAIN one. More rounds than this is a broken peer.
const MAX_SASL_ROUNDS: usize = 4;

/// How this broker logs in to another broker over SASL.
struct SaslLogin {
    mechanism: Mechanism,
    username: String,
    password: String,
}

/// Built once at start from the inter-broker listener's keys (errors name the key at fault).
pub struct InterBrokerClient {
    /// The inter-broker listener's name: the other brokers' endpoint of that name is dialled.
    listener: String,
    tls: Option<Arc<ClientConfig>>,
    sasl: Option<SaslLogin>,
}

impl InterBrokerClient {
    pub fn build(listener: &Listener, properties: &BTreeMap<String, String>) -> Result<InterBrokerClient, String> {
        let tls = if listener.protocol.uses_tls() { Some(super::tls::client_config(properties, &listener.name)?) } else { None };
        let sasl = if listener.protocol.uses_sasl() {
            let name = properties.get("sasl.mechanism.inter.broker.protocol").map(|m| m.trim()).ok_or_else(|| {
                format!(
                    "the inter-broker listener {} uses SASL: set sasl.mechanism.inter.broker.protocol (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; Kafka's default GSSAPI is not offered)",
                    listener.name
                )
            })?;
            let mechanism = Mechanism::parse(name)
                .ok_or_else(|| format!("sasl.mechanism.inter.broker.protocol={name}: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 are offered"))?;
            let key = format!("{}.sasl.jaas.config", mechanism.name().to_ascii_lowercase());
            let jaas = listener_property(properties, &listener.name, &key)
                .or_else(|| listener_property(properties, &listener.name, "sasl.jaas.config"))
                .ok_or_else(|| format!("the inter-broker listener {}: set listener.name.{}.{key} with this broker's username and password", listener.name, listener.name.to_ascii_lowercase()))?;
            let options = parse_jaas_options(jaas).map_err(|e| format!("{key}: {e}"))?;
            let (Some(username), Some(password)) = (options.get("username"), options.get("password")) else {
                return Err(format!("{key} on listener {}: the broker's own username and password are missing", listener.name));
            };
            Some(SaslLogin { mechanism, username: username.clone(), password: password.clone() })
        } else {
            None
        };
        tracing::info!(
            listener = listener.name,
            protocol = listener.protocol.name(),
            sasl = sasl.as_ref().map(|s| s.mechanism.name()),
            "inter-broker client"
        );
        Ok(InterBrokerClient { listener: listener.name.clone(), tls, sasl })
    }

    /// The inter-broker address of `broker_id` in `snapshot` (`host:port`).
    pub fn address(&self, snapshot: &zk::ClusterSnapshot, broker_id: i32) -> Result<(String, u16), String> {
        let broker = snapshot.brokers.get(&broker_id).ok_or_else(|| format!("broker {broker_id} is not registered"))?;
        let endpoint = broker
            .endpoint(&self.listener)
            .ok_or_else(|| format!("broker {broker_id} registered no {} listener (the inter-broker listener)", self.listener))?;
        Ok((endpoint.host.clone(), endpoint.port))
    }

    /// A ready connection to `broker_id`: TLS, ApiVersions and SASL done. `me` names this broker
    /// in the client id.
    pub async fn connect(&self, snapshot: &zk::ClusterSnapshot, broker_id: i32, me: i32) -> Result<Connection, String> {
        let (host, port) = self.address(snapshot, broker_id)?;
        let connecting = self.connect_to(&host, port, me);
        glommio::timer::timeout(CONNECT_TIMEOUT, async { Ok(connecting.await) })
            .await
            .unwrap_or_else(|_| Err(format!("connecting to broker {broker_id} at {host}:{port}: no answer within {CONNECT_TIMEOUT:?}")))
            .map_err(|e| format!("broker {broker_id} at {host}:{port}: {e}"))
    }

    async fn connect_to(&self, host: &str, port: u16, me: i32) -> Result<Connection, String> {
        let address = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        let socket = TcpStream::connect(address.as_str()).await.map_err(|e| format!("connecting: {e}"))?;
        let _ = socket.set_nodelay(true);
        let stream = match &self.tls {
            None => Transport::Plain(socket),
            Some(config) => {
                let name = ServerName::try_from(host.to_string()).map_err(|e| format!("{host:?} is no TLS server name: {e}"))?;
                let tls = TlsConnector::from(config.clone()).connect(name, socket).await.map_err(|e| format!("TLS: {e}"))?;
                Transport::Tls(Box::new(TlsStream::Client(tls)))
            }
        };
        let mut connection = Connection { stream, correlation_id: 0, client_id: format!("broker-{me}") };
        let versions: ApiVersionsResponse = connection
            .call(
                ApiKey::ApiVersions,
                API_VERSIONS_VERSION,
                &ApiVersionsRequest::default()
                    .with_client_software_name(StrBytes::from_static_str("kafka-broker"))
                    .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION"))),
            )
            .await?;
        if versions.error_code != 0 {
            return Err(format!("ApiVersions answered error {}", versions.error_code));
        }
        if let Some(login) = &self.sasl {
            connection.authenticate(login).await.map_err(|e| format!("SASL {}: {e}", login.mechanism.name()))?;
        }
        Ok(connection)
    }
}

/// One connection to another broker, one request in flight at a time.
pub struct Connection {
    stream: Transport,
    correlation_id: i32,
    client_id: String,
}

impl Connection {
    /// True when the other broker has closed the connection (or it failed) while it sat unused:
    /// a non-blocking peek finds end of file or an error. Pending bytes count as open (a TLS 1.3
    /// server sends session tickets after the handshake; rustls reads them with the next
    /// response). One recv(2) that never waits: allowed on a shard thread.
    pub fn peer_closed(&self) -> bool {
        use std::os::fd::AsRawFd;
        let fd = match &self.stream {
            Transport::Plain(socket) => socket.as_raw_fd(),
            Transport::Tls(stream) => stream.get_ref().0.as_raw_fd(),
        };
        let mut byte = 0u8;
        // SAFETY: reads at most one byte into `byte`, which outlives the call; the descriptor is
        // this connection's own open socket.
        let read = unsafe { libc::recv(fd, (&mut byte as *mut u8).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
        if read > 0 {
            return false;
        }
        read == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock
    }

    /// One request and its response (kafka-protocol's client side).
    pub async fn call<Q: Encodable + HeaderVersion, R: Decodable + HeaderVersion>(&mut self, api_key: ApiKey, version: i16, request: &Q) -> Result<R, String> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let correlation_id = self.correlation_id;
        let header = RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_string(self.client_id.clone())));
        let mut body = BytesMut::new();
        body.extend_from_slice(&[0; 4]);
        header.encode(&mut body, Q::header_version(version)).map_err(|e| e.to_string())?;
        request.encode(&mut body, version).map_err(|e| e.to_string())?;
        let length = (body.len() - 4) as i32;
        body[..4].copy_from_slice(&length.to_be_bytes());
        self.stream.write_all(&body).await.map_err(|e| e.to_string())?;
        // TLS buffers what it encrypts until flushed.
        self.stream.flush().await.map_err(|e| e.to_string())?;

        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).await.map_err(|e| e.to_string())?;
        let size = i32::from_be_bytes(size);
        if size < 0 || size as usize > MAX_RESPONSE_BYTES {
            return Err(format!("response of {size} bytes"));
        }
        let mut frame = vec![0u8; size as usize];
        self.stream.read_exact(&mut frame).await.map_err(|e| e.to_string())?;
        let mut frame = Bytes::from(frame);
        let response_header = ResponseHeader::decode(&mut frame, R::header_version(version)).map_err(|e| e.to_string())?;
        if response_header.correlation_id != correlation_id {
            return Err("correlation id mismatch".into());
        }
        R::decode(&mut frame, version).map_err(|e| e.to_string())
    }

    /// SaslHandshake v1, then SaslAuthenticate rounds until the exchange ends.
    async fn authenticate(&mut self, login: &SaslLogin) -> Result<(), String> {
        let request = SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(login.mechanism.name()));
        let handshake: SaslHandshakeResponse = self.call(ApiKey::SaslHandshake, SASL_HANDSHAKE_VERSION, &request).await?;
        if handshake.error_code != 0 {
            let offered: Vec<&str> = handshake.mechanisms.iter().map(|m| m.as_str()).collect();
            return Err(format!("the other broker's listener does not offer it (it offers {offered:?})"));
        }
        let mut scram = None;
        let mut token = match login.mechanism {
            Mechanism::Plain => format!("\0{}\0{}", login.username, login.password).into_bytes(),
            Mechanism::Scram(mechanism) => {
                let (exchange, first) = ClientExchange::start(mechanism, &login.username)?;
                scram = Some(exchange);
                first
            }
        };
        for round in 0..MAX_SASL_ROUNDS {
            let request = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token));
            let answer: SaslAuthenticateResponse = self.call(ApiKey::SaslAuthenticate, SASL_AUTHENTICATE_VERSION, &request).await?;
            if answer.error_code != 0 {
                return Err(answer.error_message.map(|m| m.to_string()).unwrap_or_else(|| format!("error {}", answer.error_code)));
            }
            let Some(exchange) = scram.as_mut() else { return Ok(()) };
            match round {
                0 => token = exchange.client_final(&answer.auth_bytes, &login.password)?,
                _ => return exchange.finish(&answer.auth_bytes),
            }
        }
        Err("the SASL exchange did not end".into())
    }
}
