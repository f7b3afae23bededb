#!/usr/bin/env python3
"""The kind suite's scenarios against the running cluster e2e/kind/run.sh set
up (operator from the Helm chart, MinIO, the `dev` KafscaleCluster with
managed etcd). Each scenario prints one `scenario NAME: passed (...)` line;
the first failure stops the run with what went wrong.

    python3 e2e/kind/scenarios.py [--namespace NS] [SCENARIO ...]

Clients run inside the cluster: a toolbox pod for short commands (kcat,
Kafka's Java tools, curl) and Jobs for producers that run through a
disruption (e2e/kind/clients/history.py). Histories are checked here: every
acknowledged record must be read back at the partition and offset it was
acknowledged with.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOOLBOX = "kafscale-e2e/toolbox:local"
CLUSTER = "dev"
NS = "kafscale-e2e"
BOOTSTRAP = f"{CLUSTER}-kafka:9092"
JAVA = "java -Dorg.slf4j.simpleLogger.defaultLogLevel=warn -cp '/opt/kafka/libs/*'"
S3_LIST = ("curl -sf --aws-sigv4 aws:amz:us-east-1:s3 -u minioadmin:minioadmin "
           "'http://minio.minio.svc:9000/kafscale?list-type=2&prefix={prefix}'")


# Produce errors Kafka's protocol defines as retriable (librdkafka's names).
KAFKA_RETRIABLE = {"KAFKA_STORAGE_ERROR", "REQUEST_TIMED_OUT", "NOT_LEADER_OR_FOLLOWER", "LEADER_NOT_AVAILABLE",
                   "NOT_ENOUGH_REPLICAS", "NOT_ENOUGH_REPLICAS_AFTER_APPEND", "NETWORK_EXCEPTION"}


class Failed(Exception):
    pass


def kubectl(*args: str, stdin: str | None = None, check: bool = True, timeout: float = 300) -> str:
    cmd = ["kubectl", "-n", NS, *args]
    out = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise Failed(f"{' '.join(cmd)} exited {out.returncode}: {out.stderr.strip()[-2000:]}")
    return out.stdout


def get(kind: str, name: str) -> dict:
    return json.loads(kubectl("get", kind, name, "-o", "json"))


def apply(doc: dict) -> None:
    kubectl("apply", "--server-side", "--field-manager=kind-suite", "--force-conflicts", "-f", "-",
            stdin=json.dumps(doc))


def patch(kind: str, name: str, merge: dict) -> None:
    kubectl("patch", kind, name, "--type=merge", "-p", json.dumps(merge))


def wait_until(what: str, check, timeout: float = 180, every: float = 2):
    """Polls `check` until it returns something truthy; its last exception or
    value goes into the failure."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
            last = value
        except (Failed, subprocess.TimeoutExpired, KeyError, ValueError) as e:
            last = e
        time.sleep(every)
    raise Failed(f"{what}: not within {timeout:.0f}s (last: {str(last)[-1500:]})")


def toolbox(script: str, timeout: float = 180, check: bool = True) -> str:
    """Runs a shell script in the toolbox pod."""
    return kubectl("exec", "toolbox", "--", "sh", "-c", script, timeout=timeout, check=check)


def condition(obj: dict, type_: str) -> dict:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_), {})


def cluster_ready(replicas: int):
    c = get("kafscalecluster", CLUSTER)
    ready = condition(c, "Ready")
    return (ready.get("status") == "True" and c["status"].get("readyReplicas") == replicas
            and c["status"].get("observedGeneration") == c["metadata"]["generation"]) and c


def replace_pod(name: str, *flags: str, timeout: float = 240) -> None:
    """Deletes a pod and waits for its StatefulSet's replacement (a new uid
    under the same name) to be ready."""
    old_uid = get("pod", name)["metadata"]["uid"]
    kubectl("delete", "pod", name, "--wait=false", *flags)
    wait_until(f"pod {name} replaced and ready",
               lambda: (p := get("pod", name))["metadata"]["uid"] != old_uid and pod_ready(p), timeout=timeout)


def broker_pods() -> list[dict]:
    pods = json.loads(kubectl("get", "pods", "-l", "app.kubernetes.io/component=broker,app.kubernetes.io/instance=dev",
                              "-o", "json"))["items"]
    return sorted(pods, key=lambda p: p["metadata"]["name"])


def pod_ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))


def metadata(bootstrap: str = BOOTSTRAP, topic: str | None = None) -> dict:
    """Brokers and partition leaders as kcat's JSON metadata lists them."""
    out = toolbox(f"kcat -b {bootstrap} -L -J {'-t ' + topic if topic else ''} -m 15")
    return json.loads(out)


def leaders(topic: str) -> dict[int, int]:
    md = metadata(topic=topic)
    t = next(t for t in md["topics"] if t["topic"] == topic)
    if t.get("error"):
        raise Failed(f"topic {topic}: {t['error']}")
    return {p["partition"]: p["leader"] for p in t["partitions"]}


def topic_doc(name: str, partitions: int, retention_ms: int = 86_400_000, config: dict | None = None) -> dict:
    spec = {"clusterRef": CLUSTER, "partitions": partitions, "retentionMs": retention_ms}
    if config:
        spec["config"] = config
    return {"apiVersion": "kafscale.io/v1alpha1", "kind": "KafscaleTopic", "metadata": {"name": name},
            "spec": spec}


