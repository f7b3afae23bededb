"""The operator against a real kube-apiserver (and etcd): the committed CRDs
install and reject invalid resources, a cluster becomes its StatefulSet,
Services, PDB and ConfigMap with status conditions, reconciles are idempotent,
scaling works, and a KafscaleTopic appears in etcd and is served by a running
broker (started here, since no kubelet runs) until the resource is deleted.
KafscaleUsers manage only what they created: an administrator's binding for
the same principal, or a SCRAM user of the same name, made through a running
broker with Kafka's Admin API, is left alone."""

import base64
import json
import re
import subprocess
import time

import pytest
from confluent_kafka import Consumer, Producer

from harness import REPO, TARGET, Broker, Etcd, Flusher, MinIO, Proc, free_port, http_get, scrape
from kube import KubeApiServer, condition

NS = "/apis/kafscale.io/v1alpha1/namespaces/default"
CRD = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    work = tmp_path_factory.mktemp("operator")
    kube = KubeApiServer(work).start()
    data_etcd = Etcd(work / "data-etcd")
    (work / "data-etcd").mkdir()
    data_etcd.start()
    operator = None
    try:
        for f in ["kafscaleclusters.kafscale.io.yaml", "kafscaletopics.kafscale.io.yaml", "kafscaleusers.kafscale.io.yaml"]:
            status, body = kube.apply(f"{CRD}/{f.removesuffix('.yaml')}", (REPO / "crds" / f).read_text())
            assert status in (200, 201), body
        for name in ["kafscaleclusters.kafscale.io", "kafscaletopics.kafscale.io", "kafscaleusers.kafscale.io"]:
            kube.wait_for(lambda: (c := condition(kube.get(f"{CRD}/{name}"), "Established")) and c["status"] == "True",
                          what=f"{name} established")
        http_port = free_port()
        operator = Proc("operator", [str(TARGET / "kafscale-operator"), "--http-listen", f"127.0.0.1:{http_port}",
                                     "--lease-seconds", "6"],
                        work / "operator.log", env={"KUBECONFIG": str(kube.kubeconfig), "RUST_LOG": "info"}).start()
        operator.http_port = http_port
        yield kube, data_etcd, operator, work
    finally:
        if operator:
            operator.stop()
        data_etcd.discard()
        kube.stop()


def env_vars_of(program: str) -> set[str]:
    """The environment variables a program's flags read, from its --help."""
    shown = subprocess.run([str(TARGET / program), "--help"], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"\[env: ([A-Z0-9_]+)", shown))


def cluster_doc(name, etcd_endpoint, replicas=2, secret="s3-creds"):
    return {
        "apiVersion": "kafscale.io/v1alpha1", "kind": "KafscaleCluster", "metadata": {"name": name},
        "spec": {"brokers": {"replicas": replicas}, "etcd": {"endpoints": [etcd_endpoint]},
                 "s3": {"bucket": "kafscale", "endpoint": "http://minio:9000", "pathStyle": True,
                        "credentialsSecret": secret}},
    }


