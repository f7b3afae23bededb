"""Reading a topic back completely and checking it against what was acknowledged."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING


def read_all(bootstrap: str, topic: str, timeout: float = 60.0) -> dict[int, list[tuple[int, bytes]]]:
    """Every record of every partition, from the log start to the high watermark."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"verify-{topic}", "enable.auto.commit": False})
    try:
        parts = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in parts}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        out: dict[int, list[tuple[int, bytes]]] = {p: [] for p in parts}
        remaining = {p for p in parts if ends[p][1] > ends[p][0]}
        deadline = time.time() + timeout
        while remaining:
            assert time.time() < deadline, f"timed out reading {topic}; partitions left {remaining}"
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            out[msg.partition()].append((msg.offset(), msg.value()))
            if msg.offset() + 1 >= ends[msg.partition()][1]:
                remaining.discard(msg.partition())
        return out
    finally:
        consumer.close()


def check_history(acked: dict[bytes, tuple[int, int]], log: dict[int, list[tuple[int, bytes]]]) -> None:
    """Zero acknowledged-but-missing records, zero duplicates, zero records at two
    offsets, zero offset gaps."""
    where: dict[bytes, list[tuple[int, int]]] = {}
    for p, records in log.items():
        offsets = [o for o, _ in records]
        if offsets:
            assert offsets == list(range(offsets[0], offsets[0] + len(offsets))), f"offset gap in partition {p}"
        for o, v in records:
            where.setdefault(v, []).append((p, o))
    dupes = {v: pos for v, pos in where.items() if len(pos) > 1}
    assert not dupes, f"{len(dupes)} values stored more than once, e.g. {list(dupes.items())[:3]}"
    missing = {v: pos for v, pos in acked.items() if where.get(v) != [pos]}
    assert not missing, (
        f"{len(missing)} acknowledged records missing or moved, e.g. "
        f"{[(v, pos, where.get(v)) for v, pos in list(missing.items())[:3]]}"
    )
