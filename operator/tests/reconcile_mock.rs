//! The reconcilers against a strict mocked API server (tower-test): each test
//! lists every request a reconcile must make, in order, with the answer the
//! API server would give. A request that is not the next expected one, or an
//! expected one that never comes, fails the test. The real API server and
//! real pods are the end-to-end suites' job (e2e/tests/test_operator.py and
//! the kind suite). The KafscaleUser tests run a real etcd (the `etcd`
//! binary scripts/install-test-deps.sh installs), since what they check is
//! what ends up there.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use kafscale_metadata::acls::{Permission, CLUSTER_NAME};
use kafscale_metadata::etcd::EtcdKv;
use kafscale_metadata::scram::{ScramMechanism, MIN_ITERATIONS};
use kafscale_metadata::{AclRecord, CredentialChange, MetadataStore};
use kafscale_operator::controller::{self, Context};
use kafscale_operator::crd::{KafscaleCluster, KafscaleTopic, KafscaleUser};
use kafscale_operator::metrics::OperatorMetrics;
use kafscale_operator::users;
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

const NS: &str = "/api/v1/namespaces/default";
const APPS: &str = "/apis/apps/v1/namespaces/default";
const POLICY: &str = "/apis/policy/v1/namespaces/default";
const HPA: &str = "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers";
const KAFSCALE: &str = "/apis/kafscale.io/v1alpha1/namespaces/default";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events";

/// What a request must be: its method, and for a PATCH its kind.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Verb {
    Get,
    Post,
    /// Server-side apply, forced, as the operator's field manager.
    Apply,
    /// A JSON patch (kube's finalizer helper adds and removes with these).
    JsonPatch,
}

/// How the fake API server answers.
#[derive(Debug, Clone)]
enum Answer {
    /// The applied or created object back, with a resourceVersion.
    Echo,
    NotFound,
    /// This object with the status the request applied (the API server
    /// returns the whole object from the status subresource).
    WithStatus(Value),
    /// This object, as it is.
    Object(Value),
}

struct Call {
    verb: Verb,
    path: String,
    answer: Answer,
}

fn call(verb: Verb, path: impl Into<String>, answer: Answer) -> Call {
    Call {
        verb,
        path: path.into(),
        answer,
    }
}

fn verb_of(request: &Request<Body>) -> Verb {
    let content_type = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match request.method().as_str() {
        "GET" => Verb::Get,
        "POST" => Verb::Post,
        "PATCH" if content_type == "application/apply-patch+yaml" => {
            let query = request.uri().query().unwrap_or("");
            assert!(
                query.contains("fieldManager=kafscale-operator") && query.contains("force=true"),
                "an apply without the operator's field manager or force: {}",
                request.uri()
            );
            Verb::Apply
        }
        "PATCH" if content_type == "application/json-patch+json" => Verb::JsonPatch,
        other => panic!(
            "unexpected {other} {} ({content_type}): the operator writes with server-side apply",
            request.uri()
        ),
    }
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"})
}

/// Serves exactly `calls`, in order, and returns each request's body. The
/// task fails if a request differs from the next expected one, if an
/// expected one does not arrive within five seconds, or if another request
/// comes after the last.
fn strict_api(calls: Vec<Call>) -> (Client, Server) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let seen = Bodies::default();
    let bodies = seen.clone();
    let task = tokio::spawn(async move {
        for (n, expected) in calls.into_iter().enumerate() {
            let (request, send) =
                match tokio::time::timeout(Duration::from_secs(5), handle.next_request()).await {
                    Ok(Some(r)) => r,
                    _ => panic!(
                        "call {n} never came: expected {:?} {}",
                        expected.verb, expected.path
                    ),
                };
            let verb = verb_of(&request);
            let path = request.uri().path().to_string();
            assert_eq!(
                (verb, path.as_str()),
                (expected.verb, expected.path.as_str()),
                "call {n} is not the expected one"
            );
            let bytes = request
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let (status, reply) = match expected.answer {
                Answer::NotFound => (StatusCode::NOT_FOUND, not_found()),
                Answer::Object(obj) => (StatusCode::OK, obj),
                Answer::WithStatus(mut obj) => {
                    obj["status"] = body["status"].clone();
                    (StatusCode::OK, obj)
                }
                Answer::Echo => {
                    let mut obj = body.clone();
                    obj["metadata"]["resourceVersion"] = json!("1");
                    (StatusCode::OK, obj)
                }
            };
            bodies.lock().unwrap().push(body);
            send.send_response(
                Response::builder()
                    .status(status)
                    .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                    .unwrap(),
            );
        }
        // Nothing more: the client side goes away once the reconcile is done.
        if let Ok(Some((extra, _))) =
            tokio::time::timeout(Duration::from_secs(2), handle.next_request()).await
        {
            panic!(
                "unexpected call after the last expected one: {} {}",
                extra.method(),
                extra.uri()
            );
        }
    });
    (Client::new(service, "default"), Server { task, seen })
}

