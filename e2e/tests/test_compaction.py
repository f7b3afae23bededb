"""Compacted topics through real clients: cleanup.policy at creation and by
alteration, the configs that go with it as DescribeConfigs reports them,
records without a key refused as Kafka refuses them, the policies' effect
on DeleteRecords, and the cleaner on both write paths: each key's latest
value read back by a fresh consumer across kills of flusher and broker."""

import random
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   ResourceType)

from conftest import create_topic, running
from harness import Cluster


def describe(admin, topic):
    resource = ConfigResource(ResourceType.TOPIC, topic)
    return admin.describe_configs([resource])[resource].result(timeout=30)


def alter(admin, topic, name, value, op=AlterConfigOpType.SET):
    resource = ConfigResource(ResourceType.TOPIC, topic,
                              incremental_configs=[ConfigEntry(name, value, incremental_operation=op)])
    return admin.incremental_alter_configs([resource])[resource].result(timeout=30)


def produce_outcomes(bootstrap, topic, records):
    """Each record's delivery error (None: stored), in order."""
    outcomes = [None] * len(records)
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "log_level": 2,
                  "enable.idempotence": False, "linger.ms": 0, "retries": 0})
    for i, (key, value) in enumerate(records):
        def done(err, _msg, i=i):
            outcomes[i] = err
        p.produce(topic, key=key, value=value, partition=0, on_delivery=done)
        p.flush(30)
    assert p.flush(30) == 0
    return outcomes


def read_all(bootstrap, topic, partition=0):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "compaction-reader",
                  "enable.auto.commit": False, "enable.partition.eof": True})
    c.assign([TopicPartition(topic, partition, 0)])
    got = []
    try:
        while True:
            m = c.poll(10)
            assert m is not None, f"no end of partition after {len(got)} records"
            if m.error():
                assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                return got
            got.append((m.offset(), m.key(), m.value()))
    finally:
        c.close()


def test_compacted_topics_are_created_described_and_altered(cluster):
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    create_topic(cluster.bootstrap, "changelog", 1,
                 config={"cleanup.policy": "compact", "min.compaction.lag.ms": "1000",
                         "delete.retention.ms": "60000", "min.cleanable.dirty.ratio": "0.1"})
    configs = describe(admin, "changelog")
    assert configs["cleanup.policy"].value == "compact"
    assert configs["delete.retention.ms"].value == "60000"
    assert configs["min.cleanable.dirty.ratio"].value == "0.1"
    assert configs["max.compaction.lag.ms"].value == "9223372036854775807"
    assert configs["max.compaction.lag.ms"].is_default
    assert configs["segment.ms"].value == "604800000"

    alter(admin, "changelog", "cleanup.policy", "delete", AlterConfigOpType.APPEND)
    assert describe(admin, "changelog")["cleanup.policy"].value == "compact,delete"
    try:
        alter(admin, "changelog", "max.compaction.lag.ms", "10")
        raise AssertionError("a max.compaction.lag.ms under min.compaction.lag.ms was accepted")
    except KafkaException as e:
        assert e.args[0].code() == KafkaError.INVALID_CONFIG, e
        assert "min.compaction.lag.ms=1000 is larger than max.compaction.lag.ms=10" in str(e), e


def test_records_without_a_key_are_refused_as_kafka_refuses_them(cluster):
    create_topic(cluster.bootstrap, "keyed-only", 1, config={"cleanup.policy": "compact"})
    outcomes = produce_outcomes(cluster.bootstrap, "keyed-only",
                                [(b"k1", b"v1"), (None, b"no key"), (b"k2", None), (b"k1", b"v2")])
    assert outcomes[0] is None and outcomes[2] is None and outcomes[3] is None, outcomes
    assert outcomes[1] is not None and outcomes[1].code() == KafkaError.INVALID_RECORD, outcomes[1]
    # The refused record took no offset; a tombstone (null value) is a record.
    assert read_all(cluster.bootstrap, "keyed-only") == [
        (0, b"k1", b"v1"), (1, b"k2", None), (2, b"k1", b"v2")]

    # A topic that is not compacted takes records without keys.
    create_topic(cluster.bootstrap, "any-keys", 1, config={"cleanup.policy": "delete"})
    assert produce_outcomes(cluster.bootstrap, "any-keys", [(None, b"fine")]) == [None]


