//! Authorisation (issue 20): Kafka's `AclAuthorizer` model (`model.rs`), where ACLs are kept
//! (`store.rs`: a file standalone, ZooKeeper in cluster mode), and the `Authorizer` every
//! connection asks through its `Session` (which caches the answers until the set changes).
//!
//! Every shard sees the same set: one `Arc<AclSet>` in the broker's shared state, swapped whole
//! under a lock held only for the swap or a clone (as `zk::ClusterView` does for the cluster).
//! That is simpler than shipping the set to each shard over the inter-shard channels and as
//! correct: a change is one swap, and a version number bumped after it tells each connection's
//! cache to forget its answers. In cluster mode the set comes from the coordinator thread's
//! reading of ZooKeeper; the authorizer notices a newer reading by its generation (an atomic) the
//! next time anyone asks, so no callback has to reach the broker.

pub mod model;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use model::{AclBinding, AclFilter, AclSet, Operation, PatternType, Policy, ResourcePattern, ResourceType};
use store::{AclBackend, PatternChange};

/// The `authorizer.class.name` values we accept: Kafka's ZooKeeper-era and KRaft authorizers.
const AUTHORIZER_NAMES: &[&str] = &["kafka.security.authorizer.AclAuthorizer", "org.apache.kafka.metadata.authorizer.StandardAuthorizer"];

pub struct Authorizer {
    pub policy: Policy,
    current: RwLock<Arc<AclSet>>,
    /// Bumped after every swap of `current`: connections' caches compare it.
    version: AtomicU64,
    /// Cluster mode: the coordinator's ACL generation `current` was built from.
    built_from: AtomicU64,
    rebuilding: Mutex<()>,
    backend: Box<dyn AclBackend>,
    /// One change at a time (an async lock: a change awaits its save), so saves land in order.
    changing: futures_util::lock::Mutex<()>,
}

impl Authorizer {
    /// `authorizer.class.name` (empty: no authorisation, every request allowed), `super.users`,
    /// `allow.everyone.if.no.acl.found`. At start, on the main thread.
    pub fn build(
        properties: &BTreeMap<String, String>,
        acl_file: std::path::PathBuf,
        cluster: Option<zk::CoordinatorHandle>,
    ) -> Result<Option<Arc<Authorizer>>, String> {
        let class = properties.get("authorizer.class.name").map(|s| s.trim()).unwrap_or("");
        if class.is_empty() {
            return Ok(None);
        }
        if !AUTHORIZER_NAMES.contains(&class) {
            return Err(format!("authorizer.class.name={class}: only {} are supported (or empty for none)", AUTHORIZER_NAMES.join(" and ")));
        }
        let super_users = properties
            .get("super.users")
            .map(|s| s.split(';').map(str::trim).filter(|u| !u.is_empty()).map(str::to_string).collect::<Vec<_>>())
            .unwrap_or_default();
        for user in &super_users {
            if !user.contains(':') {
                return Err(format!("super.users: {user:?} is not a principal (TYPE:NAME, e.g. User:admin)"));
            }
        }
        let allow_everyone = match properties.get("allow.everyone.if.no.acl.found").map(|s| s.trim()) {
            None => false,
            Some(v) if v.eq_ignore_ascii_case("true") => true,
            Some(v) if v.eq_ignore_ascii_case("false") => false,
            Some(v) => return Err(format!("allow.everyone.if.no.acl.found={v}: expected true or false")),
        };
        let backend: Box<dyn AclBackend> = match cluster {
            Some(cluster) => Box::new(store::ZkBackend { cluster }),
            None => Box::new(store::FileBackend::load(acl_file)?),
        };
        let (generation, set) = backend.published().unwrap_or_default();
        tracing::info!(class, super_users = ?super_users, allow_everyone_if_no_acl_found = allow_everyone, acls = set.len(), "authorizer on");
        Ok(Some(Arc::new(Authorizer {
            policy: Policy { super_users, allow_everyone_if_no_acl_found: allow_everyone },
            current: RwLock::new(Arc::new(set)),
            version: AtomicU64::new(1),
            built_from: AtomicU64::new(generation),
            rebuilding: Mutex::new(()),
            backend,
            changing: futures_util::lock::Mutex::new(()),
        })))
    }

    /// The version of the set; a newer ZooKeeper reading is taken in first.
    pub fn version(&self) -> u64 {
        if let Some(generation) = self.backend.published_generation() {
            if generation != self.built_from.load(Ordering::Acquire) {
                self.take_published();
            }
        }
        self.version.load(Ordering::Acquire)
    }

    fn take_published(&self) {
        let _one = self.rebuilding.lock().expect("ACL rebuild lock");
        let Some((generation, set)) = self.backend.published() else { return };
        if generation == self.built_from.load(Ordering::Acquire) {
            return; // another thread took it in first
        }
        tracing::info!(acls = set.len(), generation, "ACLs changed in ZooKeeper");
        self.swap(set);
        self.built_from.store(generation, Ordering::Release);
    }