type Bodies = Arc<Mutex<Vec<Value>>>;

struct Server {
    task: JoinHandle<()>,
    seen: Bodies,
}

impl Server {
    /// The bodies of the requests so far (a JSON null for those without).
    fn bodies(&self) -> Vec<Value> {
        self.seen.lock().unwrap().clone()
    }

    /// Fails the test if the calls differed from the expected ones; the
    /// client must be gone (the reconcile's context dropped).
    async fn finish(self) -> Vec<Value> {
        self.task.await.unwrap();
        let bodies = self.seen.lock().unwrap().clone();
        bodies
    }
}

fn context(client: Client) -> Arc<Context> {
    Context::new(client, OperatorMetrics::new(&mut Default::default()))
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .unwrap_or(&Value::Null)
}

fn cluster_resource(spec: Value) -> Value {
    json!({
        "apiVersion": "kafscale.io/v1alpha1", "kind": "KafscaleCluster",
        "metadata": {"name": "c", "namespace": "default", "uid": "u1", "generation": 3},
        "spec": spec,
    })
}

/// The calls every cluster reconcile makes first: its broker objects.
fn broker_object_calls() -> Vec<Call> {
    vec![
        call(
            Verb::Apply,
            format!("{NS}/configmaps/c-config"),
            Answer::Echo,
        ),
        call(
            Verb::Apply,
            format!("{NS}/services/c-broker-headless"),
            Answer::Echo,
        ),
        call(Verb::Apply, format!("{NS}/services/c-kafka"), Answer::Echo),
        call(
            Verb::Apply,
            format!("{POLICY}/poddisruptionbudgets/c-broker"),
            Answer::Echo,
        ),
        call(
            Verb::Apply,
            format!("{APPS}/statefulsets/c-broker"),
            Answer::Echo,
        ),
        call(Verb::Get, format!("{HPA}/c-broker"), Answer::NotFound),
    ]
}

/// What a first reconcile ends with: one event per condition (all three
/// are new), in the conditions' order, then the status.
fn first_status_calls(resource: &Value) -> Vec<Call> {
    let mut calls: Vec<Call> = (0..3)
        .map(|_| call(Verb::Post, EVENTS, Answer::Echo))
        .collect();
    calls.push(call(
        Verb::Apply,
        format!("{KAFSCALE}/kafscaleclusters/c/status"),
        Answer::WithStatus(resource.clone()),
    ));
    calls
}

/// Reconciles the cluster `resource` once against exactly `calls`; returns
/// the requests' bodies.
async fn reconcile_cluster_once(resource: Value, calls: Vec<Call>) -> Vec<Value> {
    let (client, server) = strict_api(calls);
    let cluster: KafscaleCluster = serde_json::from_value(resource).unwrap();
    controller::reconcile_cluster(Arc::new(cluster), context(client))
        .await
        .unwrap();
    server.finish().await
}

