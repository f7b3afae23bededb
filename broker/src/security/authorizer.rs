//! The broker's authorizer: [`super::acl`]'s decisions over the bindings in
//! etcd, kept in memory and in step with `acls/` by a watch, so that every
//! broker applies a binding moments after any broker stored it.

use crate::tasks::BackgroundTasks;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kafscale_metadata::{MetadataError, MetadataStore, WatchEvent};

use super::acl::{Acl, AclFilter, AclIndex, AuthorizerSettings, Operation, ResourceType};
use super::Principal;

pub struct Authorizer {
    /// `None`: no authorizer configured; everything is allowed and the ACL
    /// APIs answer SECURITY_DISABLED, as in Kafka.
    settings: Option<AuthorizerSettings>,
    index: RwLock<AclIndex>,
}

impl Authorizer {
    pub fn new(settings: Option<AuthorizerSettings>) -> Self {
        Self {
            settings,
            index: RwLock::new(AclIndex::default()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.settings.is_some()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, AclIndex> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, AclIndex> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `principal` from `host` may perform `operation` on the resource.
    pub fn allows(
        &self,
        principal: &Principal,
        host: &str,
        operation: Operation,
        resource: ResourceType,
        name: &str,
    ) -> bool {
        match &self.settings {
            None => true,
            Some(settings) => self
                .read()
                .authorize(settings, principal, host, operation, resource, name),
        }
    }

    /// Whether the principal may `operation` some resource of the type.
    pub fn allows_any(
        &self,
        principal: &Principal,
        host: &str,
        operation: Operation,
        resource: ResourceType,
    ) -> bool {
        match &self.settings {
            None => true,
            Some(settings) => self
                .read()
                .authorize_any(settings, principal, host, operation, resource),
        }
    }

    /// The bindings `filter` matches.
    pub fn matching(&self, filter: &AclFilter) -> Vec<Acl> {
        let mut out: Vec<Acl> = self
            .read()
            .all()
            .filter(|a| filter.matches(a))
            .cloned()
            .collect();
        out.sort();
        out
    }

    /// Applies bindings this broker just stored, before the watch brings them.
    pub fn insert(&self, acls: &[Acl]) {
        let mut index = self.write();
        for acl in acls {
            index.insert(acl.clone());
        }
    }

    pub fn remove(&self, acls: &[Acl]) {
        let mut index = self.write();
        for acl in acls {
            index.remove(acl);
        }
    }

    /// Replaces every binding with what etcd holds.
    pub async fn reload(&self, metadata: &MetadataStore) -> Result<usize, MetadataError> {
        let records = metadata.list_acls().await?;
        let acls = records.iter().filter_map(|r| match Acl::from_record(r) {
            Ok(acl) => Some(acl),
            Err(e) => {
                tracing::warn!(binding = ?r, error = %e, "ignoring an ACL binding that does not validate");
                None
            }
        });
        let index = AclIndex::new(acls);
        let count = index.len();
        *self.write() = index;
        Ok(count)
    }

    /// Follows `acls/` for as long as the broker runs.
    pub fn spawn_sync(self: Arc<Self>, metadata: MetadataStore, tasks: &BackgroundTasks) {
        if !self.enabled() {
            return;
        }
        let mut events = metadata.watch_acls();
        tasks.spawn("ACL watch", async move {
            loop {
                let event = match events.recv().await {
                    Ok(event) => event,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => WatchEvent::Resync,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                match event {
                    WatchEvent::Put(kv) => {
                        match metadata.parse_acl(&kv).map(|r| Acl::from_record(&r)) {
                            Ok(Ok(acl)) => self.insert(&[acl]),
                            _ => tracing::warn!(key = %kv.key, "ignoring a malformed ACL binding"),
                        }
                    }
                    // A deleted key names its binding only in escaped form:
                    // deletions are rare, so read the whole set again.
                    WatchEvent::Delete(_) | WatchEvent::Resync => {
                        while let Err(e) = self.reload(&metadata).await {
                            tracing::warn!(error = %e, "reloading ACLs failed; retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            }
        });
    }
}
