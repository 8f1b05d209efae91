//! Where ACLs are kept: `AclBackend`, one implementation per place. Standalone: a JSON file in
//! the first log directory, rewritten whole (temporary file, fsync, rename) on a blocking thread.
//! Cluster mode: ZooKeeper in Kafka's layout (`zk::acls`), read back by the coordinator thread.
//! Both speak Kafka's ZooKeeper JSON for the entries, so one codec converts.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use super::model::{AclBinding, AclSet, Entry, Operation, PatternType, Permission, ResourcePattern, ResourceType};

pub type Saving<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + 'a>>;

/// A change of one resource pattern: entries added and removed.
pub struct PatternChange {
    pub pattern: ResourcePattern,
    pub add: Vec<Entry>,
    pub remove: Vec<Entry>,
}

pub trait AclBackend: Send + Sync {
    /// The set kept, at start (standalone) or as last read (cluster), with a generation that
    /// changes whenever the set may have (`None`: this backend pushes nothing, the authorizer's
    /// own set is the truth).
    fn published(&self) -> Option<(u64, AclSet)>;
    fn published_generation(&self) -> Option<u64>;
    /// Makes the changes durable. Standalone: `set` is the whole new set to write. Cluster: the
    /// changes go to ZooKeeper, and come back through `published`.
    fn save<'a>(&'a self, set: Arc<AclSet>, changes: Vec<PatternChange>) -> Saving<'a>;
    /// Whether `save` of the whole set is the truth (standalone) or changes come back later.
    fn applies_locally(&self) -> bool;
}

pub fn entry_to_zk(entry: &Entry) -> zk::acls::AclEntry {
    zk::acls::AclEntry {
        principal: entry.principal.clone(),
        permission_type: entry.permission.zk_name().into(),
        operation: entry.operation.zk_name().into(),
        host: entry.host.clone(),
    }
}

pub fn entry_from_zk(entry: &zk::acls::AclEntry) -> Option<Entry> {
    Some(Entry {
        principal: entry.principal.clone(),
        host: entry.host.clone(),
        operation: Operation::from_zk_name(&entry.operation)?,
        permission: Permission::from_zk_name(&entry.permission_type)?,
    })
}

/// Kafka's znodes to our set; entries we cannot read are logged and left out.
pub fn set_from_zk(resources: &[zk::acls::AclResource]) -> AclSet {
    let mut set = AclSet::default();
    for resource in resources {
        let (Some(resource_type), Some(pattern_type)) =
            (ResourceType::from_zk_name(&resource.resource_type), PatternType::from_zk_name(&resource.pattern_type))
        else {
            tracing::warn!(resource_type = resource.resource_type, pattern_type = resource.pattern_type, "unknown ACL resource type or pattern: skipped");
            continue;
        };
        for zk_entry in &resource.entries {
            match entry_from_zk(zk_entry) {
                Some(entry) => {
                    set.add(AclBinding { pattern: ResourcePattern { resource_type, pattern_type, name: resource.name.clone() }, entry });
                }
                None => tracing::warn!(?zk_entry, name = resource.name, "unknown ACL operation or permission: skipped"),
            }
        }
    }
    set
}

fn set_to_zk(set: &AclSet) -> Vec<zk::acls::AclResource> {
    set.patterns()
        .map(|(pattern, entries)| zk::acls::AclResource {
            pattern_type: pattern.pattern_type.zk_name().into(),
            resource_type: pattern.resource_type.zk_name().into(),
            name: pattern.name.clone(),
            entries: entries.iter().map(entry_to_zk).collect(),
        })
        .collect()
}

/// Standalone: `<first log dir>/acls.json`, a list of Kafka's znodes
/// (`{"patternType","resourceType","name","acls":[...]}`).
pub struct FileBackend {
    file: PathBuf,
    loaded: AclSet,
}