def make_topic(name: str, partitions: int) -> None:
    apply(topic_doc(name, partitions))
    wait_until(f"KafscaleTopic {name} Ready",
               lambda: condition(get("kafscaletopic", name), "Ready").get("status") == "True")
    wait_until(f"topic {name} with {partitions} led partitions in the brokers' metadata",
               lambda: len([l for l in leaders(name).values() if l >= 0]) == partitions)


class HistoryProducer:
    """A Job running history.py produce: acks=all with idempotence, until
    stopped."""

    def __init__(self, topic: str, prefix: str, rate: int = 200, bootstrap: str = BOOTSTRAP):
        self.name = f"producer-{prefix}"
        # Values unique to this run, so a rerun on a kept cluster checks only its own.
        prefix = f"{prefix}{int(time.time()) % 1_000_000}"
        self.topic, self.prefix = topic, prefix
        kubectl("delete", "job", self.name, "--ignore-not-found", "--cascade=foreground", "--wait=true")
        apply(client_job(self.name, f"python3 /clients/history.py produce --bootstrap {bootstrap} "
                                    f"--topic {topic} --prefix {prefix} --rate {rate}"))
        self.job_uid = get("job", self.name)["metadata"]["uid"]
        self.pod = wait_until(f"pod of {self.name} running", self._running_pod)

    def _running_pod(self):
        # This Job's pod, not one of an earlier Job of the same name.
        pods = json.loads(kubectl("get", "pods", "-l", f"batch.kubernetes.io/controller-uid={self.job_uid}",
                                  "-o", "json"))["items"]
        running = [p for p in pods if p["status"].get("phase") == "Running"]
        return running[0]["metadata"]["name"] if running else None

    def lines(self) -> list[list[str]]:
        return [l.split() for l in kubectl("logs", self.pod).splitlines()]

    def acked(self) -> int:
        return sum(1 for l in self.lines() if l and l[0] == "ACK")

    def wait_acked(self, more: int, timeout: float = 120) -> int:
        """Waits until `more` records beyond the current count are acknowledged."""
        target = self.acked() + more
        return wait_until(f"{self.name}: {target} acknowledged records", lambda: self.acked() >= target and target,
                          timeout=timeout)

    def stop(self) -> dict:
        kubectl("exec", self.pod, "--", "touch", "/tmp/stop")
        kubectl("wait", f"job/{self.name}", "--for=condition=Complete", "--timeout=200s", timeout=230)
        lines = self.lines()
        done = [l for l in lines if l and l[0] == "DONE"]
        if not done:
            raise Failed(f"{self.name} did not finish: {lines[-5:]}")
        acks = {l[1]: (int(l[2]), int(l[3])) for l in lines if l[0] == "ACK"}
        errors = [l for l in lines if l[0] == "ERR"]
        warnings = [" ".join(l[1:]) for l in lines if l[0] == "WARN"]
        return {"acks": acks, "errors": errors, "warnings": warnings, "done": " ".join(done[-1][1:]),
                "prefix": self.prefix}


def client_job(name: str, command: str) -> dict:
    return {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "client", "image": TOOLBOX, "imagePullPolicy": "Never",
                            "command": ["sh", "-c", command],
                            "volumeMounts": [{"name": "clients", "mountPath": "/clients"}]}],
            "volumes": [{"name": "clients", "configMap": {"name": "kind-clients"}}]}}},
    }


def check_history(topic: str, result: dict) -> str:
    """Every acknowledged value at its acknowledged offset; returns a summary."""
    acks = result["acks"]
    if result["errors"]:
        raise Failed(f"{topic}: {len(result['errors'])} sends failed, first {result['errors'][:3]}; "
                     f"client warnings: {result['warnings'][-5:]}")
    if not acks:
        raise Failed(f"{topic}: nothing was acknowledged")
    dumped = toolbox(f"python3 /clients/history.py dump --bootstrap {BOOTSTRAP} --topic {topic} --seconds 240",
                     timeout=300)
    records: dict[tuple[int, int], str] = {}
    for line in dumped.splitlines():
        parts = line.split(maxsplit=3)
        if parts and parts[0] == "REC":
            records[(int(parts[1]), int(parts[2]))] = parts[3]
        elif parts and parts[0] == "FAIL":
            raise Failed(f"{topic}: reading back failed: {line}")
    lost = [(v, at) for v, at in acks.items() if records.get(at) != v]
    if lost:
        raise Failed(f"{topic}: {len(lost)} of {len(acks)} acknowledged records not at their offsets, "
                     f"e.g. {lost[:5]} (found there: {[records.get(at) for _, at in lost[:5]]})")
    # Idempotent producers write each value once, retries or not.
    values = [v for v in records.values() if v.startswith(result["prefix"] + "-")]
    duplicates = len(values) - len(set(values))
    if duplicates:
        raise Failed(f"{topic}: {duplicates} values were written more than once")
    return f"{len(acks)} acknowledged, all read back at their offsets, none duplicated"


# ---------------------------------------------------------------- scenarios

