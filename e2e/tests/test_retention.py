"""retention.bytes moves the log start at once, wherever the old data is:
ListOffsets earliest and consumers reading from the beginning follow. On the
segment path whole old segments are deleted once older than the merge age
(1 s here); on the intake path the parts are counted before compaction, and
compaction then leaves no intake object behind and the log start never
moves back."""

import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition, OFFSET_BEGINNING

from conftest import create_topic, running
from harness import Cluster

ARGS = ["--retention-check-interval-ms", "300", "--merge-min-age-ms", "1000", "--session-timeout-ms", "2000"]


@pytest.fixture(scope="module", params=["segments", "intake"])
def cluster(tmp_path_factory, request):
    args = ARGS + ["--write-path", request.param]
    if request.param == "intake":
        args += ["--intake-compaction-delay-ms", "3000"]
    with running(Cluster(tmp_path_factory.mktemp("retention"), "retention", broker_args=args)) as c:
        yield c


def low_watermark_after_retention(cluster, topic: str, consumer: Consumer) -> int:
    deadline = time.time() + 30
    while consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[0] == 0:
        assert time.time() < deadline, "retention never advanced the log start"
        time.sleep(0.2)
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    assert 0 < low < high == 10
    return low


def first_offset_from_the_beginning(consumer: Consumer, topic: str) -> int:
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    deadline = time.time() + 30
    while time.time() < deadline:
        first = consumer.poll(1.0)
        if first is not None and first.error() is None:
            return first.offset()
    raise AssertionError("nothing could be read from the beginning")


def test_retention_bytes_drops_old_data(cluster):
    topic = "short"
    create_topic(cluster.bootstrap, topic, 1, config={"retention.bytes": "800"})
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "log_level": 2})
    for i in range(10):
        producer.produce(topic, value=f"{i}".encode() * 200, partition=0)
        producer.flush(10)  # one batch, so one segment or intake part, each time
    segments = lambda: sorted(p.name for p in cluster.objects(topic) if p.name.endswith(".kfs"))
    if cluster.write_path == "segments":
        assert len(segments()) >= 5

    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "r", "enable.auto.commit": False})
    try:
        low = low_watermark_after_retention(cluster, topic, consumer)
        deadline = time.time() + 30
        if cluster.write_path == "segments":
            # A pass may have run before the last batches came in; the next
            # one moves the log start on, never back.
            while segments()[0] != f"segment-{low:020d}.kfs":
                assert time.time() < deadline, f"objects below the log start {low} stayed: {segments()}"
                time.sleep(0.2)
                moved = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[0]
                assert moved >= low, f"the log start moved back from {low} to {moved}"
                low = moved
        # A last pass may still move the log start on (never back).
        assert first_offset_from_the_beginning(consumer, topic) >= low
        if cluster.write_path == "intake":
            # Compaction still moves the data into segments and the intake
            # objects go (clean-up waits until they are 30 s old); what it
            # moved below the log start stays hidden.
            deadline = time.time() + 90
            while cluster.intake_objects() or not segments():
                assert time.time() < deadline, "compaction left intake objects behind"
                time.sleep(0.2)
            # Retention now counts segments, so the log start may move on,
            # never back.
            consumer.unassign()
            now_low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
            assert low <= now_low < high == 10
            assert first_offset_from_the_beginning(consumer, topic) == now_low
    finally:
        consumer.close()