#[tokio::test]
async fn a_cluster_with_a_missing_secret_says_so_and_still_applies_its_objects() {
    let resource = cluster_resource(json!({
        "s3": {"bucket": "bkt", "credentialsSecret": "gone"},
        "etcd": {"endpoints": ["http://127.0.0.1:1"]}
    }));
    let mut calls = broker_object_calls();
    calls.push(call(
        Verb::Get,
        format!("{NS}/secrets/gone"),
        Answer::NotFound,
    ));
    calls.extend(first_status_calls(&resource));
    let bodies = reconcile_cluster_once(resource, calls).await;

    let sts = &bodies[4];
    assert_eq!(sts["spec"]["replicas"], 3);
    let status = &bodies[10]["status"];
    assert_eq!(bodies[10]["kind"], "KafscaleCluster");
    assert_eq!(status["observedGeneration"], 3);
    let s3 = condition(status, "S3CredentialsReady");
    assert_eq!(s3["status"], "False");
    assert!(s3["message"]
        .as_str()
        .unwrap()
        .contains("Secret gone does not exist"));
    assert_eq!(condition(status, "EtcdReachable")["status"], "False");
    assert_eq!(condition(status, "Ready")["status"], "False");
    let reasons: Vec<&Value> = bodies[7..10].iter().map(|e| &e["reason"]).collect();
    assert_eq!(
        reasons,
        [
            &json!("Unreachable"),
            &json!("BrokersNotReady"),
            &json!("CredentialsMissing")
        ]
    );
    assert_eq!(bodies[9]["type"], "Warning");
}

#[tokio::test]
async fn an_unchanged_status_is_neither_written_nor_announced_again() {
    let resource = cluster_resource(json!({
        "s3": {"bucket": "bkt"}, "etcd": {"endpoints": ["http://127.0.0.1:1"]}
    }));
    let mut calls = broker_object_calls();
    calls.extend(first_status_calls(&resource));
    // The second reconcile sees the status the first wrote: only the
    // objects are applied (server-side apply changes nothing then).
    calls.extend(broker_object_calls());
    let (client, server) = strict_api(calls);
    let mut cluster: KafscaleCluster = serde_json::from_value(resource).unwrap();
    let ctx = context(client);
    controller::reconcile_cluster(Arc::new(cluster.clone()), ctx.clone())
        .await
        .unwrap();
    let first = server.bodies().pop().unwrap()["status"].clone();
    cluster.status = Some(serde_json::from_value(first).unwrap());
    controller::reconcile_cluster(Arc::new(cluster), ctx.clone())
        .await
        .unwrap();
    drop(ctx);
    server.finish().await;
}

