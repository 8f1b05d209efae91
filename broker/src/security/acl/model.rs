//! Kafka's ACL model, as `AclAuthorizer` (kafka/security/authorizer/AclAuthorizer.scala) decides:
//! resources and patterns, principals and hosts, operations and what they imply, deny over
//! allow. Pure: no I/O, no clock; the store and the per-connection cache sit on top.

use std::collections::BTreeMap;

/// The protocol's codes (org.apache.kafka.common.resource.ResourceType).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceType {
    Any,
    Topic,
    Group,
    Cluster,
    TransactionalId,
    DelegationToken,
    User,
}

impl ResourceType {
    pub fn from_code(code: i8) -> Option<ResourceType> {
        Some(match code {
            1 => ResourceType::Any,
            2 => ResourceType::Topic,
            3 => ResourceType::Group,
            4 => ResourceType::Cluster,
            5 => ResourceType::TransactionalId,
            6 => ResourceType::DelegationToken,
            7 => ResourceType::User,
            _ => return None,
        })
    }

    pub fn code(self) -> i8 {
        match self {
            ResourceType::Any => 1,
            ResourceType::Topic => 2,
            ResourceType::Group => 3,
            ResourceType::Cluster => 4,
            ResourceType::TransactionalId => 5,
            ResourceType::DelegationToken => 6,
            ResourceType::User => 7,
        }
    }

    /// The name in ZooKeeper paths and JSON (Kafka's `ResourceType.toJava` names in CamelCase).
    pub fn zk_name(self) -> &'static str {
        match self {
            ResourceType::Any => "Any",
            ResourceType::Topic => "Topic",
            ResourceType::Group => "Group",
            ResourceType::Cluster => "Cluster",
            ResourceType::TransactionalId => "TransactionalId",
            ResourceType::DelegationToken => "DelegationToken",
            ResourceType::User => "User",
        }
    }

    pub fn from_zk_name(name: &str) -> Option<ResourceType> {
        [
            ResourceType::Topic,
            ResourceType::Group,
            ResourceType::Cluster,
            ResourceType::TransactionalId,
            ResourceType::DelegationToken,
            ResourceType::User,
        ]
        .into_iter()
        .find(|t| t.zk_name().eq_ignore_ascii_case(name))
    }

    /// AclEntry.supportedOperations: what KIP-430's bit sets may hold for this type.
    pub fn supported_operations(self) -> &'static [Operation] {
        use Operation::*;
        match self {
            ResourceType::Topic => &[Read, Write, Create, Describe, Delete, Alter, DescribeConfigs, AlterConfigs],
            ResourceType::Group => &[Read, Describe, Delete],
            ResourceType::Cluster => &[Create, ClusterAction, DescribeConfigs, AlterConfigs, IdempotentWrite, Alter, Describe],
            ResourceType::TransactionalId => &[Describe, Write],
            ResourceType::DelegationToken => &[Describe],
            ResourceType::User => &[CreateTokens, DescribeTokens],
            ResourceType::Any => &[],
        }
    }
}

/// The CLUSTER resource's only name (Kafka's `Resource.CLUSTER_NAME`).
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// A literal resource name matching every resource of its type.
pub const WILDCARD: &str = "*";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PatternType {
    Any,
    /// Filters only: literal equal, the `*` literal, or a prefix of the name.
    Match,
    Literal,
    Prefixed,
}

impl PatternType {
    pub fn from_code(code: i8) -> Option<PatternType> {
        Some(match code {
            1 => PatternType::Any,
            2 => PatternType::Match,
            3 => PatternType::Literal,
            4 => PatternType::Prefixed,
            _ => return None,
        })
    }

    pub fn code(self) -> i8 {
        match self {
            PatternType::Any => 1,
            PatternType::Match => 2,
            PatternType::Literal => 3,
            PatternType::Prefixed => 4,
        }
    }

    pub fn zk_name(self) -> &'static str {
        match self {
            PatternType::Any => "Any",
            PatternType::Match => "Match",
            PatternType::Literal => "Literal",
            PatternType::Prefixed => "Prefixed",
        }
    }

    pub fn from_zk_name(name: &str) -> Option<PatternType> {
        [PatternType::Literal, PatternType::Prefixed].into_iter().find(|p| p.zk_name().eq_ignore_ascii_case(name))
    }
}

/// org.apache.kafka.common.acl.AclOperation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    Any,
    All,
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    ClusterAction,
    DescribeConfigs,
    AlterConfigs,
    IdempotentWrite,
    CreateTokens,
    DescribeTokens,
}

