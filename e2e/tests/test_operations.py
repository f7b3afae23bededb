"""Operating Kafscale: metrics that move by the right amounts, readiness that
follows object storage, an etcd outage answered with errors (and survived), and
the ops API's view of topics and group lag."""

import json
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import create_topic
from harness import Cluster, http_get, scrape
from verify import check_history, read_all


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("ops"), "ops", broker_args=["--group-initial-rebalance-delay-ms", "100"])
    yield c
    c.close()


def produce(bootstrap, topic, n, size=100):
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "log_level": 2})
    acked, errors = {}, []

    def on_delivery(err, msg):
        if err is None:
            acked[msg.value()] = (msg.partition(), msg.offset())
        else:
            errors.append(err)

    for i in range(n):
        value = f"{i:06d}-{time.time()}".encode().ljust(size, b"x")
        p.produce(topic, value=value, partition=i % 2, on_delivery=on_delivery)
    assert p.flush(30) == 0
    assert errors == []
    return acked


def wait_until(predicate, timeout=45, what="condition"):
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def test_metrics_count_records_bytes_and_puts(cluster):
    create_topic(cluster.bootstrap, "metered", 2)
    before_b, before_f = scrape(cluster.broker.http_port), scrape(cluster.flusher.http_port)
    produce(cluster.bootstrap, "metered", 1000)
    log = read_all(cluster.bootstrap, "metered")
    assert sum(len(v) for v in log.values()) == 1000
    after_b, after_f = scrape(cluster.broker.http_port), scrape(cluster.flusher.http_port)
    delta = lambda after, before, key: after.get(key, 0) - before.get(key, 0)
    assert delta(after_b, before_b, 'kafscale_broker_produce_records_total{topic="metered"}') == 1000
    assert delta(after_b, before_b, 'kafscale_broker_fetch_records_total{topic="metered"}') == 1000
    produced = delta(after_b, before_b, 'kafscale_broker_produce_bytes_total{topic="metered"}')
    assert 1000 * 100 < produced < 1000 * 100 * 1.5, produced  # values plus batch overhead
    puts = delta(after_f, before_f, 'kafscale_flusher_s3_requests_total{op="put"}')
    if cluster.write_path == "segments":
        # Every segment of the topic is one .kfs and one .index PUT.
        objects = len(cluster.objects("metered"))
        assert objects >= 4
    else:
        # One PUT per intake object, which holds both partitions' parts.
        objects = delta(after_f, before_f, "kafscale_flusher_intake_objects_written_total")
        parts = delta(after_f, before_f, "kafscale_flusher_intake_object_parts_sum")
        assert objects >= 1 and parts >= 2, (objects, parts)
    assert puts == objects, (puts, objects)
    assert delta(after_b, before_b, 'kafscale_broker_requests_total{api="Produce",error="0"}') >= 1
    assert after_b["kafscale_broker_object_store_state"] == 0


def test_readiness_follows_object_storage(cluster):
    create_topic(cluster.bootstrap, "ready", 2)
    acked = produce(cluster.bootstrap, "ready", 200)
    assert http_get(cluster.broker.http_port, "/readyz")[0] == 200
    cluster.minio.kill()
    try:
        def not_ready():
            status, body = http_get(cluster.broker.http_port, "/readyz")
            return status == 503 and not {c["name"]: c["ok"] for c in json.loads(body)["checks"]}["object_store"]
        wait_until(not_ready, what="the broker to report not ready")
        assert http_get(cluster.flusher.http_port, "/readyz")[0] == 503
        assert http_get(cluster.broker.http_port, "/healthz")[0] == 200, "liveness is unaffected"
        # Produce is refused fast, with a retriable error.
        p = Producer({"bootstrap.servers": cluster.bootstrap, "retries": 0, "log_level": 2})
        errors = []
        started = time.time()
        p.produce("ready", value=b"during outage", on_delivery=lambda err, msg: errors.append(err))
        p.flush(30)
        # KAFKA_STORAGE_ERROR is retriable in Kafka's protocol; with retries=0 the
        # client reports it instead of retrying.
        assert errors and errors[0] is not None and errors[0].code() == KafkaError.KAFKA_STORAGE_ERROR, errors
        assert time.time() - started < 5
        # Data already in memory is still served.
        assert sum(len(v) for v in read_all(cluster.bootstrap, "ready").values()) == 200
    finally:
        cluster.minio.start()
    wait_until(lambda: http_get(cluster.broker.http_port, "/readyz")[0] == 200, what="readiness to return")
    acked.update(produce(cluster.bootstrap, "ready", 200))
    check_history(acked, read_all(cluster.bootstrap, "ready"))


