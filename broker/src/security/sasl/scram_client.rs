//! SCRAM-SHA-256/512 client side (RFC 5802), for this broker's own connections to other brokers
//! (`sasl.mechanism.inter.broker.protocol`): client-first, then the proof from the salted
//! password, then the server's signature checked, so a broker also knows it reached a broker
//! holding its credential.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use super::scram::attribute;
use crate::security::credentials::ScramMechanism;

pub struct ClientExchange {
    mechanism: ScramMechanism,
    client_first_bare: String,
    nonce: String,
    /// The server signature expected in server-final, once client-final is sent.
    expected_signature: Option<Vec<u8>>,
}

/// RFC 5802's saslname: ',' and '=' escaped.
fn encode_saslname(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

impl ClientExchange {
    /// The exchange and its client-first message.
    pub fn start(mechanism: ScramMechanism, user: &str) -> Result<(ClientExchange, Vec<u8>), String> {
        let mut random = [0u8; 24];
        getrandom::getrandom(&mut random).map_err(|e| format!("no randomness for the SCRAM nonce: {e}"))?;
        let nonce = BASE64.encode(random).replace(['+', '/', '='], "x");
        let client_first_bare = format!("n={},r={nonce}", encode_saslname(user));
        let first = format!("n,,{client_first_bare}").into_bytes();
        Ok((ClientExchange { mechanism, client_first_bare, nonce, expected_signature: None }, first))
    }

    /// server-first -> client-final.
    pub fn client_final(&mut self, server_first: &[u8], password: &str) -> Result<Vec<u8>, String> {
        let server_first = std::str::from_utf8(server_first).map_err(|_| "SCRAM server-first is not UTF-8")?;
        let invalid = || format!("invalid SCRAM server-first message {server_first:?}");
        let nonce = attribute(server_first, 'r').ok_or_else(invalid)?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err("the SCRAM server nonce does not extend the client's".into());
        }
        let salt = BASE64.decode(attribute(server_first, 's').ok_or_else(invalid)?).map_err(|_| invalid())?;
        let iterations: u32 = attribute(server_first, 'i').and_then(|i| i.parse().ok()).ok_or_else(invalid)?;
        if !(1..=(ScramMechanism::MAX_ITERATIONS as u32)).contains(&iterations) {
            return Err(format!("SCRAM iterations {iterations} out of range"));
        }
        let salted = match self.mechanism {
            ScramMechanism::Sha256 => pbkdf2::pbkdf2_hmac_array::<sha2::Sha256, 32>(password.as_bytes(), &salt, iterations).to_vec(),
            ScramMechanism::Sha512 => pbkdf2::pbkdf2_hmac_array::<sha2::Sha512, 64>(password.as_bytes(), &salt, iterations).to_vec(),
        };
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let client_key = self.mechanism.hmac(&salted, b"Client Key");
        let signature = self.mechanism.hmac(&self.mechanism.hash(&client_key), auth_message.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        let server_key = self.mechanism.hmac(&salted, b"Server Key");
        self.expected_signature = Some(self.mechanism.hmac(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", BASE64.encode(proof)).into_bytes())
    }

    /// Checks server-final's signature.
    pub fn finish(&self, server_final: &[u8]) -> Result<(), String> {
        let text = std::str::from_utf8(server_final).map_err(|_| "SCRAM server-final is not UTF-8")?;
        if let Some(error) = attribute(text, 'e') {
            return Err(format!("SCRAM server error: {error}"));
        }
        let signature = attribute(text, 'v').and_then(|v| BASE64.decode(v).ok()).ok_or("SCRAM server-final without a signature")?;
        if Some(&signature) != self.expected_signature.as_ref() {
            return Err("the SCRAM server signature does not match: not the broker holding this credential".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::security::credentials::{CredentialStore, ScramCredential};
    use crate::security::sasl::scram::ServerExchange;
    use crate::security::sasl::Step;

    /// Our client against our server, both mechanisms; a wrong password is refused.
    #[test]
    fn client_and_server_agree() {
        for mechanism in [ScramMechanism::Sha256, ScramMechanism::Sha512] {
            let store = Arc::new(CredentialStore::load(std::env::temp_dir().join("scram-client-test-none")).unwrap());
            let salt = b"0123456789abcdef".to_vec();
            let salted = match mechanism {
                ScramMechanism::Sha256 => pbkdf2::pbkdf2_hmac_array::<sha2::Sha256, 32>(b"secret", &salt, 4096).to_vec(),
                ScramMechanism::Sha512 => pbkdf2::pbkdf2_hmac_array::<sha2::Sha512, 64>(b"secret", &salt, 4096).to_vec(),
            };
            store.upsert("broker", mechanism, ScramCredential::from_salted_password(mechanism, salt, &salted, 4096));
            for (password, accepted) in [("secret", true), ("wrong", false)] {
                let (mut client, first) = ClientExchange::start(mechanism, "broker").unwrap();
                let mut server = ServerExchange::new(mechanism);
                let Step::Challenge(server_first) = server.step(&first, &store) else { panic!("no server-first") };
                let last = client.client_final(&server_first, password).unwrap();
                match server.step(&last, &store) {
                    Step::Done { user, last } => {
                        assert!(accepted && user == "broker");
                        client.finish(&last).unwrap();
                    }
                    Step::Failed(_) => assert!(!accepted),
                    Step::Challenge(_) => panic!("unexpected challenge"),
                }
            }
        }
    }
}
