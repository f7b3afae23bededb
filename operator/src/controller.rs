//! The two reconcilers. Every object is written with server-side apply under
//! one field manager, so a reconcile that finds everything in place changes
//! nothing (resourceVersions stay as they are).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kafscale_metadata::etcd::EtcdKv;
use kafscale_metadata::topic_rules::{validate_topic_configs, validate_topic_name};
use kafscale_metadata::{MetadataError, MetadataStore, TopicRecord};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{finalizer, Event as FinalizerEvent};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

use crate::crd::{KafscaleCluster, KafscaleClusterStatus, KafscaleTopic, KafscaleTopicStatus};
use crate::resources;

pub const FIELD_MANAGER: &str = "kafscale-operator";
pub const TOPIC_FINALIZER: &str = "kafscale.io/topic";

#[derive(Debug, Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("metadata store: {0}")]
    Metadata(#[from] MetadataError),
    #[error("finalizer: {0}")]
    Finalizer(String),
    #[error("{0}")]
    NotYet(String),
}

pub struct Context {
    pub client: Client,
    recorder: Recorder,
    /// One metadata-store connection per etcd endpoint list.
    stores: Mutex<HashMap<String, MetadataStore>>,
    pub metrics: Arc<crate::metrics::OperatorMetrics>,
}

impl Context {
    pub fn new(client: Client, metrics: Arc<crate::metrics::OperatorMetrics>) -> Arc<Self> {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        );
        Arc::new(Self {
            client,
            recorder,
            stores: Mutex::new(HashMap::new()),
            metrics,
        })
    }

    pub(crate) async fn store(&self, cluster: &KafscaleCluster) -> Result<MetadataStore, Error> {
        let endpoints = resources::etcd_endpoints(cluster);
        let key = format!("{}|{}", endpoints.join(","), resources::cluster_id(cluster));
        if let Some(s) = self
            .stores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(s.clone());
        }
        let kv = EtcdKv::connect(&endpoints, Duration::from_secs(5)).await?;
        let store = MetadataStore::new(Arc::new(kv), &resources::cluster_id(cluster));
        self.stores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, store.clone());
        Ok(store)
    }
}

pub(crate) async fn apply<K>(client: &Client, ns: &str, obj: &K) -> Result<K, Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let name = obj.meta().name.clone().unwrap_or_default();
    Ok(api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await?)
}

/// Writes the status with server-side apply, as the objects are: the
/// operator owns every status field it sets and drops those it no longer does.
pub(crate) async fn apply_status<K>(
    api: &Api<K>,
    obj: &K,
    status: &impl Serialize,
) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await?;
    Ok(())
}

/// A condition, keeping the old transition time when nothing changed.
pub(crate) fn condition(
    old: &[Condition],
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let previous = old.iter().find(|c| c.type_ == type_);
    let last_transition_time = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Time(Timestamp::now()),
    };
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// Publishes an event for every condition whose status changed, so
/// `kubectl describe` shows the history.
pub(crate) async fn announce<K>(ctx: &Context, obj: &K, old: &[Condition], new: &[Condition])
where
    K: Resource<DynamicType = ()>,
{
    for c in new {
        let before = old
            .iter()
            .find(|o| o.type_ == c.type_)
            .map(|o| o.status.as_str());
        if before == Some(c.status.as_str()) {
            continue;
        }
        let event = Event {
            type_: if c.status == "True" {
                EventType::Normal
            } else {
                EventType::Warning
            },
            reason: c.reason.clone(),
            note: Some(format!("{} is {}: {}", c.type_, c.status, c.message)),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
            tracing::debug!(error = %e, "publishing an event failed");
        }
    }
}

/// Conditions equal but for their transition times.
pub(crate) fn same_conditions(a: &[Condition], b: &[Condition]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            (
                &x.type_,
                &x.status,
                &x.reason,
                &x.message,
                x.observed_generation,
            ) == (
                &y.type_,
                &y.status,
                &y.reason,
                &y.message,
                y.observed_generation,
            )
        })
}

