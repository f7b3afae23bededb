//! The Kubernetes objects a KafscaleCluster becomes. Pure functions of the
//! cluster resource, so every field is unit-tested without an API server.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapEnvSource, ConfigMapVolumeSource, Container, ContainerPort,
    EmptyDirVolumeSource, EnvFromSource, EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec, Probe,
    SecretEnvSource, SecretVolumeSource, Service, ServicePort, ServiceSpec as K8sServiceSpec,
    Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::crd::{
    KafscaleCluster, ListenerAuthentication, ListenerSpec, ServiceType, TrafficPolicy,
};

pub const DEFAULT_BROKER_IMAGE: &str = "kafscale-broker:latest";
pub const DEFAULT_FLUSHER_IMAGE: &str = "kafscale-flusher:latest";
pub const DEFAULT_ETCD_IMAGE: &str = "quay.io/coreos/etcd:v3.5.21";
pub const SOCKET_DIR: &str = "/var/run/kafscale";
pub const KAFKA_PORT: i32 = 9092;
pub const BROKER_HTTP_PORT: i32 = 9094;
/// The broker's ops API, on the pod's loopback only: it is unauthenticated
/// and names every topic and group, so it is reached with
/// `kubectl port-forward`, never from other pods.
pub const BROKER_OPS_API_PORT: i32 = 9098;
pub const FLUSHER_HTTP_PORT: i32 = 9095;
pub const ETCD_CLIENT_PORT: i32 = 2379;
pub const ETCD_PEER_PORT: i32 = 2380;
pub const ETCD_REPLICAS: i32 = 3;

/// Names of the objects owned by one cluster.
pub struct Names {
    pub brokers: String,
    pub headless: String,
    pub client: String,
    pub config: String,
    pub etcd: String,
    pub etcd_client: String,
}

pub fn names(c: &KafscaleCluster) -> Names {
    let n = c.name_any();
    Names {
        brokers: format!("{n}-broker"),
        headless: format!("{n}-broker-headless"),
        client: format!("{n}-kafka"),
        config: format!("{n}-config"),
        etcd: format!("{n}-etcd"),
        etcd_client: format!("{n}-etcd-client"),
    }
}

/// The cluster id brokers report and their etcd key root: unique per
/// namespace and cluster.
pub fn cluster_id(c: &KafscaleCluster) -> String {
    format!(
        "{}-{}",
        c.namespace().unwrap_or_else(|| "default".into()),
        c.name_any()
    )
}

/// The S3 key prefix: `{namespace}/{cluster}`, never just the namespace.
pub fn s3_prefix(c: &KafscaleCluster) -> String {
    format!(
        "{}/{}",
        c.namespace().unwrap_or_else(|| "default".into()),
        c.name_any()
    )
}

/// etcd endpoints brokers and the operator use.
pub fn etcd_endpoints(c: &KafscaleCluster) -> Vec<String> {
    if c.spec.etcd.endpoints.is_empty() {
        let ns = c.namespace().unwrap_or_else(|| "default".into());
        vec![format!(
            "http://{}.{ns}.svc:{ETCD_CLIENT_PORT}",
            names(c).etcd_client
        )]
    } else {
        c.spec.etcd.endpoints.clone()
    }
}

pub fn bootstrap_servers(c: &KafscaleCluster) -> String {
    let ns = c.namespace().unwrap_or_else(|| "default".into());
    let port = c
        .spec
        .brokers
        .listeners
        .first()
        .map(|l| l.port)
        .unwrap_or(c.spec.brokers.advertised_port);
    format!("{}.{ns}.svc:{port}", names(c).client)
}

/// Where the TLS Secret is mounted in broker pods.
pub const TLS_DIR: &str = "/etc/kafscale/tls";
/// Where the OAUTHBEARER JWKS ConfigMap is mounted in broker pods.
pub const OAUTHBEARER_DIR: &str = "/etc/kafscale/oauthbearer";

/// The listener's name as the brokers' flags spell it.
fn listener_name(l: &ListenerSpec) -> String {
    l.name.to_ascii_uppercase().replace('-', "_")
}

fn listener_protocol(l: &ListenerSpec) -> &'static str {
    match (l.tls, l.authentication) {
        (false, ListenerAuthentication::None) => "PLAINTEXT",
        (false, ListenerAuthentication::ScramSha512) => "SASL_PLAINTEXT",
        (true, ListenerAuthentication::ScramSha512 | ListenerAuthentication::OAuthBearer) => {
            "SASL_SSL"
        }
        (false, ListenerAuthentication::OAuthBearer) => "SASL_PLAINTEXT",
        // `authentication: tls` without `tls: true` is refused by the CRD.
        (_, ListenerAuthentication::Tls) | (true, ListenerAuthentication::None) => "SSL",
    }
}

