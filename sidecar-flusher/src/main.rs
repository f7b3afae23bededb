//! `kafscale-flusher`: the sidecar that owns object storage for one broker.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use futures::future::BoxFuture;
use futures::FutureExt;
use kafscale_flusher::fault_store::{FaultStore, PutDelay, PUT_DELAY_ENV};
use kafscale_flusher::intake_writer::{FlushPreset, IntakeSettings};
use kafscale_flusher::metrics::{FlusherMetrics, HealthSettings, StoreHealth};
use kafscale_flusher::object_store::ObjectStore;
use kafscale_flusher::protocol::{Health, HealthState};
use kafscale_flusher::s3_store::{S3Settings, S3Store};
use kafscale_flusher::store_check::{check_conditional_writes, CheckError};
use kafscale_flusher::{server, FlusherService, FlusherSettings};
use kafscale_telemetry::prometheus_client::registry::Registry;
use kafscale_telemetry::{crash_points, logging, Check, HttpEndpoint, Readiness, ReadinessProbe};
use std::sync::Mutex;

#[derive(Parser, Debug)]
#[command(
    name = "kafscale-flusher",
    version,
    about = "Kafscale sidecar flusher: encodes segments and uploads them to S3"
)]
struct Args {
    /// Unix socket the broker connects to (shared directory in the pod).
    #[arg(
        long,
        env = "KAFSCALE_FLUSHER_SOCKET",
        default_value = "/var/run/kafscale/flusher.sock"
    )]
    socket: PathBuf,
    /// S3 bucket that holds the segments.
    #[arg(long, env = "KAFSCALE_S3_BUCKET")]
    bucket: String,
    #[arg(long, env = "KAFSCALE_S3_REGION", default_value = "us-east-1")]
    region: String,
    /// Endpoint of an S3-compatible server (MinIO, Ceph, ...); empty for AWS.
    #[arg(long, env = "KAFSCALE_S3_ENDPOINT")]
    endpoint: Option<String>,
    /// Use path-style addressing (needed by most S3-compatible servers).
    #[arg(long, env = "KAFSCALE_S3_PATH_STYLE", default_value_t = false)]
    path_style: bool,
    /// Create the bucket at start if it does not exist.
    #[arg(long, env = "KAFSCALE_S3_CREATE_BUCKET", default_value_t = false)]
    create_bucket: bool,
    /// Key prefix unique to this cluster, e.g. `{namespace}/{cluster}`.
    #[arg(long, env = "KAFSCALE_S3_PREFIX", default_value = "kafscale")]
    prefix: String,
    /// Attempts per S3 request, the first included.
    #[arg(long, env = "KAFSCALE_S3_MAX_ATTEMPTS", default_value_t = 4)]
    s3_max_attempts: u32,
    /// Timeout of one S3 request attempt, in milliseconds.
    #[arg(long, env = "KAFSCALE_S3_ATTEMPT_TIMEOUT_MS", default_value_t = 5000)]
    s3_attempt_timeout_ms: u64,
    /// KMS key for server-side encryption of segments (SSE-KMS).
    #[arg(long, env = "KAFSCALE_S3_KMS_KEY_ID")]
    kms_key_id: Option<String>,
    /// Records between `.index` entries.
    #[arg(long, env = "KAFSCALE_INDEX_INTERVAL", default_value_t = 4096)]
    index_interval: u32,
    /// Bytes of segments cached in memory for cold reads (whole intake
    /// objects read cold take up to half as much again).
    #[arg(long, env = "KAFSCALE_FLUSHER_CACHE_BYTES", default_value_t = 256 * 1024 * 1024)]
    cache_bytes: u64,
    /// Segments up to this size are read whole (one GET) and cached; larger
    /// ones by range. Also the largest segment that merging writes.
    #[arg(
        long,
        env = "KAFSCALE_WHOLE_SEGMENT_BYTES",
        default_value_t = 16 * 1024 * 1024,
        value_parser = clap::value_parser!(u64).range(1024 * 1024..=1024 * 1024 * 1024)
    )]
    whole_segment_bytes: u64,
    /// Memory for the key map of the cleaner of compacted topics (one pass
    /// at a time; Kafka's log.cleaner.dedupe.buffer.size): 33 bytes per
    /// slot, slots a power of two at most 7/8 full, so 128 MiB maps 1.8
    /// million keys; a partition with more keys than fit is cleaned over
    /// several passes.
    #[arg(
        long,
        env = "KAFSCALE_CLEANER_MEMORY_BYTES",
        default_value_t = 128 * 1024 * 1024,
        value_parser = clap::value_parser!(u64).range(1024 * 1024..=64 * 1024 * 1024 * 1024)
    )]
    cleaner_memory_bytes: u64,
    /// How long a broker's writes gather into one intake object before it is
    /// uploaded: `latency` (5 ms), `balanced` (50 ms) or `cost` (250 ms).
    /// The cost/latency dial; see the README for PUTs and latency of each.
    #[arg(
        long,
        env = "KAFSCALE_FLUSH_PRESET",
        value_enum,
        default_value = "balanced"
    )]
    flush_preset: FlushPreset,
    /// Overrides the preset's window, in milliseconds.
    #[arg(
        long,
        env = "KAFSCALE_INTAKE_WINDOW_MS",
        value_parser = clap::value_parser!(u64).range(1..=10_000)
    )]
    intake_window_ms: Option<u64>,
    /// Overrides the preset's size threshold: an intake object is uploaded
    /// at once when its parts reach this many bytes.
    #[arg(
        long,
        env = "KAFSCALE_INTAKE_BYTES",
        value_parser = clap::value_parser!(u64).range(1024..=256 * 1024 * 1024)
    )]
    intake_bytes: Option<u64>,
    /// Address of the HTTP endpoint: /metrics, /healthz, /readyz.
    #[arg(
        long,
        env = "KAFSCALE_FLUSHER_HTTP_LISTEN",
        default_value = "127.0.0.1:9095"
    )]
    http_listen: std::net::SocketAddr,
    /// Window over which object-store health is judged, in milliseconds.
    #[arg(long, env = "KAFSCALE_S3_HEALTH_WINDOW_MS", default_value_t = 30_000)]
    s3_health_window_ms: u64,
    /// Share of failed requests in the window that makes the store degraded.
    #[arg(long, env = "KAFSCALE_S3_DEGRADED_ERROR_RATIO", default_value_t = 0.2)]
    s3_degraded_error_ratio: f64,
    /// Share of failed requests in the window that makes the store unavailable.
    #[arg(
        long,
        env = "KAFSCALE_S3_UNAVAILABLE_ERROR_RATIO",
        default_value_t = 0.5
    )]
    s3_unavailable_error_ratio: f64,
    /// Mean request latency in the window that makes the store degraded, in milliseconds.
    #[arg(long, env = "KAFSCALE_S3_DEGRADED_LATENCY_MS", default_value_t = 2000)]
    s3_degraded_latency_ms: u64,
    /// Log format: `text` or `json`.
    #[arg(long, env = "KAFSCALE_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