def test_invalid_resources_are_rejected_with_readable_messages(env):
    kube, *_ = env
    status, body = kube.apply(f"{NS}/kafscaletopics/bad", {
        "apiVersion": "kafscale.io/v1alpha1", "kind": "KafscaleTopic", "metadata": {"name": "bad"},
        "spec": {"clusterRef": "x", "partitions": 0}})
    assert status == 422 and "spec.partitions" in json.dumps(body), body
    status, body = kube.apply(f"{NS}/kafscaleclusters/bad", {
        "apiVersion": "kafscale.io/v1alpha1", "kind": "KafscaleCluster", "metadata": {"name": "bad"},
        "spec": {"brokers": {"replicas": 1, "autoscaling": {"minReplicas": 5, "maxReplicas": 2}}, "s3": {"bucket": "b1b"}}})
    assert status == 422 and "maxReplicas must be at least minReplicas" in json.dumps(body), body
    status, body = kube.apply(f"{NS}/kafscaleclusters/bad", {
        "apiVersion": "kafscale.io/v1alpha1", "kind": "KafscaleCluster", "metadata": {"name": "bad"}, "spec": {}})
    assert status == 422 and "s3" in json.dumps(body), body
    # Listener rules: each message names what is missing.
    for listeners, message in (
        ([{"name": "oauth", "port": 9097, "authentication": "oauthbearer"}],
         "authentication: oauthbearer needs spec.brokers.oauthbearer"),
        ([{"name": "mtls", "port": 9096, "authentication": "tls"}], "authentication: tls needs tls: true"),
        ([{"name": "a", "port": 9093, "tls": True}], "TLS listeners need spec.brokers.tls.secretName"),
        ([{"name": "a", "port": 9093}, {"name": "a", "port": 9096}], "listener names and ports must be unique"),
        # The broker's ops API listens on the pod's loopback at 9098.
        ([{"name": "ops", "port": 9098}], "ports 9094, 9095 and 9098 are the broker's HTTP port"),
    ):
        status, body = kube.apply(f"{NS}/kafscaleclusters/bad", {
            "apiVersion": "kafscale.io/v1alpha1", "kind": "KafscaleCluster", "metadata": {"name": "bad"},
            "spec": {"brokers": {"replicas": 1, "listeners": listeners}, "s3": {"bucket": "b1b"}}})
        assert status == 422 and message in json.dumps(body), body
    status, body = kube.apply(f"{NS}/kafscaleclusters/bad", {
        "apiVersion": "kafscale.io/v1alpha1", "kind": "KafscaleCluster", "metadata": {"name": "bad"},
        "spec": {"brokers": {"replicas": 1, "oauthbearer": {"jwksConfigMap": {"name": "idp"}, "audience": ["a" * 1025]}},
                 "s3": {"bucket": "b1b"}}})
    assert status == 422 and "each audience is 1 to 1024 characters" in json.dumps(body), body


