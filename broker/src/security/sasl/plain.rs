//! SASL PLAIN (RFC 4616): `[authzid] NUL user NUL password`, checked against the JAAS users.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::Step;

pub fn authenticate(token: &[u8], users: &BTreeMap<String, String>) -> Step {
    let parts: Vec<&[u8]> = token.split(|b| *b == 0).collect();
    let [authzid, user, password] = parts[..] else {
        return Step::Failed("Invalid SASL/PLAIN response: expected 3 tokens".into());
    };
    let (Ok(authzid), Ok(user)) = (std::str::from_utf8(authzid), std::str::from_utf8(user)) else {
        return Step::Failed("Invalid SASL/PLAIN response: not UTF-8".into());
    };
    if !authzid.is_empty() && authzid != user {
        return Step::Failed("Authentication failed: Client requested an authorization id that is different from username".into());
    }
    // Compare digests, so the time taken does not tell how much of the password matched.
    let matches = users.get(user).is_some_and(|expected| Sha256::digest(expected.as_bytes()) == Sha256::digest(password));
    if matches {
        Step::Done { user: user.to_string(), last: Vec::new() }
    } else {
        Step::Failed("Authentication failed: Invalid username or password".into())
    }
}
