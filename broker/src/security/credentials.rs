//! SCRAM credentials, salted as RFC 5802 says (the password itself is never known to the
//! broker: AlterUserScramCredentials carries the salted password, from which only the stored
//! and server keys are kept). Standalone they live in `<first log dir>/scram-credentials`, one
//! `user TAB mechanism TAB salt=..,stored_key=..,server_key=..,iterations=N` line each (the value
//! in Kafka's ZooKeeper format), rewritten whole on a blocking thread after each change. In
//! cluster mode they live in ZooKeeper as Kafka keeps them (`/config/users/<user>`, key the
//! mechanism's name, zk's `user_configs.rs`), read from the coordinator's published view, so
//! every broker authenticates a user created on any of them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ScramMechanism {
    Sha256,
    Sha512,
}

impl ScramMechanism {
    pub fn parse(name: &str) -> Option<ScramMechanism> {
        match name {
            "SCRAM-SHA-256" => Some(ScramMechanism::Sha256),
            "SCRAM-SHA-512" => Some(ScramMechanism::Sha512),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// The protocol's ScramMechanism field (AlterUserScramCredentials).
    pub fn from_type(mechanism_type: i8) -> Option<ScramMechanism> {
        match mechanism_type {
            1 => Some(ScramMechanism::Sha256),
            2 => Some(ScramMechanism::Sha512),
            _ => None,
        }
    }

    pub fn type_id(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    /// Kafka's bounds (ScramMechanism.minIterations, and its 16384 maximum).
    pub const MIN_ITERATIONS: i32 = 4096;
    pub const MAX_ITERATIONS: i32 = 16384;

    pub fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => {
                let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
            ScramMechanism::Sha512 => {
                let mut mac = Hmac::<Sha512>::new_from_slice(key).expect("HMAC takes any key length");
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
        }
    }

    pub fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => Sha256::digest(data).to_vec(),
            ScramMechanism::Sha512 => Sha512::digest(data).to_vec(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
    pub iterations: i32,
}

impl ScramCredential {
    /// From the salted password (Hi(password, salt, i)) a client sends.
    pub fn from_salted_password(mechanism: ScramMechanism, salt: Vec<u8>, salted_password: &[u8], iterations: i32) -> ScramCredential {
        let client_key = mechanism.hmac(salted_password, b"Client Key");
        ScramCredential {
            salt,
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.hmac(salted_password, b"Server Key"),
            iterations,
        }
    }

    /// Kafka's ScramCredentialUtils.credentialToString.
    pub fn to_kafka_string(&self) -> String {
        format!(
            "salt={},stored_key={},server_key={},iterations={}",
            BASE64.encode(&self.salt),
            BASE64.encode(&self.stored_key),
            BASE64.encode(&self.server_key),
            self.iterations
        )
    }

    pub fn from_kafka_string(text: &str) -> Result<ScramCredential, String> {
        let mut fields = BTreeMap::new();
        for part in text.split(',') {
            let (key, value) = part.split_once('=').ok_or_else(|| format!("bad SCRAM credential field {part:?}"))?;
            fields.insert(key, value);
        }
        let bytes = |name: &str| -> Result<Vec<u8>, String> {
            BASE64.decode(fields.get(name).ok_or_else(|| format!("SCRAM credential without {name}"))?).map_err(|e| format!("{name}: {e}"))
        };
        Ok(ScramCredential {
            salt: bytes("salt")?,
            stored_key: bytes("stored_key")?,
            server_key: bytes("server_key")?,
            iterations: fields.get("iterations").and_then(|i| i.parse().ok()).ok_or("SCRAM credential without iterations")?,
        })
    }
}

type Credentials = BTreeMap<(String, ScramMechanism), ScramCredential>;

pub struct CredentialStore {
    /// Cluster mode: the credentials are the view's `/config/users` (the map and file unused).
    zookeeper: Option<Arc<zk::ClusterView>>,
    credentials: Mutex<Credentials>,
    file: PathBuf,
    /// Held while the file is rewritten, so two rewrites never interleave; each writes the
    /// newest map, so the last one to run leaves every change in the file.
    writing: Mutex<()>,
}

impl CredentialStore {
    /// Reads the file at start (main thread).
    pub fn load(file: PathBuf) -> Result<CredentialStore, String> {
        let mut credentials = Credentials::new();
        match std::fs::read_to_string(&file) {
            Ok(text) => {
                for line in text.lines().filter(|l| !l.is_empty()) {
                    let mut parts = line.splitn(3, '\t');
                    let (Some(user), Some(mechanism), Some(value)) = (parts.next(), parts.next(), parts.next()) else {
                        return Err(format!("{}: bad line {line:?}", file.display()));
                    };
                    let mechanism = ScramMechanism::parse(mechanism).ok_or_else(|| format!("{}: unknown mechanism {mechanism}", file.display()))?;
                    credentials.insert((user.to_string(), mechanism), ScramCredential::from_kafka_string(value)?);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", file.display())),
        }
        Ok(CredentialStore { zookeeper: None, credentials: Mutex::new(credentials), file, writing: Mutex::new(()) })
    }

    /// Cluster mode: the credentials ZooKeeper holds, as the coordinator last read them.
    pub fn in_zookeeper(view: Arc<zk::ClusterView>) -> CredentialStore {
        CredentialStore { zookeeper: Some(view), credentials: Mutex::new(Credentials::new()), file: PathBuf::new(), writing: Mutex::new(()) }
    }

    pub fn get(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
        match &self.zookeeper {
            Some(view) => {
                let value = view.user_configs().get(user)?.get(mechanism.name())?.clone();
                ScramCredential::from_kafka_string(&value)
                    .map_err(|e| tracing::warn!(user, mechanism = mechanism.name(), error = e, "unreadable SCRAM credential in ZooKeeper"))
                    .ok()
            }
            None => self.credentials.lock().expect("credentials lock").get(&(user.to_string(), mechanism)).cloned(),
        }
    }

    /// Every (mechanism, iterations) of each user, or of the named users.
    pub fn describe(&self) -> BTreeMap<String, Vec<(ScramMechanism, i32)>> {
        let mut users: BTreeMap<String, Vec<(ScramMechanism, i32)>> = BTreeMap::new();
        if let Some(view) = &self.zookeeper {
            for (user, config) in view.user_configs().iter() {
                for (key, value) in config {
                    let (Some(mechanism), Ok(credential)) = (ScramMechanism::parse(key), ScramCredential::from_kafka_string(value)) else { continue };
                    users.entry(user.clone()).or_default().push((mechanism, credential.iterations));
                }
            }
            return users;
        }
        for ((user, mechanism), credential) in self.credentials.lock().expect("credentials lock").iter() {
            users.entry(user.clone()).or_default().push((*mechanism, credential.iterations));
        }
        users
    }

    /// Standalone only (cluster mode writes ZooKeeper through the coordinator).
    pub fn upsert(&self, user: &str, mechanism: ScramMechanism, credential: ScramCredential) {
        assert!(self.zookeeper.is_none(), "cluster mode keeps SCRAM credentials in ZooKeeper");
        self.credentials.lock().expect("credentials lock").insert((user.to_string(), mechanism), credential);
    }

    /// False if there was no such credential.
    pub fn delete(&self, user: &str, mechanism: ScramMechanism) -> bool {
        assert!(self.zookeeper.is_none(), "cluster mode keeps SCRAM credentials in ZooKeeper");
        self.credentials.lock().expect("credentials lock").remove(&(user.to_string(), mechanism)).is_some()
    }

    /// Rewrites the file with the current credentials (temporary file, fsync, rename). Blocking:
    /// run it off the shard threads.
    pub fn save_blocking(self: &Arc<Self>) -> Result<(), String> {
        let _writing = self.writing.lock().expect("credentials write lock");
        let text: String = self
            .credentials
            .lock()
            .expect("credentials lock")
            .iter()
            .map(|((user, mechanism), credential)| format!("{user}\t{}\t{}\n", mechanism.name(), credential.to_kafka_string()))
            .collect();
        let temporary = self.file.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut file = std::fs::File::create(&temporary)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&temporary, &self.file)
        };
        write().map_err(|e| format!("writing {}: {e}", self.file.display()))
    }
}