#[tokio::test]
async fn managed_etcd_is_applied_with_volume_claims_and_reported_until_it_has_a_quorum() {
    let resource = cluster_resource(json!({"s3": {"bucket": "bkt"}}));
    let mut calls = broker_object_calls();
    calls.extend([
        call(Verb::Apply, format!("{NS}/services/c-etcd"), Answer::Echo),
        call(
            Verb::Apply,
            format!("{NS}/services/c-etcd-client"),
            Answer::Echo,
        ),
        call(
            Verb::Apply,
            format!("{POLICY}/poddisruptionbudgets/c-etcd"),
            Answer::Echo,
        ),
        call(
            Verb::Apply,
            format!("{APPS}/statefulsets/c-etcd"),
            Answer::Echo,
        ),
    ]);
    calls.extend(first_status_calls(&resource));
    let bodies = reconcile_cluster_once(resource, calls).await;
    let etcd = &bodies[9];
    assert_eq!(
        etcd["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
        "4Gi"
    );
    let status = &bodies[13]["status"];
    let etcd_condition = condition(status, "EtcdReachable");
    assert_eq!(etcd_condition["status"], "False");
    assert!(etcd_condition["message"]
        .as_str()
        .unwrap()
        .contains("0 of 3 managed etcd members ready; a quorum needs 2"));
    assert_eq!(condition(status, "S3CredentialsReady")["status"], "True");
}

fn topic_resource(extra_metadata: Value, spec: Value) -> Value {
    let mut metadata = json!({"name": "t", "namespace": "default", "uid": "u2", "generation": 1});
    for (k, v) in extra_metadata.as_object().unwrap() {
        metadata[k] = v.clone();
    }
    json!({"apiVersion": "kafscale.io/v1alpha1", "kind": "KafscaleTopic", "metadata": metadata, "spec": spec})
}

#[tokio::test]
async fn a_new_topic_gets_its_finalizer_before_anything_else() {
    let resource = topic_resource(json!({}), json!({"clusterRef": "c", "partitions": 3}));
    let mut with_finalizer = resource.clone();
    with_finalizer["metadata"]["finalizers"] = json!(["kafscale.io/topic"]);
    let (client, server) = strict_api(vec![call(
        Verb::JsonPatch,
        format!("{KAFSCALE}/kafscaletopics/t"),
        Answer::Object(with_finalizer),
    )]);
    let topic: KafscaleTopic = serde_json::from_value(resource).unwrap();
    controller::reconcile_topic(Arc::new(topic), context(client))
        .await
        .unwrap();
    let bodies = server.finish().await;
    assert!(
        bodies[0].to_string().contains("kafscale.io/topic"),
        "{}",
        bodies[0]
    );
}

#[tokio::test]
async fn a_topic_with_an_invalid_config_is_refused_without_looking_further() {
    let resource = topic_resource(
        json!({"finalizers": ["kafscale.io/topic"]}),
        json!({"clusterRef": "c", "partitions": 3, "config": {"cleanup.policy": "compacted"}}),
    );
    let (client, server) = strict_api(vec![
        call(Verb::Post, EVENTS, Answer::Echo),
        call(
            Verb::Apply,
            format!("{KAFSCALE}/kafscaletopics/t/status"),
            Answer::WithStatus(resource.clone()),
        ),
    ]);
    let topic: KafscaleTopic = serde_json::from_value(resource).unwrap();
    controller::reconcile_topic(Arc::new(topic), context(client))
        .await
        .unwrap();
    let bodies = server.finish().await;
    let ready = condition(&bodies[1]["status"], "Ready");
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("False"), Some("InvalidSpec"))
    );
    assert!(ready["message"]
        .as_str()
        .unwrap()
        .contains("use delete, compact or compact,delete"));
    assert_eq!(bodies[0]["reason"], "InvalidSpec");
}

#[tokio::test]
async fn a_topic_of_a_missing_cluster_says_which() {
    let resource = topic_resource(
        json!({"finalizers": ["kafscale.io/topic"]}),
        json!({"clusterRef": "absent", "partitions": 3}),
    );
    let (client, server) = strict_api(vec![
        call(
            Verb::Get,
            format!("{KAFSCALE}/kafscaleclusters/absent"),
            Answer::NotFound,
        ),
        call(Verb::Post, EVENTS, Answer::Echo),
        call(
            Verb::Apply,
            format!("{KAFSCALE}/kafscaletopics/t/status"),
            Answer::WithStatus(resource.clone()),
        ),
    ]);
    let topic: KafscaleTopic = serde_json::from_value(resource).unwrap();
    controller::reconcile_topic(Arc::new(topic), context(client))
        .await
        .unwrap();
    let bodies = server.finish().await;
    let ready = condition(&bodies[2]["status"], "Ready");
    assert_eq!(ready["reason"], "ClusterNotFound");
    assert!(ready["message"]
        .as_str()
        .unwrap()
        .contains("KafscaleCluster absent does not exist"));
}

#[tokio::test]
async fn deleting_a_topic_whose_cluster_is_gone_releases_it() {
    let resource = topic_resource(
        json!({"finalizers": ["kafscale.io/topic"], "deletionTimestamp": "2026-12-01T00:00:00Z"}),
        json!({"clusterRef": "c", "partitions": 3}),
    );
    let mut released = resource.clone();
    released["metadata"]["finalizers"] = json!([]);
    let (client, server) = strict_api(vec![
        call(
            Verb::Get,
            format!("{KAFSCALE}/kafscaleclusters/c"),
            Answer::NotFound,
        ),
        call(
            Verb::JsonPatch,
            format!("{KAFSCALE}/kafscaletopics/t"),
            Answer::Object(released),
        ),
    ]);
    let topic: KafscaleTopic = serde_json::from_value(resource).unwrap();
    controller::reconcile_topic(Arc::new(topic), context(client))
        .await
        .unwrap();
    server.finish().await;
}