async fn etcd_reachable(endpoints: &[String]) -> Result<(), String> {
    for ep in endpoints {
        let hostport = ep
            .trim_start_matches("http://")
            .trim_start_matches("https://");
        let hostport = hostport.split('/').next().unwrap_or(hostport);
        match tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(hostport),
        )
        .await
        {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => {
                tracing::debug!(endpoint = %ep, error = %e, "etcd endpoint not reachable")
            }
            Err(_) => tracing::debug!(endpoint = %ep, "etcd endpoint timed out"),
        }
    }
    Err(format!("none of {} answered", endpoints.join(", ")))
}

pub async fn reconcile_cluster(
    c: Arc<KafscaleCluster>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    ctx.metrics
        .reconciles
        .get_or_create(&crate::metrics::KindLabels {
            kind: "KafscaleCluster",
        })
        .inc();
    let ns = c.namespace().unwrap_or_else(|| "default".into());
    let client = &ctx.client;
    let generation = c.metadata.generation;

    apply(client, &ns, &resources::config_map(&c)).await?;
    apply(client, &ns, &resources::headless_service(&c)).await?;
    apply(client, &ns, &resources::client_service(&c)).await?;
    apply(client, &ns, &resources::broker_pdb(&c)).await?;
    let sts = apply(client, &ns, &resources::broker_statefulset(&c)).await?;
    let hpa_api: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &ns);
    match resources::broker_hpa(&c) {
        Some(hpa) => {
            apply(client, &ns, &hpa).await?;
        }
        None => {
            let name = resources::names(&c).brokers;
            if hpa_api.get_opt(&name).await?.is_some() {
                hpa_api.delete(&name, &DeleteParams::default()).await?;
            }
        }
    }
    let etcd_ready = match resources::etcd_objects(&c) {
        Some((etcd_sts, headless, client_svc, pdb)) => {
            apply(client, &ns, &headless).await?;
            apply(client, &ns, &client_svc).await?;
            apply(client, &ns, &pdb).await?;
            let etcd = apply(client, &ns, &etcd_sts).await?;
            let ready = etcd.status.and_then(|s| s.ready_replicas).unwrap_or(0);
            if ready >= 2 {
                Ok(format!(
                    "{ready} of {} managed etcd members ready",
                    resources::ETCD_REPLICAS
                ))
            } else {
                Err(format!(
                    "{ready} of {} managed etcd members ready; a quorum needs 2",
                    resources::ETCD_REPLICAS
                ))
            }
        }
        None => etcd_reachable(&c.spec.etcd.endpoints)
            .await
            .map(|_| "external etcd reachable".to_string()),
    };

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let s3 = match &c.spec.s3.credentials_secret {
        Some(name) => match secrets.get_opt(name).await? {
            Some(s) => {
                let data = s.data.unwrap_or_default();
                let missing: Vec<&str> = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
                    .into_iter()
                    .filter(|k| !data.contains_key(*k))
                    .collect();
                if missing.is_empty() {
                    Ok(format!("credentials from Secret {name}"))
                } else {
                    Err(format!("Secret {name} lacks {}", missing.join(" and ")))
                }
            }
            None => Err(format!("Secret {name} does not exist; create it with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")),
        },
        None => Ok("no credentials Secret: the pods' own identity is used".to_string()),
    };

    let desired = sts
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(c.spec.brokers.replicas);
    let ready = sts
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let old = c.status.clone().unwrap_or_default();
    let mut conditions = vec![
        condition(
            &old.conditions,
            "Ready",
            ready >= desired && desired > 0,
            if ready >= desired {
                "BrokersReady"
            } else {
                "BrokersNotReady"
            },
            format!("{ready} of {desired} brokers ready"),
            generation,
        ),
        match &etcd_ready {
            Ok(m) => condition(
                &old.conditions,
                "EtcdReachable",
                true,
                "Reachable",
                m.clone(),
                generation,
            ),
            Err(m) => condition(
                &old.conditions,
                "EtcdReachable",
                false,
                "Unreachable",
                m.clone(),
                generation,
            ),
        },
        match &s3 {
            Ok(m) => condition(
                &old.conditions,
                "S3CredentialsReady",
                true,
                "CredentialsFound",
                m.clone(),
                generation,
            ),
            Err(m) => condition(
                &old.conditions,
                "S3CredentialsReady",
                false,
                "CredentialsMissing",
                m.clone(),
                generation,
            ),
        },
    ];
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
    let status = KafscaleClusterStatus {
        conditions,
        observed_generation: generation,
        ready_replicas: ready,
        bootstrap_servers: Some(resources::bootstrap_servers(&c)),
    };
    let unchanged = same_conditions(&old.conditions, &status.conditions)
        && old.observed_generation == status.observed_generation
        && old.ready_replicas == status.ready_replicas
        && old.bootstrap_servers == status.bootstrap_servers;
    if !unchanged {
        announce(&ctx, c.as_ref(), &old.conditions, &status.conditions).await;
        let api: Api<KafscaleCluster> = Api::namespaced(client.clone(), &ns);
        apply_status(&api, c.as_ref(), &status).await?;
    }
    Ok(Action::requeue(Duration::from_secs(30)))
}

