//! Per-user configs as Kafka keeps them in ZooKeeper (`/config/users/<sanitized user>`, JSON
//! `{"version":1,"config":{...}}`, Kafka's `ConfigEntityName`/`AdminZkClient.changeConfigs`): the
//! broker keeps SCRAM credentials there in cluster mode (key `SCRAM-SHA-512`, value
//! `salt=..,stored_key=..,server_key=..,iterations=N`, `ScramCredentialUtils`'s format). Every
//! change is followed by a sequential `/config/changes/config_change_` notification
//! (`{"version":2,"entity_path":"users/<user>"}`), as Kafka's tools write, so Kafka's own brokers
//! and tools would see ours and ours see theirs.
//!
//! Every broker follows `/config/users` with a persistent recursive watch and publishes the whole
//! set in `ClusterView::user_configs` (a change reaches every broker within a ZooKeeper round
//! trip). This crate knows nothing of SCRAM: the values are opaque strings here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use zookeeper_client::{Acls, AddWatchMode, Client, CreateMode, Error as ZkError};

use crate::paths::persistent;
use crate::ClusterView;

pub const USERS: &str = "/config/users";
pub const CONFIG_CHANGES: &str = "/config/changes";
/// Kafka's `ConfigEntityChangeNotificationSequenceZNode` prefix.
const CHANGE_PREFIX: &str = "/config/changes/config_change_";

/// User -> config key -> value.
pub type UserConfigs = BTreeMap<String, BTreeMap<String, String>>;

/// Kafka's `Sanitizer.sanitize`: URL-encoding (Java's URLEncoder, UTF-8) with `*` and the space
/// percent-encoded too, so any user name is one valid znode name.
pub fn sanitize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' => out.push(byte as char),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// The inverse of `sanitize` (None: not one of its outputs).
pub fn desanitize(name: &str) -> Option<String> {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

pub fn user_path(user: &str) -> String {
    format!("{USERS}/{}", sanitize(user))
}

pub fn user_config_json(config: &BTreeMap<String, String>) -> String {
    serde_json::json!({ "version": 1, "config": config }).to_string()
}

pub fn change_notification_json(user: &str) -> String {
    serde_json::json!({ "version": 2, "entity_path": format!("users/{}", sanitize(user)) }).to_string()
}

/// Every user's configs.
pub async fn read_all(client: &Client) -> Result<UserConfigs, ZkError> {
    let mut users = UserConfigs::new();
    let children = match client.list_children(USERS).await {
        Ok(children) => children,
        Err(ZkError::NoNode) => return Ok(users),
        Err(e) => return Err(e),
    };
    for child in children {
        let Some(user) = desanitize(&child) else {
            tracing::warn!(znode = child, "a user znode whose name is not sanitized as Kafka does; skipped");
            continue;
        };
        match client.get_data(&format!("{USERS}/{child}")).await {
            // Same JSON shape as a topic's config znode.
            Ok((data, _)) => {
                users.insert(user, crate::paths::parse_topic_config_json(&data));
            }
            Err(ZkError::NoNode) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(users)
}

/// Sets and removes keys of one user's configs (a write conditional on the version read, retried
/// when another broker wrote in between), then the change notification.
pub async fn alter(client: &Client, user: &str, set: &BTreeMap<String, String>, remove: &[String]) -> Result<(), String> {
    let path = user_path(user);
    loop {
        let (mut config, version) = match client.get_data(&path).await {
            Ok((data, stat)) => (crate::paths::parse_topic_config_json(&data), Some(stat.version)),
            Err(ZkError::NoNode) => (BTreeMap::new(), None),
            Err(e) => return Err(format!("reading {path}: {e}")),
        };
        for key in remove {
            config.remove(key);
        }
        config.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
        let data = user_config_json(&config);
        let written = match version {
            Some(version) => client.set_data(&path, data.as_bytes(), Some(version)).await.map(|_| ()),
            None => client.create(&path, data.as_bytes(), &persistent()).await.map(|_| ()),
        };
        match written {
            Ok(()) => break,
            Err(ZkError::BadVersion | ZkError::NodeExists) => continue,
            Err(ZkError::NoNode) if version.is_some() => continue,
            Err(e) => return Err(format!("writing {path}: {e}")),
        }
    }
    let sequential = CreateMode::PersistentSequential.with_acls(Acls::anyone_all());
    client
        .create(CHANGE_PREFIX, change_notification_json(user).as_bytes(), &sequential)
        .await
        .map_err(|e| format!("writing the change notification under {CONFIG_CHANGES}: {e}"))?;
    Ok(())
}

/// Reads every user's configs into the view (after a change of ours, so this broker answers with
/// it at once).
pub async fn publish(client: &Client, view: &ClusterView) -> Result<(), ZkError> {
    let users = read_all(client).await?;
    if *view.user_configs() != users {
        tracing::info!(users = users.len(), "user configs (SCRAM credentials) changed in ZooKeeper");
        view.set_user_configs(Arc::new(users));
    }
    Ok(())
}

/// Follows `/config/users` until the session ends: a persistent recursive watch, and a full read
/// after each event.
pub async fn follow(client: &Client, view: &ClusterView) {
    let mut watcher = loop {
        match client.watch(USERS, AddWatchMode::PersistentRecursive).await {
            Ok(watcher) => break watcher,
            Err(e) => {
                tracing::error!(error = %e, "watching {USERS}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    loop {
        if let Err(e) = publish(client, view).await {
            tracing::error!(error = %e, "reading {USERS}");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        watcher.changed().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sanitized_as_kafka_does() {
        assert_eq!(sanitize("alice"), "alice");
        assert_eq!(sanitize("User:CN=a b*"), "User%3ACN%3Da%20b%2A");
        for name in ["alice", "User:CN=a b*", "ü/x"] {
            assert_eq!(desanitize(&sanitize(name)).as_deref(), Some(name));
        }
        assert_eq!(change_notification_json("bob"), r#"{"entity_path":"users/bob","version":2}"#);
    }
}
