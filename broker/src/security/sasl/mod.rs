//! SASL on a listener: which mechanisms it offers (`sasl.enabled.mechanisms`), the PLAIN users
//! of its JAAS config, and one exchange per connection (`Exchange`).

pub mod plain;
pub mod scram;
pub mod scram_client;

use std::collections::BTreeMap;
use std::sync::Arc;

use super::credentials::{CredentialStore, ScramMechanism};
use super::listener_property;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Scram(ScramMechanism),
}

impl Mechanism {
    pub fn parse(name: &str) -> Option<Mechanism> {
        match name.trim() {
            "PLAIN" => Some(Mechanism::Plain),
            other => ScramMechanism::parse(other).map(Mechanism::Scram),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Scram(m) => m.name(),
        }
    }
}

pub struct SaslSettings {
    pub mechanisms: Vec<Mechanism>,
    /// PLAIN's users and passwords (`user_<name>="<password>"` in the JAAS config).
    pub plain_users: BTreeMap<String, String>,
}

/// Kafka's JAAS text: `LoginModule flag key="value" key2=value2;` -> the options.
pub fn parse_jaas_options(text: &str) -> Result<BTreeMap<String, String>, String> {
    let body = text.trim().trim_end_matches(';');
    let mut words = body.split_whitespace();
    words.next().ok_or("empty JAAS config")?; // the login module's class
    let mut options = BTreeMap::new();
    let mut rest = body.splitn(3, char::is_whitespace).nth(2).unwrap_or("").trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').ok_or_else(|| format!("JAAS option without '=' near {rest:?}"))?;
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').ok_or_else(|| format!("unterminated quote in JAAS option {key}"))?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let end = after.find(char::is_whitespace).unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        options.insert(key.trim().to_string(), value.to_string());
        rest = remaining.trim();
    }
    Ok(options)
}

pub fn settings(properties: &BTreeMap<String, String>, listener: &str) -> Result<SaslSettings, String> {
    let enabled = listener_property(properties, listener, "sasl.enabled.mechanisms").unwrap_or("PLAIN,SCRAM-SHA-256,SCRAM-SHA-512");
    let mut mechanisms = Vec::new();
    for name in enabled.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let mechanism = Mechanism::parse(name)
            .ok_or_else(|| format!("sasl.enabled.mechanisms: {name} is not supported (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 are)"))?;
        mechanisms.push(mechanism);
    }
    let mut plain_users = BTreeMap::new();
    if mechanisms.contains(&Mechanism::Plain) {
        let jaas = listener_property(properties, listener, "plain.sasl.jaas.config")
            .or_else(|| listener_property(properties, listener, "sasl.jaas.config"));
        if let Some(jaas) = jaas {
            for (key, value) in parse_jaas_options(jaas).map_err(|e| format!("plain.sasl.jaas.config on listener {listener}: {e}"))? {
                if let Some(user) = key.strip_prefix("user_") {
                    plain_users.insert(user.to_string(), value);
                }
            }
        }
    }
    Ok(SaslSettings { mechanisms, plain_users })
}

/// How one step of an exchange went.
pub enum Step {
    /// Send this to the client and wait for its next token.
    Challenge(Vec<u8>),
    /// Authenticated as this user; send the final bytes (empty for PLAIN).
    Done { user: String, last: Vec<u8> },
    Failed(String),
}

/// One connection's exchange, from the first token to success or failure.
pub enum Exchange {
    Plain,
    Scram(scram::ServerExchange),
}

impl Exchange {
    pub fn start(mechanism: Mechanism) -> Exchange {
        match mechanism {
            Mechanism::Plain => Exchange::Plain,
            Mechanism::Scram(m) => Exchange::Scram(scram::ServerExchange::new(m)),
        }
    }

    pub fn step(&mut self, token: &[u8], settings: &SaslSettings, credentials: &Arc<CredentialStore>) -> Step {
        match self {
            Exchange::Plain => plain::authenticate(token, &settings.plain_users),
            Exchange::Scram(exchange) => exchange.step(token, credentials),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jaas_users() {
        let options = parse_jaas_options(
            r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="admin-secret" user_admin="admin-secret" user_alice=alice-secret;"#,
        )
        .unwrap();
        assert_eq!(options["user_alice"], "alice-secret");
        assert_eq!(options["username"], "admin");
    }
}