const OPERATIONS: [Operation; 14] = [
    Operation::Any,
    Operation::All,
    Operation::Read,
    Operation::Write,
    Operation::Create,
    Operation::Delete,
    Operation::Alter,
    Operation::Describe,
    Operation::ClusterAction,
    Operation::DescribeConfigs,
    Operation::AlterConfigs,
    Operation::IdempotentWrite,
    Operation::CreateTokens,
    Operation::DescribeTokens,
];

impl Operation {
    pub fn from_code(code: i8) -> Option<Operation> {
        OPERATIONS.iter().copied().find(|o| o.code() == code)
    }

    pub fn code(self) -> i8 {
        match self {
            Operation::Any => 1,
            Operation::All => 2,
            Operation::Read => 3,
            Operation::Write => 4,
            Operation::Create => 5,
            Operation::Delete => 6,
            Operation::Alter => 7,
            Operation::Describe => 8,
            Operation::ClusterAction => 9,
            Operation::DescribeConfigs => 10,
            Operation::AlterConfigs => 11,
            Operation::IdempotentWrite => 12,
            Operation::CreateTokens => 13,
            Operation::DescribeTokens => 14,
        }
    }

    /// SecurityUtils.operationName: the name in ZooKeeper's JSON.
    pub fn zk_name(self) -> &'static str {
        match self {
            Operation::Any => "Any",
            Operation::All => "All",
            Operation::Read => "Read",
            Operation::Write => "Write",
            Operation::Create => "Create",
            Operation::Delete => "Delete",
            Operation::Alter => "Alter",
            Operation::Describe => "Describe",
            Operation::ClusterAction => "ClusterAction",
            Operation::DescribeConfigs => "DescribeConfigs",
            Operation::AlterConfigs => "AlterConfigs",
            Operation::IdempotentWrite => "IdempotentWrite",
            Operation::CreateTokens => "CreateTokens",
            Operation::DescribeTokens => "DescribeTokens",
        }
    }

    pub fn from_zk_name(name: &str) -> Option<Operation> {
        OPERATIONS.iter().copied().filter(|o| *o != Operation::Any).find(|o| o.zk_name().eq_ignore_ascii_case(name))
    }

    /// The operations whose ALLOW grants this one (AclAuthorizer.authorizeAction): READ, WRITE,
    /// DELETE and ALTER imply DESCRIBE; ALTER_CONFIGS implies DESCRIBE_CONFIGS; ALL implies all.
    fn granted_by(self, acl_operation: Operation) -> bool {
        acl_operation == Operation::All
            || acl_operation == self
            || (self == Operation::Describe
                && matches!(acl_operation, Operation::Read | Operation::Write | Operation::Delete | Operation::Alter))
            || (self == Operation::DescribeConfigs && acl_operation == Operation::AlterConfigs)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    Any,
    Deny,
    Allow,
}

impl Permission {
    pub fn from_code(code: i8) -> Option<Permission> {
        Some(match code {
            1 => Permission::Any,
            2 => Permission::Deny,
            3 => Permission::Allow,
            _ => return None,
        })
    }

    pub fn code(self) -> i8 {
        match self {
            Permission::Any => 1,
            Permission::Deny => 2,
            Permission::Allow => 3,
        }
    }

    pub fn zk_name(self) -> &'static str {
        match self {
            Permission::Any => "Any",
            Permission::Deny => "Deny",
            Permission::Allow => "Allow",
        }
    }

    pub fn from_zk_name(name: &str) -> Option<Permission> {
        [Permission::Deny, Permission::Allow].into_iter().find(|p| p.zk_name().eq_ignore_ascii_case(name))
    }
}

/// A resource pattern: what an ACL applies to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourcePattern {
    pub resource_type: ResourceType,
    pub pattern_type: PatternType,
    pub name: String,
}

/// One access control entry of a pattern.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Entry {
    pub principal: String,
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AclBinding {
    pub pattern: ResourcePattern,
    pub entry: Entry,
}

