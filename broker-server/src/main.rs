//! `kafscale-broker`. Without arguments it runs in dev mode: broker and flusher
//! in one process, a local directory as object store and an embedded metadata
//! file, listening on 127.0.0.1:9092.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use kafscale_broker::cluster::fencing;
use kafscale_broker::config::MergeSettings;
use kafscale_broker::kafka::listeners::{self, Listener, SecurityProtocol};
use kafscale_broker::kafka::server;
use kafscale_broker::metrics::{BrokerMetrics, InstrumentedKv};
use kafscale_broker::object_storage::StorageAccess;
use kafscale_broker::partitions::log::{LogSettings, WritePath};
use kafscale_broker::security::acl::AuthorizerSettings;
use kafscale_broker::security::oauthbearer::{TokenKeys, TokenRules};
use kafscale_broker::security::reload::{self, Reloadable};
use kafscale_broker::security::sasl::{Mechanism, OAuthSettings, SaslSettings};
use kafscale_broker::security::scram::{ScramMechanism, MIN_ITERATIONS};
use kafscale_broker::security::tls::{ClientAuth, TlsFiles};
use kafscale_broker::{ops_api, Broker, BrokerConfig};
use kafscale_flusher::intake_writer::FlushPreset;
use kafscale_flusher::metrics::{FlusherMetrics, HealthSettings, StoreHealth};
use kafscale_flusher::{FlusherService, FlusherSettings, LocalDirStore};
use kafscale_metadata::etcd::EtcdKv;
use kafscale_metadata::{Endpoint, FileKv, KvBackend, MetadataStore};
use kafscale_telemetry::logging;
use kafscale_telemetry::prometheus_client::registry::Registry;
use kafscale_telemetry::HttpEndpoint;
use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// One process: in-process flusher, local-directory object store, embedded metadata.
    Dev,
    /// Separate flusher sidecar (Unix socket) and etcd.
    Production,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AuthorizerKind {
    None,
    Acl,
}