def scenario_three_brokers() -> str:
    patch("kafscalecluster", CLUSTER, {"spec": {"brokers": {"replicas": 3}}})
    c = wait_until("KafscaleCluster dev Ready with 3 brokers", lambda: cluster_ready(3), timeout=300)
    columns = kubectl("get", "kafscalecluster", CLUSTER, "--no-headers").split()
    if columns[1:3] != ["3", "3"]:
        raise Failed(f"printer columns say {columns}, expected Replicas 3 Ready 3")
    pods = broker_pods()
    if len(pods) != 3 or not all(pod_ready(p) for p in pods):
        raise Failed(f"broker pods: {[(p['metadata']['name'], pod_ready(p)) for p in pods]}")
    for p in pods:
        containers = {c["name"]: c for c in p["spec"]["containers"]}
        if set(containers) != {"broker", "sidecar-flusher"}:
            raise Failed(f"{p['metadata']['name']} runs {sorted(containers)}")
        mounts = [{m["name"] for m in c.get("volumeMounts", [])} for c in containers.values()]
        if not all("socket" in m for m in mounts):
            raise Failed(f"{p['metadata']['name']}: the socket volume is not shared: {mounts}")
        statuses = {s["name"]: s for s in p["status"]["containerStatuses"]}
        if not all(s["ready"] for s in statuses.values()):
            raise Failed(f"{p['metadata']['name']}: containers not ready: {statuses}")
    brokers = sorted(b["id"] for b in metadata()["brokers"])
    if brokers != [0, 1, 2]:
        raise Failed(f"metadata lists brokers {brokers}")
    # The probes ask endpoints that report their checks (the outage scenario
    # shows readiness following the object store).
    readyz = toolbox(f"curl -s http://{pods[0]['status']['podIP']}:9095/readyz")
    if "object_store" not in readyz:
        raise Failed(f"the flusher's /readyz does not report its checks: {readyz[:300]}")
    ready = condition(c, "Ready")
    return f"Ready={ready['status']} ({ready['message']}), 3 pods with broker + sidecar-flusher, metadata brokers {brokers}"


def scenario_clients() -> str:
    make_topic("orders", 3)
    # librdkafka (kcat) through the Service.
    toolbox(f"seq 1 1000 | sed 's/^/kcat-/' | kcat -b {BOOTSTRAP} -t orders -P -X acks=all")
    # Kafka's Java producer and consumer (its console tools) through the Service.
    toolbox(f"seq 1 1000 | sed 's/^/java-/' | {JAVA} org.apache.kafka.tools.ConsoleProducer "
            f"--bootstrap-server {BOOTSTRAP} --topic orders --producer-property acks=all", timeout=240)
    java_read = toolbox(f"{JAVA} org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server {BOOTSTRAP} "
                        f"--topic orders --from-beginning --timeout-ms 20000 --group java-check",
                        timeout=240)
    kcat_read = toolbox(f"kcat -b {BOOTSTRAP} -t orders -C -e -q")
    for who, text in [("Java consumer", java_read), ("kcat", kcat_read)]:
        got = set(text.split())
        missing = [f"{p}-{i}" for p in ("kcat", "java") for i in range(1, 1001) if f"{p}-{i}" not in got]
        if missing:
            raise Failed(f"{who} did not read {len(missing)} records, e.g. {missing[:5]}")
    # Through one pod's own advertised address: bootstrap there, and the
    # metadata names every broker by its pod's DNS name.
    pod_address = f"{CLUSTER}-broker-2.{CLUSTER}-broker-headless.{NS}.svc:9092"
    md = metadata(bootstrap=pod_address)
    hosts = sorted(f"{b['name']}" for b in md["brokers"])
    expected = [f"{CLUSTER}-broker-{i}.{CLUSTER}-broker-headless.{NS}.svc:9092" for i in range(3)]
    if hosts != expected:
        raise Failed(f"advertised addresses {hosts}, expected {expected}")
    toolbox(f"seq 1 100 | sed 's/^/pod-/' | kcat -b {pod_address} -t orders -P -X acks=all")
    got = set(toolbox(f"kcat -b {pod_address} -t orders -C -e -q").split())
    if not all(f"pod-{i}" in got for i in range(1, 101)):
        raise Failed("records produced through a pod's address were not read back through it")
    return "kcat 1000 + Java 1000 produced (acks=all) and read back by both; per-pod address 100 round-tripped"


def objects_under(prefix: str) -> int:
    # SigV4 signs the query encoded, slashes too.
    listing = toolbox(S3_LIST.format(prefix=urllib.parse.quote(prefix, safe="")))
    m = re.search(r"<KeyCount>(\d+)</KeyCount>", listing)
    if not m:
        raise Failed(f"unexpected ListObjectsV2 answer: {listing[:300]}")
    return int(m.group(1))