def test_cluster_becomes_its_objects_with_status_and_idempotent_reconciles(env):
    kube, data_etcd, operator, _ = env
    kube.apply("/api/v1/namespaces/default/secrets/s3-creds", {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-creds"},
        "stringData": {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}})
    status, body = kube.apply(f"{NS}/kafscaleclusters/prod", cluster_doc("prod", data_etcd.endpoint))
    assert status in (200, 201), body
    apps = "/apis/apps/v1/namespaces/default/statefulsets"
    sts = kube.wait_for(lambda: kube.get(f"{apps}/prod-broker"), what="the broker StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["broker", "sidecar-flusher"]
    broker, flusher = pod["containers"]
    assert all(c["volumeMounts"][0]["mountPath"] == "/var/run/kafscale" for c in pod["containers"])
    assert broker["readinessProbe"]["httpGet"]["path"] == "/readyz" and flusher["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert not any("secretRef" in e for e in broker["envFrom"]), "the broker must not see S3 credentials"
    assert any(e.get("secretRef", {}).get("name") == "s3-creds" for e in flusher["envFrom"])
    assert sts["spec"]["replicas"] == 2
    assert sts["metadata"]["ownerReferences"][0]["kind"] == "KafscaleCluster"
    core = "/api/v1/namespaces/default"
    cm = kube.get(f"{core}/configmaps/prod-config")
    assert cm["data"]["KAFSCALE_S3_PREFIX"] == "default/prod" and cm["data"]["KAFSCALE_CLUSTER_ID"] == "default-prod"
    # The chain CRD field -> environment variable -> flag: every variable the
    # operator renders is one the program it is for reads (the ConfigMap is
    # shared by both containers).
    broker_vars, flusher_vars = env_vars_of("kafscale-broker"), env_vars_of("kafscale-flusher")
    assert set(cm["data"]) <= broker_vars | flusher_vars, set(cm["data"]) - broker_vars - flusher_vars
    for container, known in ((broker, broker_vars), (flusher, flusher_vars)):
        rendered = {e["name"] for e in container.get("env", [])}
        # Pod facts other entries expand with $(NAME) are not flags.
        expanded = set(re.findall(r"\$\(([A-Z0-9_]+)\)", json.dumps(container.get("env", []))))
        assert rendered - expanded <= known, f"{container['name']}: {rendered - expanded - known} are not flags"
    assert kube.get(f"{core}/services/prod-broker-headless")["spec"]["clusterIP"] == "None"
    assert kube.get(f"{core}/services/prod-kafka") is not None
    assert kube.get("/apis/policy/v1/namespaces/default/poddisruptionbudgets/prod-broker") is not None

    def reconciled():
        c = kube.get(f"{NS}/kafscaleclusters/prod")
        return c if c.get("status", {}).get("observedGeneration") == c["metadata"]["generation"] else None
    c = kube.wait_for(reconciled, what="status with observedGeneration")
    assert condition(c, "Ready")["status"] == "False", "no kubelet: no broker is ready"
    assert condition(c, "EtcdReachable")["status"] == "True"
    assert condition(c, "S3CredentialsReady")["status"] == "True"
    assert c["status"]["bootstrapServers"] == "prod-kafka.default.svc:9092"

    # A reconcile that finds everything in place writes nothing.
    versions = lambda: [kube.get(p)["metadata"]["resourceVersion"] for p in
                        (f"{apps}/prod-broker", f"{core}/configmaps/prod-config", f"{core}/services/prod-kafka")]
    before = versions()
    reconciles = lambda: scrape(operator.http_port)['kafscale_operator_reconciles_total{kind="KafscaleCluster"}']
    count = reconciles()
    kube.request("PATCH", f"{NS}/kafscaleclusters/prod", json.dumps({"metadata": {"annotations": {"poke": str(time.time())}}}),
                 "application/merge-patch+json")
    kube.wait_for(lambda: reconciles() > count, what="another reconcile")
    assert versions() == before

    # Scaling.
    kube.request("PATCH", f"{NS}/kafscaleclusters/prod", json.dumps({"spec": {"brokers": {"replicas": 4}}}),
                 "application/merge-patch+json")
    kube.wait_for(lambda: kube.get(f"{apps}/prod-broker")["spec"]["replicas"] == 4, what="scale to 4")
    kube.wait_for(lambda: (reconciled() or {}).get("metadata", {}).get("generation") == 2, what="generation 2 observed")


def test_missing_secret_and_managed_etcd(env):
    kube, *_ = env
    doc = cluster_doc("managed", "unused", replicas=1, secret="nope")
    doc["spec"]["etcd"] = {}
    kube.apply(f"{NS}/kafscaleclusters/managed", doc)
    c = kube.wait_for(lambda: (x := kube.get(f"{NS}/kafscaleclusters/managed")) and condition(x, "S3CredentialsReady") and x,
                      what="conditions")
    s3 = condition(c, "S3CredentialsReady")
    assert s3["status"] == "False" and "Secret nope does not exist" in s3["message"]
    etcd = kube.wait_for(lambda: kube.get("/apis/apps/v1/namespaces/default/statefulsets/managed-etcd"), what="managed etcd")
    assert etcd["spec"]["replicas"] == 3
    assert condition(c, "EtcdReachable")["status"] == "False"
    # Condition changes are announced as events on the resource.
    events = lambda: [e for e in kube.get("/apis/events.k8s.io/v1/namespaces/default/events")["items"]
                      if e["regarding"]["name"] == "managed"]
    warnings = kube.wait_for(lambda: [e for e in events() if e["reason"] == "CredentialsMissing"], what="an event")
    assert warnings[0]["type"] == "Warning" and "Secret nope does not exist" in warnings[0]["note"]
    status, _ = kube.request("DELETE", f"{NS}/kafscaleclusters/managed")
    assert status == 200


def test_topic_is_created_served_grown_and_deleted(env):
    kube, data_etcd, _, work = env
    minio = MinIO(work / "topic-minio")
    (work / "topic-minio").mkdir()
    minio.start()
    flusher = Flusher(work / "topic-flusher", minio, "default/prod")
    (work / "topic-flusher").mkdir()
    flusher.start()
    broker = Broker(work / "topic-broker", data_etcd, flusher, "default-prod")
    (work / "topic-broker").mkdir()
    broker.start()
    try:
        topic = {"apiVersion": "kafscale.io/v1alpha1", "kind": "KafscaleTopic", "metadata": {"name": "orders"},
                 "spec": {"clusterRef": "prod", "partitions": 3, "retentionMs": 3600000}}
        status, body = kube.apply(f"{NS}/kafscaletopics/orders", topic)
        assert status in (200, 201), body
        t = kube.wait_for(lambda: (x := kube.get(f"{NS}/kafscaletopics/orders")) and
                          (condition(x, "Ready") or {}).get("status") == "True" and x, what="topic Ready")
        assert t["status"]["partitions"] == 3 and t["metadata"]["finalizers"] == ["kafscale.io/topic"]

        def partitions():
            c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "op"})
            try:
                md = c.list_topics("orders", timeout=10).topics["orders"]
                return len(md.partitions) if md.error is None else 0
            finally:
                c.close()
        kube.wait_for(lambda: partitions() == 3, what="the broker to serve the topic")
        p = Producer({"bootstrap.servers": broker.bootstrap})
        p.produce("orders", b"from the operator's topic")
        assert p.flush(30) == 0

        # Partitions only grow; the API server refuses a decrease.
        status, body = kube.request("PATCH", f"{NS}/kafscaletopics/orders", json.dumps({"spec": {"partitions": 2}}),
                                    "application/merge-patch+json")
        assert status == 422 and "partitions can only be increased" in json.dumps(body)
        kube.request("PATCH", f"{NS}/kafscaletopics/orders", json.dumps({"spec": {"partitions": 5}}),
                     "application/merge-patch+json")
        kube.wait_for(lambda: partitions() == 5, what="5 partitions")

        status, _ = kube.request("DELETE", f"{NS}/kafscaletopics/orders")
        assert status == 200
        kube.wait_for(lambda: kube.get(f"{NS}/kafscaletopics/orders") is None, what="the resource to go")
        kube.wait_for(lambda: partitions() == 0, what="the broker to drop the topic")
    finally:
        broker.proc.stop()
        flusher.proc.stop()
        minio.discard()