#[derive(Parser, Debug)]
#[command(
    name = "kafscale-broker",
    version,
    about = "Kafscale broker: Kafka protocol over stateless in-memory logs, durable in object storage"
)]
struct Args {
    #[arg(long, env = "KAFSCALE_MODE", value_enum, default_value = "dev")]
    mode: Mode,
    /// Address of the Kafka listener when --listeners is not given (one
    /// PLAINTEXT listener).
    #[arg(long, env = "KAFSCALE_LISTEN", default_value = "127.0.0.1:9092")]
    listen: String,
    /// Kafka listeners in Kafka's syntax, e.g.
    /// `PLAINTEXT://127.0.0.1:9092,SASL_SSL://0.0.0.0:9093`; protocols
    /// PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL. Overrides --listen.
    #[arg(long, env = "KAFSCALE_LISTENERS")]
    listeners: Option<String>,
    /// What clients of each listener are told to connect to, e.g.
    /// `SASL_SSL://kafka.example.com:9093`; listeners not named here
    /// advertise their bound address.
    #[arg(long, env = "KAFSCALE_ADVERTISED_LISTENERS", default_value = "")]
    advertised_listeners: String,
    /// Protocols of listeners with free names, e.g. `INTERNAL:SASL_PLAINTEXT,EXTERNAL:SASL_SSL`.
    #[arg(
        long,
        env = "KAFSCALE_LISTENER_SECURITY_PROTOCOL_MAP",
        default_value = ""
    )]
    listener_security_protocol_map: String,
    /// Host the first listener's clients are told to connect to (defaults
    /// to its bound host; --advertised-listeners sets any listener's).
    #[arg(long, env = "KAFSCALE_ADVERTISED_HOST")]
    advertised_host: Option<String>,
    /// Port the first listener's clients are told to connect to (defaults to the bound port).
    #[arg(long, env = "KAFSCALE_ADVERTISED_PORT")]
    advertised_port: Option<u16>,
    /// SSL and SASL_SSL listeners: the broker's certificate chain (PEM),
    /// reloaded when it changes.
    #[arg(long, env = "KAFSCALE_TLS_CERT_FILE")]
    tls_cert_file: Option<PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "KAFSCALE_TLS_KEY_FILE")]
    tls_key_file: Option<PathBuf>,
    /// CA bundle (PEM) that client certificates must chain to (mTLS); a
    /// verified certificate's subject becomes the principal, e.g. `User:CN=orders`.
    #[arg(long, env = "KAFSCALE_TLS_CLIENT_CA_FILE")]
    tls_client_ca_file: Option<PathBuf>,
    /// Kafka's ssl.client.auth: `none`, `requested` or `required`
    /// (default: required when --tls-client-ca-file is given, else none).
    #[arg(long, env = "KAFSCALE_TLS_CLIENT_AUTH", value_enum)]
    tls_client_auth: Option<ClientAuth>,
    /// ssl.client.auth per listener (Kafka's
    /// listener.name.NAME.ssl.client.auth), e.g. `MTLS:required;EXTERNAL:none`.
    #[arg(long, env = "KAFSCALE_LISTENER_TLS_CLIENT_AUTH", default_value = "")]
    listener_tls_client_auth: String,
    /// How often certificate, key, CA and JWKS files are checked for
    /// changes, in milliseconds.
    #[arg(long, env = "KAFSCALE_TLS_RELOAD_INTERVAL_MS", default_value_t = 10_000,
        value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    tls_reload_interval_ms: u64,
    /// SASL mechanisms of SASL listeners: PLAIN, SCRAM-SHA-256,
    /// SCRAM-SHA-512, OAUTHBEARER. PLAIN checks passwords against the SCRAM
    /// credentials; enable it on TLS listeners only.
    #[arg(
        long,
        env = "KAFSCALE_SASL_ENABLED_MECHANISMS",
        value_delimiter = ',',
        default_value = "SCRAM-SHA-256,SCRAM-SHA-512"
    )]
    sasl_enabled_mechanisms: Vec<String>,
    /// Mechanisms per SASL listener (Kafka's
    /// listener.name.NAME.sasl.enabled.mechanisms), overriding
    /// --sasl-enabled-mechanisms, e.g. `EXTERNAL:SCRAM-SHA-512;OAUTH:OAUTHBEARER`.
    #[arg(
        long,
        env = "KAFSCALE_LISTENER_SASL_ENABLED_MECHANISMS",
        default_value = ""
    )]
    listener_sasl_enabled_mechanisms: String,
    /// OAUTHBEARER: a JWKS document (file) with the identity provider's
    /// public keys, reloaded when it changes.
    #[arg(long, env = "KAFSCALE_SASL_OAUTHBEARER_JWKS_FILE")]
    sasl_oauthbearer_jwks_file: Option<PathBuf>,
    /// OAUTHBEARER: the issuer's public key (PEM), instead of a JWKS file.
    #[arg(long, env = "KAFSCALE_SASL_OAUTHBEARER_PUBLIC_KEY_FILE")]
    sasl_oauthbearer_public_key_file: Option<PathBuf>,
    /// OAUTHBEARER: tokens must carry this `iss`.
    #[arg(long, env = "KAFSCALE_SASL_OAUTHBEARER_EXPECTED_ISSUER")]
    sasl_oauthbearer_expected_issuer: Option<String>,
    /// OAUTHBEARER: tokens must carry one of these `aud` values (comma separated).
    #[arg(
        long,
        env = "KAFSCALE_SASL_OAUTHBEARER_EXPECTED_AUDIENCE",
        value_delimiter = ','
    )]
    sasl_oauthbearer_expected_audience: Vec<String>,
    /// OAUTHBEARER: the claim that names the principal.
    #[arg(
        long,
        env = "KAFSCALE_SASL_OAUTHBEARER_SUB_CLAIM_NAME",
        default_value = "sub"
    )]
    sasl_oauthbearer_sub_claim_name: String,
    /// OAUTHBEARER: tolerated clock difference for exp and nbf, in seconds.
    #[arg(long, env = "KAFSCALE_SASL_OAUTHBEARER_CLOCK_SKEW_SECONDS", default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(0..=3600))]
    sasl_oauthbearer_clock_skew_seconds: u64,
    /// Kafka's connections.max.reauth.ms: SASL sessions last this long
    /// (at most a token's lifetime), then clients re-authenticate on the
    /// same connection (KIP-368) or are disconnected; 0 turns it off.
    #[arg(long, env = "KAFSCALE_CONNECTIONS_MAX_REAUTH_MS", default_value_t = 0,
        value_parser = clap::value_parser!(u64).range(0..=86_400_000))]
    connections_max_reauth_ms: u64,
    /// Kafka's connection.failed.authentication.delay.ms: failed
    /// authentications are answered this late.
    #[arg(long, env = "KAFSCALE_CONNECTION_FAILED_AUTHENTICATION_DELAY_MS", default_value_t = 100,
        value_parser = clap::value_parser!(u64).range(0..=60_000))]
    connection_failed_authentication_delay_ms: u64,
    /// SCRAM users created at startup if they have no credential yet
    /// (`name:password,...`); an existing credential is never changed. For
    /// the first administrator: give it as an environment variable from a
    /// Secret, not a flag (flags show in process listings).
    #[arg(
        long,
        env = "KAFSCALE_SASL_BOOTSTRAP_USERS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    sasl_bootstrap_users: Vec<String>,
    /// `acl`: every request is checked against the ACL bindings (managed
    /// with kafka-acls; kept in etcd); `none`: everything is allowed and the
    /// ACL APIs answer SECURITY_DISABLED.
    #[arg(long, env = "KAFSCALE_AUTHORIZER", value_enum, default_value = "none")]
    authorizer: AuthorizerKind,
    /// Principals allowed everything, separated by `;` as in Kafka's
    /// super.users, e.g. `User:admin;User:CN=operator`.
    #[arg(long, env = "KAFSCALE_SUPER_USERS", value_delimiter = ';')]
    super_users: Vec<String>,
    /// Kafka's allow.everyone.if.no.acl.found: a resource no binding
    /// matches is open to everyone (default: closed).
    #[arg(long, env = "KAFSCALE_ALLOW_EVERYONE_IF_NO_ACL_FOUND")]
    allow_everyone_if_no_acl_found: bool,
    /// Dev mode: the listener is SASL_PLAINTEXT with SCRAM and PLAIN, and a
    /// user `admin` is created with a random password, printed at startup
    /// and kept in the data directory.
    #[arg(long, env = "KAFSCALE_DEV_SASL")]
    dev_sasl: bool,
    /// This broker's id, unique in the cluster (in Kubernetes: the pod's ordinal).
    #[arg(long, env = "KAFSCALE_NODE_ID", default_value_t = 0)]
    node_id: i32,
    /// How long after a broker stops renewing its etcd session (crash, pause,
    /// network cut) its partitions and groups move to other brokers.
    #[arg(
        long,
        env = "KAFSCALE_SESSION_TIMEOUT_MS",
        default_value_t = 6000,
        value_parser = clap::value_parser!(u64).range(2000..=600_000)
    )]
    session_timeout_ms: u64,
    /// Cluster id reported to clients; also the etcd key root `/kafscale/{cluster_id}/`.
    #[arg(long, env = "KAFSCALE_CLUSTER_ID", default_value = "kafscale")]
    cluster_id: String,
    /// etcd endpoints, comma separated (production mode).
    #[arg(long, env = "KAFSCALE_ETCD_ENDPOINTS", value_delimiter = ',')]
    etcd_endpoints: Vec<String>,
    /// Flusher socket (production mode).
    #[arg(
        long,
        env = "KAFSCALE_FLUSHER_SOCKET",
        default_value = "/var/run/kafscale/flusher.sock"
    )]
    flusher_socket: PathBuf,
    /// How long to wait for the flusher to answer one request, in milliseconds.
    #[arg(long, env = "KAFSCALE_FLUSHER_TIMEOUT_MS", default_value_t = 30_000)]
    flusher_timeout_ms: u64,
    /// Dev mode: where objects and metadata are kept.
    #[arg(long, env = "KAFSCALE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Create unknown topics when clients ask (default: on in dev mode, off in production).
    #[arg(long, env = "KAFSCALE_AUTO_CREATE_TOPICS")]
    auto_create_topics: Option<bool>,
    /// Partitions of topics created without a count.
    #[arg(long, env = "KAFSCALE_DEFAULT_PARTITIONS", default_value_t = 1)]
    default_partitions: i32,
    /// Group-commit window: how long produces are gathered into one upload.
    #[arg(long, env = "KAFSCALE_FLUSH_WINDOW_MS", default_value_t = 5)]
    flush_window_ms: u64,
    /// Upload early once this many bytes are pending for a partition.
    #[arg(long, env = "KAFSCALE_FLUSH_BYTES", default_value_t = 8 * 1024 * 1024)]
    flush_bytes: usize,
    /// How uploads reach object storage: `intake` (the flusher gathers all
    /// partitions of its window into one object, compacted into segments
    /// later; its `--flush-preset` sets the window; docs/intake-objects.md)
    /// or `segments` (one segment per partition per `--flush-window-ms`).
    #[arg(
        long,
        env = "KAFSCALE_WRITE_PATH",
        value_enum,
        default_value = "intake"
    )]
    write_path: WritePath,
    /// Intake write path: how long uploaded parts may gather toward
    /// `segment.bytes` before they are compacted into a segment, in
    /// milliseconds (longer: fewer, larger segments and fewer PUTs).
    #[arg(
        long,
        env = "KAFSCALE_INTAKE_COMPACTION_DELAY_MS",
        default_value_t = 600_000,
        value_parser = clap::value_parser!(u64).range(0..=86_400_000)
    )]
    intake_compaction_delay_ms: u64,
    /// Dev mode: the embedded flusher's intake window, `latency` (5 ms),
    /// `balanced` (50 ms) or `cost` (250 ms).
    #[arg(
        long,
        env = "KAFSCALE_FLUSH_PRESET",
        value_enum,
        default_value = "balanced"
    )]
    flush_preset: FlushPreset,
    /// Bytes of recent data kept in memory for tail reads, across all partitions.
    #[arg(long, env = "KAFSCALE_MEMORY_BUDGET_BYTES", default_value_t = 256 * 1024 * 1024)]
    memory_budget_bytes: usize,
    /// How often retention deletes old segments, in milliseconds.
    #[arg(
        long,
        env = "KAFSCALE_RETENTION_CHECK_INTERVAL_MS",
        default_value_t = 60_000
    )]
    retention_check_interval_ms: u64,
    /// How often the leaders of compacted topics' partitions check whether
    /// they are due for cleaning (Kafka's log.cleaner.backoff.ms), in
    /// milliseconds; 0 turns cleaning off.
    #[arg(long, env = "KAFSCALE_CLEANER_INTERVAL_MS", default_value_t = 15_000)]
    cleaner_interval_ms: u64,
    /// How often the controller compacts etcd's history of old key versions
    /// (offset commits add one each), in milliseconds; 0 leaves it to etcd's
    /// own auto-compaction.
    #[arg(
        long,
        env = "KAFSCALE_METADATA_COMPACTION_INTERVAL_MS",
        default_value_t = 300_000,
        value_parser = clap::value_parser!(u64).range(0..=86_400_000)
    )]
    metadata_compaction_interval_ms: u64,
    /// What the metadata store may hold (etcd's space in use) before the
    /// controller compacts its history early, to what it saw one check (2 s)
    /// before; keeps a commit storm far from etcd's quota. 0: no limit.
    #[arg(long, env = "KAFSCALE_METADATA_HISTORY_MAX_BYTES", default_value_t = 512 * 1024 * 1024,
        value_parser = clap::value_parser!(u64).range(0..=1_099_511_627_776))]
    metadata_history_max_bytes: u64,
    /// How often a partition's leader merges small segments into larger
    /// ones, in milliseconds (0: never).
    #[arg(long, env = "KAFSCALE_MERGE_INTERVAL_MS", default_value_t = 10_000)]
    merge_interval_ms: u64,
    /// Only segments written at least this long ago are merged, in
    /// milliseconds; a fenced broker's uploads stop landing after half of it.
    #[arg(
        long,
        env = "KAFSCALE_MERGE_MIN_AGE_MS",
        default_value_t = 60_000,
        value_parser = clap::value_parser!(u64).range(1_000..=86_400_000)
    )]
    merge_min_age_ms: u64,
    /// How long a new consumer group waits for more members before its first
    /// rebalance (Kafka's group.initial.rebalance.delay.ms).
    #[arg(
        long,
        env = "KAFSCALE_GROUP_INITIAL_REBALANCE_DELAY_MS",
        default_value_t = 3000
    )]
    group_initial_rebalance_delay_ms: u64,
    /// Shortest session timeout a group member may ask for.
    #[arg(
        long,
        env = "KAFSCALE_GROUP_MIN_SESSION_TIMEOUT_MS",
        default_value_t = 6000
    )]
    group_min_session_timeout_ms: u64,
    /// Idempotent producers that have not written to a partition for this
    /// long are forgotten there (Kafka's producer.id.expiration.ms).
    #[arg(long, env = "KAFSCALE_PRODUCER_ID_EXPIRATION_MS", default_value_t = 86_400_000,
        value_parser = clap::value_parser!(u64).range(60_000..=31_536_000_000))]
    producer_id_expiration_ms: u64,
    /// Idempotent producers the broker remembers, counted once per
    /// partition each writes to (~200 bytes each). Beyond it a producer new
    /// to a partition gets a retriable error, and idle producers are
    /// forgotten after 15 minutes instead of the expiration.
    #[arg(long, env = "KAFSCALE_MAX_IDEMPOTENT_PRODUCERS", default_value_t = 250_000,
        value_parser = clap::value_parser!(u32).range(1_000..=100_000_000))]
    max_idempotent_producers: u32,
    /// Members per consumer group, counting those given an id to join with;
    /// more get GROUP_MAX_SIZE_REACHED (Kafka's group.max.size).
    #[arg(long, env = "KAFSCALE_GROUP_MAX_SIZE", default_value_t = 1000,
        value_parser = clap::value_parser!(u32).range(1..=100_000))]
    group_max_size: u32,
    /// Longest metadata of a committed offset; longer is refused with
    /// OFFSET_METADATA_TOO_LARGE (Kafka's offset.metadata.max.bytes).
    #[arg(long, env = "KAFSCALE_OFFSET_METADATA_MAX_BYTES", default_value_t = 4096,
        value_parser = clap::value_parser!(u32).range(0..=1_048_576))]
    offset_metadata_max_bytes: u32,
    /// How long committed offsets are kept after their group becomes empty
    /// (offsets-only groups: after each commit); then they are deleted, and
    /// the group with them (Kafka's offsets.retention.minutes).
    #[arg(long, env = "KAFSCALE_OFFSETS_RETENTION_MINUTES", default_value_t = 10_080,
        value_parser = clap::value_parser!(u32).range(1..=52_560_000))]
    offsets_retention_minutes: u32,
    /// How often committed offsets are checked for expiry (Kafka's
    /// offsets.retention.check.interval.ms).
    #[arg(long, env = "KAFSCALE_OFFSETS_RETENTION_CHECK_INTERVAL_MS", default_value_t = 600_000,
        value_parser = clap::value_parser!(u64).range(1_000..=86_400_000))]
    offsets_retention_check_interval_ms: u64,
    /// What the groups this broker coordinates may hold in memory (members'
    /// metadata and assignments); joins and assignments beyond it are
    /// answered COORDINATOR_NOT_AVAILABLE, which clients retry.
    #[arg(long, env = "KAFSCALE_GROUP_MEMORY_BYTES", default_value_t = 256 * 1024 * 1024,
        value_parser = clap::value_parser!(u64).range(1_048_576..=1_099_511_627_776))]
    group_memory_bytes: u64,
    /// Largest request accepted; larger ones close the connection.
    #[arg(long, env = "KAFSCALE_MAX_REQUEST_BYTES", default_value_t = 100 * 1024 * 1024,
        value_parser = clap::value_parser!(u32).range(1024..=i32::MAX as i64))]
    max_request_bytes: u32,
    /// Largest frame a client may send before it has authenticated on a
    /// SASL listener (Kafka's sasl.server.max.receive.size).
    #[arg(long, env = "KAFSCALE_SASL_SERVER_MAX_RECEIVE_BYTES", default_value_t = 524_288,
        value_parser = clap::value_parser!(u32).range(1024..=16_777_216))]
    sasl_server_max_receive_bytes: u32,
    /// Open Kafka connections in total; more are closed at once.
    #[arg(long, env = "KAFSCALE_MAX_CONNECTIONS", default_value_t = 10_000,
        value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_connections: u32,
    /// Open Kafka connections from one client address; more are closed at once.
    #[arg(long, env = "KAFSCALE_MAX_CONNECTIONS_PER_IP", default_value_t = 1_000,
        value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_connections_per_ip: u32,
    /// A connection without requests for this long is closed (Kafka's
    /// connections.max.idle.ms).
    #[arg(long, env = "KAFSCALE_CONNECTIONS_MAX_IDLE_MS", default_value_t = 600_000,
        value_parser = clap::value_parser!(u64).range(1_000..=86_400_000))]
    connections_max_idle_ms: u64,
    /// A request that stops arriving midway, or a response the client stops
    /// reading, for this long closes the connection.
    #[arg(long, env = "KAFSCALE_STALL_TIMEOUT_MS", default_value_t = 60_000,
        value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    stall_timeout_ms: u64,
    /// Bytes of requests read but not yet answered, all connections together
    /// (Kafka's queued.max.request.bytes); at the limit the broker stops
    /// reading requests until responses go out. At least --max-request-bytes.
    #[arg(long, env = "KAFSCALE_QUEUED_MAX_REQUEST_BYTES", default_value_t = 256 * 1024 * 1024)]
    queued_max_request_bytes: usize,
    /// Bytes of fetch responses read but not yet written, all connections together.
    #[arg(long, env = "KAFSCALE_FETCH_MEMORY_BYTES", default_value_t = 256 * 1024 * 1024,
        value_parser = clap::value_parser!(u64).range(1024 * 1024..))]
    fetch_memory_bytes: u64,
    /// The most one fetch response carries, whatever the client asks (Kafka's
    /// fetch.max.bytes); the first batch is always returned whole.
    #[arg(long, env = "KAFSCALE_FETCH_MAX_BYTES", default_value_t = 57_671_680,
        value_parser = clap::value_parser!(u64).range(1024..))]
    fetch_max_bytes: u64,
    /// A produced batch whose records decompress to more than this is refused
    /// (MESSAGE_TOO_LARGE): a decompression bomb costs bounded memory and CPU.
    /// A whole produce request may decompress to eight times this.
    #[arg(long, env = "KAFSCALE_MAX_UNCOMPRESSED_BATCH_BYTES", default_value_t = 128 * 1024 * 1024,
        value_parser = clap::value_parser!(u64).range(1024 * 1024..))]
    max_uncompressed_batch_bytes: u64,
    /// Per partition: refuse produces while this many bytes wait for object storage.
    #[arg(long, env = "KAFSCALE_MAX_PENDING_BYTES", default_value_t = 64 * 1024 * 1024)]
    max_pending_bytes: usize,
    /// All partitions together: refuse produces (retriable) while this many
    /// bytes wait for object storage, the upload in flight included.
    #[arg(long, env = "KAFSCALE_MAX_UNACKNOWLEDGED_BYTES", default_value_t = 256 * 1024 * 1024)]
    max_unacknowledged_bytes: usize,
    /// Address of the HTTP endpoint: /metrics, /healthz, /readyz and, unless
    /// --ops-api-listen puts it elsewhere, the ops API.
    #[arg(long, env = "KAFSCALE_HTTP_LISTEN", default_value = "127.0.0.1:9094")]
    http_listen: std::net::SocketAddr,
    /// Address of the ops API (/api/v1, unauthenticated, it names every
    /// topic and group) when it must not share the probes' address: in
    /// Kubernetes the probes need the pod's address, the ops API only a
    /// port-forward (127.0.0.1).
    #[arg(long, env = "KAFSCALE_OPS_API_LISTEN")]
    ops_api_listen: Option<std::net::SocketAddr>,
    /// Log format: `text` or `json`.
    #[arg(long, env = "KAFSCALE_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

