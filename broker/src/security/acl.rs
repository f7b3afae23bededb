//! Kafka's ACL authorizer: bindings of (resource pattern, principal, host,
//! operation, allow/deny), decided as Kafka's `StandardAuthorizer` does:
//!
//! - super users may do everything;
//! - a resource no binding matches is open only with
//!   `--allow-everyone-if-no-acl-found`;
//! - a matching DENY wins over any ALLOW;
//! - ALLOW of READ, WRITE, DELETE or ALTER implies DESCRIBE, and ALLOW of
//!   ALTER_CONFIGS implies DESCRIBE_CONFIGS; ALL matches every operation.
//!
//! Decisions are pure and synchronous over an in-memory index that the
//! broker keeps in step with `acls/` in etcd (`acl_sync` in the broker).

use std::collections::HashMap;

pub use kafscale_metadata::acls::{Operation, PatternType, Permission, ResourceType, CLUSTER_NAME};
use kafscale_metadata::AclRecord;

use super::Principal;

/// The operations whose ALLOW grants `operation`.
fn granted_by(operation: Operation) -> &'static [Operation] {
    match operation {
        Operation::Describe => &[
            Operation::Describe,
            Operation::Read,
            Operation::Write,
            Operation::Delete,
            Operation::Alter,
        ],
        Operation::DescribeConfigs => &[Operation::DescribeConfigs, Operation::AlterConfigs],
        Operation::Read => &[Operation::Read],
        Operation::Write => &[Operation::Write],
        Operation::Create => &[Operation::Create],
        Operation::Delete => &[Operation::Delete],
        Operation::Alter => &[Operation::Alter],
        Operation::ClusterAction => &[Operation::ClusterAction],
        Operation::AlterConfigs => &[Operation::AlterConfigs],
        Operation::IdempotentWrite => &[Operation::IdempotentWrite],
        Operation::All => &[Operation::All],
    }
}

/// One binding, validated.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Acl {
    pub resource_type: ResourceType,
    pub resource_name: String,
    pub pattern_type: PatternType,
    pub principal: String,
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

/// The longest resource name, principal or host a binding may have.
pub const MAX_ACL_FIELD: usize = 1024;

/// Why a binding cannot be stored, as Kafka's CreateAcls says it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidAcl {
    #[error("resource type {0} cannot have ACLs (use TOPIC, GROUP, CLUSTER or TRANSACTIONAL_ID)")]
    ResourceType(i8),
    #[error("pattern type {0} cannot be stored (use LITERAL or PREFIXED)")]
    PatternType(i8),
    #[error("operation {0} cannot be granted or denied")]
    Operation(i8),
    #[error("permission type {0} is neither ALLOW nor DENY")]
    Permission(i8),
    #[error("principal '{0}' is not TYPE:NAME with type User (e.g. User:alice, User:*)")]
    Principal(String),
    #[error("the resource name is empty")]
    EmptyName,
    #[error("{0} is longer than {MAX_ACL_FIELD} bytes")]
    TooLong(&'static str),
    #[error("a CLUSTER resource is named '{CLUSTER_NAME}'")]
    ClusterName,
    #[error("'*' is a LITERAL name; a PREFIXED '*' would match only names starting with '*'")]
    PrefixedWildcard,
}

impl Acl {
    pub fn from_parts(
        resource_type: i8,
        resource_name: &str,
        pattern_type: i8,
        principal: &str,
        host: &str,
        operation: i8,
        permission: i8,
    ) -> Result<Self, InvalidAcl> {
        let resource_type = ResourceType::from_code(resource_type)
            .ok_or(InvalidAcl::ResourceType(resource_type))?;
        let pattern =
            PatternType::from_code(pattern_type).ok_or(InvalidAcl::PatternType(pattern_type))?;
        let operation = Operation::from_code(operation).ok_or(InvalidAcl::Operation(operation))?;
        let permission =
            Permission::from_code(permission).ok_or(InvalidAcl::Permission(permission))?;
        match principal.split_once(':') {
            Some((Principal::TYPE, name)) if !name.is_empty() => {}
            _ => return Err(InvalidAcl::Principal(principal.to_string())),
        }
        if resource_name.is_empty() {
            return Err(InvalidAcl::EmptyName);
        }
        // Every field is part of the binding's etcd key.
        for (what, value) in [
            ("the resource name", resource_name),
            ("the principal", principal),
            ("the host", host),
        ] {
            if value.len() > MAX_ACL_FIELD {
                return Err(InvalidAcl::TooLong(what));
            }
        }
        if resource_type == ResourceType::Cluster && resource_name != CLUSTER_NAME {
            return Err(InvalidAcl::ClusterName);
        }
        if pattern == PatternType::Prefixed && resource_name == "*" {
            return Err(InvalidAcl::PrefixedWildcard);
        }
        Ok(Self {
            resource_type,
            resource_name: resource_name.to_string(),
            pattern_type: pattern,
            principal: principal.to_string(),
            host: if host.is_empty() {
                "*".into()
            } else {
                host.to_string()
            },
            operation,
            permission,
        })
    }