def scenario_topic_changes() -> str:
    make_topic("events", 3)
    toolbox(f"seq 1 300 | kcat -b {BOOTSTRAP} -t events -P -X acks=all")
    prefix = f"{NS}/{CLUSTER}/events/"
    # Intake objects become the topic's own segments once compacted (the
    # suite's cluster compacts after 15 s).
    wait_until("events' segments in MinIO", lambda: objects_under(prefix) > 0, timeout=120)
    apply(topic_doc("events", 6, retention_ms=3_600_000, config={"cleanup.policy": "compact,delete"}))
    wait_until("KafscaleTopic events with 6 partitions",
               lambda: get("kafscaletopic", "events").get("status", {}).get("partitions") == 6)
    wait_until("6 partitions in the brokers' metadata", lambda: len(leaders("events")) == 6)
    described = toolbox(f"{JAVA} org.apache.kafka.tools.TopicCommand --bootstrap-server {BOOTSTRAP} "
                        f"--describe --topic events", timeout=120)
    if "PartitionCount: 6" not in described:
        raise Failed(f"kafka-topics --describe: {described[:500]}")
    configs = toolbox(f"{JAVA} kafka.admin.ConfigCommand --bootstrap-server {BOOTSTRAP} --describe "
                      f"--entity-type topics --entity-name events", timeout=120)
    if "retention.ms=3600000" not in configs or "cleanup.policy=compact,delete" not in configs:
        raise Failed(f"kafka-configs --describe: {configs[:500]}")
    kubectl("delete", "kafscaletopic", "events", "--timeout=120s", timeout=150)
    wait_until("events gone from the metadata",
               lambda: all(t["topic"] != "events" for t in metadata()["topics"]), timeout=60)
    wait_until("events' objects deleted from MinIO", lambda: objects_under(prefix) == 0, timeout=120)
    return ("created with 3 partitions, grown to 6, retention 1h and compact,delete (kafka-topics and "
            "kafka-configs agree), "
            "deleted: gone from metadata and no objects left under its prefix")


def scenario_broker_pod_deletion() -> str:
    make_topic("history-delete", 6)
    producer = HistoryProducer("history-delete", "del")
    producer.wait_acked(1000)
    replace_pod(f"{CLUSTER}-broker-1")
    producer.wait_acked(1000)
    # A crash rather than a drain: no grace period.
    replace_pod(f"{CLUSTER}-broker-2", "--grace-period=0", "--force")
    producer.wait_acked(1000, timeout=180)
    wait_until("the cluster Ready with 3 brokers", lambda: cluster_ready(3), timeout=120)
    wait_until("the returned brokers lead partitions again",
               lambda: {1, 2} <= set(leaders("history-delete").values()), timeout=120)
    producer.wait_acked(500)
    summary = check_history("history-delete", producer.stop())
    return f"pod 1 deleted, pod 2 force-deleted under load: {summary}; both lead partitions again"


def scenario_rolling_change() -> str:
    make_topic("history-roll", 6)
    producer = HistoryProducer("history-roll", "roll")
    producer.wait_acked(500)
    before = get("statefulset", f"{CLUSTER}-broker")["status"]["currentRevision"]
    patch("kafscalecluster", CLUSTER, {"spec": {
        "images": {"broker": "kafscale-broker:e2e-b"},
        "brokers": {"resources": {"requests": {"cpu": "50m", "memory": "64Mi"}}},
        "config": {"flushIntervalMs": 8}}})
    lowest_ready = 3
    deadline = time.monotonic() + 600
    while True:
        pods = broker_pods()
        lowest_ready = min(lowest_ready, sum(1 for p in pods if pod_ready(p)))
        sts = get("statefulset", f"{CLUSTER}-broker")["status"]
        if (sts.get("updateRevision") != before and sts.get("currentRevision") == sts.get("updateRevision")
                and sts.get("updatedReplicas") == 3 and sts.get("readyReplicas") == 3):
            break
        if time.monotonic() > deadline:
            raise Failed(f"the rollout did not finish in 600s: {sts}")
        time.sleep(1)
    if lowest_ready < 2:
        raise Failed(f"the rollout took {3 - lowest_ready} brokers down at once")
    pods = broker_pods()
    images = {c["image"] for p in pods for c in p["spec"]["containers"] if c["name"] == "broker"}
    if images != {"kafscale-broker:e2e-b"}:
        raise Failed(f"brokers run {images} after the rollout")
    config = get("configmap", f"{CLUSTER}-config")["data"]
    if config.get("KAFSCALE_FLUSH_WINDOW_MS") != "8":
        raise Failed(f"ConfigMap has KAFSCALE_FLUSH_WINDOW_MS={config.get('KAFSCALE_FLUSH_WINDOW_MS')}")
    wait_until("KafscaleCluster Ready after the rollout", lambda: cluster_ready(3), timeout=120)
    producer.wait_acked(500)
    result = producer.stop()
    summary = check_history("history-roll", result)
    return (f"image, resources and config rolled one pod at a time (at least {lowest_ready} of 3 ready "
            f"throughout); producer: {result['done']}, no failed sends; {summary}")


