//! `kafscale-flusher`: the sidecar that owns object storage for one broker.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use kafscale_flusher::s3_store::{S3Settings, S3Store};
use kafscale_flusher::{server, FlusherService, FlusherSettings};

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
    /// Records between `.index` entries.
    #[arg(long, env = "KAFSCALE_INDEX_INTERVAL", default_value_t = 4096)]
    index_interval: u32,
    /// Bytes of segments cached in memory for cold reads.
    #[arg(long, env = "KAFSCALE_FLUSHER_CACHE_BYTES", default_value_t = 256 * 1024 * 1024)]
    cache_bytes: u64,
    /// Log format: `text` or `json`.
    #[arg(long, env = "KAFSCALE_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    kafscale_flusher::logging::init(&args.log_format);
    let store = S3Store::connect(&S3Settings {
        bucket: args.bucket.clone(),
        region: args.region.clone(),
        endpoint: args.endpoint.clone(),
        path_style: args.path_style,
        max_attempts: args.s3_max_attempts,
        attempt_timeout: Duration::from_millis(args.s3_attempt_timeout_ms),
    })
    .await;
    if args.create_bucket {
        store
            .ensure_bucket()
            .await
            .with_context(|| format!("creating bucket {}", args.bucket))?;
    }
    let service = FlusherService::new(
        Arc::new(store),
        FlusherSettings {
            prefix: args.prefix.clone(),
            index_interval: args.index_interval,
            cache_bytes: args.cache_bytes,
            ..FlusherSettings::default()
        },
    );
    let listener = server::bind(&args.socket)
        .with_context(|| format!("binding flusher socket {}", args.socket.display()))?;
    tracing::info!(socket = %args.socket.display(), store = %service.store_description(), prefix = %args.prefix, "flusher ready");
    server::serve(
        listener,
        service,
        kafscale_flusher::logging::shutdown_signal(),
    )
    .await;
    tracing::info!("flusher stopped");
    Ok(())
}