#[test]
fn a_cluster_change_reconciles_exactly_its_own_topics() {
    let cluster: KafscaleCluster =
        serde_json::from_value(cluster_resource(json!({"s3": {"bucket": "bkt"}}))).unwrap();
    let topic = |name: &str, ns: &str, cluster_ref: &str| {
        let mut t: KafscaleTopic = serde_json::from_value(topic_resource(
            json!({"name": name, "namespace": ns}),
            json!({"clusterRef": cluster_ref, "partitions": 1}),
        ))
        .unwrap();
        t.metadata.uid = Some(name.into());
        Arc::new(t)
    };
    let topics = [
        topic("mine", "default", "c"),
        topic("other-cluster", "default", "d"),
        topic("other-namespace", "team-b", "c"),
    ];
    let names: Vec<String> = controller::topics_of(&cluster, &topics)
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["mine"]);
}

/// A single-member etcd on free loopback ports, killed and removed on drop.
struct TestEtcd {
    child: std::process::Child,
    dir: std::path::PathBuf,
    endpoint: String,
}

impl Drop for TestEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// Starts etcd and returns it with a store for the cluster "c" of the
/// namespace "default" (the operator's cluster id "default-c").
async fn etcd() -> (TestEtcd, MetadataStore) {
    let (client, peer) = (free_port(), free_port());
    let dir = std::env::temp_dir().join(format!(
        "kafscale-operator-etcd-{}-{client}",
        std::process::id()
    ));
    let endpoint = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = std::process::Command::new("etcd")
        .args(["--data-dir", &dir.to_string_lossy()])
        .args(["--listen-client-urls", &endpoint])
        .args(["--advertise-client-urls", &endpoint])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("default={peer_url}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("etcd on PATH (scripts/install-test-deps.sh installs it)");
    let etcd = TestEtcd {
        child,
        dir,
        endpoint: endpoint.clone(),
    };
    for _ in 0..100 {
        if let Ok(kv) =
            EtcdKv::connect(std::slice::from_ref(&endpoint), Duration::from_secs(1)).await
        {
            let store = MetadataStore::new(Arc::new(kv), "default-c");
            if store.list_acls().await.is_ok() {
                return (etcd, store);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("etcd at {endpoint} did not start");
}

fn user_resource(name: &str, extra_metadata: Value, acls: Value) -> Value {
    let mut metadata = json!({
        "name": name, "namespace": "default", "uid": format!("uid-{name}"), "generation": 1,
        "finalizers": ["kafscale.io/user"],
    });
    for (k, v) in extra_metadata.as_object().unwrap() {
        metadata[k] = v.clone();
    }
    json!({
        "apiVersion": "kafscale.io/v1alpha1", "kind": "KafscaleUser", "metadata": metadata,
        "spec": {"clusterRef": "c", "authentication": {"type": "scram-sha-512"},
                 "authorization": {"acls": acls}},
    })
}

fn cluster_at(etcd: &TestEtcd) -> Value {
    cluster_resource(json!({"s3": {"bucket": "bkt"}, "etcd": {"endpoints": [etcd.endpoint]}}))
}

fn topic_acl(principal: &str, topic: &str, operation: i8, permission: Permission) -> AclRecord {
    AclRecord {
        resource_type: 2,
        resource_name: topic.into(),
        pattern_type: 3,
        principal: principal.into(),
        host: "*".into(),
        operation,
        permission: permission.code(),
    }
}

const READ: i8 = 3;
const SHA512: ScramMechanism = ScramMechanism::Sha512;

async fn reconcile_user_once(resource: &Value, calls: Vec<Call>) -> Vec<Value> {
    let (client, server) = strict_api(calls);
    let user: KafscaleUser = serde_json::from_value(resource.clone()).unwrap();
    users::reconcile_user(Arc::new(user), context(client))
        .await
        .unwrap();
    server.finish().await
}

/// What a reconcile of a user whose cluster is "c" starts with.
fn get_cluster(etcd: &TestEtcd) -> Call {
    call(
        Verb::Get,
        format!("{KAFSCALE}/kafscaleclusters/c"),
        Answer::Object(cluster_at(etcd)),
    )
}

/// The deletion of a user: the same resource, being deleted, and the
/// finalizer's release.
fn deleting(resource: &Value) -> (Value, Value) {
    let mut doomed = resource.clone();
    doomed["metadata"]["deletionTimestamp"] = json!("2026-12-01T00:00:00Z");
    let mut released = doomed.clone();
    released["metadata"]["finalizers"] = json!([]);
    (doomed, released)
}

#[tokio::test]
async fn an_administrators_deny_for_the_users_principal_survives_reconciles_and_deletion() {
    let (etcd, store) = etcd().await;
    // kafka-acls --add --deny-principal User:app --operation Read --topic orders,
    // and a binding of another principal.
    let deny = topic_acl("User:app", "orders", READ, Permission::Deny);
    let others = topic_acl("User:bob", "orders", READ, Permission::Allow);
    store
        .create_acls(&[deny.clone(), others.clone()])
        .await
        .unwrap();

    let resource = user_resource(
        "app",
        json!({}),
        json!([{"resource": {"type": "topic", "name": "orders"}, "operations": ["Read"]},
               {"resource": {"type": "cluster"}, "operations": ["IdempotentWrite"]}]),
    );
    let bodies = reconcile_user_once(
        &resource,
        vec![
            get_cluster(&etcd),
            call(Verb::Get, format!("{NS}/secrets/app"), Answer::NotFound),
            call(Verb::Apply, format!("{NS}/secrets/app"), Answer::Echo),
            call(Verb::Post, EVENTS, Answer::Echo),
            call(
                Verb::Apply,
                format!("{KAFSCALE}/kafscaleusers/app/status"),
                Answer::WithStatus(resource.clone()),
            ),
        ],
    )
    .await;
    let ready = condition(&bodies[4]["status"], "Ready");
    assert_eq!(ready["status"], "True", "{ready}");
    let allow = topic_acl("User:app", "orders", READ, Permission::Allow);
    let idempotent = AclRecord {
        resource_type: 4,
        resource_name: CLUSTER_NAME.into(),
        operation: 12,
        ..allow.clone()
    };
    let mut acls = store.list_acls().await.unwrap();
    acls.sort();
    let mut expected = vec![deny.clone(), others.clone(), allow, idempotent];
    expected.sort();
    assert_eq!(acls, expected, "the user's bindings added, the DENY kept");
    let password = {
        use base64::Engine;
        let encoded = bodies[2]["data"]["password"].as_str().unwrap();
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .unwrap(),
        )
        .unwrap()
    };
    let credential = store
        .scram_credential("app", SHA512.name())
        .await
        .unwrap()
        .unwrap();
    assert!(SHA512.password_matches(&credential, &password));

    // The periodic reconcile, with the status it wrote: nothing changes,
    // the DENY included.
    let mut reconciled = resource.clone();
    reconciled["status"] = bodies[4]["status"].clone();
    let mut secret = bodies[2].clone();
    secret["metadata"]["resourceVersion"] = json!("1");
    reconcile_user_once(
        &reconciled,
        vec![
            get_cluster(&etcd),
            call(
                Verb::Get,
                format!("{NS}/secrets/app"),
                Answer::Object(secret),
            ),
        ],
    )
    .await;
    let mut again = store.list_acls().await.unwrap();
    again.sort();
    assert_eq!(again, expected);

    // Deleting the KafscaleUser removes its credential and its own
    // bindings; the administrator's DENY and bob's binding stay.
    let (doomed, released) = deleting(&reconciled);
    reconcile_user_once(
        &doomed,
        vec![
            get_cluster(&etcd),
            call(
                Verb::JsonPatch,
                format!("{KAFSCALE}/kafscaleusers/app"),
                Answer::Object(released),
            ),
        ],
    )
    .await;
    let mut left = store.list_acls().await.unwrap();
    left.sort();
    let mut kept = vec![deny, others];
    kept.sort();
    assert_eq!(left, kept);
    assert_eq!(
        store.scram_credential("app", SHA512.name()).await.unwrap(),
        None
    );
}

#[tokio::test]
async fn a_user_named_like_an_existing_scram_user_says_so_and_takes_nothing_over() {
    let (etcd, store) = etcd().await;
    // kafka-configs --alter --add-config SCRAM-SHA-512=[password=...] --entity-name legacy
    let theirs = SHA512.credential_for_password("legacy-password", MIN_ITERATIONS);
    store
        .alter_scram_credentials(&[CredentialChange::Upsert {
            user: "legacy".into(),
            mechanism: SHA512.name().into(),
            credential: theirs.clone(),
        }])
        .await
        .unwrap();
    let resource = user_resource(
        "legacy",
        json!({}),
        json!([{"resource": {"type": "topic", "name": "*"}, "operations": ["All"]}]),
    );
    // No Secret is made (its password would not log in anyway), no
    // credential written, no binding: only the status says why.
    let bodies = reconcile_user_once(
        &resource,
        vec![
            get_cluster(&etcd),
            call(Verb::Get, format!("{NS}/secrets/legacy"), Answer::NotFound),
            call(Verb::Post, EVENTS, Answer::Echo),
            call(
                Verb::Apply,
                format!("{KAFSCALE}/kafscaleusers/legacy/status"),
                Answer::WithStatus(resource.clone()),
            ),
        ],
    )
    .await;
    let ready = condition(&bodies[3]["status"], "Ready");
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("False"), Some("UserExists"))
    );
    assert!(ready["message"].as_str().unwrap().contains(
        "a SCRAM user 'legacy' already exists in the cluster, created outside this KafscaleUser; \
         delete it with kafka-configs --alter --delete-config SCRAM-SHA-512 --entity-type users \
         --entity-name legacy"
    ));
    assert_eq!(bodies[2]["reason"], "UserExists");
    assert_eq!(
        store
            .scram_credential("legacy", SHA512.name())
            .await
            .unwrap(),
        Some(theirs.clone())
    );
    assert!(store.list_acls().await.unwrap().is_empty());

    // Deleting the KafscaleUser leaves the other user's credential.
    let (doomed, released) = deleting(&resource);
    reconcile_user_once(
        &doomed,
        vec![
            get_cluster(&etcd),
            call(Verb::Get, format!("{NS}/secrets/legacy"), Answer::NotFound),
            call(
                Verb::JsonPatch,
                format!("{KAFSCALE}/kafscaleusers/legacy"),
                Answer::Object(released),
            ),
        ],
    )
    .await;
    assert_eq!(
        store
            .scram_credential("legacy", SHA512.name())
            .await
            .unwrap(),
        Some(theirs)
    );
}

#[tokio::test]
async fn a_credential_from_an_older_operator_is_kept_and_becomes_the_users() {
    let (etcd, store) = etcd().await;
    // An operator before ownership marks stored the Secret's password.
    let old = SHA512.credential_for_password("from-the-secret", MIN_ITERATIONS);
    store
        .alter_scram_credentials(&[CredentialChange::Upsert {
            user: "app".into(),
            mechanism: SHA512.name().into(),
            credential: old.clone(),
        }])
        .await
        .unwrap();
    let resource = user_resource("app", json!({}), json!([]));
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "app", "namespace": "default", "resourceVersion": "1"},
        "data": {"password": "ZnJvbS10aGUtc2VjcmV0"},
    });
    let bodies = reconcile_user_once(
        &resource,
        vec![
            get_cluster(&etcd),
            call(
                Verb::Get,
                format!("{NS}/secrets/app"),
                Answer::Object(secret),
            ),
            call(Verb::Post, EVENTS, Answer::Echo),
            call(
                Verb::Apply,
                format!("{KAFSCALE}/kafscaleusers/app/status"),
                Answer::WithStatus(resource.clone()),
            ),
        ],
    )
    .await;
    assert_eq!(condition(&bodies[3]["status"], "Ready")["status"], "True");
    let stored = store.user_scram_credentials("app").await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].credential, old, "the password still works");
    assert_eq!(
        stored[0].mark.as_ref().map(|m| m.owner.name.as_str()),
        Some("app")
    );
}