def scenario_scaling() -> str:
    make_topic("history-scale", 12)
    producer = HistoryProducer("history-scale", "scale")
    producer.wait_acked(500)
    patch("kafscalecluster", CLUSTER, {"spec": {"brokers": {"replicas": 5}}})
    wait_until("5 brokers ready", lambda: cluster_ready(5), timeout=300)
    spread = wait_until("leadership moved onto brokers 3 and 4",
                        lambda: {3, 4} <= set(leaders("history-scale").values()) and leaders("history-scale"),
                        timeout=180)
    producer.wait_acked(500)
    patch("kafscalecluster", CLUSTER, {"spec": {"brokers": {"replicas": 2}}})
    wait_until("2 brokers ready and the others gone",
               lambda: cluster_ready(2) and len(broker_pods()) == 2, timeout=300)
    after = wait_until("every partition led by broker 0 or 1",
                       lambda: set(leaders("history-scale").values()) <= {0, 1} and leaders("history-scale"),
                       timeout=180)
    brokers = sorted(b["id"] for b in metadata()["brokers"])
    if brokers != [0, 1]:
        raise Failed(f"after scaling to 2 the metadata lists brokers {brokers}")
    producer.wait_acked(500)
    result = producer.stop()
    summary = check_history("history-scale", result)
    # Back to three for the scenarios that follow.
    patch("kafscalecluster", CLUSTER, {"spec": {"brokers": {"replicas": 3}}})
    wait_until("3 brokers ready again", lambda: cluster_ready(3), timeout=300)
    return (f"3→5: leaders {sorted(set(spread.values()))}; 5→2: leaders {sorted(set(after.values()))}, "
            f"metadata brokers {brokers}; producer: {result['done']}; {summary}")


def operator_pods() -> list[dict]:
    return json.loads(kubectl("get", "pods", "-l", "app.kubernetes.io/name=kafscale-operator", "-o", "json"))["items"]


def scenario_operator_pod_deletion() -> str:
    lease = get("lease", "kafscale-operator")
    leader = lease["spec"]["holderIdentity"]
    others = [p["metadata"]["name"] for p in operator_pods() if p["metadata"]["name"] != leader]
    if not others:
        raise Failed(f"no standby operator replica beside the leader {leader}")
    kubectl("delete", "pod", leader, "--wait=false")
    new_leader = wait_until("a standby operator taking the lease", lambda: (
        h := get("lease", "kafscale-operator")["spec"].get("holderIdentity")) not in (None, leader) and h,
        timeout=120)
    # The new leader reconciles: a topic created now becomes Ready.
    make_topic("after-operator-restart", 2)
    wait_until("the deleted operator pod replaced", lambda: len(
        [p for p in operator_pods() if pod_ready(p) and p["metadata"]["name"] != leader]) == 2, timeout=180)
    return f"leader {leader} deleted; {new_leader} took the lease and created a new topic; 2 replicas again"


def scenario_etcd_pod_deletion() -> str:
    make_topic("history-etcd", 3)
    producer = HistoryProducer("history-etcd", "etcd")
    producer.wait_acked(500)
    replace_pod(f"{CLUSTER}-etcd-0")
    producer.wait_acked(500, timeout=180)
    wait_until("KafscaleCluster Ready and etcd reachable", lambda: cluster_ready(3) and condition(
        get("kafscalecluster", CLUSTER), "EtcdReachable").get("status") == "True", timeout=120)
    producer.wait_acked(500)
    result = producer.stop()
    summary = check_history("history-etcd", result)
    return f"etcd-0 deleted under load and rejoined from its volume; producer: {result['done']}; {summary}"


def scenario_minio_outage() -> str:
    make_topic("history-s3", 3)
    producer = HistoryProducer("history-s3", "s3", rate=100)
    producer.wait_acked(300)
    # MinIO stops (its data stays on its volume), as in an outage.
    kubectl("-n", "minio", "scale", "deployment/minio", "--replicas=0")
    try:
        wait_until("MinIO's pod gone", lambda: not json.loads(kubectl(
            "-n", "minio", "get", "pods", "-l", "app=minio", "-o", "json"))["items"], timeout=120)
        # One send without retries shows the error a producer gets, once
        # the flusher has noticed (its uploads fail; it polls the store).
        def refused():
            probe = toolbox("python3 /clients/history.py produce --bootstrap " + BOOTSTRAP +
                            " --topic history-s3 --prefix probe --rate 1 --seconds 1 --no-retries", timeout=120)
            answers = [l.split() for l in probe.splitlines() if l.startswith(("ACK", "ERR"))]
            return answers and answers[0][0] == "ERR" and answers[0]
        answer = wait_until("a produce refused during the outage", refused, timeout=90, every=3)
        # librdkafka flags no broker error of a delivery report retriable;
        # Kafka's protocol classes these as retriable.
        if answer[2] not in KAFKA_RETRIABLE:
            raise Failed(f"the refusal during the outage is not a retriable error: {answer}")
        refused_with = answer[2]
        wait_until("broker pods reported not ready while the store is unavailable",
                   lambda: not any(pod_ready(p) for p in broker_pods()), timeout=60)
    finally:
        kubectl("-n", "minio", "scale", "deployment/minio", "--replicas=1")
    kubectl("-n", "minio", "rollout", "status", "deployment/minio", "--timeout=180s", timeout=200)
    wait_until("brokers ready again after the outage", lambda: cluster_ready(3), timeout=180)
    producer.wait_acked(300, timeout=240)
    result = producer.stop()
    summary = check_history("history-s3", result)
    return (f"during the outage a produce was refused with {refused_with} (retriable) and the broker pods "
            f"were not ready; after it, "
            f"producer: {result['done']}; {summary}")