impl AclBinding {
    /// What Kafka refuses in CreateAcls (AuthorizerUtils.validateAclBinding, AclAuthorizer,
    /// SecurityUtils.parseKafkaPrincipal): the message for INVALID_REQUEST.
    pub fn validate(&self) -> Result<(), String> {
        let p = &self.pattern;
        if matches!(p.resource_type, ResourceType::Any)
            || !matches!(p.pattern_type, PatternType::Literal | PatternType::Prefixed)
            || matches!(self.entry.operation, Operation::Any)
            || matches!(self.entry.permission, Permission::Any)
        {
            return Err("Invalid ACL creation: ACL binding contains unknown or ANY elements".into());
        }
        if p.name.is_empty() {
            return Err("Invalid ACL creation: Resource name should not be empty".into());
        }
        if p.resource_type == ResourceType::Cluster && p.name != CLUSTER_NAME {
            return Err(format!("The only valid name for the CLUSTER resource is {CLUSTER_NAME}"));
        }
        match self.entry.principal.split_once(':') {
            Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {}
            _ => return Err(format!("Invalid ACL creation: principal {:?} is not TYPE:NAME", self.entry.principal)),
        }
        if self.entry.host.is_empty() {
            return Err("Invalid ACL creation: empty host".into());
        }
        Ok(())
    }
}

/// DescribeAcls' and DeleteAcls' filter (ResourcePatternFilter + AccessControlEntryFilter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclFilter {
    pub resource_type: ResourceType,
    pub pattern_type: PatternType,
    pub name: Option<String>,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: Operation,
    pub permission: Permission,
}

impl AclFilter {
    /// ResourcePatternFilter.matches + AccessControlEntryFilter.matches.
    pub fn matches(&self, binding: &AclBinding) -> bool {
        let p = &binding.pattern;
        if self.resource_type != ResourceType::Any && self.resource_type != p.resource_type {
            return false;
        }
        if !matches!(self.pattern_type, PatternType::Any | PatternType::Match) && self.pattern_type != p.pattern_type {
            return false;
        }
        let name_matches = match &self.name {
            None => true,
            Some(name) if self.pattern_type == PatternType::Match => match p.pattern_type {
                PatternType::Literal => *name == p.name || p.name == WILDCARD,
                PatternType::Prefixed => name.starts_with(&p.name),
                _ => false,
            },
            Some(name) => *name == p.name,
        };
        let e = &binding.entry;
        name_matches
            && self.principal.as_ref().is_none_or(|principal| *principal == e.principal)
            && self.host.as_ref().is_none_or(|host| *host == e.host)
            && (self.operation == Operation::Any || self.operation == e.operation)
            && (self.permission == Permission::Any || self.permission == e.permission)
    }
}

/// The whole set, indexed by resource type then pattern: a decision looks only at its type's
/// literal names (exact and `*`) and prefixes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclSet {
    by_pattern: BTreeMap<ResourcePattern, Vec<Entry>>,
}

/// `super.users` and `allow.everyone.if.no.acl.found`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub super_users: Vec<String>,
    pub allow_everyone_if_no_acl_found: bool,
}

impl AclSet {
    #[cfg(test)]
    pub fn from_bindings(bindings: impl IntoIterator<Item = AclBinding>) -> AclSet {
        let mut set = AclSet::default();
        for binding in bindings {
            set.add(binding);
        }
        set
    }

    /// False if it was there already.
    pub fn add(&mut self, binding: AclBinding) -> bool {
        let entries = self.by_pattern.entry(binding.pattern).or_default();
        if entries.contains(&binding.entry) {
            return false;
        }
        entries.push(binding.entry);
        true
    }

    pub fn matching(&self, filter: &AclFilter) -> Vec<AclBinding> {
        self.bindings().filter(|b| filter.matches(b)).collect()
    }

