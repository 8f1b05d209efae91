//! Listeners and their security (issue 20): which protocol each listener speaks, TLS
//! (`tls.rs`), SASL (`sasl/`), SCRAM credentials (`credentials.rs`) and the principal a
//! connection authenticates as (`principal.rs`, `session.rs`).
//!
//! Never: a connection on a SASL listener reaches any API but ApiVersions and the SASL exchange
//! before it authenticates (`Session::may_call`, checked in `handlers::dispatch`).

pub mod acl;
pub mod client;
pub mod credentials;
pub mod principal;
pub mod sasl;
pub mod session;
pub mod tls;
pub mod transport;

use std::collections::BTreeMap;
use std::net::SocketAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn parse(text: &str) -> Option<SecurityProtocol> {
        match text.trim().to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Some(SecurityProtocol::Plaintext),
            "SSL" => Some(SecurityProtocol::Ssl),
            "SASL_PLAINTEXT" => Some(SecurityProtocol::SaslPlaintext),
            "SASL_SSL" => Some(SecurityProtocol::SaslSsl),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    pub fn uses_sasl(self) -> bool {
        matches!(self, SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl)
    }
}

/// One entry of `listeners`, with its `advertised.listeners` address.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Upper case, as Kafka normalises listener names.
    pub name: String,
    pub protocol: SecurityProtocol,
    pub bind: SocketAddr,
    pub advertised_host: String,
    pub advertised_port: u16,
}

/// What `listeners`, `advertised.listeners`, `listener.security.protocol.map`,
/// `inter.broker.listener.name` and `security.inter.broker.protocol` say.
#[derive(Debug, Default)]
pub struct ListenerKeys<'a> {
    pub listeners: Option<&'a str>,
    pub advertised: Option<&'a str>,
    pub protocol_map: Option<&'a str>,
    pub inter_broker_name: Option<&'a str>,
    pub inter_broker_protocol: Option<&'a str>,
}

/// `NAME://host:port` entries in order (host may be empty or in brackets).
fn parse_endpoints(key: &str, value: &str) -> Result<Vec<(String, String, u16)>, String> {
    let mut endpoints = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, address) = entry.split_once("://").unwrap_or(("PLAINTEXT", entry));
        let (host, port) = address.rsplit_once(':').ok_or_else(|| format!("{key}={value}: {entry:?} is not NAME://host:port"))?;
        let port = port.trim().parse::<u16>().map_err(|_| format!("{key}={value}: {entry:?} has a bad port"))?;
        endpoints.push((name.trim().to_ascii_uppercase(), host.trim().trim_matches(['[', ']']).to_string(), port));
    }
    Ok(endpoints)
}

fn bind_address(key: &str, host: &str, port: u16) -> Result<SocketAddr, String> {
    let host = match host {
        "" | "localhost" => "127.0.0.1",
        other => other,
    };
    format!("{host}:{port}")
        .parse()
        .or_else(|_| format!("[{host}]:{port}").parse())
        .map_err(|_| format!("{key}: host {host:?} must be an IP address or localhost"))
}