SCENARIOS = {
    "three-brokers": scenario_three_brokers,
    "clients": scenario_clients,
    "topic-changes": scenario_topic_changes,
    "broker-pod-deletion": scenario_broker_pod_deletion,
    "rolling-change": scenario_rolling_change,
    "scaling": scenario_scaling,
    "operator-pod-deletion": scenario_operator_pod_deletion,
    "etcd-pod-deletion": scenario_etcd_pod_deletion,
    "minio-outage": scenario_minio_outage,
}


SECURE = "secure"


def secure_doc(dev: dict) -> dict:
    """A second cluster beside `dev`: one broker with a SASL_SSL listener,
    ACLs on, its TLS from a Secret, sharing dev's etcd and bucket (its own
    key space and prefix)."""
    spec = dev["spec"]
    return {"apiVersion": "kafscale.io/v1alpha1", "kind": "KafscaleCluster", "metadata": {"name": SECURE},
            "spec": {"brokers": {"replicas": 1,
                                 "listeners": [{"name": "sasl-ssl", "port": 9093, "tls": True,
                                                "authentication": "scram-sha-512"},
                                               {"name": "mtls", "port": 9096, "tls": True, "authentication": "tls"},
                                               {"name": "oauth", "port": 9097, "tls": True,
                                                "authentication": "oauthbearer"}],
                                 "tls": {"secretName": f"{SECURE}-tls"},
                                 "oauthbearer": {"jwksConfigMap": {"name": f"{SECURE}-idp"},
                                                 "issuer": OAUTH_ISSUER}},
                     "authorization": {"superUsers": ["User:ops"]},
                     "etcd": {"endpoints": [f"http://{CLUSTER}-etcd-client.{NS}.svc:2379"]},
                     "s3": spec["s3"], "config": spec.get("config", {}),
                     **({"images": spec["images"]} if "images" in spec else {})}}


OAUTH_ISSUER = "https://idp.kafscale-e2e.test"


def tls_user_doc(name: str, topic: str) -> dict:
    """A tls-external user: its principal is its certificate's `CN=<name>`."""
    return {"apiVersion": "kafscale.io/v1alpha1", "kind": "KafscaleUser", "metadata": {"name": name},
            "spec": {"clusterRef": SECURE, "authentication": {"type": "tls-external"},
                     "authorization": {"acls": [
                         {"resource": {"type": "topic", "name": topic}, "operations": ["Write", "Describe"]}]}}}


def user_doc(name: str, topic: str) -> dict:
    return {"apiVersion": "kafscale.io/v1alpha1", "kind": "KafscaleUser", "metadata": {"name": name},
            "spec": {"clusterRef": SECURE, "authentication": {"type": "scram-sha-512"},
                     "authorization": {"acls": [
                         {"resource": {"type": "topic", "name": topic}, "operations": ["Write", "Read", "Describe"]},
                         {"resource": {"type": "group", "name": "orders-", "patternType": "prefix"},
                          "operations": ["Read"]}]}}}


def secret_value(name: str, key: str) -> str:
    import base64
    return base64.b64decode(get("secret", name)["data"][key]).decode()