    pub fn bindings(&self) -> impl Iterator<Item = AclBinding> + '_ {
        self.by_pattern
            .iter()
            .flat_map(|(pattern, entries)| entries.iter().map(move |entry| AclBinding { pattern: pattern.clone(), entry: entry.clone() }))
    }

    pub fn patterns(&self) -> impl Iterator<Item = (&ResourcePattern, &Vec<Entry>)> {
        self.by_pattern.iter()
    }

    pub fn entries_of(&self, pattern: &ResourcePattern) -> &[Entry] {
        self.by_pattern.get(pattern).map_or(&[], Vec::as_slice)
    }

    pub fn replace_pattern(&mut self, pattern: ResourcePattern, entries: Vec<Entry>) {
        if entries.is_empty() {
            self.by_pattern.remove(&pattern);
        } else {
            self.by_pattern.insert(pattern, entries);
        }
    }

    pub fn len(&self) -> usize {
        self.by_pattern.values().map(Vec::len).sum()
    }

    /// The entries applying to a resource: its exact literal name, the `*` literal, and every
    /// prefix pattern of its name (AclAuthorizer.matchingAcls).
    fn applying<'a>(&'a self, resource_type: ResourceType, name: &'a str) -> impl Iterator<Item = &'a Entry> + 'a {
        let literal = |n: &str| ResourcePattern { resource_type, pattern_type: PatternType::Literal, name: n.to_string() };
        let exact = self.by_pattern.get(&literal(name)).into_iter().flatten();
        let wildcard = self.by_pattern.get(&literal(WILDCARD)).into_iter().flatten();
        // Prefixed patterns of this type sort together; each prefix of the name is one lookup.
        let prefixed = name.char_indices().map(|(i, c)| &name[..i + c.len_utf8()]).flat_map(move |prefix| {
            self.by_pattern
                .get(&ResourcePattern { resource_type, pattern_type: PatternType::Prefixed, name: prefix.to_string() })
                .into_iter()
                .flatten()
        });
        exact.chain(wildcard).chain(prefixed)
    }

    /// AclAuthorizer.authorizeAction: super users pass; no ACL on the resource at all gives
    /// `allow.everyone.if.no.acl.found`; a matching DENY refuses; then a matching ALLOW (of the
    /// operation, one implying it, or ALL) grants.
    pub fn authorize(&self, policy: &Policy, principal: &str, host: &str, operation: Operation, resource_type: ResourceType, name: &str) -> bool {
        if policy.super_users.iter().any(|s| s == principal) {
            return true;
        }
        let mut any = false;
        let mut allowed = false;
        for entry in self.applying(resource_type, name) {
            any = true;
            let principal_matches = entry.principal == principal || entry.principal == "User:*";
            let host_matches = entry.host == host || entry.host == WILDCARD;
            if !(principal_matches && host_matches) {
                continue;
            }
            match entry.permission {
                Permission::Deny if entry.operation == operation || entry.operation == Operation::All => return false,
                Permission::Allow if operation.granted_by(entry.operation) => allowed = true,
                _ => {}
            }
        }
        if !any {
            return policy.allow_everyone_if_no_acl_found;
        }
        allowed
    }
}

impl AclSet {
    /// Kafka's Authorizer.authorizeByResourceType, simplified: may the principal do `operation`
    /// on some resource of the type? Yes for super users; with no ACL of the type at all,
    /// `allow.everyone.if.no.acl.found`; else an ALLOW granting it, not cancelled by a DENY of
    /// the same on the `*` literal.
    pub fn authorize_by_resource_type(&self, policy: &Policy, principal: &str, host: &str, operation: Operation, resource_type: ResourceType) -> bool {
        if policy.super_users.iter().any(|s| s == principal) {
            return true;
        }
        let applies = |e: &Entry| (e.principal == principal || e.principal == "User:*") && (e.host == host || e.host == WILDCARD);
        let of_type: Vec<(&ResourcePattern, &Entry)> =
            self.by_pattern.iter().filter(|(p, _)| p.resource_type == resource_type).flat_map(|(p, es)| es.iter().map(move |e| (p, e))).collect();
        if of_type.is_empty() {
            return policy.allow_everyone_if_no_acl_found;
        }
        let denied_everywhere = of_type.iter().any(|(p, e)| {
            p.pattern_type == PatternType::Literal
                && p.name == WILDCARD
                && e.permission == Permission::Deny
                && (e.operation == operation || e.operation == Operation::All)
                && applies(e)
        });
        !denied_everywhere && of_type.iter().any(|(_, e)| e.permission == Permission::Allow && operation.granted_by(e.operation) && applies(e))
    }
}

