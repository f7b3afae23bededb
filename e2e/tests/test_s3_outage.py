"""The object store goes away mid-produce: produces fail quickly with retriable
errors (no hangs); when it returns, producing resumes and nothing acknowledged
is lost."""

import time

from confluent_kafka import KafkaError, Producer

from conftest import create_topic
from verify import check_history, read_all


def produce_batch(bootstrap, topic, values, retries):
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": False,
                         "retries": retries, "linger.ms": 2, "message.timeout.ms": 60000, "log_level": 2})
    results = {}

    def cb(err, msg):
        results[msg.value()] = (err, time.monotonic(), (msg.partition(), msg.offset()))

    sent_at = time.monotonic()
    for v in values:
        producer.produce(topic, value=v, on_delivery=cb)
    producer.flush(90)
    return sent_at, results


def test_produce_fails_fast_during_outage_and_recovers(cluster):
    topic = "s3-outage"
    create_topic(cluster.bootstrap, topic, 3)
    acked = {}

    _, before = produce_batch(cluster.bootstrap, topic, [f"before-{i}".encode() for i in range(2000)], retries=5)
    assert all(err is None for err, _, _ in before.values())
    acked.update({v: pos for v, (_, _, pos) in before.items()})

    cluster.minio.kill()
    try:
        sent_at, during = produce_batch(cluster.bootstrap, topic, [f"during-{i}".encode() for i in range(300)], retries=0)
        errors = [err for err, _, _ in during.values() if err is not None]
        assert errors, "produce succeeded with object storage down"
        assert all(err.retriable() or err.code() in (KafkaError.KAFKA_STORAGE_ERROR, KafkaError.REQUEST_TIMED_OUT)
                   for err in errors), {str(e) for e in errors}
        slowest = max(t for _, t, _ in during.values()) - sent_at
        assert slowest < 30, f"a produce took {slowest:.1f}s to fail (request timeout is 30s)"
        # Anything acknowledged during the outage (none expected) must still survive.
        acked.update({v: pos for v, (err, _, pos) in during.items() if err is None})
    finally:
        cluster.minio.start()

    deadline = time.time() + 60
    while True:
        _, after = produce_batch(cluster.bootstrap, topic, [f"after-{i}-{time.time()}".encode() for i in range(1000)], retries=10)
        ok = {v: pos for v, (err, _, pos) in after.items() if err is None}
        acked.update(ok)
        if len(ok) == len(after):
            break
        assert time.time() < deadline, "producing did not resume after object storage returned"
    check_history(acked, read_all(cluster.bootstrap, topic))


def test_a_produce_to_many_partitions_waits_one_upload_deadline_not_one_per_partition(tmp_path):
    """With object storage hanging (not failing), every partition of an
    admitted acks=-1 produce is answered together with the outcome of its one
    upload: a retriable KAFKA_STORAGE_ERROR once the flusher's deadline for
    that upload passes (3 attempts of 2 s here), not one deadline per
    partition, and never a REQUEST_TIMED_OUT for a write that may still land
    (a retrying client would store it twice). (A cluster of its own: one
    whose store just failed refuses produces at once instead.)"""
    from conftest import running
    from harness import Cluster

    with running(Cluster(tmp_path, name="one-deadline")) as cluster:
        _one_deadline(cluster)


def produce_with_store_hung(cluster, topic: str, partitions: int, timeout_ms: int) -> tuple[dict[int, int], float]:
    """One raw acks=-1 produce to every partition while MinIO is stopped (it
    hangs rather than fails): (partition -> error code, seconds to answer)."""
    import signal
    import socket

    from rawkafka import parse_produce_v3_response, produce_v3, read_frame, record_batch

    host, port = cluster.bootstrap.split(":")
    cluster.minio.proc.popen.send_signal(signal.SIGSTOP)
    try:
        with socket.create_connection((host, int(port)), timeout=30) as s:
            started = time.monotonic()
            batches = {p: record_batch(b"stuck-%d" % p) for p in range(partitions)}
            s.sendall(produce_v3(1, topic, batches, timeout_ms=timeout_ms))
            errors = parse_produce_v3_response(read_frame(s))
            return errors, time.monotonic() - started
    finally:
        cluster.minio.proc.popen.send_signal(signal.SIGCONT)


def _one_deadline(cluster):
    topic = "one-deadline"
    create_topic(cluster.bootstrap, topic, 4)
    warm = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "log_level": 2})
    for p in range(4):  # every partition recovered and written before the store hangs
        warm.produce(topic, value=b"warm", partition=p)
    assert warm.flush(30) == 0
    errors, took = produce_with_store_hung(cluster, topic, 4, timeout_ms=1500)
    KAFKA_STORAGE_ERROR = 56
    assert set(errors.values()) == {KAFKA_STORAGE_ERROR}, errors
    # One upload deadline is ~6 s; one per partition would be 24 s or more.
    assert took < 15.0, f"4 partitions with a hung store took {took:.1f} s to answer"


def test_a_produce_that_needs_recoveries_answers_within_its_timeout(tmp_path):
    """Partitions not yet recovered (a new leader, a restart) are read back
    from object storage before the first append; with the store hanging, the
    request still answers by its timeout, retriably, instead of waiting on
    the store."""
    from conftest import running
    from harness import Cluster

    with running(Cluster(tmp_path, name="recover-deadline")) as cluster:
        create_topic(cluster.bootstrap, "unrecovered", 3)
        errors, took = produce_with_store_hung(cluster, "unrecovered", 3, timeout_ms=1500)
        REQUEST_TIMED_OUT = 7
        assert set(errors.values()) == {REQUEST_TIMED_OUT}, errors
        assert took < 4.0, f"a produce needing recoveries took {took:.1f} s with a 1.5 s timeout"