def scenario_security() -> str:
    sys.path.insert(0, str(HERE.parent / "tests"))
    import tempfile
    from pki import CA  # noqa: E402  (e2e/tests/pki.py: openssl)

    from pki import IdentityProvider, write_jwks  # noqa: E402

    pki = Path(tempfile.mkdtemp(prefix="kind-pki-"))
    ca = CA(pki, "ca")

    def issue_tls(ca: CA) -> str:
        """A broker certificate from `ca` into the TLS Secret; the CA's PEM."""
        cert, key = ca.issue(f"{ca.name}-broker", f"/CN={SECURE}-kafka", dns_names=[
            f"*.{SECURE}-broker-headless.{NS}.svc", f"{SECURE}-kafka.{NS}.svc", f"{SECURE}-kafka"])
        secret = kubectl("create", "secret", "generic", f"{SECURE}-tls", f"--from-file=tls.crt={cert}",
                         f"--from-file=tls.key={key}", f"--from-file=ca.crt={ca.cert}", "--dry-run=client",
                         "-o", "json")
        apply(json.loads(secret))
        return ca.cert.read_text()

    def publish_jwks(*providers: IdentityProvider) -> None:
        jwks = pki / "jwks.json"
        write_jwks(jwks, *providers)
        apply(json.loads(kubectl("create", "configmap", f"{SECURE}-idp", f"--from-file=jwks.json={jwks}",
                                 "--dry-run=client", "-o", "json")))

    ca_pem = issue_tls(ca)
    idp, next_idp = IdentityProvider(pki, "idp", "k1"), IdentityProvider(pki, "idp-next", "k2")
    publish_jwks(idp)
    apply(secure_doc(get("kafscalecluster", CLUSTER)))
    for topic in ("orders-secure", "secret-secure"):
        apply({**topic_doc(topic, 2), "spec": {**topic_doc(topic, 2)["spec"], "clusterRef": SECURE}})
    apply(user_doc("orders-app", "orders-secure"))
    apply(tls_user_doc("billing-app", "orders-secure"))
    wait_until(f"cluster {SECURE} ready",
               lambda: condition(get("kafscalecluster", SECURE), "Ready").get("status") == "True", timeout=240)
    user = wait_until("KafscaleUser orders-app ready",
                      lambda: (u := get("kafscaleuser", "orders-app"))
                      and condition(u, "Ready").get("status") == "True" and u)
    if user["status"].get("principal") != "User:orders-app" or user["status"].get("secret") != "orders-app":
        raise Failed(f"user status {user['status']}")
    tls_user = wait_until("KafscaleUser billing-app ready",
                          lambda: (u := get("kafscaleuser", "billing-app"))
                          and condition(u, "Ready").get("status") == "True" and u)
    if tls_user["status"].get("principal") != "User:CN=billing-app":
        raise Failed(f"tls-external user status {tls_user['status']}")
    password = secret_value("orders-app", "password")

    def put(path: str, content: str) -> None:
        kubectl("exec", "-i", "toolbox", "--", "sh", "-c", f"cat > {path}", stdin=content)

    put("/tmp/secure-ca.pem", ca_pem)
    bootstrap = f"{SECURE}-kafka:9093"

    def kcat(args: str, feed: str = "", pw: str | None = None, check: bool = True) -> str:
        return toolbox(f"{feed + ' | ' if feed else ''}kcat -b {bootstrap} -X security.protocol=SASL_SSL "
                       f"-X sasl.mechanisms=SCRAM-SHA-512 -X sasl.username=orders-app "
                       f"-X 'sasl.password={pw or password}' -X ssl.ca.location=/tmp/secure-ca.pem {args} 2>&1",
                       check=check)

    # A broker left from an interrupted run may still serve an older
    # certificate until it reloads the Secret.
    md = json.loads(wait_until("metadata over SASL_SSL", lambda: (
        out := kcat("-L -J -m 15", check=False)).startswith("{") and out, timeout=180))
    # Metadata through the TLS listener names the pod by its DNS name on
    # that port, and hides the topic the user may not describe.
    hosts = [b["name"] for b in md["brokers"]]
    if hosts != [f"{SECURE}-broker-0.{SECURE}-broker-headless.{NS}.svc:9093"]:
        raise Failed(f"advertised {hosts}")
    if any(t["topic"] == "secret-secure" for t in md["topics"]):
        raise Failed("metadata shows a topic the user may not describe")
    kcat("-t orders-secure -P -X acks=all", feed="seq 1 200 | sed 's/^/secure-/'")
    read = kcat("-e -q -X auto.offset.reset=earliest -G orders-readers orders-secure", check=False)
    got = set(read.split())
    if not all(f"secure-{i}" in got for i in range(1, 201)):
        raise Failed(f"the user's group read {len(got)} of 200: {read[-500:]}")
    denied = kcat("-t secret-secure -P -X acks=all -X message.timeout.ms=10000", feed="echo x", check=False)
    if "authorization failed" not in denied.lower():
        raise Failed(f"producing to a topic without an ACL: {denied[-800:]}")
    wrong = kcat("-L -m 5", pw="not-the-password", check=False)
    if "invalid credentials" not in wrong:
        raise Failed(f"a wrong password: {wrong[-800:]}")

    # mTLS: the tls-external user's certificate from the Secret's CA is its
    # principal; a certificate from another CA, or none, does not get in.
    client_cert, client_key = ca.issue("billing-app", "/CN=billing-app")
    stranger = CA(pki, "stranger")
    stranger_cert, stranger_key = stranger.issue("stranger-app", "/CN=billing-app")
    for path, source in (("/tmp/billing.crt", client_cert), ("/tmp/billing.key", client_key),
                         ("/tmp/stranger.crt", stranger_cert), ("/tmp/stranger.key", stranger_key)):
        put(path, source.read_text())

    def mtls_kcat(args: str, cert: str | None, feed: str = "", check: bool = True) -> str:
        identity = f"-X ssl.certificate.location=/tmp/{cert}.crt -X ssl.key.location=/tmp/{cert}.key" if cert else ""
        return toolbox(f"{feed + ' | ' if feed else ''}kcat -b {SECURE}-kafka:9096 -X security.protocol=SSL "
                       f"-X ssl.ca.location=/tmp/secure-ca.pem {identity} {args} 2>&1", check=check)

    mtls_kcat("-t orders-secure -P -X acks=all", "billing", feed="seq 1 50 | sed 's/^/mtls-/'")
    mtls_denied = mtls_kcat("-t secret-secure -P -X acks=all -X message.timeout.ms=10000", "billing",
                            feed="echo x", check=False)
    if "authorization failed" not in mtls_denied.lower():
        raise Failed(f"the mTLS user produced to a topic without an ACL: {mtls_denied[-800:]}")
    for cert in ("stranger", None):
        out = mtls_kcat("-L -m 5", cert, check=False)
        if "Metadata for" in out:
            raise Failed(f"the mTLS listener let in a client with {cert or 'no'} certificate: {out[-500:]}")
    read = kcat("-e -q -X auto.offset.reset=earliest -G orders-readers-2 orders-secure", check=False)
    if not all(f"mtls-{i}" in read.split() for i in range(1, 51)):
        raise Failed(f"the mTLS user's records were not all read back: {read[-500:]}")

    # OAUTHBEARER: tokens verified against the JWKS ConfigMap; `sub` is the
    # principal, which ACLs then govern (User:ops is a super user).
    def oauth_produce(token: str, topic: str = "secret-secure") -> str:
        return toolbox(f"TOKEN='{token}' python3 /clients/oauth_produce.py {SECURE}-kafka:9097 {topic} "
                       "/tmp/secure-ca.pem 2>&1", check=False).strip().splitlines()[-1]

    if not (out := oauth_produce(idp.token("ops", OAUTH_ISSUER))).startswith("OK"):
        raise Failed(f"a super user's token: {out}")
    if "TOPIC_AUTHORIZATION_FAILED" not in (out := oauth_produce(idp.token("nobody", OAUTH_ISSUER))):
        raise Failed(f"a token of a principal without ACLs: {out}")
    for why, token in (("expired", idp.token("ops", OAUTH_ISSUER, lifetime_s=-300)),
                       ("of another issuer", idp.token("ops", "https://elsewhere.test")),
                       ("signed by an unknown key", next_idp.token("ops", OAUTH_ISSUER))):
        if "_AUTHENTICATION" not in (out := oauth_produce(token)):
            raise Failed(f"a token {why}: {out}")
    # The identity provider rotates its keys: the updated ConfigMap reaches
    # the running broker (kubelet updates the volume, the broker reloads).
    publish_jwks(idp, next_idp)
    rotated = next_idp.token("ops", OAUTH_ISSUER)
    wait_until("the rotated signing key accepted", lambda: oauth_produce(rotated).startswith("OK"), timeout=180)

    # cert-manager renews: a certificate from another CA in the same Secret
    # reaches the running broker (kubelet updates the volume, the broker
    # reloads), with no restart.
    pod = get("pod", f"{SECURE}-broker-0")
    restarts = sum(c["restartCount"] for c in pod["status"]["containerStatuses"])
    put("/tmp/secure-ca.pem", issue_tls(CA(pki, "renewed-ca")))
    wait_until("the renewed certificate served", lambda: '"brokers"' in kcat("-L -J -m 5", check=False), timeout=180)
    pod_after = get("pod", f"{SECURE}-broker-0")
    if pod_after["metadata"]["uid"] != pod["metadata"]["uid"] or restarts != sum(
            c["restartCount"] for c in pod_after["status"]["containerStatuses"]):
        raise Failed("the broker restarted for the renewed certificate")
    # Deleting the user revokes its credential.
    kubectl("delete", "kafscaleuser", "orders-app", "billing-app", "--timeout=60s")
    wait_until("revoked credential refused", lambda: "invalid credentials" in kcat("-L -m 5", check=False), timeout=60)
    for topic in ("orders-secure", "secret-secure"):
        kubectl("delete", "kafscaletopic", topic, "--timeout=120s", timeout=150)
    kubectl("delete", "kafscalecluster", SECURE, "--timeout=120s", timeout=150)
    kubectl("delete", "secret", f"{SECURE}-tls")
    kubectl("delete", "configmap", f"{SECURE}-idp")
    return ("SASL_SSL, mTLS and OAUTHBEARER listeners with TLS from a Secret and ACLs on; a SCRAM KafscaleUser "
            "produced and read 200 records in its group; a topic without ACL refused with "
            "TOPIC_AUTHORIZATION_FAILED, hidden from metadata; a tls-external user (CN=billing-app) produced 50 "
            "over mTLS, a stranger CA's and no certificate refused; OAUTHBEARER tokens from the JWKS ConfigMap "
            "accepted (super user) or authorized per ACL, expired/foreign-issuer/unknown-key tokens refused, "
            "a rotated key accepted without restart; a renewed certificate served without a restart; a wrong "
            "password and the deleted user refused")


