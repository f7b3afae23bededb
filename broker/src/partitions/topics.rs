//! The broker's view of topics: a cache of the metadata store kept current by
//! its watch, and the partition logs of each topic.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use kafscale_metadata::topic_rules::TopicConfig;
use kafscale_metadata::{MetadataStore, TopicRecord, WatchEvent};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::metrics::BrokerMetrics;
use crate::partitions::log::{LogContext, LogSettings, PartitionLog};
use crate::tasks::BackgroundTasks;

pub struct Topic {
    pub record: TopicRecord,
    /// `record.config` parsed, when the topic was loaded or altered.
    pub config: TopicConfig,
    pub partitions: Vec<Arc<PartitionLog>>,
}

impl Topic {
    pub fn partition(&self, index: i32) -> Option<&Arc<PartitionLog>> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.partitions.get(i))
    }

    pub fn new(record: TopicRecord, partitions: Vec<Arc<PartitionLog>>) -> Self {
        Self {
            config: TopicConfig::parse(&record.config),
            record,
            partitions,
        }
    }
}

/// Why a topic change was not made.
#[derive(Debug)]
pub enum ModifyError<E> {
    NotFound,
    /// The change itself is invalid: the change's own refusal.
    Rejected(E),
    Store(kafscale_metadata::MetadataError),
}

pub struct TopicRegistry {
    metadata: MetadataStore,
    logs: Arc<LogContext>,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    /// Topics seen marked for deletion, with the logs this broker closed for
    /// them; `topic_deletion` carries each deletion out.
    deletions: mpsc::UnboundedSender<ClosedTopic>,
}

/// A topic marked for deletion and the partition logs this broker had for it.
pub struct ClosedTopic {
    pub record: TopicRecord,
    pub partitions: Vec<Arc<PartitionLog>>,
}

impl TopicRegistry {
    pub fn new(
        metadata: MetadataStore,
        storage: Arc<dyn kafscale_flusher_protocol::LogStorage>,
        settings: LogSettings,
        metrics: Arc<BrokerMetrics>,
        cluster: Arc<crate::cluster::ClusterView>,
        tasks: BackgroundTasks,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<ClosedTopic>) {
        let logs = Arc::new(LogContext::new(
            settings,
            storage,
            metadata.clone(),
            metrics,
            cluster,
            tasks,
        ));
        let (deletions, closed) = mpsc::unbounded_channel();
        let registry = Arc::new(Self {
            metadata,
            logs,
            topics: RwLock::default(),
            deletions,
        });
        (registry, closed)
    }

    /// Idempotent producers remembered, once per partition each writes to.
    pub fn producer_states(&self) -> usize {
        self.logs
            .producer_states
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn memory_used(&self) -> usize {
        self.logs
            .memory_used
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    pub fn get_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .find(|t| t.record.id == id)
            .cloned()
    }

    pub fn all(&self) -> Vec<Arc<Topic>> {
        let mut v: Vec<_> = self
            .topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.record.name.cmp(&b.record.name));
        v
    }

    /// Installs or updates a topic. Logs of partitions that already exist are
    /// kept; a topic re-created under the same name (new id) starts fresh. A
    /// topic marked for deletion is closed here and handed to the deletion.
    pub fn upsert(self: &Arc<Self>, record: TopicRecord) -> Option<Arc<Topic>> {
        if record.deleting {
            let partitions = match self.remove(&record.name) {
                Some(t) if t.record.id == record.id => t.partitions.clone(),
                _ => Vec::new(),
            };
            let _ = self.deletions.send(ClosedTopic { record, partitions });
            return None;
        }
        Some(self.install(record))
    }

    fn install(&self, record: TopicRecord) -> Arc<Topic> {
        let mut topics = self.topics.write().unwrap_or_else(|e| e.into_inner());
        let existing = topics.get(&record.name).cloned();
        let mut partitions = match &existing {
            Some(t) if t.record.id == record.id => t.partitions.clone(),
            Some(t) => {
                t.partitions.iter().for_each(|p| p.close());
                Vec::new()
            }
            None => Vec::new(),
        };
        let wanted = usize::try_from(record.partitions).unwrap_or(0);
        while partitions.len() < wanted {
            partitions.push(PartitionLog::new(
                record.name.clone(),
                *record.id.as_bytes(),
                partitions.len() as i32,
                self.logs.clone(),
            ));
        }
        let topic = Arc::new(Topic::new(record, partitions));
        topics.insert(topic.record.name.clone(), topic.clone());
        topic
    }

    /// Forgets a topic and closes its logs; returns what was removed.
    pub fn remove(&self, name: &str) -> Option<Arc<Topic>> {
        let removed = self
            .topics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        if let Some(t) = &removed {
            t.partitions.iter().for_each(|p| p.close());
        }
        removed
    }

    /// Applies `change` to the stored topic with compare-and-swap (retrying on
    /// a concurrent change) and installs the result. With `validate_only` the
    /// change is checked but not stored.
    pub async fn modify<F, E>(
        self: &Arc<Self>,
        name: &str,
        validate_only: bool,
        change: F,
    ) -> Result<Arc<Topic>, ModifyError<E>>
    where
        F: Fn(&mut TopicRecord) -> Result<(), E>,
    {
        loop {
            let (mut record, revision) = self
                .metadata
                .get_topic(name)
                .await
                .map_err(ModifyError::Store)?
                .ok_or(ModifyError::NotFound)?;
            let old_partitions = record.partitions;
            change(&mut record).map_err(ModifyError::Rejected)?;
            if validate_only {
                return Ok(Arc::new(Topic::new(record, Vec::new())));
            }
            if self
                .metadata
                .update_topic(&record, revision, old_partitions)
                .await
                .map_err(ModifyError::Store)?
            {
                return Ok(self.install(record));
            }
        }
    }

    /// Replaces the cache with a full read of the store.
    pub async fn resync(self: &Arc<Self>) -> Result<(), kafscale_metadata::MetadataError> {
        let records = self.metadata.list_topics().await?;
        let names: std::collections::HashSet<String> = records
            .iter()
            .filter(|r| !r.deleting)
            .map(|r| r.name.clone())
            .collect();
        for r in records {
            self.upsert(r);
        }
        let stale: Vec<String> = self
            .topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .filter(|k| !names.contains(*k))
            .cloned()
            .collect();
        for name in stale {
            let _ = self.remove(&name);
        }
        Ok(())
    }

    /// Follows the metadata store's watch for the life of the broker.
    pub fn spawn_watch(self: &Arc<Self>, tasks: &BackgroundTasks) {
        let mut events = self.metadata.watch_topics();
        let registry = self.clone();
        tasks.spawn("topic watch", async move {
            loop {
                let event = match events.recv().await {
                    Ok(e) => e,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => WatchEvent::Resync,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                match event {
                    WatchEvent::Put(kv) => match registry.metadata.parse_topic(&kv) {
                        Ok(record) => {
                            registry.upsert(record);
                        }
                        Err(e) => tracing::error!(error = %e, "ignoring malformed topic record"),
                    },
                    WatchEvent::Delete(key) => {
                        if let Some(name) = registry.metadata.topic_name_of(&key) {
                            let _ = registry.remove(name);
                        }
                    }
                    WatchEvent::Resync => {
                        while let Err(e) = registry.resync().await {
                            tracing::warn!(error = %e, "re-reading topics failed; retrying");
                            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        }
                    }
                }
            }
        });
    }
}