def user_doc(name, cluster, acls):
    return {"apiVersion": "kafscale.io/v1alpha1", "kind": "KafscaleUser", "metadata": {"name": name},
            "spec": {"clusterRef": cluster, "authentication": {"type": "scram-sha-512"},
                     "authorization": {"acls": acls}}}


def test_users_leave_an_administrators_acls_and_scram_users_alone(env):
    from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType, AdminClient,
                                       ResourcePatternType, ResourceType, ScramCredentialInfo, ScramMechanism,
                                       UserScramCredentialUpsertion)

    kube, data_etcd, operator, work = env
    minio = MinIO(work / "user-minio")
    (work / "user-minio").mkdir()
    minio.start()
    flusher = Flusher(work / "user-flusher", minio, "default/sec")
    (work / "user-flusher").mkdir()
    flusher.start()
    plain, sasl = free_port(), free_port()
    broker = Broker(work / "user-broker", data_etcd, flusher, "default-sec", port=plain, extra=[
        "--listeners", f"PLAINTEXT://127.0.0.1:{plain},SASL_PLAINTEXT://127.0.0.1:{sasl}",
        "--authorizer", "acl", "--super-users", "User:admin"], env={"KAFSCALE_SASL_BOOTSTRAP_USERS": "admin:admin-pw"})
    (work / "user-broker").mkdir()
    broker.start()

    def client(user, password, mechanism="SCRAM-SHA-256"):
        return {"bootstrap.servers": f"127.0.0.1:{sasl}", "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanisms": mechanism, "sasl.username": user, "sasl.password": password}
    admin = AdminClient(client("admin", "admin-pw"))

    def bindings(principal):
        f = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, principal, None,
                             AclOperation.ANY, AclPermissionType.ANY)
        return {(b.name, b.operation, b.permission_type) for b in admin.describe_acls(f).result(timeout=30)}

    def logs_in(user, password):
        c = AdminClient(client(user, password, "SCRAM-SHA-512"))
        try:
            c.list_topics(timeout=15)
            return True
        except Exception:
            return False

    def user(name):
        return kube.get(f"{NS}/kafscaleusers/{name}")

    user_reconciles = lambda: scrape(operator.http_port).get('kafscale_operator_reconciles_total{kind="KafscaleUser"}', 0)
    try:
        # An administrator cuts the app off with kafka-acls, and has made a
        # SCRAM user "legacy" with kafka-configs.
        deny = AclBinding(ResourceType.TOPIC, "orders", ResourcePatternType.LITERAL, "User:app", "*",
                          AclOperation.READ, AclPermissionType.DENY)
        for f in admin.create_acls([deny]).values():
            f.result(timeout=30)
        legacy = UserScramCredentialUpsertion("legacy", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192),
                                              b"legacy-pw")
        for f in admin.alter_user_scram_credentials([legacy]).values():
            f.result(timeout=30)
        assert logs_in("legacy", "legacy-pw")

        status, body = kube.apply(f"{NS}/kafscaleclusters/sec", cluster_doc("sec", data_etcd.endpoint, replicas=1))
        assert status in (200, 201), body
        status, body = kube.apply(f"{NS}/kafscaleusers/app", user_doc("app", "sec", [
            {"resource": {"type": "topic", "name": "orders"}, "operations": ["Read", "Describe"]}]))
        assert status in (200, 201), body
        kube.wait_for(lambda: (condition(user("app") or {}, "Ready") or {}).get("status") == "True", what="app Ready")
        allow = {("orders", AclOperation.READ, AclPermissionType.ALLOW),
                 ("orders", AclOperation.DESCRIBE, AclPermissionType.ALLOW)}
        admins = {("orders", AclOperation.READ, AclPermissionType.DENY)}
        assert bindings("User:app") == allow | admins
        app_password = base64.b64decode(kube.get("/api/v1/namespaces/default/secrets/app")["data"]["password"]).decode()
        assert logs_in("app", app_password)

        # Another reconcile (as every 5 minutes) keeps the administrator's DENY.
        count = user_reconciles()
        kube.request("PATCH", f"{NS}/kafscaleusers/app", json.dumps({"metadata": {"annotations": {"poke": "1"}}}),
                     "application/merge-patch+json")
        kube.wait_for(lambda: user_reconciles() > count, what="another KafscaleUser reconcile")
        assert bindings("User:app") == allow | admins

        # A KafscaleUser named like the existing SCRAM user takes nothing over.
        status, body = kube.apply(f"{NS}/kafscaleusers/legacy", user_doc("legacy", "sec", [
            {"resource": {"type": "topic", "name": "*"}, "operations": ["All"]}]))
        assert status in (200, 201), body
        ready = kube.wait_for(lambda: (c := condition(user("legacy") or {}, "Ready")) and c["reason"] == "UserExists" and c,
                              what="legacy UserExists")
        assert ready["status"] == "False"
        assert ("a SCRAM user 'legacy' already exists in the cluster, created outside this KafscaleUser; delete it with "
                "kafka-configs --alter --delete-config SCRAM-SHA-512 --entity-type users --entity-name legacy") \
            in ready["message"], ready["message"]
        assert kube.get("/api/v1/namespaces/default/secrets/legacy") is None, "a refused user gets no Secret"
        assert bindings("User:legacy") == set(), "a refused user's ACLs would grant the other user"
        assert logs_in("legacy", "legacy-pw")
        described = admin.describe_user_scram_credentials(["legacy"])["legacy"].result(timeout=30)
        assert [(i.mechanism, i.iterations) for i in described.scram_credential_infos] == \
            [(ScramMechanism.SCRAM_SHA_512, 8192)]

        # Deleting the KafscaleUsers removes only what they made.
        for name in ("app", "legacy"):
            status, _ = kube.request("DELETE", f"{NS}/kafscaleusers/{name}")
            assert status == 200
            kube.wait_for(lambda: user(name) is None, what=f"KafscaleUser {name} to go")
        assert bindings("User:app") == admins
        assert not logs_in("app", app_password), "the KafscaleUser's own credential goes with it"
        assert logs_in("legacy", "legacy-pw")
    finally:
        kube.request("DELETE", f"{NS}/kafscaleclusters/sec")
        broker.proc.stop()
        flusher.proc.stop()
        minio.discard()


