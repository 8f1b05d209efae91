//! ACLs in ZooKeeper as Kafka's `AclAuthorizer` keeps them: one znode per resource pattern,
//! `/kafka-acl/<ResourceType>/<name>` (literal) and `/kafka-acl-extended/prefixed/<ResourceType>/<name>`
//! (prefixed), holding `{"version":1,"acls":[{"principal":..,"permissionType":..,"operation":..,"host":..}]}`;
//! after a change a sequential notification `/kafka-acl-changes/acl_changes_NNNNNNNNNN` (data
//! `<ResourceType>:<name>`) or `/kafka-acl-extended-changes/acl_changes_NNNNNNNNNN` (JSON) tells
//! every broker, Kafka's included, to re-read. The strings stay Kafka's names: the broker maps
//! them to its model (zk knows nothing of the broker).

use std::time::Duration;

use zookeeper_client::{Client, CreateMode, Error as ZkError};

use crate::paths::persistent;

pub const LITERAL_ROOT: &str = "/kafka-acl";
pub const PREFIXED_ROOT: &str = "/kafka-acl-extended/prefixed";
pub const LITERAL_CHANGES: &str = "/kafka-acl-changes";
pub const EXTENDED_CHANGES: &str = "/kafka-acl-extended-changes";
const CHANGE_PREFIX: &str = "acl_changes_";

/// One access control entry, in Kafka's JSON names ("User:alice", "Allow", "Read", "*").
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AclEntry {
    pub principal: String,
    pub permission_type: String,
    pub operation: String,
    pub host: String,
}

/// One resource pattern's znode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclResource {
    /// "Literal" or "Prefixed".
    pub pattern_type: String,
    /// "Topic", "Group", "Cluster", "TransactionalId", ...
    pub resource_type: String,
    pub name: String,
    pub entries: Vec<AclEntry>,
}

pub fn resource_path(pattern_type: &str, resource_type: &str, name: &str) -> String {
    let root = if pattern_type.eq_ignore_ascii_case("Prefixed") { PREFIXED_ROOT } else { LITERAL_ROOT };
    format!("{root}/{resource_type}/{name}")
}

pub fn entries_json(entries: &[AclEntry]) -> String {
    let acls: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| serde_json::json!({"principal": e.principal, "permissionType": e.permission_type, "operation": e.operation, "host": e.host}))
        .collect();
    serde_json::json!({"version": 1, "acls": acls}).to_string()
}

pub fn parse_entries(data: &[u8]) -> Result<Vec<AclEntry>, String> {
    if data.is_empty() {
        return Ok(Vec::new());
    }
    let value: serde_json::Value = serde_json::from_slice(data).map_err(|e| format!("ACL znode JSON: {e}"))?;
    let Some(acls) = value.get("acls").and_then(|a| a.as_array()) else { return Ok(Vec::new()) };
    acls.iter()
        .map(|acl| {
            let field = |name: &str| acl.get(name).and_then(|v| v.as_str()).map(str::to_string).ok_or_else(|| format!("ACL entry without {name}: {acl}"));
            Ok(AclEntry { principal: field("principal")?, permission_type: field("permissionType")?, operation: field("operation")?, host: field("host")? })
        })
        .collect()
}

/// Every ACL znode under both roots.
pub async fn read_all(client: &Client) -> Result<Vec<AclResource>, String> {
    let mut resources = Vec::new();
    for (root, pattern_type) in [(LITERAL_ROOT, "Literal"), (PREFIXED_ROOT, "Prefixed")] {
        let types = match client.list_children(root).await {
            Ok(types) => types,
            Err(ZkError::NoNode) => continue,
            Err(e) => return Err(format!("listing {root}: {e}")),
        };
        for resource_type in types {
            let type_path = format!("{root}/{resource_type}");
            let names = match client.list_children(&type_path).await {
                Ok(names) => names,
                Err(ZkError::NoNode) => continue,
                Err(e) => return Err(format!("listing {type_path}: {e}")),
            };
            for name in names {
                let path = format!("{type_path}/{name}");
                match client.get_data(&path).await {
                    Ok((data, _)) => match parse_entries(&data) {
                        Ok(entries) => resources.push(AclResource { pattern_type: pattern_type.into(), resource_type: resource_type.clone(), name, entries }),
                        // One bad znode must not hide every other ACL.
                        Err(e) => tracing::error!(path, error = %e, "unreadable ACL znode skipped"),
                    },
                    Err(ZkError::NoNode) => {}
                    Err(e) => return Err(format!("reading {path}: {e}")),
                }
            }
        }
    }
    Ok(resources)
}