SCENARIOS["security"] = scenario_security


def start_toolbox() -> None:
    configmap = kubectl("create", "configmap", "kind-clients", f"--from-file={HERE / 'clients'}",
                        "--dry-run=client", "-o", "json")
    apply(json.loads(configmap))
    apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "toolbox"}, "spec": {
        "containers": [{"name": "toolbox", "image": TOOLBOX, "imagePullPolicy": "Never",
                        "command": ["sleep", "infinity"],
                        "volumeMounts": [{"name": "clients", "mountPath": "/clients"}]}],
        "terminationGracePeriodSeconds": 1,
        "volumes": [{"name": "clients", "configMap": {"name": "kind-clients"}}]}})
    kubectl("wait", "pod/toolbox", "--for=condition=Ready", "--timeout=120s", timeout=150)


def main() -> int:
    global NS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--namespace", default=NS)
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help=", ".join(SCENARIOS))
    args = parser.parse_args()
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenarios {unknown}; choose from {', '.join(SCENARIOS)}")
    NS = args.namespace
    start_toolbox()
    for name in args.scenarios or list(SCENARIOS):
        started = time.monotonic()
        try:
            summary = SCENARIOS[name]()
        except (Failed, subprocess.TimeoutExpired) as e:
            print(f"scenario {name}: FAILED after {time.monotonic() - started:.0f}s: {e}", flush=True)
            return 1
        print(f"scenario {name}: passed in {time.monotonic() - started:.0f}s ({summary})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
