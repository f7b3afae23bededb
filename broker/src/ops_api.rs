//! The broker's HTTP surface beyond `/metrics` and `/healthz`: readiness, the
//! read-only ops API (JSON, `docs/ops-api.md`), and the gauges computed at
//! scrape time.

use std::convert::Infallible;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use kafscale_telemetry::{Check, Readiness, ReadinessProbe, ScrapeHook};
use serde::Serialize;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::{Filter, Reply};

use crate::metrics::LagLabels;
use crate::partitions::topics::Topic;
use crate::storage_health::{FLUSHER_UNREACHABLE, UNAVAILABLE};
use crate::Broker;

/// Ready when the broker is registered in the cluster (its session is valid),
/// the metadata store answers, the flusher answers, and object storage is not
/// unavailable.
pub struct BrokerReadiness(pub Arc<Broker>);

impl ReadinessProbe for BrokerReadiness {
    fn check(&self) -> BoxFuture<'_, Readiness> {
        async move {
            let b = &self.0;
            let metadata =
                tokio::time::timeout(std::time::Duration::from_secs(3), b.metadata.ping()).await;
            let (meta_ok, meta_detail) = match metadata {
                Ok(Ok(())) => (true, b.metadata.describe()),
                Ok(Err(e)) => (false, e.to_string()),
                Err(_) => (
                    false,
                    format!("{} did not answer within 3s", b.metadata.describe()),
                ),
            };
            let state = b.storage_health.state();
            Readiness::from_checks(vec![
                Check {
                    name: "cluster_session",
                    ok: b.cluster.session_valid(),
                    detail: format!(
                        "broker {}{}",
                        b.cluster.me.id,
                        if b.cluster.draining() {
                            ", shutting down"
                        } else {
                            ""
                        }
                    ),
                },
                Check {
                    name: "metadata_store",
                    ok: meta_ok,
                    detail: meta_detail,
                },
                Check {
                    name: "flusher",
                    ok: state != FLUSHER_UNREACHABLE,
                    detail: b.storage_health.location().to_string(),
                },
                Check {
                    name: "object_store",
                    ok: state < UNAVAILABLE,
                    detail: format!("{}: {}", b.storage_health.name(), b.storage_health.detail()),
                },
            ])
        }
        .boxed()
    }
}

/// Refreshes the gauges that mirror live state. Reads memory only: consumer
/// lag uses the coordinator's cached offsets and the logs' high watermarks.
pub fn scrape_hook(broker: Arc<Broker>) -> ScrapeHook {
    Arc::new(move || {
        let m = &broker.metrics;
        m.memory_log_bytes.set(broker.topics.memory_used() as i64);
        m.idempotent_producers
            .set(i64::try_from(broker.topics.producer_states()).unwrap_or(i64::MAX));
        m.queued_request_bytes
            .set(broker.request_memory.in_use() as i64);
        m.fetch_reserved_bytes
            .set(broker.fetch_memory.in_use() as i64);
        let topics = broker.topics.all();
        m.partitions_led.set(
            topics
                .iter()
                .flat_map(|t| t.partitions.iter())
                .filter(|p| broker.leads(&p.topic, p.partition).is_some())
                .count() as i64,
        );
        let groups = broker.groups.loaded();
        m.groups.set(groups.len() as i64);
        m.group_memory_bytes
            .set(i64::try_from(broker.groups.memory_bytes()).unwrap_or(i64::MAX));
        m.consumer_lag.clear();
        for g in groups {
            for ((topic, partition), committed) in g.offsets().iter() {
                let hw = broker
                    .topics
                    .get(topic)
                    .and_then(|t| t.partition(*partition).and_then(|l| l.high_watermark_now()));
                if let Some(hw) = hw {
                    m.consumer_lag
                        .get_or_create(&LagLabels {
                            group: g.id.clone(),
                            topic: topic.clone(),
                            partition: *partition,
                        })
                        .set((hw - committed.offset).max(0));
                }
            }
        }
    })
}

#[derive(Serialize)]
struct PartitionInfo {
    partition: i32,
    /// The live leader, if any, and the leader epoch.
    leader: Option<i32>,
    leader_epoch: i32,
    log_start_offset: Option<i64>,
    high_watermark: Option<i64>,
    error: Option<String>,
}

#[derive(Serialize)]
struct TopicInfo {
    name: String,
    id: String,
    config: std::collections::BTreeMap<String, String>,
    partitions: Vec<PartitionInfo>,
}

#[derive(Serialize)]
struct LagInfo {
    topic: String,
    partition: i32,
    committed_offset: i64,
    high_watermark: Option<i64>,
    lag: Option<i64>,
}

#[derive(Serialize)]
struct GroupInfo {
    group: String,
    state: &'static str,
    protocol_type: Option<String>,
    protocol: Option<String>,
    generation: i32,
    members: usize,
    total_lag: i64,
    partitions: Vec<LagInfo>,
}

#[derive(Serialize)]
struct ApiError {
    error: String,
}

