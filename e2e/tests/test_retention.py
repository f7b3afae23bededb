"""retention.bytes deletes whole old segments from object storage and moves the
log start: ListOffsets earliest and consumers reading from the beginning follow
at once; the objects go once they are older than the merge age (1 s here)."""

import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition, OFFSET_BEGINNING

from conftest import create_topic
from harness import Cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("retention"), "retention", broker_args=["--retention-check-interval-ms", "300", "--merge-min-age-ms", "1000", "--session-timeout-ms", "2000"])
    yield c
    c.close()


def test_retention_bytes_drops_old_segments(cluster):
    create_topic(cluster.bootstrap, "short", 1, config={"retention.bytes": "800"})
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "log_level": 2})
    for i in range(10):
        producer.produce("short", value=f"{i}".encode() * 200, partition=0)
        producer.flush(10)  # one batch, so one segment, each time
    segments = lambda: sorted(p.name for p in cluster.objects("short") if p.name.endswith(".kfs"))
    assert len(segments()) >= 5

    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "r", "enable.auto.commit": False})
    try:
        deadline = time.time() + 30
        while consumer.get_watermark_offsets(TopicPartition("short", 0), timeout=10)[0] == 0:
            assert time.time() < deadline, "retention never advanced the log start"
            time.sleep(0.2)
        low, high = consumer.get_watermark_offsets(TopicPartition("short", 0), timeout=10)
        assert 0 < low < high == 10
        while segments()[0] != f"segment-{low:020d}.kfs":
            assert time.time() < deadline, f"objects below the log start {low} stayed: {segments()}"
            time.sleep(0.2)
        # Reading from the beginning starts at the new log start.
        consumer.assign([TopicPartition("short", 0, OFFSET_BEGINNING)])
        first = None
        while first is None:
            first = consumer.poll(1.0)
        assert first.offset() == low
    finally:
        consumer.close()