PLURALS = {"Deployment": "deployments", "ServiceAccount": "serviceaccounts", "Service": "services",
           "ClusterRole": "clusterroles", "ClusterRoleBinding": "clusterrolebindings", "Role": "roles",
           "RoleBinding": "rolebindings", "CustomResourceDefinition": "customresourcedefinitions",
           "Secret": "secrets", "KafscaleCluster": "kafscaleclusters", "KafscaleTopic": "kafscaletopics",
           "KafscaleUser": "kafscaleusers"}
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


def object_path(doc):
    api = doc["apiVersion"]
    base = "/api/v1" if api == "v1" else f"/apis/{api}"
    kind, name = doc["kind"], doc["metadata"]["name"]
    if kind in CLUSTER_SCOPED:
        return f"{base}/{PLURALS[kind]}/{name}"
    return f"{base}/namespaces/{doc['metadata'].get('namespace', 'default')}/{PLURALS[kind]}/{name}"


def dry_run(kube, docs):
    for doc in docs:
        status, body = kube.request("PATCH", object_path(doc) + "?fieldManager=e2e&force=true&dryRun=All",
                                    json.dumps(doc), "application/apply-patch+yaml")
        assert status in (200, 201), f"{doc['kind']}/{doc['metadata']['name']}: {body}"