impl FileBackend {
    /// At start, on the main thread.
    pub fn load(file: PathBuf) -> Result<FileBackend, String> {
        let loaded = match std::fs::read(&file) {
            Ok(bytes) => {
                let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", file.display()))?;
                let mut resources = Vec::new();
                for node in value.as_array().ok_or_else(|| format!("{}: not a JSON list", file.display()))? {
                    let field = |name: &str| node.get(name).and_then(|v| v.as_str()).map(str::to_string).ok_or_else(|| format!("{}: an entry without {name}", file.display()));
                    let acls = node.get("acls").map(|a| serde_json::json!({"acls": a}).to_string()).unwrap_or_default();
                    resources.push(zk::acls::AclResource {
                        pattern_type: field("patternType")?,
                        resource_type: field("resourceType")?,
                        name: field("name")?,
                        entries: zk::acls::parse_entries(acls.as_bytes()).map_err(|e| format!("{}: {e}", file.display()))?,
                    });
                }
                set_from_zk(&resources)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => AclSet::default(),
            Err(e) => return Err(format!("{}: {e}", file.display())),
        };
        Ok(FileBackend { file, loaded })
    }

}

/// Blocking: run it off the shard threads.
/// The authorizer makes one change at a time, so rewrites never interleave.
fn save_file_blocking(file: &std::path::Path, set: &AclSet) -> Result<(), String> {
    let nodes: Vec<serde_json::Value> = set_to_zk(set)
        .into_iter()
        .map(|r| {
            let acls: serde_json::Value = serde_json::from_str(&zk::acls::entries_json(&r.entries)).expect("our own JSON");
            serde_json::json!({"patternType": r.pattern_type, "resourceType": r.resource_type, "name": r.name, "acls": acls["acls"]})
        })
        .collect();
    let text = serde_json::Value::Array(nodes).to_string();
    let temporary = file.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut out = std::fs::File::create(&temporary)?;
        out.write_all(text.as_bytes())?;
        out.sync_all()?;
        std::fs::rename(&temporary, file)
    };
    write().map_err(|e| format!("writing {}: {e}", file.display()))
}

impl AclBackend for FileBackend {
    fn published(&self) -> Option<(u64, AclSet)> {
        Some((0, self.loaded.clone()))
    }

    fn published_generation(&self) -> Option<u64> {
        None
    }

    fn save<'a>(&'a self, set: Arc<AclSet>, _changes: Vec<PatternChange>) -> Saving<'a> {
        Box::pin(async move {
            // A shard never writes or renames files itself (storage::file_deletion).
            let file = self.file.clone();
            storage::file_deletion::on_blocking_thread(move || save_file_blocking(&file, &set)).await
        })
    }

    fn applies_locally(&self) -> bool {
        true
    }
}

/// Cluster mode: ZooKeeper, through the coordinator thread.
pub struct ZkBackend {
    pub cluster: zk::CoordinatorHandle,
}

impl AclBackend for ZkBackend {
    fn published(&self) -> Option<(u64, AclSet)> {
        let (generation, resources) = self.cluster.view.acls();
        Some((generation, set_from_zk(&resources)))
    }

    fn published_generation(&self) -> Option<u64> {
        Some(self.cluster.view.acl_generation())
    }

    fn save<'a>(&'a self, _set: Arc<AclSet>, changes: Vec<PatternChange>) -> Saving<'a> {
        Box::pin(async move {
            for change in changes {
                let resource = zk::acls::AclResource {
                    pattern_type: change.pattern.pattern_type.zk_name().into(),
                    resource_type: change.pattern.resource_type.zk_name().into(),
                    name: change.pattern.name.clone(),
                    entries: change.add.iter().map(entry_to_zk).collect(),
                };
                self.cluster.update_acls(resource, change.remove.iter().map(entry_to_zk).collect()).await?;
            }
            Ok(())
        })
    }

    fn applies_locally(&self) -> bool {
        false
    }
}
