//! Reconciler edge cases against a mocked API server (tower-test): it answers
//! every request the way the API server would for these cases and records
//! them, so the tests can check what the operator wrote. The real-API-server
//! behaviour is covered by the end-to-end suite.

use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use kafscale_operator::controller::{self, Context};
use kafscale_operator::crd::{KafscaleCluster, KafscaleTopic};
use kafscale_operator::metrics::OperatorMetrics;
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};

type Recorded = Arc<Mutex<Vec<(String, String, Value)>>>;

/// Starts the fake API server: applies echo their object, missing Secrets and
/// HPAs are 404, events succeed, and a status patch returns `resource` with
/// the patched status (the whole object, as the API server does).
fn fake_api(resource: Value) -> (Client, Recorded) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let recorded: Recorded = Arc::default();
    let log = recorded.clone();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let method = request.method().to_string();
            let path = request.uri().path().to_string();
            let bytes = request
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            log.lock()
                .unwrap()
                .push((method.clone(), path.clone(), body.clone()));
            let not_found = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"});
            let (status, reply) = if method == "GET"
                && (path.contains("/secrets/") || path.contains("/horizontalpodautoscalers/"))
            {
                (StatusCode::NOT_FOUND, not_found)
            } else if method == "PATCH" && path.ends_with("/status") {
                let mut obj = resource.clone();
                obj["status"] = body["status"].clone();
                (StatusCode::OK, obj)
            } else if body.is_null() {
                (StatusCode::OK, json!({}))
            } else {
                let mut obj = body;
                obj["metadata"]["resourceVersion"] = json!("1");
                (StatusCode::OK, obj)
            };
            send.send_response(
                Response::builder()
                    .status(status)
                    .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                    .unwrap(),
            );
        }
    });
    (Client::new(service, "default"), recorded)
}

fn ctx(client: Client) -> Arc<Context> {
    Context::new(client, OperatorMetrics::new(&mut Default::default()))
}

fn status_patches(recorded: &Recorded) -> Vec<Value> {
    recorded
        .lock()
        .unwrap()
        .iter()
        .filter(|(m, p, _)| m == "PATCH" && p.ends_with("/status"))
        .map(|(_, _, b)| b["status"].clone())
        .collect()
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .unwrap_or(&Value::Null)
}

#[tokio::test]
async fn cluster_with_a_missing_secret_reports_it_and_still_applies_its_objects() {
    let resource = json!({
        "apiVersion": "kafscale.io/v1alpha1", "kind": "KafscaleCluster",
        "metadata": {"name": "c", "namespace": "default", "uid": "u1", "generation": 3},
        "spec": {"s3": {"bucket": "bkt", "credentialsSecret": "gone"}, "etcd": {"endpoints": ["http://127.0.0.1:1"]}}
    });
    let (client, recorded) = fake_api(resource.clone());
    let cluster: KafscaleCluster = serde_json::from_value(resource).unwrap();
    controller::reconcile_cluster(Arc::new(cluster), ctx(client))
        .await
        .unwrap();

    let applied: Vec<String> = recorded
        .lock()
        .unwrap()
        .iter()
        .filter(|(m, p, _)| m == "PATCH" && !p.ends_with("/status"))
        .map(|(_, p, _)| p.clone())
        .collect();
    for object in [
        "configmaps/c-config",
        "services/c-broker-headless",
        "services/c-kafka",
        "poddisruptionbudgets/c-broker",
        "statefulsets/c-broker",
    ] {
        assert!(
            applied.iter().any(|p| p.ends_with(object)),
            "{object} not applied: {applied:?}"
        );
    }
    assert!(
        !applied.iter().any(|p| p.contains("c-etcd")),
        "external etcd: nothing managed"
    );
    let status = status_patches(&recorded).pop().expect("a status patch");
    assert_eq!(status["observedGeneration"], 3);
    let s3 = condition(&status, "S3CredentialsReady");
    assert_eq!(s3["status"], "False");
    assert!(s3["message"]
        .as_str()
        .unwrap()
        .contains("Secret gone does not exist"));
    assert_eq!(condition(&status, "EtcdReachable")["status"], "False");
    assert_eq!(condition(&status, "Ready")["status"], "False");
    let events: Vec<Value> = recorded
        .lock()
        .unwrap()
        .iter()
        .filter(|(m, p, _)| m == "POST" && p.contains("events"))
        .map(|(_, _, b)| b.clone())
        .collect();
    assert!(
        events.iter().any(|e| e["reason"] == "CredentialsMissing"),
        "{events:?}"
    );
}

#[tokio::test]
async fn unchanged_status_is_not_written_again() {
    let resource = json!({
        "apiVersion": "kafscale.io/v1alpha1", "kind": "KafscaleCluster",
        "metadata": {"name": "c", "namespace": "default", "uid": "u1", "generation": 1},
        "spec": {"s3": {"bucket": "bkt"}, "etcd": {"endpoints": ["http://127.0.0.1:1"]}}
    });
    let (client, recorded) = fake_api(resource.clone());
    let mut cluster: KafscaleCluster = serde_json::from_value(resource).unwrap();
    let ctx = ctx(client);
    controller::reconcile_cluster(Arc::new(cluster.clone()), ctx.clone())
        .await
        .unwrap();
    let first = status_patches(&recorded).pop().unwrap();
    // The next reconcile sees the status it wrote: nothing to patch, and the
    // transition times are kept.
    cluster.status = Some(serde_json::from_value(first.clone()).unwrap());
    controller::reconcile_cluster(Arc::new(cluster), ctx)
        .await
        .unwrap();
    assert_eq!(status_patches(&recorded).len(), 1);
}

#[tokio::test]
async fn topic_with_an_invalid_config_is_refused_without_touching_etcd() {
    let resource = json!({
        "apiVersion": "kafscale.io/v1alpha1", "kind": "KafscaleTopic",
        "metadata": {"name": "t", "namespace": "default", "uid": "u2", "generation": 1, "finalizers": ["kafscale.io/topic"]},
        "spec": {"clusterRef": "c", "partitions": 3, "config": {"cleanup.policy": "compact"}}
    });
    let (client, recorded) = fake_api(resource.clone());
    let topic: KafscaleTopic = serde_json::from_value(resource).unwrap();
    controller::reconcile_topic(Arc::new(topic), ctx(client))
        .await
        .unwrap();
    let status = status_patches(&recorded).pop().expect("a status patch");
    let ready = condition(&status, "Ready");
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("False"), Some("InvalidSpec"))
    );
    assert!(ready["message"].as_str().unwrap().contains("only 'delete'"));
    // No cluster lookup happened: the spec alone was enough to refuse it.
    assert!(!recorded
        .lock()
        .unwrap()
        .iter()
        .any(|(_, p, _)| p.contains("kafscaleclusters")));
}