def test_delete_records_follows_the_policy(cluster):
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    create_topic(cluster.bootstrap, "compact-only", 1, config={"cleanup.policy": "compact"})
    assert produce_outcomes(cluster.bootstrap, "compact-only", [(b"k", b"v")] * 3) == [None] * 3
    tp = TopicPartition("compact-only", 0, 2)
    try:
        admin.delete_records([tp])[tp].result(timeout=30)
        raise AssertionError("DeleteRecords on a compact-only topic succeeded")
    except KafkaException as e:
        assert e.args[0].code() == KafkaError.POLICY_VIOLATION, e
    alter(admin, "compact-only", "cleanup.policy", "compact,delete")
    deleted = admin.delete_records([tp])[tp].result(timeout=30)
    assert deleted.low_watermark == 2


# Clean soon and often: segments older than a second, passes every half
# second, intake parts compacted into segments after a second, and a short
# session so a new leader starts maintenance soon.
CLEANING_ARGS = ["--merge-min-age-ms", "1000", "--merge-interval-ms", "300", "--cleaner-interval-ms", "500",
                 "--intake-compaction-delay-ms", "1000", "--session-timeout-ms", "2000"]
KEYS = 1000
ROUNDS = 100


@pytest.fixture(scope="module", params=["segments", "intake"])
def cleaning(request, tmp_path_factory):
    args = CLEANING_ARGS + ["--write-path", request.param]
    with running(Cluster(tmp_path_factory.mktemp(f"clean-{request.param}"), name=f"clean-{request.param}",
                         broker_args=args)) as c:
        yield c


def latest_per_key(bootstrap, topic, partitions):
    """A fresh consumer's view from the beginning: each key's last record,
    how many records it read, and the offsets in order per partition."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "fresh", "enable.auto.commit": False,
                  "enable.partition.eof": True})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    latest, count, offsets, done = {}, 0, {p: [] for p in range(partitions)}, set()
    try:
        while len(done) < partitions:
            m = c.poll(10)
            assert m is not None, f"no end of partitions after {count} records"
            if m.error():
                assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                done.add(m.partition())
                continue
            count += 1
            latest[m.key()] = m.value()
            offsets[m.partition()].append(m.offset())
    finally:
        c.close()
    return latest, count, offsets


def test_keyed_updates_read_back_as_the_latest_value_per_key_across_kills(cleaning):
    """100,000 updates of 1,000 keys, every tenth key deleted by a tombstone
    at the end: while the cleaner works, the flusher is killed (-9) five
    times and the broker and flusher once; a fresh consumer then reads each
    key's latest value (the tombstones kept: delete.retention.ms is an hour)
    from far fewer records, every one at its own offset."""
    topic = "latest"
    partitions = 2
    create_topic(cleaning.bootstrap, topic, partitions,
                 {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.01",
                  "delete.retention.ms": "3600000", "segment.bytes": str(1024 * 1024)})
    p = Producer({"bootstrap.servers": cleaning.bootstrap, "acks": "all", "linger.ms": 5, "log_level": 2,
                  "compression.type": "lz4"})
    expected = {}
    for r in range(ROUNDS):
        for k in range(KEYS):
            key = f"key-{k}".encode()
            value = None if (r == ROUNDS - 1 and k % 10 == 0) else f"{r}:{'x' * 64}".encode()
            p.produce(topic, key=key, value=value)
            expected[key] = value
        p.poll(0)
    assert p.flush(60) == 0
    # Later writes, a while apart, so the updates are in segments older than
    # the newest of each partition (which is never cleaned).
    rng = random.Random(29)
    for i in range(6):
        time.sleep(rng.uniform(0.3, 1.0))
        cleaning.flusher.proc.kill()
        cleaning.flusher.start()
        for part in range(partitions):
            p.produce(topic, key=f"marker-{i}".encode(), value=b"m", partition=part)
        assert p.flush(60) == 0
        expected[f"marker-{i}".encode()] = b"m"
    cleaning.restart_broker_and_flusher()

    deadline = time.time() + 120
    while True:
        latest, count, offsets = latest_per_key(cleaning.bootstrap, topic, partitions)
        assert latest == expected, "a key's latest value is missing or wrong"
        for p_offsets in offsets.values():
            assert p_offsets == sorted(set(p_offsets)), "an offset read twice or out of order"
        if count < KEYS * ROUNDS // 20 or time.time() > deadline:
            break
        time.sleep(1)
    assert count < KEYS * ROUNDS // 20, f"{count} of {KEYS * ROUNDS} records still there after cleaning"
    # Offsets never move: the high watermarks still count every record written.
    c = Consumer({"bootstrap.servers": cleaning.bootstrap, "group.id": "wm"})
    try:
        ends = sum(c.get_watermark_offsets(TopicPartition(topic, part), timeout=10)[1] for part in range(partitions))
    finally:
        c.close()
    assert ends == KEYS * ROUNDS + 6 * partitions