    pub fn from_record(r: &AclRecord) -> Result<Self, InvalidAcl> {
        Self::from_parts(
            r.resource_type,
            &r.resource_name,
            r.pattern_type,
            &r.principal,
            &r.host,
            r.operation,
            r.permission,
        )
    }

    pub fn to_record(&self) -> AclRecord {
        AclRecord {
            resource_type: self.resource_type.code(),
            resource_name: self.resource_name.clone(),
            pattern_type: self.pattern_type.code(),
            principal: self.principal.clone(),
            host: self.host.clone(),
            operation: self.operation.code(),
            permission: self.permission.code(),
        }
    }

    fn applies_to(&self, principal: &Principal, host: &str) -> bool {
        names(&self.principal, principal) && (self.host == "*" || same_host(&self.host, host))
    }
}

/// Whether a binding's host names the client's address. Addresses compare
/// as addresses, not strings: an IPv4 client on a dual-stack listener shows
/// up as `::ffff:10.0.0.1`, and `0:0::1` is `::1`; a DENY for `10.0.0.1`
/// must hold for both spellings.
fn same_host(written: &str, client: &str) -> bool {
    let canonical = |h: &str| {
        h.trim_start_matches('/')
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| ip.to_canonical())
    };
    match (canonical(written), canonical(client)) {
        (Some(a), Some(b)) => a == b,
        _ => written == client,
    }
}

/// Whether `written` (`User:alice`, `User:*`) names `principal`.
fn names(written: &str, principal: &Principal) -> bool {
    match written
        .strip_prefix(Principal::TYPE)
        .and_then(|r| r.strip_prefix(':'))
    {
        Some("*") => true,
        Some(name) => name == principal.name,
        None => false,
    }
}

/// A DescribeAcls or DeleteAcls filter, with Kafka's codes: ANY (1) matches
/// everything of its field, MATCH (2, pattern type) matches every pattern
/// that would apply to the named resource.
#[derive(Debug, Clone, Default)]
pub struct AclFilter {
    pub resource_type: i8,
    pub resource_name: Option<String>,
    pub pattern_type: i8,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: i8,
    pub permission: i8,
}

const ANY: i8 = 1;
const MATCH: i8 = 2;

impl AclFilter {
    /// A filter from the fields DescribeAcls and DeleteAcls carry.
    pub fn from_wire(
        resource_type: i8,
        resource_name: Option<&str>,
        pattern_type: i8,
        principal: Option<&str>,
        host: Option<&str>,
        operation: i8,
        permission: i8,
    ) -> Self {
        Self {
            resource_type,
            resource_name: resource_name.map(String::from),
            pattern_type,
            principal: principal.map(String::from),
            host: host.map(String::from),
            operation,
            permission,
        }
    }

    pub fn matches(&self, acl: &Acl) -> bool {
        let name_matches = match (&self.resource_name, self.pattern_type) {
            (None, _) => {
                self.pattern_type == ANY
                    || self.pattern_type == MATCH
                    || self.pattern_type == acl.pattern_type.code()
            }
            (Some(name), MATCH) => match acl.pattern_type {
                PatternType::Literal => acl.resource_name == *name || acl.resource_name == "*",
                PatternType::Prefixed => name.starts_with(&acl.resource_name),
            },
            (Some(name), ANY) => acl.resource_name == *name,
            (Some(name), code) => code == acl.pattern_type.code() && acl.resource_name == *name,
        };
        name_matches
            && (self.resource_type == ANY || self.resource_type == acl.resource_type.code())
            && self.principal.as_ref().is_none_or(|p| *p == acl.principal)
            && self.host.as_ref().is_none_or(|h| *h == acl.host)
            && (self.operation == ANY || self.operation == acl.operation.code())
            && (self.permission == ANY || self.permission == acl.permission.code())
    }
}