fn intake_settings(args: &Args) -> IntakeSettings {
    let preset = args.flush_preset.settings();
    IntakeSettings {
        window: args
            .intake_window_ms
            .map_or(preset.window, Duration::from_millis),
        max_bytes: args.intake_bytes.map_or(preset.max_bytes, |b| b as usize),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    logging::init(&args.log_format);
    let store = S3Store::connect(&S3Settings {
        bucket: args.bucket.clone(),
        region: args.region.clone(),
        endpoint: args.endpoint.clone(),
        path_style: args.path_style,
        max_attempts: args.s3_max_attempts,
        attempt_timeout: Duration::from_millis(args.s3_attempt_timeout_ms),
        kms_key_id: args.kms_key_id.clone(),
    })
    .await;
    if args.create_bucket {
        store
            .ensure_bucket()
            .await
            .with_context(|| format!("creating bucket {}", args.bucket))?;
    }
    let health_settings = HealthSettings {
        window: Duration::from_millis(args.s3_health_window_ms),
        degraded_error_rate: args.s3_degraded_error_ratio,
        unavailable_error_rate: args.s3_unavailable_error_ratio,
        degraded_latency: Duration::from_millis(args.s3_degraded_latency_ms),
        ..HealthSettings::default()
    };
    let mut registry = Registry::default();
    let metrics = FlusherMetrics::new(&mut registry, &health_settings);
    let store = Arc::new(store);
    let put_delay = match std::env::var(PUT_DELAY_ENV) {
        Ok(text) => Some(PutDelay::parse(&text).map_err(anyhow::Error::msg)?),
        Err(_) => None,
    };
    let service_store: Arc<dyn ObjectStore> = if crash_points::armed() || put_delay.is_some() {
        if crash_points::armed() {
            tracing::warn!(
                "a crash point is armed ({}): this flusher kills itself at that step; tests only",
                crash_points::CRASH_AT_ENV
            );
        }
        if let Some(delay) = &put_delay {
            tracing::warn!(
                ?delay,
                "every PUT is held back ({PUT_DELAY_ENV}); benchmarks only"
            );
        }
        Arc::new(FaultStore::new(store.clone(), put_delay))
    } else {
        store.clone()
    };
    let service = FlusherService::new(
        service_store,
        FlusherSettings {
            prefix: args.prefix.clone(),
            index_interval: args.index_interval,
            cache_bytes: args.cache_bytes,
            whole_segment_bytes: args.whole_segment_bytes,
            intake: intake_settings(&args),
            cleaner_memory_bytes: args.cleaner_memory_bytes,
        },
        metrics,
        Arc::new(StoreHealth::new(health_settings)),
    );
    service.spawn_health_probe();
    let fencing = Arc::new(Mutex::new(Fencing::Checking("not checked yet".into())));
    let http = HttpEndpoint {
        registry: Arc::new(Mutex::new(registry)),
        readiness: Arc::new(FlusherReadiness {
            service: service.clone(),
            fencing: fencing.clone(),
        }),
        on_scrape: None,
        routes: None,
    }
    .serve(args.http_listen, logging::shutdown_signal())
    .await
    .with_context(|| format!("binding the HTTP endpoint on {}", args.http_listen))?;
    let shutdown = logging::shutdown_signal().shared();
    tokio::select! {
        verified = verify_fencing(&store, &args.prefix, &fencing) => {
            if !verified {
                // Serving no broker is the safe answer; /readyz says why.
                shutdown.await;
                return Ok(());
            }
        }
        _ = shutdown.clone() => return Ok(()),
    }
    let listener = server::bind(&args.socket)
        .with_context(|| format!("binding flusher socket {}", args.socket.display()))?;
    tracing::info!(socket = %args.socket.display(), store = %service.store_description(), prefix = %args.prefix, http = %http, "flusher ready");
    server::serve(listener, service, shutdown).await;
    tracing::info!("flusher stopped");
    Ok(())
}

/// Whether the store honours the conditional writes fencing relies on.
enum Fencing {
    Checking(String),
    Verified,
    Refused(String),
}

/// Runs the conditional-write check until it gives an answer (an
/// unreachable store is retried); true when the store fences.
async fn verify_fencing(store: &Arc<S3Store>, prefix: &str, fencing: &Mutex<Fencing>) -> bool {
    let set = |state| *fencing.lock().unwrap_or_else(|e| e.into_inner()) = state;
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ u64::from(std::process::id());
    loop {
        match check_conditional_writes(store.as_ref(), prefix, nonce).await {
            Ok(()) => {
                set(Fencing::Verified);
                return true;
            }
            Err(CheckError::NotFencing(why)) => {
                tracing::error!(reason = %why, "refusing to run: the object store does not honour conditional writes");
                set(Fencing::Refused(why));
                return false;
            }
            Err(e @ CheckError::Unavailable(_)) => {
                tracing::warn!(error = %e, "checking the object store's conditional writes; retrying");
                set(Fencing::Checking(e.to_string()));
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// Ready once the store is known to fence, while it is not unavailable.
struct FlusherReadiness {
    service: Arc<FlusherService>,
    fencing: Arc<Mutex<Fencing>>,
}

impl ReadinessProbe for FlusherReadiness {
    fn check(&self) -> BoxFuture<'_, Readiness> {
        async move {
            let Health { state, detail } = self.service.health_report();
            let ok = state != HealthState::Unavailable;
            let (fences, why) = match &*self.fencing.lock().unwrap_or_else(|e| e.into_inner()) {
                Fencing::Verified => (true, "conditional writes honoured".to_string()),
                Fencing::Checking(detail) => (false, format!("checking: {detail}")),
                Fencing::Refused(why) => (false, why.clone()),
            };
            Readiness::from_checks(vec![
                Check {
                    name: "object_store",
                    ok,
                    detail,
                },
                Check {
                    name: "conditional_writes",
                    ok: fences,
                    detail: why,
                },
            ])
        }
        .boxed()
    }
}
