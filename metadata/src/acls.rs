//! ACL bindings, one key each under `acls/`: the key spells the whole
//! binding, so creating one twice stores it once (as Kafka's CreateAcls is
//! idempotent), and every broker watches the prefix.

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

/// Escapes a free-text key part (`%` and `/`).
fn part(s: &str) -> String {
    s.replace('%', "%25").replace('/', "%2F")
}

impl MetadataStore {
    pub fn acls_prefix(&self) -> String {
        format!("{}acls/", self.root)
    }

    fn acl_key(&self, acl: &AclRecord) -> String {
        format!(
            "{}{}/{}/{}/{}/{}/{}/{}",
            self.acls_prefix(),
            acl.resource_type,
            acl.pattern_type,
            part(&acl.resource_name),
            part(&acl.principal),
            part(&acl.host),
            acl.operation,
            acl.permission
        )
    }

    pub async fn list_acls(&self) -> Result<Vec<AclRecord>, MetadataError> {
        self.kv
            .get_prefix(&self.acls_prefix())
            .await?
            .iter()
            .map(decode)
            .collect()
    }

    /// Stores bindings (those that exist stay as they are).
    pub async fn create_acls(&self, acls: &[AclRecord]) -> Result<(), MetadataError> {
        for chunk in acls.chunks(crate::MAX_TXN_OPS) {
            let writes = chunk
                .iter()
                .map(|a| Write::Put(self.acl_key(a), encode(a)))
                .collect();
            self.kv.txn(Vec::new(), writes).await?;
        }
        Ok(())
    }

    pub async fn delete_acls(&self, acls: &[AclRecord]) -> Result<(), MetadataError> {
        for chunk in acls.chunks(crate::MAX_TXN_OPS) {
            let writes = chunk
                .iter()
                .map(|a| Write::Delete(self.acl_key(a)))
                .collect();
            self.kv.txn(Vec::new(), writes).await?;
        }
        Ok(())
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
}