async fn topic_info(b: &Broker, t: &Topic) -> TopicInfo {
    let mut partitions = Vec::with_capacity(t.partitions.len());
    for log in &t.partitions {
        let leader = b.partition_leader(&log.topic, log.partition);
        let offsets = match b.partitions().lead(log, -1) {
            Ok(_) => log.offsets().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let (log_start_offset, high_watermark, error) = match offsets {
            Ok((start, hw)) => (Some(start), Some(hw), None),
            Err(e) => (None, None, Some(e)),
        };
        partitions.push(PartitionInfo {
            partition: log.partition,
            leader: leader.broker,
            leader_epoch: leader.epoch,
            log_start_offset,
            high_watermark,
            error,
        });
    }
    TopicInfo {
        name: t.record.name.clone(),
        id: t.record.id.to_string(),
        config: t.record.config.clone(),
        partitions,
    }
}

async fn group_info(b: &Broker, h: &crate::groups::GroupHandle) -> GroupInfo {
    let offsets = h.offsets().clone();
    let (state, protocol_type, protocol, generation, members) = {
        let g = h.lock();
        (
            g.state.name(),
            g.protocol_type.clone(),
            g.protocol.clone(),
            g.generation,
            g.members.len(),
        )
    };
    let mut partitions = Vec::with_capacity(offsets.len());
    for ((topic, partition), committed) in offsets {
        let hw = match b
            .topics
            .get(&topic)
            .and_then(|t| t.partition(partition).cloned())
        {
            Some(log) => log.offsets().await.ok().map(|(_, hw)| hw),
            None => None,
        };
        partitions.push(LagInfo {
            lag: hw.map(|hw| (hw - committed.offset).max(0)),
            topic,
            partition,
            committed_offset: committed.offset,
            high_watermark: hw,
        });
    }
    GroupInfo {
        group: h.id.clone(),
        state,
        protocol_type,
        protocol,
        generation,
        members,
        total_lag: partitions.iter().filter_map(|p| p.lag).sum(),
        partitions,
    }
}

fn json<T: Serialize>(value: &T) -> Box<dyn Reply> {
    Box::new(warp::reply::json(value))
}

fn error(status: StatusCode, message: String) -> Box<dyn Reply> {
    Box::new(warp::reply::with_status(
        warp::reply::json(&ApiError { error: message }),
        status,
    ))
}

/// `/api/v1/...`, read-only.
pub fn routes(broker: Arc<Broker>) -> BoxedFilter<(Box<dyn Reply>,)> {
    let with = move || {
        let b = broker.clone();
        warp::any().map(move || b.clone())
    };
    let cluster = warp::path!("api" / "v1" / "cluster")
        .and(warp::get())
        .and(with())
        .and_then(|b: Arc<Broker>| async move {
            let groups = b.groups.list().await.map(|g| g.len()).ok();
            Ok::<_, Infallible>(json(&serde_json::json!({
                "cluster_id": b.config.cluster_id,
                "controller": crate::kafka::handlers::metadata::controller_id(&b),
                "brokers": crate::kafka::handlers::metadata::live_brokers(&b),
                "topics": b.topics.all().len(),
                "groups": groups,
                "object_store": {"state": b.storage_health.name(), "detail": b.storage_health.detail()},
                "metadata_store": b.metadata.describe(),
            })))
        });
    let brokers = warp::path!("api" / "v1" / "brokers")
        .and(warp::get())
        .and(with())
        .map(|b: Arc<Broker>| json(&crate::kafka::handlers::metadata::live_brokers(&b)));
    let topics = warp::path!("api" / "v1" / "topics")
        .and(warp::get())
        .and(with())
        .and_then(|b: Arc<Broker>| async move {
            let mut out = Vec::new();
            for t in b.topics.all() {
                out.push(topic_info(&b, &t).await);
            }
            Ok::<_, Infallible>(json(&out))
        });
    let topic = warp::path!("api" / "v1" / "topics" / String)
        .and(warp::get())
        .and(with())
        .and_then(|name: String, b: Arc<Broker>| async move {
            Ok::<_, Infallible>(match b.topics.get(&name) {
                Some(t) => json(&topic_info(&b, &t).await),
                None => error(
                    StatusCode::NOT_FOUND,
                    format!("topic '{name}' does not exist"),
                ),
            })
        });
    let groups = warp::path!("api" / "v1" / "groups")
        .and(warp::get())
        .and(with())
        .and_then(|b: Arc<Broker>| async move {
            Ok::<_, Infallible>(match b.groups.list().await {
                Ok(handles) => {
                    let mut out = Vec::new();
                    for h in handles {
                        out.push(group_info(&b, &h).await);
                    }
                    json(&out)
                }
                Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            })
        });
    let group = warp::path!("api" / "v1" / "groups" / String)
        .and(warp::get())
        .and(with())
        .and_then(|id: String, b: Arc<Broker>| async move {
            Ok::<_, Infallible>(match b.groups.group(&id, false).await {
                Ok(Some(h)) => json(&group_info(&b, &h).await),
                Ok(None) => error(
                    StatusCode::NOT_FOUND,
                    format!("group '{id}' does not exist"),
                ),
                Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            })
        });
    let storage = warp::path!("api" / "v1" / "storage")
        .and(warp::get())
        .and(with())
        .map(|b: Arc<Broker>| {
            json(&serde_json::json!({"state": b.storage_health.name(), "detail": b.storage_health.detail()}))
        });
    cluster
        .or(brokers)
        .unify()
        .or(topics)
        .unify()
        .or(topic)
        .unify()
        .or(groups)
        .unify()
        .or(group)
        .unify()
        .or(storage)
        .unify()
        .boxed()
}