def test_helm_chart_lints_and_its_output_is_accepted(env):
    import subprocess
    import yaml
    from harness import CACHE

    kube, *_ = env
    helm = str(CACHE / "bin" / "helm")
    chart = str(REPO / "charts" / "kafscale")
    for extra in ([], ["--set", "metrics.serviceMonitor.enabled=true"]):
        out = subprocess.run([helm, "lint", "--strict", chart, *extra], capture_output=True, text=True)
        assert out.returncode == 0 and "0 chart(s) failed" in out.stdout, out.stdout + out.stderr
    bad = subprocess.run([helm, "template", "t", chart, "--set", "replicaCount=0"], capture_output=True, text=True)
    assert bad.returncode != 0 and "replicaCount" in bad.stderr, "values.schema.json must refuse replicaCount=0"
    out = subprocess.run([helm, "template", "kafscale", chart, "--namespace", "default", "--include-crds"],
                         capture_output=True, text=True, check=True)
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert {d["kind"] for d in docs} >= {"Deployment", "ClusterRole", "CustomResourceDefinition", "ServiceAccount"}
    dry_run(kube, docs)


def test_sample_resources_are_valid(env):
    import yaml

    kube, *_ = env
    for sample in sorted((REPO / "crds" / "samples").glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(sample.read_text()) if d]
        dry_run(kube, docs)


def test_flake_parses():
    import subprocess

    out = subprocess.run(["nix-instantiate", "--parse", str(REPO / "flake.nix")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_a_second_replica_waits_and_takes_over_when_the_leader_goes(env):
    kube, _, operator, work = env
    lease = "/apis/coordination.k8s.io/v1/namespaces/default/leases/kafscale-operator"
    first = kube.wait_for(lambda: (kube.get(lease) or {}).get("spec", {}).get("holderIdentity"), what="a leader")
    port = free_port()
    second = Proc("operator-2", [str(TARGET / "kafscale-operator"), "--http-listen", f"127.0.0.1:{port}",
                                 "--lease-seconds", "6", "--identity", "replica-2"],
                  work / "operator-2.log", env={"KUBECONFIG": str(kube.kubeconfig), "RUST_LOG": "info"}).start()
    leader = lambda: scrape(port).get("kafscale_operator_leader")
    try:
        kube.wait_for(lambda: http_get(port, "/healthz")[0] == 200, what="the second replica to serve HTTP")
        time.sleep(4)
        assert leader() == 0 and kube.get(lease)["spec"]["holderIdentity"] == first, "two leaders at once"
        operator.stop()
        kube.wait_for(lambda: leader() == 1, timeout=30, what="the second replica to take over")
        assert kube.get(lease)["spec"]["holderIdentity"] == "replica-2"
    finally:
        second.stop()
