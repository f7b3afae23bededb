//! The custom resources: `KafscaleCluster` (short name `kfs`) and
//! `KafscaleTopic` (`kt`), group `kafscale.io`, version `v1alpha1`.
//! `cargo run -p kafscale-operator --bin crdgen` writes them to `crds/`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Kafscale cluster: brokers with their flusher sidecars, backed by S3 and
/// etcd (external, or managed by the operator when no endpoints are given).
// kube's derive takes one `printcolumn(...)` per column.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kafscale.io",
    version = "v1alpha1",
    kind = "KafscaleCluster",
    namespaced,
    shortname = "kfs",
    status = "KafscaleClusterStatus",
    doc = "A Kafscale cluster: stateless Kafka-compatible brokers with their data in S3",
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".spec.brokers.replicas"
    ),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Bootstrap",
        type_ = "string",
        json_path = ".status.bootstrapServers"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct KafscaleClusterSpec {
    #[serde(default)]
    pub brokers: BrokerSpec,
    pub s3: S3Spec,
    #[serde(default)]
    pub etcd: EtcdSpec,
    #[serde(default)]
    pub config: ClusterConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Images>,
    /// Turns ACL authorization on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<ClusterAuthorization>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.listeners) || self.listeners.all(a, self.listeners.exists_one(b, b.name == a.name) && self.listeners.exists_one(b, b.port == a.port))").message("listener names and ports must be unique"))]
#[x_kube(validation = Rule::new("!has(self.listeners) || self.listeners.all(l, !l.tls) || has(self.tls)").message("TLS listeners need spec.brokers.tls.secretName"))]
#[x_kube(validation = Rule::new("!has(self.listeners) || self.listeners.all(l, l.tls || l.authentication != 'tls')").message("authentication: tls needs tls: true"))]
#[x_kube(validation = Rule::new("!has(self.listeners) || self.listeners.all(l, l.authentication != 'oauthbearer') || has(self.oauthbearer)").message("authentication: oauthbearer needs spec.brokers.oauthbearer (the identity provider's JWKS)"))]
#[x_kube(validation = Rule::new("!has(self.listeners) || self.listeners.all(l, l.port != 9094 && l.port != 9095 && l.port != 9098)").message("ports 9094, 9095 and 9098 are the broker's HTTP port, the flusher's and the broker's ops API"))]
pub struct BrokerSpec {
    /// Broker pods (ignored while `autoscaling` is set: the HPA owns it).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 256))]
    pub replicas: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flusher_resources: Option<ResourceRequirements>,
    /// Host clients connect to; defaults to the client Service's DNS name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertised_host: Option<String>,
    #[serde(default = "default_kafka_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub advertised_port: i32,
    #[serde(default)]
    pub service: ServiceSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
    /// Kafka listeners, each with its port, TLS and authentication. Without
    /// any, one plaintext listener without authentication serves
    /// `advertisedPort`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub listeners: Vec<ListenerSpec>,
    /// The certificate of TLS listeners.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<BrokerTls>,
    /// How listeners with `authentication: oauthbearer` verify tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauthbearer: Option<OAuthBearerSpec>,
}

/// One Kafka listener.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListenerSpec {
    /// Also the Service port's name.
    #[schemars(
        length(min = 1, max = 15),
        regex(pattern = r"^[a-z]([a-z0-9-]*[a-z0-9])?$")
    )]
    pub name: String,
    /// The port the brokers listen on and advertise (each pod's DNS name),
    /// and the Services expose.
    #[schemars(range(min = 1024, max = 65535))]
    pub port: i32,
    #[serde(default)]
    pub tls: bool,
    #[serde(default)]
    pub authentication: ListenerAuthentication,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
pub enum ListenerAuthentication {
    /// Anyone who reaches the port (principal `User:ANONYMOUS`).
    #[default]
    #[serde(rename = "none")]
    None,
    /// SASL SCRAM-SHA-512 (and SCRAM-SHA-256), users from KafscaleUsers.
    #[serde(rename = "scram-sha-512")]
    ScramSha512,
    /// Client certificates signed by the Secret's `ca.crt` (mTLS), required
    /// to connect; the certificate's subject is the principal.
    #[serde(rename = "tls")]
    Tls,
    /// SASL OAUTHBEARER: JWTs from an identity provider, verified against
    /// `spec.brokers.oauthbearer`; the `sub` claim is the principal.
    #[serde(rename = "oauthbearer")]
    OAuthBearer,
}

/// Token verification of OAUTHBEARER listeners. Keys come from a ConfigMap
/// (brokers fetch nothing from the network); an update of the ConfigMap
/// reaches running brokers without restarts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.audience) || self.audience.all(a, size(a) >= 1 && size(a) <= 1024)").message("each audience is 1 to 1024 characters"))]
pub struct OAuthBearerSpec {
    /// The ConfigMap holding the identity provider's JWKS document.
    pub jwks_config_map: ConfigMapKey,
    /// Tokens must carry this `iss`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub issuer: Option<String>,
    /// Tokens must carry one of these `aud` values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub audience: Vec<String>,
    /// The claim naming the principal (default `sub`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub principal_claim: Option<String>,
}

