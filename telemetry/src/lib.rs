//! What every Kafscale process shares: log setup, shutdown signals, and one
//! HTTP listener (`warp`) serving `/metrics` (`prometheus-client`), `/healthz`,
//! `/readyz` and any routes the process adds (the broker's ops API).

pub mod crash_points;
pub mod logging;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use prometheus_client::registry::Registry;
use serde::Serialize;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::{Filter, Reply};

pub use prometheus_client;

/// One readiness check's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// The `/readyz` body: ready only when every check passes.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub checks: Vec<Check>,
}

impl Readiness {
    pub fn from_checks(checks: Vec<Check>) -> Self {
        Self {
            ready: checks.iter().all(|c| c.ok),
            checks,
        }
    }
}

/// Something that can say whether the process is ready for traffic.
pub trait ReadinessProbe: Send + Sync + 'static {
    fn check(&self) -> BoxFuture<'_, Readiness>;
}

/// Called before each scrape to refresh gauges computed from live state.
pub type ScrapeHook = Arc<dyn Fn() + Send + Sync>;

pub struct HttpEndpoint {
    pub registry: Arc<Mutex<Registry>>,
    pub readiness: Arc<dyn ReadinessProbe>,
    pub on_scrape: Option<ScrapeHook>,
    /// Extra routes (the broker's ops API).
    pub routes: Option<BoxedFilter<(Box<dyn Reply>,)>>,
}

fn metrics_text(registry: &Mutex<Registry>, hook: &Option<ScrapeHook>) -> String {
    if let Some(h) = hook {
        h();
    }
    let mut out = String::new();
    let registry = registry.lock().unwrap_or_else(|e| e.into_inner());
    if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
        tracing::error!("encoding metrics failed");
    }
    out
}

impl HttpEndpoint {
    fn filter(self) -> BoxedFilter<(Box<dyn Reply>,)> {
        let registry = self.registry.clone();
        let hook = self.on_scrape.clone();
        let metrics = warp::path!("metrics").and(warp::get()).map(move || {
            let body = metrics_text(&registry, &hook);
            Box::new(warp::reply::with_header(
                body,
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )) as Box<dyn Reply>
        });
        let healthz = warp::path!("healthz").and(warp::get()).map(|| {
            Box::new(warp::reply::json(&serde_json::json!({"status": "ok"}))) as Box<dyn Reply>
        });
        let probe = self.readiness.clone();
        let readyz = warp::path!("readyz").and(warp::get()).and_then(move || {
            let probe = probe.clone();
            async move {
                let r = probe.check().await;
                let status = if r.ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                Ok::<_, Infallible>(Box::new(warp::reply::with_status(
                    warp::reply::json(&r),
                    status,
                )) as Box<dyn Reply>)
            }
        });
        let base = metrics.or(healthz).unify().or(readyz).unify();
        match self.routes {
            Some(extra) => base.or(extra).unify().boxed(),
            None => base.boxed(),
        }
    }

    /// Binds `addr` and serves only `routes` there until `shutdown`
    /// resolves: a surface of its own, on another address than the probes.
    pub async fn serve_routes(
        routes: BoxedFilter<(Box<dyn Reply>,)>,
        addr: SocketAddr,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let server = warp::serve(routes).incoming(listener).graceful(shutdown);
        tokio::spawn(server.run());
        Ok(bound)
    }

    /// Binds `addr` (reporting failure) and serves until `shutdown` resolves.
    pub async fn serve(
        self,
        addr: SocketAddr,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let server = warp::serve(self.filter())
            .incoming(listener)
            .graceful(shutdown);
        tokio::spawn(server.run());
        Ok(bound)
    }
}

/// Exponential histogram buckets for latencies: 0.5 ms to ~16 s.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 16)
}

/// Exponential histogram buckets for sizes: 1 KiB to 1 GiB.
pub fn size_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(1024.0, 4.0, 11)
}