/// KIP-430: a 32-bit field with bit `code` set for each operation.
pub fn operations_bits(operations: impl IntoIterator<Item = Operation>) -> i32 {
    operations.into_iter().fold(0i32, |bits, op| bits | (1 << op.code()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(resource_type: ResourceType, pattern_type: PatternType, name: &str, principal: &str, operation: Operation, permission: Permission) -> AclBinding {
        AclBinding {
            pattern: ResourcePattern { resource_type, pattern_type, name: name.into() },
            entry: Entry { principal: principal.into(), host: "*".into(), operation, permission },
        }
    }

    fn policy() -> Policy {
        Policy { super_users: vec!["User:admin".into()], allow_everyone_if_no_acl_found: false }
    }

    use Operation::*;
    use PatternType::*;
    use Permission::*;
    use ResourceType::*;

    #[test]
    fn implications_as_kafka() {
        let set = AclSet::from_bindings([
            binding(Topic, Literal, "t", "User:alice", Write, Allow),
            binding(Topic, Literal, "c", "User:alice", AlterConfigs, Allow),
        ]);
        let p = policy();
        assert!(set.authorize(&p, "User:alice", "1.2.3.4", Write, Topic, "t"));
        assert!(set.authorize(&p, "User:alice", "1.2.3.4", Describe, Topic, "t"), "WRITE implies DESCRIBE");
        assert!(!set.authorize(&p, "User:alice", "1.2.3.4", Read, Topic, "t"));
        assert!(set.authorize(&p, "User:alice", "h", DescribeConfigs, Topic, "c"), "ALTER_CONFIGS implies DESCRIBE_CONFIGS");
        assert!(!set.authorize(&p, "User:alice", "h", Describe, Topic, "c"));
        assert!(!set.authorize(&p, "User:bob", "h", Write, Topic, "t"));
        assert!(set.authorize(&p, "User:admin", "h", Write, Topic, "t"), "super user");
    }

    #[test]
    fn deny_wins_and_deny_does_not_imply() {
        let set = AclSet::from_bindings([
            binding(Topic, Literal, "*", "User:*", All, Allow),
            binding(Topic, Prefixed, "secret-", "User:bob", Read, Deny),
        ]);
        let p = policy();
        assert!(set.authorize(&p, "User:bob", "h", Read, Topic, "public"));
        assert!(!set.authorize(&p, "User:bob", "h", Read, Topic, "secret-x"));
        assert!(set.authorize(&p, "User:bob", "h", Describe, Topic, "secret-x"), "DENY READ does not deny DESCRIBE");
        assert!(set.authorize(&p, "User:alice", "h", Read, Topic, "secret-x"));
    }

    #[test]
    fn no_acl_found_and_hosts() {
        let set = AclSet::from_bindings([AclBinding {
            pattern: ResourcePattern { resource_type: Group, pattern_type: Literal, name: "g".into() },
            entry: Entry { principal: "User:alice".into(), host: "10.0.0.1".into(), operation: Read, permission: Allow },
        }]);
        let mut p = policy();
        assert!(!set.authorize(&p, "User:alice", "10.0.0.2", Read, Group, "g"));
        assert!(set.authorize(&p, "User:alice", "10.0.0.1", Read, Group, "g"));
        assert!(!set.authorize(&p, "User:alice", "h", Read, Group, "other"));
        p.allow_everyone_if_no_acl_found = true;
        assert!(set.authorize(&p, "User:alice", "h", Read, Group, "other"));
        assert!(!set.authorize(&p, "User:bob", "10.0.0.1", Read, Group, "g"), "an ACL exists on g: bob is not in it");
    }

    #[test]
    fn filters_as_kafka() {
        let prefixed = binding(Topic, Prefixed, "app-", "User:alice", Read, Allow);
        let literal = binding(Topic, Literal, "app-1", "User:alice", Write, Allow);
        let wildcard = binding(Topic, Literal, "*", "User:bob", Read, Allow);
        let filter = |pattern_type, name: Option<&str>| AclFilter {
            resource_type: Topic,
            pattern_type,
            name: name.map(str::to_string),
            principal: None,
            host: None,
            operation: Operation::Any,
            permission: Permission::Any,
        };
        let m = filter(Match, Some("app-1"));
        assert!(m.matches(&prefixed) && m.matches(&literal) && m.matches(&wildcard));
        let l = filter(Literal, Some("app-1"));
        assert!(!l.matches(&prefixed) && l.matches(&literal) && !l.matches(&wildcard));
        let a = filter(PatternType::Any, Some("app-"));
        assert!(a.matches(&prefixed) && !a.matches(&literal));
        let set = AclSet::from_bindings([prefixed.clone(), literal.clone(), wildcard.clone()]);
        assert_eq!(set.matching(&filter(Prefixed, None)), vec![prefixed]);
        assert_eq!(set.len(), 3);
    }

    #[test]
    fn validation() {
        assert!(binding(Cluster, Literal, "x", "User:a", Alter, Allow).validate().is_err());
        assert!(binding(Cluster, Literal, CLUSTER_NAME, "User:a", Alter, Allow).validate().is_ok());
        assert!(binding(Topic, Match, "t", "User:a", Read, Allow).validate().is_err());
        assert!(binding(Topic, Literal, "t", "alice", Read, Allow).validate().is_err());
        assert!(binding(Topic, Literal, "", "User:a", Read, Allow).validate().is_err());
        assert_eq!(operations_bits([Read, Describe]), (1 << 3) | (1 << 8));
    }
}