/// One key of a ConfigMap.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKey {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[serde(default = "default_jwks_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

fn default_jwks_key() -> String {
    "jwks.json".to_string()
}

/// TLS material, as cert-manager writes a Certificate's Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BrokerTls {
    /// A Secret with `tls.crt` and `tls.key`, and `ca.crt` for listeners
    /// with `authentication: tls`. Renewals are picked up without restarts.
    #[schemars(length(min = 1))]
    pub secret_name: String,
}

/// ACL authorization (the brokers' `--authorizer acl`); users and their
/// ACLs come from KafscaleUsers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ClusterAuthorization {
    /// Principals allowed everything, e.g. `User:admin`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub super_users: Vec<String>,
}

impl Default for BrokerSpec {
    fn default() -> Self {
        Self {
            replicas: default_replicas(),
            resources: None,
            flusher_resources: None,
            advertised_host: None,
            advertised_port: default_kafka_port(),
            service: ServiceSpec::default(),
            autoscaling: None,
            listeners: Vec::new(),
            tls: None,
            oauthbearer: None,
        }
    }
}

fn default_replicas() -> i32 {
    3
}

fn default_kafka_port() -> i32 {
    9092
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub enum TrafficPolicy {
    Cluster,
    Local,
}

/// The client Service in front of the brokers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load_balancer_source_ranges: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_traffic_policy: Option<TrafficPolicy>,
    /// Node port for the Kafka listener when `type` is NodePort or LoadBalancer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 30000, max = 32767))]
    pub node_port: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.maxReplicas >= self.minReplicas").message("maxReplicas must be at least minReplicas"))]
pub struct AutoscalingSpec {
    #[schemars(range(min = 1))]
    pub min_replicas: i32,
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    #[serde(default = "default_cpu_target")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization: i32,
}

fn default_cpu_target() -> i32 {
    70
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Spec {
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,
    #[serde(default = "default_region")]
    pub region: String,
    /// S3-compatible endpoint (MinIO, Ceph, ...); empty for AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub path_style: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_replica: Option<S3ReadReplica>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    /// Secret with `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`, mounted only
    /// into the flusher container. Empty: the pod's own identity (IRSA, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
}

fn default_region() -> String {
    "us-east-1".into()
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3ReadReplica {
    pub bucket: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct EtcdSpec {
    /// etcd client URLs. Empty: the operator runs a 3-node etcd for the cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    /// The volume each managed etcd member keeps its data on (ignored with
    /// `endpoints`). A member whose pod is replaced rejoins from it. Fixed
    /// once the cluster exists: a StatefulSet's volume claims cannot change.
    #[serde(default)]
    pub storage: EtcdStorage,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EtcdStorage {
    /// Size of each member's PersistentVolumeClaim.
    #[serde(default = "default_etcd_storage_size")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$"))]
    pub size: String,
    /// StorageClass of the claims; the Kubernetes cluster's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

impl Default for EtcdStorage {
    fn default() -> Self {
        Self {
            size: default_etcd_storage_size(),
            storage_class_name: None,
        }
    }
}

fn default_etcd_storage_size() -> String {
    // Room for etcd's 2 GiB database quota (set by the operator) and its WAL.
    "4Gi".into()
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ClusterConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024))]
    pub segment_bytes: Option<i64>,
    /// Group-commit window in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub flush_interval_ms: Option<i64>,
    /// Flusher segment cache for cold reads, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub cache_bytes: Option<i64>,
    /// How uploads reach object storage: `intake` (the brokers' default: one
    /// object per broker per window, compacted into segments later; fewer
    /// PUTs, see the README's cost table) or `segments` (one per partition
    /// per flush window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_path: Option<WritePath>,
    /// Intake write path: the cost/latency dial, `latency` (5 ms windows),
    /// `balanced` (50 ms) or `cost` (250 ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flush_preset: Option<FlushPreset>,
    /// Intake write path: how long uploaded data may gather before it is
    /// compacted into segments, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86400000))]
    pub intake_compaction_delay_ms: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum WritePath {
    Segments,
    Intake,
}

impl WritePath {
    pub fn flag_value(self) -> &'static str {
        match self {
            WritePath::Segments => "segments",
            WritePath::Intake => "intake",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum FlushPreset {
    Latency,
    Balanced,
    Cost,
}

impl FlushPreset {
    pub fn flag_value(self) -> &'static str {
        match self {
            FlushPreset::Latency => "latency",
            FlushPreset::Balanced => "balanced",
            FlushPreset::Cost => "cost",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct Images {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flusher: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct KafscaleClusterStatus {
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub ready_replicas: i32,
    /// Where clients connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_servers: Option<String>,
}

/// A topic of a KafscaleCluster in the same namespace.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kafscale.io",
    version = "v1alpha1",
    kind = "KafscaleTopic",
    namespaced,
    shortname = "kt",
    status = "KafscaleTopicStatus",
    doc = "A topic of a Kafscale cluster",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.clusterRef"),
    printcolumn(name = "Partitions", type_ = "integer", json_path = ".spec.partitions"),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.partitions >= oldSelf.partitions").message("partitions can only be increased"))]
#[x_kube(validation = Rule::new("self.clusterRef == oldSelf.clusterRef").message("clusterRef cannot be changed"))]
pub struct KafscaleTopicSpec {
    /// Name of the KafscaleCluster in this namespace.
    #[schemars(length(min = 1))]
    pub cluster_ref: String,
    /// Topic name in Kafka; defaults to the resource name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 249), regex(pattern = r"^[a-zA-Z0-9._-]+$"))]
    pub topic_name: Option<String>,
    #[schemars(range(min = 1, max = 10000))]
    pub partitions: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1))]
    pub retention_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1))]
    pub retention_bytes: Option<i64>,
    /// Further topic configs (validated: see the README's topic configs).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct KafscaleTopicStatus {
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub partitions: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_id: Option<String>,
}

impl KafscaleTopic {
    /// The topic's name in Kafka.
    pub fn topic_name(&self) -> String {
        self.spec
            .topic_name
            .clone()
            .unwrap_or_else(|| self.metadata.name.clone().unwrap_or_default())
    }

    /// The topic configs to store: `config` plus the retention fields.
    pub fn configs(&self) -> BTreeMap<String, String> {
        let mut c = self.spec.config.clone();
        if let Some(ms) = self.spec.retention_ms {
            c.insert("retention.ms".into(), ms.to_string());
        }
        if let Some(bytes) = self.spec.retention_bytes {
            c.insert("retention.bytes".into(), bytes.to_string());
        }
        c
    }
}

/// A client identity of a KafscaleCluster with its permissions (Strimzi's
/// `KafkaUser` is the model): a SCRAM-SHA-512 credential the operator makes
/// and writes into a Secret of the user's name, or the principal of a
/// client certificate issued elsewhere (cert-manager), plus ACL bindings.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kafscale.io",
    version = "v1alpha1",
    kind = "KafscaleUser",
    namespaced,
    shortname = "ku",
    status = "KafscaleUserStatus",
    doc = "A user of a Kafscale cluster: its credential and ACLs",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.clusterRef"),
    printcolumn(
        name = "Authentication",
        type_ = "string",
        json_path = ".spec.authentication.type"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.clusterRef == oldSelf.clusterRef").message("clusterRef cannot be changed"))]
pub struct KafscaleUserSpec {
    /// Name of the KafscaleCluster in this namespace.
    #[schemars(length(min = 1))]
    pub cluster_ref: String,
    pub authentication: UserAuthentication,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<UserAuthorization>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct UserAuthentication {
    #[serde(rename = "type")]
    pub type_: AuthenticationType,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AuthenticationType {
    /// The operator makes a password, stores its SCRAM-SHA-512 credential
    /// and writes `username`, `password` and `sasl.jaas.config` into a
    /// Secret named after the user.
    #[serde(rename = "scram-sha-512")]
    ScramSha512,
    /// A client certificate with subject `CN=<user name>`, issued elsewhere
    /// (e.g. cert-manager with the cluster's client CA): principal
    /// `User:CN=<user name>`.
    #[serde(rename = "tls-external")]
    TlsExternal,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
pub struct UserAuthorization {
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub acls: Vec<AclRule>,
}

/// One ACL rule: the operations allowed (or denied) on a resource.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AclRule {
    pub resource: AclResource,
    #[schemars(length(min = 1))]
    pub operations: Vec<AclOperationName>,
    /// The client address it applies to; `*` for any.
    #[serde(default = "any_host")]
    pub host: String,
    #[serde(default, rename = "type")]
    pub type_: AclRuleType,
}

fn any_host() -> String {
    "*".into()
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AclResource {
    #[serde(rename = "type")]
    pub type_: AclResourceType,
    /// The resource's name (a prefix with `patternType: prefix`); `*` for
    /// every one. Not used for `cluster`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub pattern_type: AclPatternType,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum AclResourceType {
    Topic,
    Group,
    Cluster,
    TransactionalId,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub enum AclPatternType {
    #[default]
    Literal,
    Prefix,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub enum AclRuleType {
    #[default]
    Allow,
    Deny,
}

/// Kafka's operation names, as `kafka-acls --operation` takes them.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AclOperationName {
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

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct KafscaleUserStatus {
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The principal the brokers see, e.g. `User:alice` or `User:CN=alice`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// The Secret holding the credential (SCRAM users).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}