/// The brokers' security settings from `spec.brokers.listeners`, `tls` and
/// `spec.authorization` (ConfigMap entries; the advertised addresses are
/// per pod, see [`advertised_listeners`]).
fn security_settings(c: &KafscaleCluster) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let listeners = &c.spec.brokers.listeners;
    if !listeners.is_empty() {
        let bind = listeners
            .iter()
            .map(|l| format!("{}://0.0.0.0:{}", listener_name(l), l.port))
            .collect::<Vec<_>>()
            .join(",");
        let map = listeners
            .iter()
            .map(|l| format!("{}:{}", listener_name(l), listener_protocol(l)))
            .collect::<Vec<_>>()
            .join(",");
        out.insert("KAFSCALE_LISTENERS".to_string(), bind);
        out.insert("KAFSCALE_LISTENER_SECURITY_PROTOCOL_MAP".to_string(), map);
        // Each SASL listener offers only its own mechanisms; the broker-wide
        // list is their union.
        let sasl: Vec<(String, &str)> = listeners
            .iter()
            .filter_map(|l| {
                let mechanisms = match l.authentication {
                    ListenerAuthentication::ScramSha512 => "SCRAM-SHA-512,SCRAM-SHA-256",
                    ListenerAuthentication::OAuthBearer => "OAUTHBEARER",
                    ListenerAuthentication::None | ListenerAuthentication::Tls => return None,
                };
                Some((listener_name(l), mechanisms))
            })
            .collect();
        if !sasl.is_empty() {
            let mut all: Vec<&str> = Vec::new();
            for mechanism in sasl.iter().flat_map(|(_, m)| m.split(',')) {
                if !all.contains(&mechanism) {
                    all.push(mechanism);
                }
            }
            out.insert(
                "KAFSCALE_SASL_ENABLED_MECHANISMS".to_string(),
                all.join(","),
            );
            out.insert(
                "KAFSCALE_LISTENER_SASL_ENABLED_MECHANISMS".to_string(),
                sasl.iter()
                    .map(|(name, m)| format!("{name}:{m}"))
                    .collect::<Vec<_>>()
                    .join(";"),
            );
        }
    }
    if let Some(oauth) = &c.spec.brokers.oauthbearer {
        out.insert(
            "KAFSCALE_SASL_OAUTHBEARER_JWKS_FILE".to_string(),
            format!("{OAUTHBEARER_DIR}/{}", oauth.jwks_config_map.key),
        );
        if let Some(issuer) = &oauth.issuer {
            out.insert(
                "KAFSCALE_SASL_OAUTHBEARER_EXPECTED_ISSUER".to_string(),
                issuer.clone(),
            );
        }
        if !oauth.audience.is_empty() {
            out.insert(
                "KAFSCALE_SASL_OAUTHBEARER_EXPECTED_AUDIENCE".to_string(),
                oauth.audience.join(","),
            );
        }
        if let Some(claim) = &oauth.principal_claim {
            out.insert(
                "KAFSCALE_SASL_OAUTHBEARER_SUB_CLAIM_NAME".to_string(),
                claim.clone(),
            );
        }
    }
    if c.spec.brokers.tls.is_some() {
        out.insert(
            "KAFSCALE_TLS_CERT_FILE".to_string(),
            format!("{TLS_DIR}/tls.crt"),
        );
        out.insert(
            "KAFSCALE_TLS_KEY_FILE".to_string(),
            format!("{TLS_DIR}/tls.key"),
        );
        if listeners
            .iter()
            .any(|l| l.authentication == ListenerAuthentication::Tls)
        {
            out.insert(
                "KAFSCALE_TLS_CLIENT_CA_FILE".to_string(),
                format!("{TLS_DIR}/ca.crt"),
            );
            // mTLS listeners require a certificate; the other TLS listeners
            // do not ask for one.
            out.insert(
                "KAFSCALE_LISTENER_TLS_CLIENT_AUTH".to_string(),
                listeners
                    .iter()
                    .filter(|l| l.tls)
                    .map(|l| {
                        let auth = if l.authentication == ListenerAuthentication::Tls {
                            "required"
                        } else {
                            "none"
                        };
                        format!("{}:{auth}", listener_name(l))
                    })
                    .collect::<Vec<_>>()
                    .join(";"),
            );
        }
    }
    if let Some(auth) = &c.spec.authorization {
        out.insert("KAFSCALE_AUTHORIZER".to_string(), "acl".to_string());
        if !auth.super_users.is_empty() {
            out.insert(
                "KAFSCALE_SUPER_USERS".to_string(),
                auth.super_users.join(";"),
            );
        }
    }
    out
}

/// `KAFSCALE_ADVERTISED_LISTENERS` for a broker pod reachable at `host`.
fn advertised_listeners(c: &KafscaleCluster, host: &str) -> Option<String> {
    let listeners = &c.spec.brokers.listeners;
    (!listeners.is_empty()).then(|| {
        listeners
            .iter()
            .map(|l| format!("{}://{host}:{}", listener_name(l), l.port))
            .collect::<Vec<_>>()
            .join(",")
    })
}

/// The Kafka ports of broker pods and Services: one per listener, or the
/// single plaintext one.
fn kafka_ports(c: &KafscaleCluster) -> Vec<(String, i32)> {
    if c.spec.brokers.listeners.is_empty() {
        return vec![("kafka".to_string(), KAFKA_PORT)];
    }
    c.spec
        .brokers
        .listeners
        .iter()
        .map(|l| (l.name.clone(), l.port))
        .collect()
}

fn labels(c: &KafscaleCluster, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "kafscale".to_string()),
        ("app.kubernetes.io/instance".to_string(), c.name_any()),
        (
            "app.kubernetes.io/component".to_string(),
            component.to_string(),
        ),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "kafscale-operator".to_string(),
        ),
    ])
}