    fn swap(&self, set: AclSet) {
        *self.current.write().expect("ACL set lock") = Arc::new(set);
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    pub fn acls(&self) -> Arc<AclSet> {
        self.version();
        self.current.read().expect("ACL set lock").clone()
    }

    /// The decision, without any cache.
    pub fn authorize(&self, principal: &str, host: &str, operation: Operation, resource_type: ResourceType, name: &str) -> bool {
        self.acls().authorize(&self.policy, principal, host, operation, resource_type, name)
    }

    /// Some resource of the type (uncached: InitProducerId's rare question).
    pub fn authorize_by_resource_type(&self, principal: &str, host: &str, operation: Operation, resource_type: ResourceType) -> bool {
        self.acls().authorize_by_resource_type(&self.policy, principal, host, operation, resource_type)
    }

    /// Adds the bindings (already validated); durable when this returns Ok.
    pub async fn create(&self, bindings: Vec<AclBinding>) -> Result<(), String> {
        let mut changes: BTreeMap<ResourcePattern, PatternChange> = BTreeMap::new();
        for binding in bindings {
            changes
                .entry(binding.pattern.clone())
                .or_insert_with(|| PatternChange { pattern: binding.pattern, add: Vec::new(), remove: Vec::new() })
                .add
                .push(binding.entry);
        }
        self.change(changes.into_values().collect()).await
    }

    /// Removes what each filter matches; returns each filter's matches.
    pub async fn delete(&self, filters: &[AclFilter]) -> Result<Vec<Vec<AclBinding>>, String> {
        let current = self.acls();
        let matched: Vec<Vec<AclBinding>> = filters.iter().map(|f| current.matching(f)).collect();
        let mut changes: BTreeMap<ResourcePattern, PatternChange> = BTreeMap::new();
        for binding in matched.iter().flatten() {
            changes
                .entry(binding.pattern.clone())
                .or_insert_with(|| PatternChange { pattern: binding.pattern.clone(), add: Vec::new(), remove: Vec::new() })
                .remove
                .push(binding.entry.clone());
        }
        if !changes.is_empty() {
            self.change(changes.into_values().collect()).await?;
        }
        Ok(matched)
    }

    async fn change(&self, changes: Vec<PatternChange>) -> Result<(), String> {
        let _one = self.changing.lock().await;
        let mut set = (*self.acls()).clone();
        for change in &changes {
            let mut entries = set.entries_of(&change.pattern).to_vec();
            entries.retain(|e| !change.remove.contains(e));
            for added in &change.add {
                if !entries.contains(added) {
                    entries.push(added.clone());
                }
            }
            set.replace_pattern(change.pattern.clone(), entries);
        }
        let set = Arc::new(set);
        self.backend.save(set.clone(), changes).await?;
        if self.backend.applies_locally() {
            *self.current.write().expect("ACL set lock") = set;
            self.version.fetch_add(1, Ordering::AcqRel);
        }
        Ok(())
    }
}

/// What a connection remembers of the authorizer's answers, until the set's version changes.
/// Bounded: cleared when it holds `CAPACITY` answers (a client touching that many resources).
#[derive(Default)]
pub struct DecisionCache {
    version: u64,
    answers: HashMap<(ResourceType, Operation), HashMap<String, bool>>,
    size: usize,
}

impl DecisionCache {
    const CAPACITY: usize = 4096;

    /// `host` is the client's IP as ACLs name it (no leading '/').
    pub fn authorize(&mut self, authorizer: &Authorizer, principal: &str, host: &str, operation: Operation, resource_type: ResourceType, name: &str) -> bool {
        let version = authorizer.version();
        if version != self.version || self.size >= Self::CAPACITY {
            self.answers.clear();
            self.size = 0;
            self.version = version;
        }
        if let Some(answer) = self.answers.get(&(resource_type, operation)).and_then(|names| names.get(name)) {
            return *answer;
        }
        let answer = authorizer.authorize(principal, host, operation, resource_type, name);
        self.answers.entry((resource_type, operation)).or_default().insert(name.to_string(), answer);
        self.size += 1;
        answer
    }
}

/// Parses the protocol's filter fields (DescribeAcls, DeleteAcls): Err for unknown codes, as
/// Kafka's INVALID_REQUEST "The filter contains unknown elements".
pub fn filter_from_fields(
    resource_type: i8,
    name: Option<&str>,
    pattern_type: i8,
    principal: Option<&str>,
    host: Option<&str>,
    operation: i8,
    permission: i8,
) -> Result<AclFilter, String> {
    let (Some(resource_type), Some(pattern_type), Some(operation), Some(permission)) = (
        ResourceType::from_code(resource_type),
        PatternType::from_code(pattern_type),
        Operation::from_code(operation),
        model::Permission::from_code(permission),
    ) else {
        return Err("The filter contains unknown elements".into());
    };
    Ok(AclFilter {
        resource_type,
        pattern_type,
        name: name.map(str::to_string),
        principal: principal.map(str::to_string),
        host: host.map(str::to_string),
        operation,
        permission,
    })
}