def test_etcd_outage_answers_errors_and_recovers(cluster):
    create_topic(cluster.bootstrap, "before-etcd-outage", 2)
    acked = produce(cluster.bootstrap, "before-etcd-outage", 50)
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap, "log_level": 2})
    cluster.etcd.proc.kill()
    try:
        started = time.time()
        futures = admin.create_topics([NewTopic("during-etcd-outage", 1, 1)], request_timeout=30)
        with pytest.raises(KafkaException) as err:
            futures["during-etcd-outage"].result(timeout=40)
        assert time.time() - started < 30, "CreateTopics did not answer within its timeout"
        assert "metadata store" in str(err.value) or err.value.args[0].retriable()

        c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "outage-group", "log_level": 2})
        with pytest.raises(KafkaException):
            c.commit(offsets=[TopicPartition("before-etcd-outage", 0, 10)], asynchronous=False)
        c.close()
        # Producing to a partition already in use needs no metadata store.
        acked.update(produce(cluster.bootstrap, "before-etcd-outage", 50))
    finally:
        cluster.etcd.start()
    # Back without restarting the broker.
    wait_until(lambda: http_get(cluster.broker.http_port, "/readyz")[0] == 200, what="readiness after etcd returns")
    create_topic(cluster.bootstrap, "after-etcd-outage", 1)
    c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "outage-group"})
    c.commit(offsets=[TopicPartition("before-etcd-outage", 0, 10)], asynchronous=False)
    assert c.committed([TopicPartition("before-etcd-outage", 0)], timeout=10)[0].offset == 10
    c.close()
    check_history(acked, read_all(cluster.bootstrap, "before-etcd-outage"))


def test_ops_api_reports_topics_offsets_and_group_lag(cluster):
    create_topic(cluster.bootstrap, "ops-api", 2)
    produce(cluster.bootstrap, "ops-api", 100)
    c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "ops-group", "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition("ops-api", 0, 20), TopicPartition("ops-api", 1, 45)], asynchronous=False)
    c.close()

    status, body = http_get(cluster.broker.http_port, "/api/v1/topics/ops-api")
    assert status == 200
    topic = json.loads(body)
    assert [(p["partition"], p["log_start_offset"], p["high_watermark"]) for p in topic["partitions"]] == [(0, 0, 50), (1, 0, 50)]

    status, body = http_get(cluster.broker.http_port, "/api/v1/groups/ops-group")
    assert status == 200
    group = json.loads(body)
    lag = {p["partition"]: (p["committed_offset"], p["lag"]) for p in group["partitions"] if p["topic"] == "ops-api"}
    assert lag == {0: (20, 30), 1: (45, 5)}
    assert group["total_lag"] == 35

    metrics = scrape(cluster.broker.http_port)
    assert metrics['kafscale_broker_consumer_lag{group="ops-group",topic="ops-api",partition="0"}'] == 30
    assert http_get(cluster.broker.http_port, "/api/v1/groups/nope")[0] == 404
    # The earlier outage tests' failed requests count in the flusher's 30 s
    # health window; with one PUT per window on the intake path they are
    # diluted slowly, so the store may read "degraded" until they age out.
    def store_healthy():
        status, body = http_get(cluster.broker.http_port, "/api/v1/cluster")
        return status == 200 and json.loads(body)["object_store"]["state"] == "healthy"
    wait_until(store_healthy, timeout=40, what="the cluster API to report the object store healthy")


def test_dashboard_uses_only_documented_metrics():
    import re
    from harness import REPO

    dashboard = (REPO / "dashboards" / "kafscale.json").read_text()
    documented = (REPO / "docs" / "metrics.md").read_text()
    names = set(re.findall(r"kafscale_(broker|flusher)_([a-z_]+?)(?:_bucket)?\b", dashboard))
    assert names
    for component, name in names:
        assert f"`{name}`" in documented, f"kafscale_{component}_{name} is not in docs/metrics.md"


def test_a_broker_started_before_etcd_waits_for_it(tmp_path):
    """In Kubernetes the operator starts managed etcd and the brokers at once:
    a broker waits (one log line per attempt) instead of exiting into a
    crash loop, and serves once etcd is up."""
    from harness import Broker, Etcd, Flusher, MinIO, wait_for_port

    etcd = Etcd(tmp_path)
    minio = MinIO(tmp_path).start()
    flusher = Flusher(tmp_path, minio, "test/late-etcd").start()
    broker = Broker(tmp_path, etcd, flusher, "late-etcd")
    try:
        broker.proc.start()
        wait_until(lambda: "etcd is not reachable yet" in broker.proc.tail(), timeout=30,
                   what="the broker saying it waits for etcd")
        time.sleep(2)
        assert broker.proc.alive(), f"the broker exited without etcd:\n{broker.proc.tail()}"
        etcd.start()
        wait_for_port(broker.http_port, broker.proc, timeout=60)
        wait_until(lambda: http_get(broker.http_port, "/readyz")[0] == 200, timeout=60,
                   what="the broker ready once etcd is up")
        create_topic(broker.bootstrap, "late", 2)
        acked = produce(broker.bootstrap, "late", 10)
        assert len(acked) == 10
    finally:
        broker.proc.stop()
        flusher.proc.stop()
        minio.discard()
        etcd.discard()
