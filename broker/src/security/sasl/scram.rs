//! SCRAM-SHA-256/512 server side (RFC 5802, RFC 7677): client-first, server-first (nonce, salt,
//! iterations), client-final (proof checked against the stored key), server-final (signature).

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use super::Step;
use crate::security::credentials::{CredentialStore, ScramCredential, ScramMechanism};

enum State {
    AwaitingClientFirst,
    AwaitingClientFinal { user: String, credential: ScramCredential, nonce: String, client_first_bare: String, server_first: String },
    Finished,
}

pub struct ServerExchange {
    mechanism: ScramMechanism,
    state: State,
}

/// `a=b,c=d` -> the value of `key`.
pub(super) fn attribute<'a>(message: &'a str, key: char) -> Option<&'a str> {
    message.split(',').find_map(|part| part.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
}

/// RFC 5802's saslname: `=2C` is ',' and `=3D` is '='.
fn decode_saslname(name: &str) -> String {
    name.replace("=2C", ",").replace("=3D", "=")
}

impl ServerExchange {
    pub fn new(mechanism: ScramMechanism) -> ServerExchange {
        ServerExchange { mechanism, state: State::AwaitingClientFirst }
    }

    pub fn step(&mut self, token: &[u8], credentials: &Arc<CredentialStore>) -> Step {
        let Ok(message) = std::str::from_utf8(token) else { return Step::Failed("SCRAM message is not UTF-8".into()) };
        match std::mem::replace(&mut self.state, State::Finished) {
            State::AwaitingClientFirst => self.client_first(message, credentials),
            State::AwaitingClientFinal { user, credential, nonce, client_first_bare, server_first } => {
                self.client_final(message, user, credential, nonce, client_first_bare, server_first)
            }
            State::Finished => Step::Failed("SCRAM exchange already finished".into()),
        }
    }

    fn client_first(&mut self, message: &str, credentials: &Arc<CredentialStore>) -> Step {
        // gs2 header: "n,," or "y,," (no channel binding), optionally "n,a=authzid,".
        let mut parts = message.splitn(3, ',');
        let (Some(binding), Some(authzid), Some(bare)) = (parts.next(), parts.next(), parts.next()) else {
            return Step::Failed("Invalid SCRAM client first message".into());
        };
        if binding != "n" && binding != "y" {
            return Step::Failed("SCRAM channel binding is not supported".into());
        }
        let (Some(user), Some(client_nonce)) = (attribute(bare, 'n'), attribute(bare, 'r')) else {
            return Step::Failed("Invalid SCRAM client first message: no user or nonce".into());
        };
        let user = decode_saslname(user);
        if let Some(authzid) = authzid.strip_prefix("a=") {
            if decode_saslname(authzid) != user {
                return Step::Failed("Authentication failed: Invalid user credentials".into());
            }
        }
        let Some(credential) = credentials.get(&user, self.mechanism) else {
            // Kafka answers the same for an unknown user as for a wrong password.
            return Step::Failed("Authentication failed during authentication due to invalid credentials with SASL mechanism ".to_string() + self.mechanism.name());
        };
        let mut random = [0u8; 24];
        if getrandom::getrandom(&mut random).is_err() {
            return Step::Failed("no randomness for the SCRAM nonce".into());
        }
        let nonce = format!("{client_nonce}{}", BASE64.encode(random).replace(['+', '/', '='], "x"));
        let server_first = format!("r={nonce},s={},i={}", BASE64.encode(&credential.salt), credential.iterations);
        let reply = server_first.clone().into_bytes();
        self.state = State::AwaitingClientFinal { user, credential, nonce, client_first_bare: bare.to_string(), server_first };
        Step::Challenge(reply)
    }

    fn client_final(
        &mut self,
        message: &str,
        user: String,
        credential: ScramCredential,
        nonce: String,
        client_first_bare: String,
        server_first: String,
    ) -> Step {
        let failed = || Step::Failed(format!("Authentication failed during authentication due to invalid credentials with SASL mechanism {}", self.mechanism.name()));
        let Some((without_proof, proof)) = message.rsplit_once(",p=") else {
            return Step::Failed("Invalid SCRAM client final message: no proof".into());
        };
        // Kafka's ScramSaslServer checks only that the client's nonce ends with the server's:
        // librdkafka up to 2.0 (Debian's kcat) sends its own nonce in front twice.
        if !attribute(without_proof, 'r').is_some_and(|sent| sent.ends_with(nonce.as_str())) {
            return Step::Failed("Invalid client nonce in the final client message.".into());
        }
        let Ok(proof) = BASE64.decode(proof) else { return failed() };
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let client_signature = self.mechanism.hmac(&credential.stored_key, auth_message.as_bytes());
        if proof.len() != client_signature.len() {
            return failed();
        }
        let client_key: Vec<u8> = proof.iter().zip(&client_signature).map(|(a, b)| a ^ b).collect();
        if self.mechanism.hash(&client_key) != credential.stored_key {
            return failed();
        }
        let server_signature = self.mechanism.hmac(&credential.server_key, auth_message.as_bytes());
        Step::Done { user, last: format!("v={}", BASE64.encode(server_signature)).into_bytes() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's SCRAM-SHA-256 example (user "user", password "pencil").
    #[test]
    fn rfc_7677_example() {
        let dir = std::env::temp_dir().join(format!("scram-test-{}", std::process::id()));
        let store = Arc::new(CredentialStore::load(dir.join("none")).unwrap());
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let mut salted = [0u8; 32];
        // The client's side: the broker itself never sees passwords.
        pbkdf2::pbkdf2_hmac::<sha2::Sha256>(b"pencil", &salt, 4096, &mut salted);
        store.upsert("user", ScramMechanism::Sha256, ScramCredential::from_salted_password(ScramMechanism::Sha256, salt, &salted, 4096));
        let mut exchange = ServerExchange::new(ScramMechanism::Sha256);
        let Step::Challenge(first) = exchange.step(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO", &store) else { panic!() };
        let first = String::from_utf8(first).unwrap();
        // The server nonce is random: redo the client's side with it.
        let nonce = attribute(&first, 'r').unwrap().to_string();
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("n=user,r=rOprNGfwEbeRWgbNEkqO,{first},{without_proof}");
        let client_key = ScramMechanism::Sha256.hmac(&salted, b"Client Key");
        let signature = ScramMechanism::Sha256.hmac(&ScramMechanism::Sha256.hash(&client_key), auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        let last = format!("{without_proof},p={}", BASE64.encode(proof));
        assert!(matches!(exchange.step(last.as_bytes(), &store), Step::Done { .. }));
        let mut wrong = ServerExchange::new(ScramMechanism::Sha256);
        let _ = wrong.step(b"n,,n=user,r=abc", &store);
        assert!(matches!(wrong.step(b"c=biws,r=abcx,p=AAAA", &store), Step::Failed(_)));
    }
}
