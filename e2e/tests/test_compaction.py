"""Compacted topics through real clients: cleanup.policy at creation and by
alteration, the configs that go with it as DescribeConfigs reports them,
records without a key refused as Kafka refuses them, and the policies'
effect on DeleteRecords."""

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   ResourceType)

from conftest import create_topic


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