/// Kafka's `super.users` and `allow.everyone.if.no.acl.found`.
#[derive(Debug, Clone, Default)]
pub struct AuthorizerSettings {
    pub super_users: Vec<String>,
    pub allow_everyone_if_no_acl_found: bool,
}

impl AuthorizerSettings {
    /// `User:*` in `--super-users` would make everyone one; it names nobody.
    fn is_super_user(&self, principal: &Principal) -> bool {
        self.super_users
            .iter()
            .any(|s| s != "User:*" && names(s, principal))
    }
}

/// The bindings, indexed for decisions: literal names by type and name, the
/// prefixed ones by type.
#[derive(Debug, Default)]
pub struct AclIndex {
    literal: HashMap<ResourceType, HashMap<String, Vec<Acl>>>,
    prefixed: HashMap<ResourceType, Vec<Acl>>,
    count: usize,
}

impl AclIndex {
    pub fn new(acls: impl IntoIterator<Item = Acl>) -> Self {
        let mut index = Self::default();
        for acl in acls {
            index.insert(acl);
        }
        index
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn insert(&mut self, acl: Acl) {
        let list = match acl.pattern_type {
            PatternType::Literal => self
                .literal
                .entry(acl.resource_type)
                .or_default()
                .entry(acl.resource_name.clone())
                .or_default(),
            PatternType::Prefixed => self.prefixed.entry(acl.resource_type).or_default(),
        };
        if !list.contains(&acl) {
            list.push(acl);
            self.count += 1;
        }
    }

    pub fn remove(&mut self, acl: &Acl) {
        let list = match acl.pattern_type {
            PatternType::Literal => self
                .literal
                .get_mut(&acl.resource_type)
                .and_then(|m| m.get_mut(&acl.resource_name)),
            PatternType::Prefixed => self.prefixed.get_mut(&acl.resource_type),
        };
        if let Some(list) = list {
            let before = list.len();
            list.retain(|a| a != acl);
            self.count -= before - list.len();
        }
    }

    pub fn all(&self) -> impl Iterator<Item = &Acl> {
        self.literal
            .values()
            .flat_map(|m| m.values().flatten())
            .chain(self.prefixed.values().flatten())
    }

    /// Every binding whose pattern covers the resource.
    fn matching<'a>(
        &'a self,
        resource: ResourceType,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Acl> {
        let literal = self.literal.get(&resource);
        let exact = literal.and_then(|m| m.get(name)).into_iter().flatten();
        let wildcard = literal.and_then(|m| m.get("*")).into_iter().flatten();
        let prefixed = self
            .prefixed
            .get(&resource)
            .into_iter()
            .flatten()
            .filter(move |a| name.starts_with(&a.resource_name));
        exact.chain(wildcard).chain(prefixed)
    }

    /// Whether `principal` from `host` may perform `operation` on the resource.
    pub fn authorize(
        &self,
        settings: &AuthorizerSettings,
        principal: &Principal,
        host: &str,
        operation: Operation,
        resource: ResourceType,
        name: &str,
    ) -> bool {
        if settings.is_super_user(principal) {
            return true;
        }
        let mut any = false;
        let mut allowed = false;
        for acl in self.matching(resource, name) {
            any = true;
            if !acl.applies_to(principal, host) {
                continue;
            }
            match acl.permission {
                // Only the operation itself (or ALL) can be denied.
                Permission::Deny
                    if acl.operation == operation || acl.operation == Operation::All =>
                {
                    return false
                }
                Permission::Deny => {}
                Permission::Allow => {
                    allowed |= acl.operation == Operation::All
                        || granted_by(operation).contains(&acl.operation)
                }
            }
        }
        allowed || (!any && settings.allow_everyone_if_no_acl_found)
    }
}

impl AclIndex {
    /// Kafka's `authorizeByResourceType`: whether the principal may perform
    /// `operation` on some resource of the type (an idempotent producer
    /// needs WRITE on any topic). A DENY on every name (`*`) rules it out.
    pub fn authorize_any(
        &self,
        settings: &AuthorizerSettings,
        principal: &Principal,
        host: &str,
        operation: Operation,
        resource: ResourceType,
    ) -> bool {
        if settings.is_super_user(principal) {
            return true;
        }
        let of_type: Vec<&Acl> = self
            .literal
            .get(&resource)
            .into_iter()
            .flat_map(|m| m.values().flatten())
            .chain(self.prefixed.get(&resource).into_iter().flatten())
            .collect();
        if of_type.is_empty() {
            return settings.allow_everyone_if_no_acl_found;
        }
        let applies = |a: &&&Acl| {
            a.applies_to(principal, host)
                && (a.operation == operation || a.operation == Operation::All)
        };
        let (denies, allows): (Vec<&Acl>, Vec<&Acl>) = of_type
            .iter()
            .filter(applies)
            .copied()
            .partition(|a| a.permission == Permission::Deny);
        // As Kafka's authorizeByResourceType: an ALLOW counts only if no
        // DENY covers every name it allows (the same literal name, a prefix
        // of it, or all names).
        let denied = |name: &str, pattern: PatternType| {
            denies.iter().any(|d| match d.pattern_type {
                PatternType::Literal => {
                    d.resource_name == "*"
                        || (pattern == PatternType::Literal && d.resource_name == name)
                }
                PatternType::Prefixed => name.starts_with(&d.resource_name),
            })
        };
        allows
            .iter()
            .any(|a| !denied(&a.resource_name, a.pattern_type))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(
        rt: ResourceType,
        name: &str,
        pattern: PatternType,
        principal: &str,
        op: Operation,
        perm: Permission,
    ) -> Acl {
        Acl {
            resource_type: rt,
            resource_name: name.into(),
            pattern_type: pattern,
            principal: principal.into(),
            host: "*".into(),
            operation: op,
            permission: perm,
        }
    }

    fn user(written: &str) -> Principal {
        Principal {
            name: written.strip_prefix("User:").unwrap().into(),
        }
    }

    use Operation as O;
    use PatternType as P;
    use Permission as A;
    use ResourceType as R;

    #[test]
    fn kafkas_rules_for_allow_deny_implication_and_patterns() {
        let index = AclIndex::new([
            acl(
                R::Topic,
                "orders",
                P::Literal,
                "User:alice",
                O::Write,
                A::Allow,
            ),
            acl(
                R::Topic,
                "orders.",
                P::Prefixed,
                "User:bob",
                O::Read,
                A::Allow,
            ),
            acl(
                R::Topic,
                "orders.secret",
                P::Literal,
                "User:bob",
                O::Read,
                A::Deny,
            ),
            acl(R::Topic, "*", P::Literal, "User:*", O::Describe, A::Allow),
            acl(R::Group, "app-", P::Prefixed, "User:bob", O::All, A::Allow),
            acl(R::Topic, "audit", P::Literal, "User:*", O::All, A::Deny),
            acl(
                R::Topic,
                "audit",
                P::Literal,
                "User:carol",
                O::Read,
                A::Allow,
            ),
        ]);
        let settings = AuthorizerSettings::default();
        let can = |p: &str, op, rt, name: &str| {
            index.authorize(&settings, &user(p), "10.0.0.1", op, rt, name)
        };
        assert!(can("User:alice", O::Write, R::Topic, "orders"));
        assert!(!can("User:alice", O::Read, R::Topic, "orders"));
        // WRITE implies DESCRIBE; the wildcard grants it to everyone anyway.
        assert!(can("User:alice", O::Describe, R::Topic, "orders"));
        assert!(can("User:bob", O::Read, R::Topic, "orders.eu"));
        assert!(
            !can("User:bob", O::Read, R::Topic, "orders.secret"),
            "deny wins"
        );
        assert!(
            can("User:bob", O::Describe, R::Topic, "orders.secret"),
            "a READ deny does not deny DESCRIBE"
        );
        assert!(!can("User:bob", O::Read, R::Topic, "ordersX"));
        assert!(can("User:bob", O::Read, R::Group, "app-1"));
        assert!(!can("User:alice", O::Read, R::Group, "app-1"));
        assert!(
            !can("User:carol", O::Read, R::Topic, "audit"),
            "a DENY ALL for everyone wins"
        );
        // No binding matches a group 'other': closed unless configured open.
        assert!(!can("User:alice", O::Read, R::Group, "other"));
        let open = AuthorizerSettings {
            allow_everyone_if_no_acl_found: true,
            ..AuthorizerSettings::default()
        };
        assert!(index.authorize(&open, &user("User:alice"), "h", O::Read, R::Group, "other"));
        assert!(
            !index.authorize(&open, &user("User:alice"), "h", O::Read, R::Group, "app-1"),
            "bindings exist for it"
        );
        let supers = AuthorizerSettings {
            super_users: vec!["User:root".into()],
            ..AuthorizerSettings::default()
        };
        assert!(index.authorize(&supers, &user("User:root"), "h", O::Read, R::Topic, "audit"));
    }

    #[test]
    fn write_on_some_topic_is_enough_for_an_idempotent_producer() {
        let index = AclIndex::new([
            acl(
                R::Topic,
                "orders",
                P::Literal,
                "User:alice",
                O::Write,
                A::Allow,
            ),
            acl(R::Topic, "*", P::Literal, "User:mallory", O::All, A::Deny),
            acl(
                R::Topic,
                "x",
                P::Literal,
                "User:mallory",
                O::Write,
                A::Allow,
            ),
        ]);
        let s = AuthorizerSettings::default();
        assert!(index.authorize_any(&s, &user("User:alice"), "h", O::Write, R::Topic));
        assert!(!index.authorize_any(&s, &user("User:bob"), "h", O::Write, R::Topic));
        assert!(!index.authorize_any(&s, &user("User:mallory"), "h", O::Write, R::Topic));
    }

    #[test]
    fn a_deny_cancels_the_allow_it_covers_for_any_resource() {
        let rules = |bindings: Vec<Acl>| {
            AclIndex::new(bindings).authorize_any(
                &AuthorizerSettings::default(),
                &user("User:eve"),
                "h",
                O::Write,
                R::Topic,
            )
        };
        let allow = |name, p| acl(R::Topic, name, p, "User:eve", O::Write, A::Allow);
        let deny = |name, p| acl(R::Topic, name, p, "User:eve", O::Write, A::Deny);
        // The only ALLOW is cancelled by a DENY of the same name or a prefix.
        assert!(!rules(vec![allow("t", P::Literal), deny("t", P::Literal)]));
        assert!(!rules(vec![
            allow("team-a", P::Literal),
            deny("team", P::Prefixed)
        ]));
        assert!(!rules(vec![
            allow("team-", P::Prefixed),
            deny("te", P::Prefixed)
        ]));
        // A DENY that covers only part of what is allowed leaves the rest.
        assert!(rules(vec![
            allow("team-", P::Prefixed),
            deny("team-x", P::Literal)
        ]));
        assert!(rules(vec![
            allow("t", P::Literal),
            allow("u", P::Literal),
            deny("t", P::Literal)
        ]));
        assert!(rules(vec![allow("*", P::Literal), deny("t", P::Literal)]));
    }

    #[test]
    fn hosts_compare_as_addresses() {
        let mut a = acl(R::Topic, "t", P::Literal, "User:alice", O::Read, A::Deny);
        a.host = "10.0.0.1".into();
        let mut b = acl(R::Topic, "t", P::Literal, "User:alice", O::Read, A::Allow);
        b.host = "*".into();
        let index = AclIndex::new([a, b]);
        let s = AuthorizerSettings::default();
        let may = |host| index.authorize(&s, &user("User:alice"), host, O::Read, R::Topic, "t");
        // An IPv4 client on a dual-stack listener is the same address.
        assert!(!may("10.0.0.1"));
        assert!(!may("::ffff:10.0.0.1"));
        assert!(!may("/::ffff:10.0.0.1"));
        assert!(may("10.0.0.2"));
        let mut v6 = acl(R::Topic, "t", P::Literal, "User:alice", O::Read, A::Deny);
        v6.host = "0:0::1".into();
        let everyone = acl(R::Topic, "t", P::Literal, "User:alice", O::Read, A::Allow);
        let index = AclIndex::new([v6, everyone]);
        let may = |host| index.authorize(&s, &user("User:alice"), host, O::Read, R::Topic, "t");
        assert!(!may("::1"));
        assert!(may("::2"));
    }

    #[test]
    fn hosts_narrow_a_binding() {
        let mut a = acl(R::Topic, "t", P::Literal, "User:alice", O::Read, A::Allow);
        a.host = "10.0.0.1".into();
        let index = AclIndex::new([a]);
        let s = AuthorizerSettings::default();
        assert!(index.authorize(&s, &user("User:alice"), "10.0.0.1", O::Read, R::Topic, "t"));
        assert!(!index.authorize(&s, &user("User:alice"), "10.0.0.2", O::Read, R::Topic, "t"));
    }

    #[test]
    fn filters_match_as_describe_and_delete_acls_do() {
        let lit = acl(
            R::Topic,
            "orders",
            P::Literal,
            "User:alice",
            O::Write,
            A::Allow,
        );
        let pre = acl(R::Topic, "ord", P::Prefixed, "User:bob", O::Read, A::Allow);
        let star = acl(R::Topic, "*", P::Literal, "User:bob", O::Read, A::Allow);
        let any = AclFilter {
            resource_type: 1,
            pattern_type: 1,
            operation: 1,
            permission: 1,
            ..Default::default()
        };
        assert!([&lit, &pre, &star].iter().all(|a| any.matches(a)));
        let by_match = AclFilter {
            resource_name: Some("orders".into()),
            pattern_type: MATCH,
            ..any.clone()
        };
        assert!([&lit, &pre, &star].iter().all(|a| by_match.matches(a)));
        let literal_only = AclFilter {
            resource_name: Some("orders".into()),
            pattern_type: 3,
            ..any.clone()
        };
        assert!(
            literal_only.matches(&lit)
                && !literal_only.matches(&pre)
                && !literal_only.matches(&star)
        );
        let bob = AclFilter {
            principal: Some("User:bob".into()),
            ..any.clone()
        };
        assert!(!bob.matches(&lit) && bob.matches(&pre));
        let writes = AclFilter {
            operation: O::Write.code(),
            ..any
        };
        assert!(writes.matches(&lit) && !writes.matches(&pre));
    }

    #[test]
    fn invalid_bindings_are_named() {
        assert_eq!(
            Acl::from_parts(1, "t", 3, "User:a", "*", 3, 3),
            Err(InvalidAcl::ResourceType(1))
        );
        assert_eq!(
            Acl::from_parts(2, "t", 2, "User:a", "*", 3, 3),
            Err(InvalidAcl::PatternType(2))
        );
        assert_eq!(
            Acl::from_parts(2, "t", 3, "alice", "*", 3, 3),
            Err(InvalidAcl::Principal("alice".into()))
        );
        assert_eq!(
            Acl::from_parts(2, "t", 3, "User:a", "*", 1, 3),
            Err(InvalidAcl::Operation(1))
        );
        assert_eq!(
            Acl::from_parts(2, "t", 3, "User:a", "*", 3, 1),
            Err(InvalidAcl::Permission(1))
        );
        assert_eq!(
            Acl::from_parts(4, "x", 3, "User:a", "*", 7, 3),
            Err(InvalidAcl::ClusterName)
        );
        assert_eq!(
            Acl::from_parts(2, "*", 4, "User:a", "*", 3, 3),
            Err(InvalidAcl::PrefixedWildcard)
        );
        let long = "t".repeat(MAX_ACL_FIELD + 1);
        assert_eq!(
            Acl::from_parts(2, &long, 3, "User:a", "*", 3, 3),
            Err(InvalidAcl::TooLong("the resource name"))
        );
        let ok = Acl::from_parts(4, CLUSTER_NAME, 3, "User:a", "", 7, 3).unwrap();
        assert_eq!(ok.host, "*");
        assert_eq!(Acl::from_record(&ok.to_record()).unwrap(), ok);

        let mut index = AclIndex::new([ok.clone(), ok.clone()]);
        assert_eq!(index.len(), 1);
        index.remove(&ok);
        assert!(index.is_empty());
    }
}