pub async fn reconcile_topic(t: Arc<KafscaleTopic>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics
        .reconciles
        .get_or_create(&crate::metrics::KindLabels {
            kind: "KafscaleTopic",
        })
        .inc();
    let ns = t.namespace().unwrap_or_else(|| "default".into());
    let api: Api<KafscaleTopic> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, TOPIC_FINALIZER, t, |event| async {
        match event {
            FinalizerEvent::Apply(t) => apply_topic(&t, &ctx, &api).await,
            FinalizerEvent::Cleanup(t) => cleanup_topic(&t, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    })
}

/// The topics (among `topics`) that name `cluster` as theirs.
pub fn topics_of(
    cluster: &KafscaleCluster,
    topics: &[Arc<KafscaleTopic>],
) -> Vec<ObjectRef<KafscaleTopic>> {
    topics
        .iter()
        .filter(|t| {
            t.namespace() == cluster.namespace() && t.spec.cluster_ref == cluster.name_any()
        })
        .map(|t| ObjectRef::from_obj(t.as_ref()))
        .collect()
}

async fn cluster_of(t: &KafscaleTopic, ctx: &Context) -> Result<Option<KafscaleCluster>, Error> {
    let ns = t.namespace().unwrap_or_else(|| "default".into());
    let clusters: Api<KafscaleCluster> = Api::namespaced(ctx.client.clone(), &ns);
    Ok(clusters.get_opt(&t.spec.cluster_ref).await?)
}

async fn set_topic_status(
    ctx: &Context,
    api: &Api<KafscaleTopic>,
    t: &KafscaleTopic,
    status: KafscaleTopicStatus,
) -> Result<(), Error> {
    let old = t.status.clone().unwrap_or_default();
    if same_conditions(&old.conditions, &status.conditions)
        && old.observed_generation == status.observed_generation
        && old.partitions == status.partitions
        && old.topic_id == status.topic_id
    {
        return Ok(());
    }
    announce(ctx, t, &old.conditions, &status.conditions).await;
    apply_status(api, t, &status).await?;
    Ok(())
}

async fn apply_topic(
    t: &KafscaleTopic,
    ctx: &Context,
    api: &Api<KafscaleTopic>,
) -> Result<Action, Error> {
    let old = t.status.clone().unwrap_or_default();
    let generation = t.metadata.generation;
    let not_ready = |reason: &str, message: String| KafscaleTopicStatus {
        conditions: vec![condition(
            &old.conditions,
            "Ready",
            false,
            reason,
            message,
            generation,
        )],
        observed_generation: generation,
        partitions: old.partitions,
        topic_id: old.topic_id.clone(),
    };
    let name = t.topic_name();
    let configs = t.configs();
    if let Err(m) = validate_topic_name(&name).and_then(|_| validate_topic_configs(&configs)) {
        set_topic_status(ctx, api, t, not_ready("InvalidSpec", m)).await?;
        return Ok(Action::await_change());
    }
    let Some(cluster) = cluster_of(t, ctx).await? else {
        set_topic_status(
            ctx,
            api,
            t,
            not_ready(
                "ClusterNotFound",
                format!(
                    "KafscaleCluster {} does not exist in this namespace",
                    t.spec.cluster_ref
                ),
            ),
        )
        .await?;
        return Ok(Action::requeue(Duration::from_secs(15)));
    };
    let record = match stored_topic(t, &cluster, ctx, &name, &configs).await {
        Ok(Stored::Record(record)) => record,
        Ok(Stored::Refused(reason, message)) => {
            set_topic_status(ctx, api, t, not_ready(reason, message)).await?;
            return Ok(Action::await_change());
        }
        Err(e) => {
            // Say so rather than keep a stale Ready (e.g. a recreated
            // cluster whose new etcd is not up yet); the error requeues.
            let (reason, message) = match &e {
                Error::NotYet(why) => ("DeletionInProgress", why.clone()),
                other => (
                    "MetadataUnavailable",
                    format!(
                        "the metadata of cluster {} cannot be read or updated: {other}",
                        t.spec.cluster_ref
                    ),
                ),
            };
            set_topic_status(ctx, api, t, not_ready(reason, message)).await?;
            return Err(e);
        }
    };
    let status = KafscaleTopicStatus {
        conditions: vec![condition(
            &old.conditions,
            "Ready",
            true,
            "TopicReady",
            format!("topic {name} has {} partitions", record.partitions),
            generation,
        )],
        observed_generation: generation,
        partitions: record.partitions,
        topic_id: Some(record.id.to_string()),
    };
    set_topic_status(ctx, api, t, status).await?;
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// What the metadata store holds for a topic after making it match the spec.
enum Stored {
    Record(TopicRecord),
    /// The spec asks for something the topic cannot become: (reason, message).
    Refused(&'static str, String),
}

/// Creates the topic or brings its partitions and configs to the spec,
/// retrying lost compare-and-swaps.
async fn stored_topic(
    t: &KafscaleTopic,
    cluster: &KafscaleCluster,
    ctx: &Context,
    name: &str,
    configs: &BTreeMap<String, String>,
) -> Result<Stored, Error> {
    let store = ctx.store(cluster).await?;
    loop {
        match store.get_topic(name).await? {
            None => {
                let record = TopicRecord {
                    name: name.to_string(),
                    id: uuid::Uuid::new_v4(),
                    partitions: t.spec.partitions,
                    replication_factor: 1,
                    config: configs.clone(),
                    created_ms: Timestamp::now().as_millisecond(),
                    deleting: false,
                    deletion: None,
                };
                match store.create_topic(&record).await {
                    Ok(()) => return Ok(Stored::Record(record)),
                    Err(MetadataError::TopicExists(_)) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            Some((existing, revision)) => {
                if existing.deleting {
                    return Err(Error::NotYet(format!(
                        "topic {name} is still being deleted; it is created again once the brokers have removed it"
                    )));
                }
                if t.spec.partitions < existing.partitions {
                    return Ok(Stored::Refused(
                        "PartitionsDecrease",
                        format!(
                            "topic has {} partitions; partitions can only be increased",
                            existing.partitions
                        ),
                    ));
                }
                if existing.partitions == t.spec.partitions && existing.config == *configs {
                    return Ok(Stored::Record(existing));
                }
                let mut updated = existing.clone();
                updated.partitions = t.spec.partitions;
                updated.config = configs.clone();
                if store
                    .update_topic(&updated, revision, existing.partitions)
                    .await?
                {
                    return Ok(Stored::Record(updated));
                }
            }
        }
    }
}

/// Asks the brokers to delete the topic (they hold object-storage access).
/// The finalizer stays until its record is gone: until then the reconcile
/// fails with `NotYet` and is requeued, never waiting inside.
async fn cleanup_topic(t: &KafscaleTopic, ctx: &Context) -> Result<Action, Error> {
    let Some(cluster) = cluster_of(t, ctx).await? else {
        // The cluster is gone with its data; nothing left to delete.
        return Ok(Action::await_change());
    };
    let store = ctx.store(&cluster).await?;
    let name = t.topic_name();
    let now_ms = Timestamp::now().as_millisecond();
    match store.request_topic_deletion(&name, now_ms).await? {
        None => Ok(Action::await_change()),
        Some(_) => Err(Error::NotYet(format!(
            "topic {name} is being deleted by the brokers; if this lasts, check that a broker of cluster {} is running",
            t.spec.cluster_ref
        ))),
    }
}

/// How soon a failed reconcile runs again: soon for a step that is merely
/// not done yet, with a warning and a longer pause for real failures.
pub fn error_policy<K>(_obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    match error {
        Error::NotYet(why) => {
            tracing::info!(%why, "waiting; reconciling again shortly");
            Action::requeue(Duration::from_secs(2))
        }
        _ => {
            tracing::warn!(%error, "reconcile failed; retrying");
            ctx.metrics.reconcile_errors.inc();
            Action::requeue(Duration::from_secs(5))
        }
    }
}