fn default_data_dir() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/kafscale/dev"),
        None => std::env::temp_dir().join("kafscale-dev"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    logging::init(&args.log_format);
    let specs = resolve_listeners(&args)?;
    let reload_interval = Duration::from_millis(args.tls_reload_interval_ms);
    let tls = tls_configs(&args, &specs, reload_interval)?;
    let mut listeners = Vec::new();
    let mut advertised = BTreeMap::new();
    for (i, spec) in specs.iter().enumerate() {
        let socket = tokio::net::TcpListener::bind(spec.bind_address())
            .await
            .with_context(|| {
                format!(
                    "binding the Kafka listener {} on {} (is another broker running?)",
                    spec.name,
                    spec.bind_address()
                )
            })?;
        let bound = socket.local_addr()?;
        // The first listener also takes the older --advertised-host/-port.
        let (flag_host, flag_port) = if i == 0 {
            (args.advertised_host.clone(), args.advertised_port)
        } else {
            (None, None)
        };
        let endpoint = Endpoint {
            host: spec
                .advertised_host
                .clone()
                .or(flag_host)
                .unwrap_or_else(|| bound.ip().to_string()),
            port: i32::from(spec.advertised_port.or(flag_port).unwrap_or(bound.port())),
        };
        tracing::info!(listener = %spec.name, protocol = %spec.protocol, %bound, advertised = %format!("{}:{}", endpoint.host, endpoint.port), "Kafka listener bound");
        advertised.insert(spec.name.clone(), endpoint);
        listeners.push(server::BoundListener {
            socket,
            name: Arc::from(spec.name.as_str()),
            protocol: spec.protocol,
            tls: tls.get(&spec.name).cloned(),
        });
    }
    let first = advertised[&specs[0].name].clone();
    let listing = specs
        .iter()
        .zip(&listeners)
        .map(|(spec, l)| {
            let addr = l
                .socket
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            format!("{}://{addr}", spec.name)
        })
        .collect::<Vec<_>>()
        .join(",");
    let sasl = sasl_settings(&args, &specs, reload_interval)?;
    let flusher_timeout = Duration::from_millis(args.flusher_timeout_ms);
    let merge = MergeSettings {
        interval: Duration::from_millis(args.merge_interval_ms),
        min_age: Duration::from_millis(args.merge_min_age_ms),
    };
    let session_timeout = Duration::from_millis(args.session_timeout_ms);
    let handover_wait =
        fencing::handover_wait(session_timeout, merge.upload_grace(), flusher_timeout);
    fencing::check_timing(&fencing::Timing {
        session_timeout,
        merge_min_age: merge.min_age,
        upload_grace: merge.upload_grace(),
        flusher_timeout,
        handover_wait,
    })
    .map_err(|why| anyhow::anyhow!("inconsistent settings: {why}"))?;
    let mut registry = Registry::default();
    let metrics = BrokerMetrics::new(&mut registry);

    let (kv, flusher_socket): (Arc<dyn KvBackend>, PathBuf) = match args.mode {
        Mode::Dev => {
            let dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("creating data directory {}", dir.display()))?;
            let store = LocalDirStore::new(dir.join("objects"))
                .with_context(|| format!("creating object directory under {}", dir.display()))?;
            let health = HealthSettings::default();
            let flusher_metrics = FlusherMetrics::new(&mut registry, &health);
            let service = FlusherService::new(
                Arc::new(store),
                FlusherSettings {
                    prefix: args.cluster_id.clone(),
                    intake: args.flush_preset.settings(),
                    ..FlusherSettings::default()
                },
                flusher_metrics,
                Arc::new(StoreHealth::new(health)),
            );
            service.spawn_health_probe();
            let socket = dir.join("flusher.sock");
            let sock_listener = kafscale_flusher::server::bind(&socket)
                .with_context(|| format!("binding {}", socket.display()))?;
            tokio::spawn(kafscale_flusher::server::serve(
                sock_listener,
                service,
                std::future::pending(),
            ));
            let kv = FileKv::open(dir.join("metadata.json"))?;
            eprintln!(
                "kafscale dev mode: Kafka listeners {listing}; data in {} (objects/, metadata.json)",
                dir.display()
            );
            (Arc::new(kv), socket)
        }
        Mode::Production => {
            if args.etcd_endpoints.is_empty() {
                bail!("production mode needs --etcd-endpoints (or KAFSCALE_ETCD_ENDPOINTS), e.g. http://etcd:2379");
            }
            let kv = connect_etcd(&args.etcd_endpoints).await?;
            (Arc::new(kv), args.flusher_socket.clone())
        }
    };

    let defaults = BrokerConfig::default();
    let config = BrokerConfig {
        node_id: args.node_id,
        cluster_id: args.cluster_id.clone(),
        advertised_host: first.host,
        advertised_port: first.port,
        advertised_listeners: advertised,
        sasl: Arc::new(sasl),
        authorizer: authorizer_settings(&args)?,
        auto_create_topics: args.auto_create_topics.unwrap_or(args.mode == Mode::Dev),
        default_partitions: args.default_partitions,
        max_request_bytes: args.max_request_bytes as usize,
        retention_check_interval: Duration::from_millis(args.retention_check_interval_ms),
        cleaner_interval: Duration::from_millis(args.cleaner_interval_ms),
        session_timeout,
        metadata_history: kafscale_broker::maintenance::history_compaction::HistorySettings {
            interval: Duration::from_millis(args.metadata_compaction_interval_ms),
            max_history_bytes: args.metadata_history_max_bytes,
        },
        merge: merge.clone(),
        listener: kafscale_broker::kafka::listener_limits::ListenerSettings {
            max_connections: args.max_connections as usize,
            max_connections_per_ip: args.max_connections_per_ip as usize,
            idle_timeout: Duration::from_millis(args.connections_max_idle_ms),
            stall_timeout: Duration::from_millis(args.stall_timeout_ms),
            queued_max_request_bytes: args.queued_max_request_bytes,
            fetch_memory_bytes: usize::try_from(args.fetch_memory_bytes).unwrap_or(usize::MAX),
            fetch_max_bytes: usize::try_from(args.fetch_max_bytes).unwrap_or(usize::MAX),
            sasl_max_receive_bytes: args.sasl_server_max_receive_bytes as usize,
        },
        record_limits: kafscale_broker::partitions::record_validation::RecordLimits::per_batch(
            args.max_uncompressed_batch_bytes,
        ),
        groups: kafscale_broker::groups::GroupSettings {
            initial_rebalance_delay: Duration::from_millis(args.group_initial_rebalance_delay_ms),
            min_session_timeout: Duration::from_millis(args.group_min_session_timeout_ms),
            max_size: args.group_max_size as usize,
            offset_metadata_max_bytes: args.offset_metadata_max_bytes as usize,
            offsets_retention: Duration::from_secs(u64::from(args.offsets_retention_minutes) * 60),
            offsets_retention_check_interval: Duration::from_millis(
                args.offsets_retention_check_interval_ms,
            ),
            memory_bytes: usize::try_from(args.group_memory_bytes).unwrap_or(usize::MAX),
            ..defaults.groups.clone()
        },
        compaction: kafscale_broker::maintenance::intake_compaction::CompactionSettings {
            max_delay: Duration::from_millis(args.intake_compaction_delay_ms),
            ..Default::default()
        },
        log: LogSettings {
            flush_window: Duration::from_millis(args.flush_window_ms),
            flush_bytes: args.flush_bytes,
            memory_budget: args.memory_budget_bytes,
            max_pending_bytes: args.max_pending_bytes,
            max_unacknowledged_bytes: args.max_unacknowledged_bytes,
            upload_grace: merge.upload_grace(),
            handover_wait,
            write_path: args.write_path,
            producer_id_expiration: Duration::from_millis(args.producer_id_expiration_ms),
            max_producer_states: args.max_idempotent_producers as usize,
            upload_timeout: flusher_timeout,
        },
        ..defaults
    };
    let kv: Arc<dyn KvBackend> = Arc::new(InstrumentedKv::new(kv, metrics.clone()));
    let metadata = MetadataStore::new(kv, &args.cluster_id);
    bootstrap_users(&metadata, &args.sasl_bootstrap_users).await?;
    if args.dev_sasl {
        let dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
        let password = dev_admin(&metadata, &dir).await?;
        eprintln!("kafscale dev mode: SASL_PLAINTEXT with SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN; user 'admin', password '{password}' (kept in {})", dir.join("admin-password").display());
    }
    let storage = StorageAccess::flusher_socket(
        &flusher_socket,
        flusher_timeout,
        kafscale_broker::storage_health::POLL_TIMEOUT,
    );
    let broker = Broker::start(config, metadata.clone(), storage, metrics)
        .await
        .with_context(|| format!("loading topics from {}", metadata.describe()))?;
    let ops_api = ops_api::routes(broker.clone());
    let (routes, ops_api) = match args.ops_api_listen {
        Some(addr) => (None, Some((addr, ops_api))),
        None => (Some(ops_api), None),
    };
    let http = HttpEndpoint {
        registry: Arc::new(Mutex::new(registry)),
        readiness: Arc::new(ops_api::BrokerReadiness(broker.clone())),
        on_scrape: Some(ops_api::scrape_hook(broker.clone())),
        routes,
    }
    .serve(args.http_listen, logging::shutdown_signal())
    .await
    .with_context(|| format!("binding the HTTP endpoint on {}", args.http_listen))?;
    if let Some((addr, routes)) = ops_api {
        let bound = HttpEndpoint::serve_routes(routes, addr, logging::shutdown_signal())
            .await
            .with_context(|| format!("binding the ops API on {addr} (--ops-api-listen)"))?;
        tracing::info!(ops_api = %bound, "ops API on its own address");
    }
    broker.maintenance.spawn_jobs(&broker.tasks);
    tracing::info!(listeners = %listing, http = %http, metadata = %metadata.describe(), flusher = %flusher_socket.display(), "broker ready");
    server::serve(broker.clone(), listeners, logging::shutdown_signal()).await;
    // Connections already open keep being served while the broker hands over.
    tracing::info!("shutting down: making pending data durable and handing leadership over");
    broker.shutdown().await;
    tracing::info!("broker stopped");
    Ok(())
}