fn owner(c: &KafscaleCluster) -> Vec<OwnerReference> {
    c.controller_owner_ref(&()).into_iter().collect()
}

fn meta(c: &KafscaleCluster, name: &str, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: c.namespace(),
        labels: Some(labels(c, component)),
        owner_references: Some(owner(c)),
        ..ObjectMeta::default()
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        ..ContainerPort::default()
    }
}

/// An environment variable taken from the pod's own metadata.
fn field_env(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// Kubernetes' own default for an image, stated in the pod template: left
/// out, the API server fills it in once, when the StatefulSet is created,
/// and it then outlives image changes (a `:latest` image's `Always` stays on
/// the tag that replaced it, which breaks images loaded onto nodes).
fn pull_policy(image: &str) -> &'static str {
    // The tag follows the last ':' after the last '/' (a registry's port
    // comes before it); a digest pins the image whatever the tag.
    let name = image.rsplit('/').next().unwrap_or(image);
    let tag = name.split_once(':').map(|(_, tag)| tag);
    if image.contains('@') || !matches!(tag, None | Some("latest")) {
        "IfNotPresent"
    } else {
        "Always"
    }
}

fn http_probe(path: &str, port: i32, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(port),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

/// Settings both containers read from the ConfigMap.
pub fn config_map(c: &KafscaleCluster) -> ConfigMap {
    let n = names(c);
    let mut data = BTreeMap::from([
        ("KAFSCALE_MODE".to_string(), "production".to_string()),
        ("KAFSCALE_CLUSTER_ID".to_string(), cluster_id(c)),
        (
            "KAFSCALE_ETCD_ENDPOINTS".to_string(),
            etcd_endpoints(c).join(","),
        ),
        (
            "KAFSCALE_FLUSHER_SOCKET".to_string(),
            format!("{SOCKET_DIR}/flusher.sock"),
        ),
        (
            "KAFSCALE_LISTEN".to_string(),
            format!("0.0.0.0:{KAFKA_PORT}"),
        ),
        (
            "KAFSCALE_HTTP_LISTEN".to_string(),
            format!("0.0.0.0:{BROKER_HTTP_PORT}"),
        ),
        (
            "KAFSCALE_OPS_API_LISTEN".to_string(),
            format!("127.0.0.1:{BROKER_OPS_API_PORT}"),
        ),
        (
            "KAFSCALE_FLUSHER_HTTP_LISTEN".to_string(),
            format!("0.0.0.0:{FLUSHER_HTTP_PORT}"),
        ),
        ("KAFSCALE_S3_BUCKET".to_string(), c.spec.s3.bucket.clone()),
        ("KAFSCALE_S3_REGION".to_string(), c.spec.s3.region.clone()),
        (
            "KAFSCALE_S3_PATH_STYLE".to_string(),
            c.spec.s3.path_style.to_string(),
        ),
        ("KAFSCALE_S3_PREFIX".to_string(), s3_prefix(c)),
        (
            "KAFSCALE_ADVERTISED_PORT".to_string(),
            c.spec.brokers.advertised_port.to_string(),
        ),
    ]);
    if let Some(ep) = &c.spec.s3.endpoint {
        data.insert("KAFSCALE_S3_ENDPOINT".into(), ep.clone());
    }
    if let Some(ms) = c.spec.config.flush_interval_ms {
        data.insert("KAFSCALE_FLUSH_WINDOW_MS".into(), ms.to_string());
    }
    if let Some(bytes) = c.spec.config.cache_bytes {
        data.insert("KAFSCALE_FLUSHER_CACHE_BYTES".into(), bytes.to_string());
    }
    if let Some(path) = c.spec.config.write_path {
        data.insert("KAFSCALE_WRITE_PATH".into(), path.flag_value().into());
    }
    // The flusher reads the preset; on the broker it only matters in dev mode.
    if let Some(preset) = c.spec.config.flush_preset {
        data.insert("KAFSCALE_FLUSH_PRESET".into(), preset.flag_value().into());
    }
    if let Some(ms) = c.spec.config.intake_compaction_delay_ms {
        data.insert("KAFSCALE_INTAKE_COMPACTION_DELAY_MS".into(), ms.to_string());
    }
    data.extend(security_settings(c));
    ConfigMap {
        metadata: meta(c, &n.config, "config"),
        data: Some(data),
        ..ConfigMap::default()
    }
}

pub const CONFIG_HASH_ANNOTATION: &str = "kafscale.io/config-hash";

/// A digest of the ConfigMap's settings, stable across operator builds.
fn config_hash(config: &ConfigMap) -> String {
    let mut digest = 0u32;
    for (key, value) in config.data.iter().flatten() {
        for part in [key.as_bytes(), b"=", value.as_bytes(), b"\n"] {
            digest = crc32c::crc32c_append(digest, part);
        }
    }
    format!("{digest:08x}")
}

/// Brokers: each pod runs `broker` and `sidecar-flusher` sharing an emptyDir
/// for the socket. Only the flusher sees the S3 credentials.
pub fn broker_statefulset(c: &KafscaleCluster) -> StatefulSet {
    let n = names(c);
    let images = c.spec.images.clone().unwrap_or_default();
    let from_config = vec![EnvFromSource {
        config_map_ref: Some(ConfigMapEnvSource {
            name: n.config.clone(),
            optional: Some(false),
        }),
        ..EnvFromSource::default()
    }];
    let socket_mount = vec![VolumeMount {
        name: "socket".into(),
        mount_path: SOCKET_DIR.into(),
        ..VolumeMount::default()
    }];
    // The pod name's ordinal is the broker id; the advertised host is the
    // pod's stable DNS name unless the spec overrides it.
    let ns = c.namespace().unwrap_or_else(|| "default".into());
    let advertised_host = c
        .spec
        .brokers
        .advertised_host
        .clone()
        .unwrap_or_else(|| format!("$(POD_NAME).{}.{ns}.svc", n.headless));
    let mut broker_env = vec![
        field_env("POD_NAME", "metadata.name"),
        env("KAFSCALE_ADVERTISED_HOST", advertised_host.clone()),
    ];
    if let Some(advertised) = advertised_listeners(c, &advertised_host) {
        broker_env.push(env("KAFSCALE_ADVERTISED_LISTENERS", advertised));
    }
    let mut broker_mounts = socket_mount.clone();
    let mut volumes = vec![Volume {
        name: "socket".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }];
    if let Some(tls) = &c.spec.brokers.tls {
        broker_mounts.push(VolumeMount {
            name: "tls".into(),
            mount_path: TLS_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: "tls".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(tls.secret_name.clone()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    if let Some(oauth) = &c.spec.brokers.oauthbearer {
        // The whole ConfigMap, not a subPath: kubelet updates it in place
        // and the broker reloads the keys.
        broker_mounts.push(VolumeMount {
            name: "oauthbearer".into(),
            mount_path: OAUTHBEARER_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: "oauthbearer".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: oauth.jwks_config_map.name.clone(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    broker_env.push(field_env(
        "KAFSCALE_NODE_ID",
        "metadata.labels['apps.kubernetes.io/pod-index']",
    ));
    let broker_image = images.broker.unwrap_or_else(|| DEFAULT_BROKER_IMAGE.into());
    let broker = Container {
        name: "broker".into(),
        image_pull_policy: Some(pull_policy(&broker_image).into()),
        image: Some(broker_image),
        env_from: Some(from_config.clone()),
        env: Some(broker_env),
        ports: Some(
            kafka_ports(c)
                .iter()
                .map(|(name, p)| container_port(name, *p))
                .chain([container_port("http", BROKER_HTTP_PORT)])
                .collect(),
        ),
        readiness_probe: Some(http_probe("/readyz", BROKER_HTTP_PORT, 5, 3)),
        liveness_probe: Some(http_probe("/healthz", BROKER_HTTP_PORT, 10, 6)),
        // A starting broker waits for etcd (managed etcd starts alongside)
        // before it serves HTTP; liveness applies once it has started.
        startup_probe: Some(http_probe("/healthz", BROKER_HTTP_PORT, 5, 60)),
        resources: c.spec.brokers.resources.clone(),
        volume_mounts: Some(broker_mounts),
        ..Container::default()
    };
    let mut flusher_env_from = from_config;
    if let Some(secret) = &c.spec.s3.credentials_secret {
        flusher_env_from.push(EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: secret.clone(),
                optional: Some(false),
            }),
            ..EnvFromSource::default()
        });
    }
    let mut flusher_env = Vec::new();
    if let Some(kms) = &c.spec.s3.kms_key_id {
        flusher_env.push(env("KAFSCALE_S3_KMS_KEY_ID", kms.clone()));
    }
    let flusher_image = images
        .flusher
        .unwrap_or_else(|| DEFAULT_FLUSHER_IMAGE.into());
    let flusher = Container {
        name: "sidecar-flusher".into(),
        image_pull_policy: Some(pull_policy(&flusher_image).into()),
        image: Some(flusher_image),
        env_from: Some(flusher_env_from),
        env: (!flusher_env.is_empty()).then_some(flusher_env),
        ports: Some(vec![container_port("flusher-http", FLUSHER_HTTP_PORT)]),
        readiness_probe: Some(http_probe("/readyz", FLUSHER_HTTP_PORT, 5, 3)),
        liveness_probe: Some(http_probe("/healthz", FLUSHER_HTTP_PORT, 10, 6)),
        resources: c.spec.brokers.flusher_resources.clone(),
        volume_mounts: Some(socket_mount),
        ..Container::default()
    };
    let selector = labels(c, "broker");
    StatefulSet {
        metadata: meta(c, &n.brokers, "broker"),
        spec: Some(StatefulSetSpec {
            // With an HPA the replica count is left out, so the HPA owns it.
            replicas: c
                .spec
                .brokers
                .autoscaling
                .is_none()
                .then_some(c.spec.brokers.replicas),
            service_name: Some(n.headless.clone()),
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(selector),
                    // Pods read the ConfigMap once, at start: a changed
                    // setting rolls them through this annotation.
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH_ANNOTATION.to_string(),
                        config_hash(&config_map(c)),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![broker, flusher],
                    volumes: Some(volumes),
                    termination_grace_period_seconds: Some(60),
                    ..PodSpec::default()
                }),
            },
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

fn port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::Int(port)),
        ..ServicePort::default()
    }
}

/// The headless Service giving each broker a stable DNS name.
pub fn headless_service(c: &KafscaleCluster) -> Service {
    let n = names(c);
    Service {
        metadata: meta(c, &n.headless, "broker"),
        spec: Some(K8sServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(labels(c, "broker")),
            ports: Some(
                kafka_ports(c)
                    .iter()
                    .map(|(name, p)| port(name, *p))
                    .chain([port("http", BROKER_HTTP_PORT)])
                    .collect(),
            ),
            ..K8sServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The client (bootstrap) Service, shaped by `spec.brokers.service`.
pub fn client_service(c: &KafscaleCluster) -> Service {
    let n = names(c);
    let s = &c.spec.brokers.service;
    let ports: Vec<ServicePort> = if c.spec.brokers.listeners.is_empty() {
        let mut kafka = port("kafka", c.spec.brokers.advertised_port);
        kafka.target_port = Some(IntOrString::Int(KAFKA_PORT));
        if s.type_ != ServiceType::ClusterIP {
            kafka.node_port = s.node_port;
        }
        vec![kafka]
    } else {
        kafka_ports(c)
            .iter()
            .map(|(name, p)| port(name, *p))
            .collect()
    };
    let mut metadata = meta(c, &n.client, "broker");
    if !s.annotations.is_empty() {
        metadata.annotations = Some(s.annotations.clone());
    }
    Service {
        metadata,
        spec: Some(K8sServiceSpec {
            type_: Some(
                match s.type_ {
                    ServiceType::ClusterIP => "ClusterIP",
                    ServiceType::NodePort => "NodePort",
                    ServiceType::LoadBalancer => "LoadBalancer",
                }
                .into(),
            ),
            selector: Some(labels(c, "broker")),
            ports: Some(ports),
            load_balancer_ip: s.load_balancer_ip.clone(),
            load_balancer_source_ranges: (!s.load_balancer_source_ranges.is_empty())
                .then(|| s.load_balancer_source_ranges.clone()),
            external_traffic_policy: match (&s.type_, &s.external_traffic_policy) {
                (ServiceType::ClusterIP, _) | (_, None) => None,
                (_, Some(TrafficPolicy::Cluster)) => Some("Cluster".into()),
                (_, Some(TrafficPolicy::Local)) => Some("Local".into()),
            },
            ..K8sServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// At most one broker down at a time for voluntary disruptions.
pub fn broker_pdb(c: &KafscaleCluster) -> PodDisruptionBudget {
    let n = names(c);
    PodDisruptionBudget {
        metadata: meta(c, &n.brokers, "broker"),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(labels(c, "broker")),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

pub fn broker_hpa(c: &KafscaleCluster) -> Option<HorizontalPodAutoscaler> {
    let a = c.spec.brokers.autoscaling.as_ref()?;
    let n = names(c);
    Some(HorizontalPodAutoscaler {
        metadata: meta(c, &n.brokers, "broker"),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "StatefulSet".into(),
                name: n.brokers.clone(),
            },
            min_replicas: Some(a.min_replicas),
            max_replicas: a.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(a.target_cpu_utilization),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            ..HorizontalPodAutoscalerSpec::default()
        }),
        ..HorizontalPodAutoscaler::default()
    })
}

fn etcd_claim(c: &KafscaleCluster) -> PersistentVolumeClaim {
    let storage = &c.spec.etcd.storage;
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data".into()),
            labels: Some(labels(c, "etcd")),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(storage.size.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

/// etcd's database limit for managed etcd (its default, stated).
const ETCD_QUOTA_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// Operator-managed etcd: three members with stable names and their own PDB.
pub fn etcd_objects(
    c: &KafscaleCluster,
) -> Option<(StatefulSet, Service, Service, PodDisruptionBudget)> {
    if !c.spec.etcd.endpoints.is_empty() {
        return None;
    }
    let n = names(c);
    let ns = c.namespace().unwrap_or_else(|| "default".into());
    let selector = labels(c, "etcd");
    let peers: Vec<String> = (0..ETCD_REPLICAS)
        .map(|i| {
            format!(
                "{0}-{i}=http://{0}-{i}.{0}.{ns}.svc:{ETCD_PEER_PORT}",
                n.etcd
            )
        })
        .collect();
    let image = c
        .spec
        .images
        .as_ref()
        .and_then(|i| i.etcd.clone())
        .unwrap_or_else(|| DEFAULT_ETCD_IMAGE.into());
    let container = Container {
        name: "etcd".into(),
        image_pull_policy: Some(pull_policy(&image).into()),
        image: Some(image),
        command: Some(vec!["/usr/local/bin/etcd".into()]),
        args: Some(vec![
            "--name=$(POD_NAME)".into(),
            "--data-dir=/var/lib/etcd".into(),
            format!("--listen-client-urls=http://0.0.0.0:{ETCD_CLIENT_PORT}"),
            format!(
                "--advertise-client-urls=http://$(POD_NAME).{}.{ns}.svc:{ETCD_CLIENT_PORT}",
                n.etcd
            ),
            format!("--listen-peer-urls=http://0.0.0.0:{ETCD_PEER_PORT}"),
            format!(
                "--initial-advertise-peer-urls=http://$(POD_NAME).{}.{ns}.svc:{ETCD_PEER_PORT}",
                n.etcd
            ),
            format!("--initial-cluster={}", peers.join(",")),
            "--initial-cluster-state=new".into(),
            format!("--initial-cluster-token={}", cluster_id(c)),
            // The brokers' controller compacts the history every five minutes
            // and defragments fragmented members; etcd's own compaction is the
            // backstop for when no broker runs, and the explicit quota keeps
            // the limit visible (at it, etcd refuses every write).
            "--auto-compaction-mode=periodic".into(),
            "--auto-compaction-retention=1h".into(),
            format!("--quota-backend-bytes={ETCD_QUOTA_BYTES}"),
        ]),
        env: Some(vec![field_env("POD_NAME", "metadata.name")]),
        ports: Some(vec![
            container_port("client", ETCD_CLIENT_PORT),
            container_port("peer", ETCD_PEER_PORT),
        ]),
        readiness_probe: Some(http_probe("/health", ETCD_CLIENT_PORT, 5, 3)),
        volume_mounts: Some(vec![VolumeMount {
            name: "data".into(),
            mount_path: "/var/lib/etcd".into(),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    };
    let sts = StatefulSet {
        metadata: meta(c, &n.etcd, "etcd"),
        spec: Some(StatefulSetSpec {
            replicas: Some(ETCD_REPLICAS),
            service_name: Some(n.etcd.clone()),
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(selector.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    ..PodSpec::default()
                }),
            },
            // A replaced member finds its data again; with an empty data
            // directory it could not rejoin the members that remember it.
            volume_claim_templates: Some(vec![etcd_claim(c)]),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    };
    let headless = Service {
        metadata: meta(c, &n.etcd, "etcd"),
        spec: Some(K8sServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector.clone()),
            ports: Some(vec![
                port("client", ETCD_CLIENT_PORT),
                port("peer", ETCD_PEER_PORT),
            ]),
            ..K8sServiceSpec::default()
        }),
        ..Service::default()
    };
    let client = Service {
        metadata: meta(c, &n.etcd_client, "etcd"),
        spec: Some(K8sServiceSpec {
            selector: Some(selector.clone()),
            ports: Some(vec![port("client", ETCD_CLIENT_PORT)]),
            ..K8sServiceSpec::default()
        }),
        ..Service::default()
    };
    let pdb = PodDisruptionBudget {
        metadata: meta(c, &n.etcd, "etcd"),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    };
    Some((sts, headless, client, pdb))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policy_follows_the_tag_as_kubernetes_defaults_it() {
        assert_eq!(pull_policy("kafscale-broker:latest"), "Always");
        assert_eq!(pull_policy("kafscale-broker"), "Always");
        assert_eq!(pull_policy("registry:5000/kafscale-broker"), "Always");
        assert_eq!(pull_policy("kafscale-broker:0.1.0"), "IfNotPresent");
        assert_eq!(
            pull_policy("registry:5000/kafscale-broker:0.1.0"),
            "IfNotPresent"
        );
        assert_eq!(pull_policy("kafscale-broker@sha256:0123"), "IfNotPresent");
    }

    #[test]
    fn each_container_states_the_pull_policy_of_its_own_image() {
        let mut c = cluster(vec![]);
        c.spec.images = Some(crate::crd::Images {
            broker: Some("kafscale-broker:0.1.0".into()),
            flusher: Some("kafscale-flusher:latest".into()),
            etcd: Some("etcd:3.6.5".into()),
        });
        let sts = broker_statefulset(&c);
        let containers = &sts.spec.unwrap().template.spec.unwrap().containers;
        let policy = |name: &str| {
            containers
                .iter()
                .find(|k| k.name == name)
                .and_then(|k| k.image_pull_policy.clone())
        };
        assert_eq!(policy("broker").as_deref(), Some("IfNotPresent"));
        assert_eq!(policy("sidecar-flusher").as_deref(), Some("Always"));
    }
    use crate::crd::{AutoscalingSpec, KafscaleClusterSpec};

    fn cluster(etcd: Vec<String>) -> KafscaleCluster {
        let mut c = KafscaleCluster::new(
            "prod",
            serde_json::from_value::<KafscaleClusterSpec>(serde_json::json!({
                "s3": {"bucket": "data", "endpoint": "http://minio:9000", "pathStyle": true, "credentialsSecret": "s3-creds"},
                "etcd": {"endpoints": etcd},
            }))
            .unwrap(),
        );
        c.metadata.namespace = Some("team-a".into());
        c.metadata.uid = Some("uid-1".into());
        c
    }

    #[test]
    fn brokers_run_two_containers_sharing_the_socket_and_only_the_flusher_has_credentials() {
        let c = cluster(vec![]);
        let sts = broker_statefulset(&c);
        let spec = sts.spec.unwrap();
        assert_eq!(spec.replicas, Some(3));
        let pod = spec.template.spec.unwrap();
        let names: Vec<&str> = pod.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["broker", "sidecar-flusher"]);
        for container in &pod.containers {
            let mounts = container.volume_mounts.as_ref().unwrap();
            assert_eq!(mounts[0].mount_path, SOCKET_DIR);
            assert!(container.readiness_probe.is_some() && container.liveness_probe.is_some());
        }
        let secret_refs = |c: &Container| {
            c.env_from
                .iter()
                .flatten()
                .filter(|e| e.secret_ref.is_some())
                .count()
        };
        assert_eq!(
            secret_refs(&pod.containers[0]),
            0,
            "the broker never sees S3 credentials"
        );
        assert_eq!(secret_refs(&pod.containers[1]), 1);
        assert_eq!(sts.metadata.owner_references.unwrap()[0].uid, "uid-1");
    }

    #[test]
    fn prefix_and_cluster_id_are_unique_per_namespace_and_cluster() {
        let c = cluster(vec![]);
        assert_eq!(s3_prefix(&c), "team-a/prod");
        let data = config_map(&c).data.unwrap();
        assert_eq!(data["KAFSCALE_S3_PREFIX"], "team-a/prod");
        assert_eq!(data["KAFSCALE_CLUSTER_ID"], "team-a-prod");
        assert_eq!(
            data["KAFSCALE_ETCD_ENDPOINTS"],
            "http://prod-etcd-client.team-a.svc:2379"
        );
    }

    #[test]
    fn the_write_path_and_its_preset_reach_both_containers() {
        let mut c = cluster(vec![]);
        let data = config_map(&c).data.unwrap();
        assert!(
            !data.contains_key("KAFSCALE_WRITE_PATH"),
            "the binaries' default"
        );
        c.spec.config = serde_json::from_value(serde_json::json!({
            "writePath": "intake", "flushPreset": "cost", "intakeCompactionDelayMs": 120000
        }))
        .unwrap();
        let data = config_map(&c).data.unwrap();
        assert_eq!(data["KAFSCALE_WRITE_PATH"], "intake");
        assert_eq!(data["KAFSCALE_FLUSH_PRESET"], "cost");
        assert_eq!(data["KAFSCALE_INTAKE_COMPACTION_DELAY_MS"], "120000");
        assert!(
            serde_json::from_value::<crate::crd::ClusterConfig>(
                serde_json::json!({"flushPreset": "fast"})
            )
            .is_err(),
            "an unknown preset is refused"
        );
    }

    #[test]
    fn managed_etcd_only_without_endpoints() {
        assert!(etcd_objects(&cluster(vec!["http://etcd:2379".into()])).is_none());
        let (sts, headless, client, _pdb) = etcd_objects(&cluster(vec![])).unwrap();
        let args = sts
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .args
            .clone()
            .unwrap();
        assert!(
            args.contains(&"--auto-compaction-mode=periodic".to_string()),
            "managed etcd without history compaction fills up with offset commits: {args:?}"
        );
        assert_eq!(sts.spec.unwrap().replicas, Some(3));
        assert_eq!(headless.spec.unwrap().cluster_ip.as_deref(), Some("None"));
        assert_eq!(client.metadata.name.as_deref(), Some("prod-etcd-client"));
    }

    #[test]
    fn a_changed_setting_changes_the_pod_template_and_nothing_else_does() {
        let annotation = |c: &KafscaleCluster| {
            broker_statefulset(c)
                .spec
                .unwrap()
                .template
                .metadata
                .unwrap()
                .annotations
                .unwrap()[CONFIG_HASH_ANNOTATION]
                .clone()
        };
        let mut c = cluster(vec![]);
        let before = annotation(&c);
        assert_eq!(
            before,
            annotation(&c.clone()),
            "the same settings, the same hash"
        );
        c.spec.brokers.replicas = 5;
        assert_eq!(annotation(&c), before, "scaling does not restart brokers");
        c.spec.config.flush_interval_ms = Some(8);
        assert_ne!(
            annotation(&c),
            before,
            "a new flush window rolls the brokers"
        );
    }

    #[test]
    fn managed_etcd_members_keep_their_data_on_claims() {
        let mut c = cluster(vec![]);
        let claims = |c: &KafscaleCluster| {
            etcd_objects(c)
                .unwrap()
                .0
                .spec
                .unwrap()
                .volume_claim_templates
                .unwrap()
        };
        let claim = claims(&c).remove(0);
        assert_eq!(claim.metadata.name.as_deref(), Some("data"));
        let spec = claim.spec.unwrap();
        assert_eq!(spec.storage_class_name, None, "the default StorageClass");
        assert_eq!(
            spec.resources.unwrap().requests.unwrap()["storage"],
            Quantity("4Gi".into())
        );
        c.spec.etcd.storage.storage_class_name = Some("fast-ssd".into());
        c.spec.etcd.storage.size = "10Gi".into();
        let spec = claims(&c).remove(0).spec.unwrap();
        assert_eq!(spec.storage_class_name.as_deref(), Some("fast-ssd"));
        let pod = etcd_objects(&c)
            .unwrap()
            .0
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        assert!(
            pod.volumes.is_none(),
            "no emptyDir shadows the claim: {:?}",
            pod.volumes
        );
    }

    #[test]
    fn an_hpa_owns_the_replica_count() {
        let mut c = cluster(vec![]);
        assert!(broker_hpa(&c).is_none());
        c.spec.brokers.autoscaling = Some(AutoscalingSpec {
            min_replicas: 2,
            max_replicas: 6,
            target_cpu_utilization: 60,
        });
        assert_eq!(broker_hpa(&c).unwrap().spec.unwrap().max_replicas, 6);
        assert_eq!(broker_statefulset(&c).spec.unwrap().replicas, None);
    }

    #[test]
    fn listeners_tls_and_authorization_become_broker_settings_ports_and_a_mounted_secret() {
        let mut c = cluster(vec![]);
        c.spec.brokers = serde_json::from_value(serde_json::json!({
            "listeners": [
                {"name": "internal", "port": 9092},
                {"name": "external", "port": 9093, "tls": true, "authentication": "scram-sha-512"},
                {"name": "mtls", "port": 9096, "tls": true, "authentication": "tls"},
                {"name": "oauth", "port": 9097, "tls": true, "authentication": "oauthbearer"},
            ],
            "tls": {"secretName": "kafscale-tls"},
            "oauthbearer": {"jwksConfigMap": {"name": "idp-keys"}, "issuer": "https://idp.example",
                            "audience": ["kafka", "kafka-prod"]},
        }))
        .unwrap();
        c.spec.authorization = Some(crate::crd::ClusterAuthorization {
            super_users: vec!["User:admin".into(), "User:CN=ops".into()],
        });
        let data = config_map(&c).data.unwrap();
        assert_eq!(
            data["KAFSCALE_LISTENERS"],
            "INTERNAL://0.0.0.0:9092,EXTERNAL://0.0.0.0:9093,MTLS://0.0.0.0:9096,OAUTH://0.0.0.0:9097"
        );
        assert_eq!(
            data["KAFSCALE_LISTENER_SECURITY_PROTOCOL_MAP"],
            "INTERNAL:PLAINTEXT,EXTERNAL:SASL_SSL,MTLS:SSL,OAUTH:SASL_SSL"
        );
        assert_eq!(
            data["KAFSCALE_SASL_ENABLED_MECHANISMS"],
            "SCRAM-SHA-512,SCRAM-SHA-256,OAUTHBEARER"
        );
        assert_eq!(
            data["KAFSCALE_LISTENER_SASL_ENABLED_MECHANISMS"],
            "EXTERNAL:SCRAM-SHA-512,SCRAM-SHA-256;OAUTH:OAUTHBEARER"
        );
        // Only the mTLS listener demands certificates.
        assert_eq!(
            data["KAFSCALE_LISTENER_TLS_CLIENT_AUTH"],
            "EXTERNAL:none;MTLS:required;OAUTH:none"
        );
        assert!(!data.contains_key("KAFSCALE_TLS_CLIENT_AUTH"));
        assert_eq!(
            data["KAFSCALE_SASL_OAUTHBEARER_JWKS_FILE"],
            "/etc/kafscale/oauthbearer/jwks.json"
        );
        assert_eq!(
            data["KAFSCALE_SASL_OAUTHBEARER_EXPECTED_ISSUER"],
            "https://idp.example"
        );
        assert_eq!(
            data["KAFSCALE_SASL_OAUTHBEARER_EXPECTED_AUDIENCE"],
            "kafka,kafka-prod"
        );
        assert_eq!(data["KAFSCALE_TLS_CERT_FILE"], "/etc/kafscale/tls/tls.crt");
        assert_eq!(
            data["KAFSCALE_TLS_CLIENT_CA_FILE"],
            "/etc/kafscale/tls/ca.crt"
        );
        assert_eq!(data["KAFSCALE_AUTHORIZER"], "acl");
        assert_eq!(data["KAFSCALE_SUPER_USERS"], "User:admin;User:CN=ops");

        let pod = broker_statefulset(&c).spec.unwrap().template.spec.unwrap();
        let broker = &pod.containers[0];
        let advertised = broker
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "KAFSCALE_ADVERTISED_LISTENERS")
            .and_then(|e| e.value.clone())
            .unwrap();
        assert_eq!(
            advertised,
            "INTERNAL://$(POD_NAME).prod-broker-headless.team-a.svc:9092,EXTERNAL://$(POD_NAME).prod-broker-headless.team-a.svc:9093,MTLS://$(POD_NAME).prod-broker-headless.team-a.svc:9096,OAUTH://$(POD_NAME).prod-broker-headless.team-a.svc:9097"
        );
        let ports: Vec<i32> = broker
            .ports
            .iter()
            .flatten()
            .map(|p| p.container_port)
            .collect();
        assert_eq!(ports, [9092, 9093, 9096, 9097, BROKER_HTTP_PORT]);
        assert!(broker
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.mount_path == TLS_DIR));
        assert!(pod.volumes.iter().flatten().any(|v| v
            .secret
            .as_ref()
            .is_some_and(|s| s.secret_name.as_deref() == Some("kafscale-tls"))));
        assert!(broker
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.mount_path == OAUTHBEARER_DIR));
        assert!(pod
            .volumes
            .iter()
            .flatten()
            .any(|v| v.config_map.as_ref().is_some_and(|m| m.name == "idp-keys")));
        // The flusher never sees the broker's key.
        assert!(pod.containers[1]
            .volume_mounts
            .iter()
            .flatten()
            .all(|m| m.mount_path != TLS_DIR));
        let service_ports: Vec<(String, i32)> = client_service(&c)
            .spec
            .unwrap()
            .ports
            .unwrap()
            .into_iter()
            .map(|p| (p.name.unwrap(), p.port))
            .collect();
        assert_eq!(
            service_ports,
            [
                ("internal".into(), 9092),
                ("external".into(), 9093),
                ("mtls".into(), 9096),
                ("oauth".into(), 9097)
            ]
        );
        assert_eq!(bootstrap_servers(&c), "prod-kafka.team-a.svc:9092");
    }
}