/// Adds and removes entries of one resource pattern: read, change, write conditional on the
/// version read (another broker may change the same znode), then the change notification.
pub async fn update(client: &Client, resource: &AclResource, remove: &[AclEntry]) -> Result<(), String> {
    let path = resource_path(&resource.pattern_type, &resource.resource_type, &resource.name);
    for _attempt in 0..100 {
        let (mut entries, version) = match client.get_data(&path).await {
            Ok((data, stat)) => (parse_entries(&data)?, Some(stat.version)),
            Err(ZkError::NoNode) => (Vec::new(), None),
            Err(e) => return Err(format!("reading {path}: {e}")),
        };
        let before = entries.clone();
        entries.retain(|e| !remove.contains(e));
        for added in &resource.entries {
            if !entries.contains(added) {
                entries.push(added.clone());
            }
        }
        if entries == before {
            return Ok(());
        }
        let written = match (version, entries.is_empty()) {
            (Some(version), true) => client.delete(&path, Some(version)).await.map(|_| ()),
            (Some(version), false) => client.set_data(&path, entries_json(&entries).as_bytes(), Some(version)).await.map(|_| ()),
            (None, _) => match client.create(&path, entries_json(&entries).as_bytes(), &persistent()).await {
                Err(ZkError::NoNode) => {
                    create_parents(client, &path).await?;
                    continue;
                }
                other => other.map(|_| ()),
            },
        };
        match written {
            Ok(()) => return notify(client, resource).await,
            Err(ZkError::BadVersion | ZkError::NodeExists | ZkError::NoNode) => continue,
            Err(e) => return Err(format!("writing {path}: {e}")),
        }
    }
    Err(format!("{path}: changed by others 100 times in a row"))
}

async fn create_parents(client: &Client, path: &str) -> Result<(), String> {
    let mut at = 0;
    while let Some(next) = path[at + 1..].find('/') {
        let parent = &path[..at + 1 + next];
        match client.create(parent, b"", &persistent()).await {
            Ok(_) | Err(ZkError::NodeExists) => {}
            Err(e) => return Err(format!("creating {parent}: {e}")),
        }
        at += 1 + next;
    }
    Ok(())
}

/// Kafka's ZkAclChangeStore: literal changes carry `Type:name`, extended ones JSON.
async fn notify(client: &Client, resource: &AclResource) -> Result<(), String> {
    let (root, data) = if resource.pattern_type.eq_ignore_ascii_case("Literal") {
        (LITERAL_CHANGES, format!("{}:{}", resource.resource_type, resource.name))
    } else {
        let json = serde_json::json!({"version": 1, "resourceType": resource.resource_type, "name": resource.name, "patternType": resource.pattern_type});
        (EXTENDED_CHANGES, json.to_string())
    };
    let path = format!("{root}/{CHANGE_PREFIX}");
    let sequential = CreateMode::PersistentSequential.with_acls(zookeeper_client::Acls::anyone_all());
    for _attempt in 0..2 {
        match client.create(&path, data.as_bytes(), &sequential).await {
            Ok(_) => return Ok(()),
            Err(ZkError::NoNode) => create_parents(client, &path).await?,
            Err(e) => return Err(format!("writing the ACL change notification: {e}")),
        }
    }
    Err(format!("cannot create {root}"))
}

/// Follows both change roots (persistent recursive watches): after each notification, reads
/// every ACL and hands the set to `publish`. Returns only when the session ends (never otherwise).
pub async fn follow(client: &Client, publish: &(dyn Fn(Vec<AclResource>) + Send + Sync)) {
    for root in [LITERAL_CHANGES, EXTENDED_CHANGES] {
        let _ = create_parents(client, &format!("{root}/x")).await;
    }
    let mut literal = crate::coordinator::watch_recursively(client, LITERAL_CHANGES).await;
    let mut extended = crate::coordinator::watch_recursively(client, EXTENDED_CHANGES).await;
    loop {
        match read_all(client).await {
            Ok(resources) => publish(resources),
            Err(e) => {
                tracing::error!(error = %e, "reading ACLs from ZooKeeper; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        // A deletion is a purged notification (change_purge.rs), not an ACL change: not worth
        // re-reading every ACL for, once per purged znode on every broker.
        loop {
            let event = tokio::select! {
                event = literal.changed() => event,
                event = extended.changed() => event,
            };
            if event.event_type != zookeeper_client::EventType::NodeDeleted {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_json_round_trip() {
        let kafka = br#"{"version":1,"acls":[{"principal":"User:alice","permissionType":"Allow","operation":"Read","host":"*"}]}"#;
        let entries = parse_entries(kafka).unwrap();
        assert_eq!(entries, vec![AclEntry { principal: "User:alice".into(), permission_type: "Allow".into(), operation: "Read".into(), host: "*".into() }]);
        assert_eq!(parse_entries(entries_json(&entries).as_bytes()).unwrap(), entries);
        assert_eq!(resource_path("Prefixed", "Topic", "app-"), "/kafka-acl-extended/prefixed/Topic/app-");
        assert_eq!(resource_path("Literal", "Group", "g"), "/kafka-acl/Group/g");
    }
}
