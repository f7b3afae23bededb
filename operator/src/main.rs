//! `kafscale-operator`: reconciles KafscaleCluster and KafscaleTopic resources.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kafscale_operator::controller::{self, Context};
use kafscale_operator::crd::{KafscaleCluster, KafscaleTopic, KafscaleUser};
use kafscale_operator::leader::LeaderElection;
use kafscale_operator::metrics::OperatorMetrics;
use kafscale_operator::users;
use kafscale_telemetry::prometheus_client::registry::Registry;
use kafscale_telemetry::{logging, Check, HttpEndpoint, Readiness, ReadinessProbe};
use kube::runtime::watcher;
use kube::runtime::Controller;
use kube::{Api, Client};

#[derive(Parser, Debug)]
#[command(
    name = "kafscale-operator",
    version,
    about = "Kafscale operator: runs Kafscale clusters and topics from CRDs"
)]
struct Args {
    /// Namespace of the leader-election Lease (usually the operator's own).
    #[arg(long, env = "KAFSCALE_OPERATOR_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    #[arg(
        long,
        env = "KAFSCALE_OPERATOR_LEASE",
        default_value = "kafscale-operator"
    )]
    lease_name: String,
    /// This replica's identity in the Lease (the pod name in Kubernetes).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Lease duration in seconds; renewed every third of it.
    #[arg(long, env = "KAFSCALE_OPERATOR_LEASE_SECONDS", default_value_t = 15)]
    lease_seconds: u64,
    /// Address of /metrics, /healthz, /readyz.
    #[arg(
        long,
        env = "KAFSCALE_OPERATOR_HTTP_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    http_listen: std::net::SocketAddr,
    #[arg(long, env = "KAFSCALE_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

struct Ready(Arc<std::sync::atomic::AtomicBool>);

impl ReadinessProbe for Ready {
    fn check(&self) -> BoxFuture<'_, Readiness> {
        let ok = self.0.load(std::sync::atomic::Ordering::Relaxed);
        async move {
            Readiness::from_checks(vec![Check {
                name: "kubernetes_api",
                ok,
                detail: if ok {
                    "connected".into()
                } else {
                    "not connected yet".into()
                },
            }])
        }
        .boxed()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    logging::init(&args.log_format);
    // Both rustls providers end up linked in a workspace build; pick one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster config or KUBECONFIG)")?;
    let mut registry = Registry::default();
    let metrics = OperatorMetrics::new(&mut registry);
    let connected = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let http = HttpEndpoint {
        registry: Arc::new(Mutex::new(registry)),
        readiness: Arc::new(Ready(connected)),
        on_scrape: None,
        routes: None,
    }
    .serve(args.http_listen, logging::shutdown_signal())
    .await
    .with_context(|| format!("binding {}", args.http_listen))?;

    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("kafscale-operator-{}", uuid::Uuid::new_v4()));
    let lease_duration = Duration::from_secs(args.lease_seconds.max(3));
    let election = LeaderElection::new(
        client.clone(),
        &args.lease_namespace,
        &args.lease_name,
        &identity,
        lease_duration,
    );
    tracing::info!(%identity, http = %http, "waiting for the leader lease");
    while !election.try_acquire().await.unwrap_or(false) {
        tokio::time::sleep(lease_duration / 3).await;
    }
    metrics.leader.set(1);
    tracing::info!(%identity, "leading; starting controllers");
    let renew = tokio::spawn(async move {
        loop {
            tokio::time::sleep(lease_duration / 3).await;
            match election.try_acquire().await {
                Ok(true) => {}
                Ok(false) => return "another replica took the lease".to_string(),
                Err(e) => tracing::warn!(error = %e, "renewing the lease failed; retrying"),
            }
        }
    });

    let ctx = Context::new(client.clone(), metrics);
    let clusters = Controller::new(
        Api::<KafscaleCluster>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<StatefulSet>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<ConfigMap>::all(client.clone()),
        watcher::Config::default(),
    )
    .shutdown_on_signal()
    .run(
        controller::reconcile_cluster,
        controller::error_policy,
        ctx.clone(),
    )
    .for_each(|r| async move {
        if let Err(e) = r {
            tracing::debug!(error = %e, "cluster reconcile");
        }
    });
    let topic_controller = Controller::new(
        Api::<KafscaleTopic>::all(client.clone()),
        watcher::Config::default(),
    );
    // A topic follows its cluster: one created, recreated or changed makes
    // its topics reconcile now, not at their next periodic check.
    let known_topics = topic_controller.store();
    let topics = topic_controller
        .watches(
            Api::<KafscaleCluster>::all(client.clone()),
            watcher::Config::default(),
            move |cluster| controller::topics_of(&cluster, &known_topics.state()),
        )
        .shutdown_on_signal()
        .run(
            controller::reconcile_topic,
            controller::error_policy,
            ctx.clone(),
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "topic reconcile");
            }
        });
    let users = Controller::new(
        Api::<KafscaleUser>::all(client.clone()),
        watcher::Config::default(),
    )
    // A deleted or edited credential Secret is put back (or its new
    // password stored) at once.
    .owns(
        Api::<Secret>::all(client.clone()),
        watcher::Config::default().labels("app.kubernetes.io/managed-by=kafscale-operator"),
    )
    .shutdown_on_signal()
    .run(users::reconcile_user, controller::error_policy, ctx.clone())
    .for_each(|r| async move {
        if let Err(e) = r {
            tracing::debug!(error = %e, "user reconcile");
        }
    });
    tokio::select! {
        _ = futures::future::join3(clusters, topics, users) => tracing::info!("controllers stopped"),
        lost = renew => {
            let why = lost.unwrap_or_else(|e| e.to_string());
            anyhow::bail!("lost leadership: {why}; exiting so a new leader takes over");
        }
    }
    Ok(())
}
