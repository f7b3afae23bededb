//! ACL bindings, one key each under `acls/`: the key spells the whole
//! binding, so creating one twice stores it once (as Kafka's CreateAcls is
//! idempotent), and every broker watches the prefix.
//!
//! A binding the operator created for a KafscaleUser also has a mark under
//! `acl-owners/` with the same key suffix, naming that resource. The mark
//! lives outside `acls/` so the records brokers watch and decode are the
//! same whoever wrote them. The operator removes only bindings it marked;
//! CreateAcls and DeleteAcls (an administrator) clear the mark, so a binding
//! an administrator created or re-created is never the operator's to remove.

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::{decode, encode, MetadataError, MetadataStore, WatchEvent, Write};

// Kafka's ACL vocabulary with its protocol codes, shared by the broker's
// authorizer and the operator's KafscaleUser.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    Topic,
    Group,
    Cluster,
    TransactionalId,
}

impl ResourceType {
    pub fn code(self) -> i8 {
        match self {
            ResourceType::Topic => 2,
            ResourceType::Group => 3,
            ResourceType::Cluster => 4,
            ResourceType::TransactionalId => 5,
        }
    }

    pub fn from_code(code: i8) -> Option<Self> {
        [
            ResourceType::Topic,
            ResourceType::Group,
            ResourceType::Cluster,
            ResourceType::TransactionalId,
        ]
        .into_iter()
        .find(|t| t.code() == code)
    }
}

/// The one name of the cluster resource.
pub const CLUSTER_NAME: &str = "kafka-cluster";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
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
}

impl Operation {
    const ALL_OPS: [Operation; 11] = [
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
    ];

    pub fn code(self) -> i8 {
        match self {
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
        }
    }

    pub fn from_code(code: i8) -> Option<Self> {
        Self::ALL_OPS.into_iter().find(|o| o.code() == code)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PatternType {
    Literal,
    Prefixed,
}

impl PatternType {
    pub fn code(self) -> i8 {
        match self {
            PatternType::Literal => 3,
            PatternType::Prefixed => 4,
        }
    }

    pub fn from_code(code: i8) -> Option<Self> {
        match code {
            3 => Some(PatternType::Literal),
            4 => Some(PatternType::Prefixed),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    Deny,
    Allow,
}

impl Permission {
    pub fn code(self) -> i8 {
        match self {
            Permission::Deny => 2,
            Permission::Allow => 3,
        }
    }

    pub fn from_code(code: i8) -> Option<Self> {
        match code {
            2 => Some(Permission::Deny),
            3 => Some(Permission::Allow),
            _ => None,
        }
    }
}

/// An ACL binding with Kafka's numeric codes (resource type, pattern type,
/// operation, permission type), as the Kafka protocol carries them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AclRecord {
    pub resource_type: i8,
    pub resource_name: String,
    pub pattern_type: i8,
    /// `User:name`, or `User:*`.
    pub principal: String,
    /// A client address, or `*`.
    pub host: String,
    pub operation: i8,
    pub permission: i8,
}

/// The Kubernetes resource that created a binding or a credential in etcd
/// (the value of its ownership mark).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Owner {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

/// An ownership mark as read: whom it names, and the revision it was
/// written at (a removal is conditioned on it, so a mark that changed or
/// went since it was read protects its binding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerMark {
    pub owner: Owner,
    pub revision: i64,
}

/// A stored binding and its ownership mark, if the operator created it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAcl {
    pub acl: AclRecord,
    pub mark: Option<OwnerMark>,
}

/// Escapes a free-text key part (`%` and `/`).
fn part(s: &str) -> String {
    s.replace('%', "%25").replace('/', "%2F")
}

/// The part of a binding's key after the prefix; its mark uses the same.
fn acl_suffix(acl: &AclRecord) -> String {
    format!(
        "{}/{}/{}/{}/{}/{}/{}",
        acl.resource_type,
        acl.pattern_type,
        part(&acl.resource_name),
        part(&acl.principal),
        part(&acl.host),
        acl.operation,
        acl.permission
    )
}

impl MetadataStore {
    pub fn acls_prefix(&self) -> String {
        format!("{}acls/", self.root)
    }

    /// Ownership marks; deliberately not under `acls/` (brokers decode
    /// every key there as a binding).
    fn acl_owners_prefix(&self) -> String {
        format!("{}acl-owners/", self.root)
    }

