"""Topic lifecycle and offsets through real clients: create/delete/re-create,
auto-creation off in production, ListOffsets, and long-polling fetches."""

import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicCollection, TopicPartition
from confluent_kafka.admin import AdminClient

from conftest import create_topic


def produce(bootstrap, topic, values, partition=0, timestamps=None):
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "log_level": 2})
    for i, v in enumerate(values):
        kwargs = {"timestamp": timestamps[i]} if timestamps else {}
        p.produce(topic, value=v, partition=partition, **kwargs)
        if timestamps:
            p.flush(10)  # one batch per timestamp
    assert p.flush(30) == 0


def topic_id(admin, name):
    desc = admin.describe_topics(TopicCollection([name]))[name].result(timeout=30)
    return str(desc.topic_id)


def watermarks(bootstrap, topic, partition=0):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "wm"})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
    finally:
        c.close()


def test_unknown_topics_are_not_auto_created_in_production(cluster):
    c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "x", "allow.auto.create.topics": True})
    try:
        md = c.list_topics("never-created", timeout=10)
        assert md.topics["never-created"].error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    finally:
        c.close()


def test_delete_removes_objects_and_recreate_starts_empty_with_new_id(cluster):
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    create_topic(cluster.bootstrap, "lifecycle", 2)
    first_id = topic_id(admin, "lifecycle")
    produce(cluster.bootstrap, "lifecycle", [b"a", b"b", b"c"])
    assert watermarks(cluster.bootstrap, "lifecycle") == (0, 3)
    if cluster.write_path == "segments":
        assert cluster.objects("lifecycle"), "no segment objects were written"
    else:
        assert cluster.intake_objects(), "no intake objects were written"

    for f in admin.delete_topics(["lifecycle"], operation_timeout=10).values():
        f.result(timeout=30)
    assert cluster.objects("lifecycle") == []
    assert "lifecycle" not in admin.list_topics(timeout=10).topics

    create_topic(cluster.bootstrap, "lifecycle", 2)
    assert topic_id(admin, "lifecycle") != first_id
    assert watermarks(cluster.bootstrap, "lifecycle") == (0, 0)
    produce(cluster.bootstrap, "lifecycle", [b"fresh"])
    assert watermarks(cluster.bootstrap, "lifecycle") == (0, 1)


def test_list_offsets_earliest_latest_and_by_timestamp(cluster):
    create_topic(cluster.bootstrap, "by-time", 1)
    base = int(time.time() * 1000) - 60_000
    stamps = [base + i * 1000 for i in range(5)]
    produce(cluster.bootstrap, "by-time", [f"r{i}".encode() for i in range(5)], timestamps=stamps)
    assert watermarks(cluster.bootstrap, "by-time") == (0, 5)
    c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "t"})
    try:
        found = c.offsets_for_times([TopicPartition("by-time", 0, stamps[3])], timeout=10)
        assert found[0].offset == 3
        past_end = c.offsets_for_times([TopicPartition("by-time", 0, stamps[-1] + 10_000)], timeout=10)
        assert past_end[0].offset == -1
    finally:
        c.close()


def test_waiting_fetch_is_woken_when_data_becomes_durable(cluster):
    create_topic(cluster.bootstrap, "long-poll", 1)
    c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "lp", "fetch.wait.max.ms": 20000,
                  "auto.offset.reset": "latest", "enable.auto.commit": False})
    try:
        c.assign([TopicPartition("long-poll", 0, 0)])
        assert c.poll(1.0) is None  # now parked in a long poll at the log end
        sent = time.monotonic()
        produce(cluster.bootstrap, "long-poll", [b"wake up"])
        msg = None
        while msg is None and time.monotonic() - sent < 15:
            msg = c.poll(0.2)
        assert msg is not None and msg.value() == b"wake up"
        # Woken by the write, not by the 20 s max wait running out.
        assert time.monotonic() - sent < 10
    finally:
        c.close()


def test_topics_with_more_partitions_than_an_etcd_transaction_holds(cluster):
    # etcd allows 128 operations per transaction; partition states are written in chunks.
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    create_topic(cluster.bootstrap, "wide", 1000)
    from confluent_kafka.admin import NewPartitions
    for f in admin.create_partitions([NewPartitions("wide", 1200)]).values():
        f.result(timeout=30)
    md = admin.list_topics("wide", timeout=10)
    assert len(md.topics["wide"].partitions) == 1200
    produce(cluster.bootstrap, "wide", [b"last"], partition=1199)
    assert watermarks(cluster.bootstrap, "wide", 1199) == (0, 1)


def test_creating_an_existing_topic_says_it_exists_whatever_its_settings(cluster):
    """Kafka Connect re-creates its internal topics on every start, with
    settings the broker may refuse, and treats TOPIC_ALREADY_EXISTS as
    success; Kafka checks existence before settings, and so must we."""
    from confluent_kafka.admin import NewTopic

    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    create_topic(cluster.bootstrap, "connect-offsets-like", 1)
    again = NewTopic("connect-offsets-like", 3, 1, config={"cleanup.policy": "compact"})
    future = admin.create_topics([again], operation_timeout=10)["connect-offsets-like"]
    try:
        future.result(timeout=30)
        raise AssertionError("creating an existing topic succeeded")
    except Exception as e:  # KafkaException carrying a KafkaError
        assert e.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS, e
    fresh = NewTopic("never-existing-bad-config", 1, 1, config={"cleanup.policy": "compacted"})
    future = admin.create_topics([fresh], operation_timeout=10)["never-existing-bad-config"]
    try:
        future.result(timeout=30)
        raise AssertionError("an invalid config was accepted")
    except Exception as e:
        assert e.args[0].code() == KafkaError.INVALID_CONFIG, e
        assert "use delete, compact or compact,delete" in str(e), e