/// Connects to etcd, waiting for it if it is not up yet: in Kubernetes the
/// operator starts etcd and the brokers together, and a broker that exited
/// instead would sit out growing crash-loop back-offs once etcd is there.
/// Each failed attempt is one log line; a stop signal ends the wait.
async fn connect_etcd(endpoints: &[String]) -> anyhow::Result<EtcdKv> {
    const FIRST_RETRY: Duration = Duration::from_millis(500);
    const LONGEST_RETRY: Duration = Duration::from_secs(10);
    let stop = logging::shutdown_signal();
    tokio::pin!(stop);
    let mut delay = FIRST_RETRY;
    loop {
        // Connecting is lazy; a revision read proves etcd answers.
        let answered = match EtcdKv::connect(endpoints, Duration::from_secs(5)).await {
            Ok(kv) => kv.revision().await.map(|_| kv),
            Err(e) => Err(e),
        };
        match answered {
            Ok(kv) => return Ok(kv),
            Err(e) => tracing::warn!(
                error = %e,
                retry_in_ms = delay.as_millis() as u64,
                "etcd is not reachable yet; the broker waits for it"
            ),
        }
        tokio::select! {
            _ = &mut stop => bail!("stopped while waiting for etcd at {}", endpoints.join(",")),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(LONGEST_RETRY);
    }
}

/// The listeners from --listeners (or --listen, or dev mode's SASL switch).
fn resolve_listeners(args: &Args) -> anyhow::Result<Vec<Listener>> {
    let given = match &args.listeners {
        Some(l) => l.clone(),
        None if args.dev_sasl => format!("SASL_PLAINTEXT://{}", args.listen),
        None => format!("PLAINTEXT://{}", args.listen),
    };
    if args.dev_sasl && args.mode != Mode::Dev {
        bail!("--dev-sasl is for dev mode; in production give --listeners with SASL_PLAINTEXT or SASL_SSL and --sasl-bootstrap-users");
    }
    listeners::parse_listeners(
        &given,
        &args.advertised_listeners,
        &args.listener_security_protocol_map,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
}

/// The TLS configuration of each SSL and SASL_SSL listener, by name:
/// one certificate for all, client authentication per listener.
fn tls_configs(
    args: &Args,
    specs: &[Listener],
    interval: Duration,
) -> anyhow::Result<BTreeMap<String, Arc<Reloadable<rustls::ServerConfig>>>> {
    let flag = "--listener-tls-client-auth";
    let overrides =
        listeners::parse_listener_overrides(&args.listener_tls_client_auth, flag, specs)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    let default_auth = args
        .tls_client_auth
        .unwrap_or(if args.tls_client_ca_file.is_some() {
            ClientAuth::Required
        } else {
            ClientAuth::None
        });
    let mut watched: Vec<(ClientAuth, Arc<Reloadable<rustls::ServerConfig>>)> = Vec::new();
    let mut configs = BTreeMap::new();
    for spec in specs {
        let client_auth = match overrides.get(&spec.name) {
            Some(value) => {
                if !spec.protocol.uses_tls() {
                    bail!(
                        "{flag}: listener {} is {}; client certificates need SSL or SASL_SSL",
                        spec.name,
                        spec.protocol
                    );
                }
                <ClientAuth as clap::ValueEnum>::from_str(value, true).map_err(|_| {
                    anyhow::anyhow!(
                        "{flag}: '{value}' for listener {} is not none, requested or required",
                        spec.name
                    )
                })?
            }
            None if spec.protocol.uses_tls() => default_auth,
            None => continue,
        };
        let (Some(cert), Some(key)) = (&args.tls_cert_file, &args.tls_key_file) else {
            bail!(
                "listener {} is {} and needs --tls-cert-file and --tls-key-file (PEM; e.g. a cert-manager Secret's tls.crt and tls.key)",
                spec.name,
                spec.protocol
            );
        };
        if client_auth != ClientAuth::None && args.tls_client_ca_file.is_none() {
            bail!("listener {} asks for client certificates ({client_auth:?}) and needs --tls-client-ca-file, the CA bundle they must chain to", spec.name);
        }
        // Listeners with the same client authentication share one watcher.
        let config = match watched.iter().find(|(auth, _)| *auth == client_auth) {
            Some((_, config)) => config.clone(),
            None => {
                let files = TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: args.tls_client_ca_file.clone(),
                    client_auth,
                };
                let config = files.watch(interval).map_err(|e| anyhow::anyhow!("{e}"))?;
                watched.push((client_auth, config.clone()));
                config
            }
        };
        configs.insert(spec.name.clone(), config);
    }
    Ok(configs)
}

/// Reads a token key file (JWKS or PEM).
type ParseKeys = fn(&[u8]) -> Result<TokenKeys, kafscale_broker::security::oauthbearer::KeyError>;

fn sasl_settings(
    args: &Args,
    specs: &[Listener],
    interval: Duration,
) -> anyhow::Result<SaslSettings> {
    let names: Vec<String> = if args.dev_sasl && args.listeners.is_none() {
        ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"]
            .map(String::from)
            .to_vec()
    } else {
        args.sasl_enabled_mechanisms.clone()
    };
    let mechanisms = parse_mechanisms(
        names.iter().map(String::as_str),
        "--sasl-enabled-mechanisms",
    )?;
    let flag = "--listener-sasl-enabled-mechanisms";
    let mut listener_mechanisms = BTreeMap::new();
    for (name, list) in
        listeners::parse_listener_overrides(&args.listener_sasl_enabled_mechanisms, flag, specs)
            .map_err(|e| anyhow::anyhow!("{e}"))?
    {
        if specs
            .iter()
            .any(|l| l.name == name && !l.protocol.uses_sasl())
        {
            bail!("{flag}: listener {name} does not use SASL; mechanisms apply to SASL_PLAINTEXT and SASL_SSL listeners");
        }
        listener_mechanisms.insert(name, parse_mechanisms(list.split(','), flag)?);
    }
    let enabled = |l: &Listener| {
        listener_mechanisms
            .get(&l.name)
            .unwrap_or(&mechanisms)
            .clone()
    };
    let sasl_listeners: Vec<&Listener> = specs.iter().filter(|l| l.protocol.uses_sasl()).collect();
    if let Some(l) = sasl_listeners.iter().find(|l| enabled(l).is_empty()) {
        bail!("SASL listener {} has no mechanism; give --sasl-enabled-mechanisms or {flag} {}:MECHANISM", l.name, l.name);
    }
    for l in &sasl_listeners {
        if l.protocol == SecurityProtocol::SaslPlaintext && enabled(l).contains(&Mechanism::Plain) {
            tracing::warn!(listener = %l.name, "PLAIN is enabled on a SASL_PLAINTEXT listener: passwords cross the network unencrypted; use SASL_SSL or SCRAM");
        }
    }
    let oauth_needed = sasl_listeners
        .iter()
        .any(|l| enabled(l).contains(&Mechanism::OAuthBearer));
    let oauth = if oauth_needed {
        let (path, parse): (PathBuf, ParseKeys) = match (
            &args.sasl_oauthbearer_jwks_file,
            &args.sasl_oauthbearer_public_key_file,
        ) {
            (Some(jwks), None) => (jwks.clone(), TokenKeys::from_jwks),
            (None, Some(pem)) => (pem.clone(), TokenKeys::from_pem),
            _ => bail!("OAUTHBEARER needs exactly one of --sasl-oauthbearer-jwks-file and --sasl-oauthbearer-public-key-file"),
        };
        let keys = reload::watch("OAUTHBEARER keys", vec![path], interval, move |files| {
            parse(&files[0]).map_err(|e| e.to_string())
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        Some(OAuthSettings {
            keys,
            rules: TokenRules {
                expected_issuer: args.sasl_oauthbearer_expected_issuer.clone(),
                expected_audience: args.sasl_oauthbearer_expected_audience.clone(),
                principal_claim: args.sasl_oauthbearer_sub_claim_name.clone(),
                clock_skew: Duration::from_secs(args.sasl_oauthbearer_clock_skew_seconds),
            },
        })
    } else {
        None
    };
    Ok(SaslSettings {
        mechanisms,
        listener_mechanisms,
        max_reauth: (args.connections_max_reauth_ms > 0)
            .then(|| Duration::from_millis(args.connections_max_reauth_ms)),
        failed_authentication_delay: Duration::from_millis(
            args.connection_failed_authentication_delay_ms,
        ),
        oauth,
    })
}

/// SASL mechanism names (`PLAIN`, `SCRAM-SHA-256`, ...), without repeats.
fn parse_mechanisms<'a>(
    names: impl Iterator<Item = &'a str>,
    flag: &str,
) -> anyhow::Result<Vec<Mechanism>> {
    let mut mechanisms = Vec::new();
    for name in names.map(str::trim).filter(|n| !n.is_empty()) {
        let mechanism = Mechanism::from_name(&name.to_ascii_uppercase()).ok_or_else(|| {
            anyhow::anyhow!("{flag}: unknown mechanism '{name}'; use PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER")
        })?;
        if !mechanisms.contains(&mechanism) {
            mechanisms.push(mechanism);
        }
    }
    Ok(mechanisms)
}

/// Creates SCRAM credentials (both mechanisms) for `name:password` entries
/// that have none yet.
async fn bootstrap_users(metadata: &MetadataStore, users: &[String]) -> anyhow::Result<()> {
    for entry in users.iter().filter(|u| !u.is_empty()) {
        let Some((user, password)) = entry
            .split_once(':')
            .filter(|(u, p)| !u.is_empty() && !p.is_empty())
        else {
            bail!("--sasl-bootstrap-users: an entry is not name:password (the value is not shown)");
        };
        for mechanism in ScramMechanism::ALL {
            let (m, password) = (mechanism, password.to_string());
            let credential = tokio::task::spawn_blocking(move || {
                m.credential_for_password(&password, MIN_ITERATIONS)
            })
            .await?;
            let created = metadata
                .create_scram_credential(user, mechanism.name(), &credential)
                .await
                .with_context(|| format!("storing the bootstrap user {user}'s credential"))?;
            if created {
                tracing::info!(
                    user,
                    mechanism = mechanism.name(),
                    "created the bootstrap user's SCRAM credential"
                );
            } else {
                tracing::info!(
                    user,
                    mechanism = mechanism.name(),
                    "the bootstrap user already has a credential; left unchanged"
                );
            }
        }
    }
    Ok(())
}

/// Dev mode's `admin` user: its password is made once and kept in the data
/// directory, so a restarted dev broker prints the same one.
async fn dev_admin(metadata: &MetadataStore, dir: &std::path::Path) -> anyhow::Result<String> {
    use base64::Engine;
    let path = dir.join("admin-password");
    let password = match std::fs::read_to_string(&path) {
        Ok(p) if !p.trim().is_empty() => p.trim().to_string(),
        _ => {
            let password = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(kafscale_broker::security::scram::random_bytes(18));
            write_private(&path, &password)
                .with_context(|| format!("writing {}", path.display()))?;
            password
        }
    };
    bootstrap_users(metadata, &[format!("admin:{password}")]).await?;
    Ok(password)
}

fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())
}

fn authorizer_settings(args: &Args) -> anyhow::Result<Option<AuthorizerSettings>> {
    if args.authorizer == AuthorizerKind::None {
        if !args.super_users.is_empty() || args.allow_everyone_if_no_acl_found {
            bail!("--super-users and --allow-everyone-if-no-acl-found need --authorizer acl");
        }
        return Ok(None);
    }
    let mut super_users = Vec::new();
    for user in args
        .super_users
        .iter()
        .map(|u| u.trim())
        .filter(|u| !u.is_empty())
    {
        match user.split_once(':') {
            Some(("User", name)) if !name.is_empty() => super_users.push(user.to_string()),
            _ => bail!("--super-users: '{user}' is not User:NAME (separate several with ';')"),
        }
    }
    Ok(Some(AuthorizerSettings {
        super_users,
        allow_everyone_if_no_acl_found: args.allow_everyone_if_no_acl_found,
    }))
}