    fn acl_key(&self, acl: &AclRecord) -> String {
        format!("{}{}", self.acls_prefix(), acl_suffix(acl))
    }

    fn acl_owner_key(&self, acl: &AclRecord) -> String {
        format!("{}{}", self.acl_owners_prefix(), acl_suffix(acl))
    }

    pub async fn list_acls(&self) -> Result<Vec<AclRecord>, MetadataError> {
        self.kv
            .get_prefix(&self.acls_prefix())
            .await?
            .iter()
            .map(decode)
            .collect()
    }

    /// Every binding with its ownership mark. Marks whose binding is gone
    /// are left out (they name nothing; writes clear or replace them).
    pub async fn list_acls_with_owners(&self) -> Result<Vec<StoredAcl>, MetadataError> {
        let owners_prefix = self.acl_owners_prefix();
        let mut marks = std::collections::HashMap::new();
        for kv in self.kv.get_prefix(&owners_prefix).await? {
            let owner: Owner = decode(&kv)?;
            if let Some(suffix) = kv.key.strip_prefix(&owners_prefix) {
                marks.insert(
                    suffix.to_string(),
                    OwnerMark {
                        owner,
                        revision: kv.mod_revision,
                    },
                );
            }
        }
        self.list_acls()
            .await?
            .into_iter()
            .map(|acl| {
                let mark = marks.remove(&acl_suffix(&acl));
                Ok(StoredAcl { acl, mark })
            })
            .collect()
    }

    /// Stores bindings for an administrator (CreateAcls): those that exist
    /// stay, and every one of them is the administrator's from now on (its
    /// ownership mark, if any, goes in the same transaction).
    pub async fn create_acls(&self, acls: &[AclRecord]) -> Result<(), MetadataError> {
        for chunk in acls.chunks(crate::MAX_TXN_OPS / 2) {
            let writes = chunk
                .iter()
                .flat_map(|a| {
                    [
                        Write::Put(self.acl_key(a), encode(a)),
                        Write::Delete(self.acl_owner_key(a)),
                    ]
                })
                .collect();
            self.kv.txn(Vec::new(), writes).await?;
        }
        Ok(())
    }

    /// Removes bindings and their ownership marks.
    pub async fn delete_acls(&self, acls: &[AclRecord]) -> Result<(), MetadataError> {
        for chunk in acls.chunks(crate::MAX_TXN_OPS / 2) {
            let writes = chunk
                .iter()
                .flat_map(|a| {
                    [
                        Write::Delete(self.acl_key(a)),
                        Write::Delete(self.acl_owner_key(a)),
                    ]
                })
                .collect();
            self.kv.txn(Vec::new(), writes).await?;
        }
        Ok(())
    }

    /// Stores `acl` marked as `owner`'s, only if no such binding exists
    /// (one that does belongs to whoever made it and stays unmarked). True
    /// when it was stored.
    pub async fn create_owned_acl(
        &self,
        acl: &AclRecord,
        owner: &Owner,
    ) -> Result<bool, MetadataError> {
        let key = self.acl_key(acl);
        self.kv
            .txn(
                vec![crate::Compare::Absent(key.clone())],
                vec![
                    Write::Put(key, encode(acl)),
                    Write::Put(self.acl_owner_key(acl), encode(owner)),
                ],
            )
            .await
    }

    /// Removes `acl` and its mark if the mark is still the one read at
    /// `mark_revision`; false (nothing removed) when it changed or went, as
    /// when an administrator re-created the binding in the meantime.
    pub async fn delete_owned_acl(
        &self,
        acl: &AclRecord,
        mark_revision: i64,
    ) -> Result<bool, MetadataError> {
        let mark = self.acl_owner_key(acl);
        self.kv
            .txn(
                vec![crate::Compare::ModRevision(mark.clone(), mark_revision)],
                vec![Write::Delete(self.acl_key(acl)), Write::Delete(mark)],
            )
            .await
    }

    /// Changes under `acls/`, from now on; on [`WatchEvent::Resync`] re-read
    /// with [`MetadataStore::list_acls`].
    pub fn watch_acls(&self) -> broadcast::Receiver<WatchEvent> {
        self.kv.watch(&self.acls_prefix())
    }