/// The listeners, and the index of the inter-broker one. Without a protocol map a listener's
/// name is its protocol, as Kafka's default map says.
pub fn parse_listeners(keys: &ListenerKeys) -> Result<(Vec<Listener>, usize), String> {
    let mut protocols: BTreeMap<String, SecurityProtocol> = [
        SecurityProtocol::Plaintext,
        SecurityProtocol::Ssl,
        SecurityProtocol::SaslPlaintext,
        SecurityProtocol::SaslSsl,
    ]
    .into_iter()
    .map(|p| (p.name().to_string(), p))
    .collect();
    if let Some(map) = keys.protocol_map {
        protocols.clear();
        for entry in map.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, protocol) = entry.split_once(':').ok_or_else(|| format!("listener.security.protocol.map={map}: {entry:?} is not NAME:PROTOCOL"))?;
            let protocol = SecurityProtocol::parse(protocol).ok_or_else(|| {
                format!("listener.security.protocol.map={map}: unknown protocol {protocol:?} (PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL)")
            })?;
            protocols.insert(name.trim().to_ascii_uppercase(), protocol);
        }
    }
    let endpoints = parse_endpoints("listeners", keys.listeners.unwrap_or("PLAINTEXT://127.0.0.1:9092"))?;
    if endpoints.is_empty() {
        return Err("listeners: no listener".into());
    }
    let advertised = match keys.advertised {
        Some(text) => parse_endpoints("advertised.listeners", text)?,
        None => Vec::new(),
    };
    let mut listeners: Vec<Listener> = Vec::with_capacity(endpoints.len());
    for (name, host, port) in endpoints {
        let protocol = *protocols
            .get(&name)
            .ok_or_else(|| format!("listeners: listener {name} has no protocol in listener.security.protocol.map"))?;
        if listeners.iter().any(|l| l.name == name) {
            return Err(format!("listeners: listener name {name} appears twice"));
        }
        let bind = bind_address("listeners", &host, port)?;
        let (advertised_host, advertised_port) = match advertised.iter().find(|(n, _, _)| *n == name) {
            Some((_, host, port)) if !host.is_empty() => (host.clone(), *port),
            Some((_, _, port)) => (bind.ip().to_string(), *port),
            None => (bind.ip().to_string(), bind.port()),
        };
        listeners.push(Listener { name, protocol, bind, advertised_host, advertised_port });
    }
    if let Some((name, _, _)) = advertised.iter().find(|(n, _, _)| !listeners.iter().any(|l| l.name == *n)) {
        return Err(format!("advertised.listeners names {name}, which is not in listeners"));
    }
    let inter_broker = match (keys.inter_broker_name, keys.inter_broker_protocol) {
        (Some(_), Some(_)) => {
            return Err("inter.broker.listener.name and security.inter.broker.protocol must not both be set".into())
        }
        (Some(name), None) => {
            let name = name.trim().to_ascii_uppercase();
            listeners
                .iter()
                .position(|l| l.name == name)
                .ok_or_else(|| format!("inter.broker.listener.name={name} is not in listeners"))?
        }
        (None, Some(protocol)) => {
            let wanted = SecurityProtocol::parse(protocol).ok_or_else(|| format!("security.inter.broker.protocol={protocol}: unknown protocol"))?;
            listeners
                .iter()
                .position(|l| l.name == wanted.name())
                .ok_or_else(|| format!("security.inter.broker.protocol={protocol}: no listener named {}", wanted.name()))?
        }
        // Kafka's default is the listener named PLAINTEXT; a broker with none (a standalone
        // broker on SASL_SSL only) talks to no other broker, so its first listener stands in.
        (None, None) => listeners.iter().position(|l| l.name == "PLAINTEXT").unwrap_or(0),
    };
    Ok((listeners, inter_broker))
}

/// Reads security keys the way Kafka does: `listener.name.<listener>.<key>` first, then `<key>`.
pub fn listener_property<'a>(properties: &'a BTreeMap<String, String>, listener: &str, key: &str) -> Option<&'a str> {
    properties
        .get(&format!("listener.name.{}.{key}", listener.to_ascii_lowercase()))
        .or_else(|| properties.get(key))
        .map(String::as_str)
}

/// The keys this module reads from the properties (the rest of config.rs does not know them).
pub fn is_security_key(key: &str) -> bool {
    key.starts_with("ssl.") || key.starts_with("sasl.") || key.starts_with("listener.name.") || key == "connections.max.reauth.ms"
        || key == "connection.failed.authentication.delay.ms"
        || key.ends_with(".sasl.jaas.config")
        || matches!(key, "authorizer.class.name" | "super.users" | "allow.everyone.if.no.acl.found")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_listeners_with_a_map_and_advertised_addresses() {
        let keys = ListenerKeys {
            listeners: Some("INTERNAL://127.0.0.1:9092,EXTERNAL://0.0.0.0:9093"),
            advertised: Some("INTERNAL://127.0.0.1:9092,EXTERNAL://kafka.example:19093"),
            protocol_map: Some("INTERNAL:SASL_PLAINTEXT,EXTERNAL:SASL_SSL"),
            inter_broker_name: Some("internal"),
            inter_broker_protocol: None,
        };
        let (listeners, inter) = parse_listeners(&keys).unwrap();
        assert_eq!(listeners.len(), 2);
        assert_eq!(inter, 0);
        assert_eq!(listeners[1].protocol, SecurityProtocol::SaslSsl);
        assert_eq!((listeners[1].advertised_host.as_str(), listeners[1].advertised_port), ("kafka.example", 19093));
        assert!(parse_listeners(&ListenerKeys { listeners: Some("FOO://127.0.0.1:1"), ..Default::default() }).is_err());
        assert!(parse_listeners(&ListenerKeys { listeners: Some("SSL://127.0.0.1:1,SSL://127.0.0.1:2"), ..Default::default() }).is_err());
    }
}