    /// The binding a watched key holds.
    pub fn parse_acl(&self, kv: &crate::KeyValue) -> Result<AclRecord, MetadataError> {
        decode(kv)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::FileKv;

    fn acl(name: &str, principal: &str) -> AclRecord {
        AclRecord {
            resource_type: 2,
            resource_name: name.into(),
            pattern_type: 3,
            principal: principal.into(),
            host: "*".into(),
            operation: 4,
            permission: 3,
        }
    }

    #[tokio::test]
    async fn bindings_are_stored_once_and_deleted_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetadataStore::new(
            Arc::new(FileKv::open(dir.path().join("m.json")).unwrap()),
            "c",
        );
        let a = acl("orders/eu", "User:alice");
        let b = acl("orders", "User:bob/ops");
        store.create_acls(&[a.clone(), b.clone()]).await.unwrap();
        store.create_acls(std::slice::from_ref(&a)).await.unwrap();
        let mut listed = store.list_acls().await.unwrap();
        listed.sort();
        let mut expected = vec![a.clone(), b.clone()];
        expected.sort();
        assert_eq!(listed, expected);
        store.delete_acls(&[a]).await.unwrap();
        assert_eq!(store.list_acls().await.unwrap(), vec![b]);
    }

    fn owner(name: &str) -> Owner {
        Owner {
            kind: "KafscaleUser".into(),
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    fn mark_of(stored: &[StoredAcl], acl: &AclRecord) -> Option<OwnerMark> {
        stored
            .iter()
            .find(|s| &s.acl == acl)
            .and_then(|s| s.mark.clone())
    }

    #[tokio::test]
    async fn the_operator_marks_only_bindings_it_created_and_administrators_take_them_over() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetadataStore::new(
            Arc::new(FileKv::open(dir.path().join("m.json")).unwrap()),
            "c",
        );
        let mine = acl("orders", "User:alice");
        let admins = AclRecord {
            permission: Permission::Deny.code(),
            ..acl("orders", "User:alice")
        };
        store
            .create_acls(std::slice::from_ref(&admins))
            .await
            .unwrap();
        assert!(store
            .create_owned_acl(&mine, &owner("alice"))
            .await
            .unwrap());
        // A binding an administrator made first stays theirs, unmarked.
        assert!(!store
            .create_owned_acl(&admins, &owner("alice"))
            .await
            .unwrap());
        // Brokers see the same records as before marks existed: exactly
        // the two bindings, nothing from the marks.
        let mut listed = store.list_acls().await.unwrap();
        listed.sort();
        let mut expected = vec![admins.clone(), mine.clone()];
        expected.sort();
        assert_eq!(listed, expected);
        let stored = store.list_acls_with_owners().await.unwrap();
        assert_eq!(mark_of(&stored, &admins), None);
        let mark = mark_of(&stored, &mine).unwrap();
        assert_eq!(mark.owner, owner("alice"));

        // A removal against a mark that changed since it was read removes
        // nothing; against the current one it removes binding and mark.
        assert!(!store
            .delete_owned_acl(&mine, mark.revision + 1000)
            .await
            .unwrap());
        assert!(store.delete_owned_acl(&mine, mark.revision).await.unwrap());
        assert_eq!(store.list_acls().await.unwrap(), vec![admins.clone()]);

        // An administrator re-creating an operator's binding makes it
        // theirs; the operator's old mark no longer removes it.
        assert!(store
            .create_owned_acl(&mine, &owner("alice"))
            .await
            .unwrap());
        let old = mark_of(&store.list_acls_with_owners().await.unwrap(), &mine).unwrap();
        store
            .create_acls(std::slice::from_ref(&mine))
            .await
            .unwrap();
        assert_eq!(
            mark_of(&store.list_acls_with_owners().await.unwrap(), &mine),
            None
        );
        assert!(!store.delete_owned_acl(&mine, old.revision).await.unwrap());
        assert_eq!(store.list_acls().await.unwrap().len(), 2);

        // DeleteAcls takes the mark with the binding: the same binding made
        // again by an administrator is not the operator's.
        store
            .delete_acls(std::slice::from_ref(&mine))
            .await
            .unwrap();
        assert!(store
            .create_owned_acl(&mine, &owner("alice"))
            .await
            .unwrap());
        store
            .delete_acls(std::slice::from_ref(&mine))
            .await
            .unwrap();
        store
            .create_acls(std::slice::from_ref(&mine))
            .await
            .unwrap();
        assert_eq!(
            mark_of(&store.list_acls_with_owners().await.unwrap(), &mine),
            None
        );
    }
}
