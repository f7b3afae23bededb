"""Reading a topic back completely and checking it against what was acknowledged."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition, OFFSET_BEGINNING

# Leadership settles for a moment after a broker restarts.
SETTLING = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError._UNKNOWN_PARTITION}


def watermarks(consumer: Consumer, topic: str, partition: int, deadline: float) -> tuple[int, int]:
    while True:
        try:
            return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        except KafkaException as e:
            if e.args[0].code() not in SETTLING or time.time() > deadline:
                raise
            time.sleep(0.2)


def read_all(bootstrap: str, topic: str, timeout: float = 60.0) -> dict[int, list[tuple[int, bytes]]]:
    """Every record of every partition, from the log start to the high watermark."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"verify-{topic}", "enable.auto.commit": False})
    try:
        parts = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        deadline = time.time() + timeout
        ends = {p: watermarks(consumer, topic, p, deadline) for p in parts}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        out: dict[int, list[tuple[int, bytes]]] = {p: [] for p in parts}
        remaining = {p for p in parts if ends[p][1] > ends[p][0]}
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


def stored_at(acked: tuple[int, int | None], stored: list[tuple[int, int]]) -> bool:
    """Stored once, where acknowledged. librdkafka acknowledges some records
    without an offset (None): when a request's answer was lost but a later
    request of the same idempotent producer succeeded, it reports the earlier
    records as written without knowing where; they must still be stored once,
    in their partition."""
    partition, offset = acked
    if offset is None:
        return len(stored) == 1 and stored[0][0] == partition
    return stored == [(partition, offset)]


def history_report(acked: dict[bytes, tuple[int, int | None]], log: dict[int, list[tuple[int, bytes]]]) -> dict[str, list]:
    """Checks a history (every acknowledged value with the partition and offset
    it was acknowledged at) against the log as read back. Reports
    acknowledged-but-missing records, values stored more than once, records
    stored at another position than acknowledged, and offset gaps."""
    where: dict[bytes, list[tuple[int, int]]] = {}
    gaps = []
    for p, records in log.items():
        offsets = [o for o, _ in records]
        for before, after in zip(offsets, offsets[1:]):
            if after != before + 1:
                gaps.append((p, before, after))
        for o, v in records:
            where.setdefault(v, []).append((p, o))
    return {
        "missing": [(v, pos) for v, pos in acked.items() if v not in where],
        "duplicates": [(v, pos) for v, pos in where.items() if len(pos) > 1],
        "moved": [(v, pos, where[v]) for v, pos in acked.items() if v in where and not stored_at(pos, where[v])],
        "gaps": gaps,
    }


def check_history(acked: dict[bytes, tuple[int, int | None]], log: dict[int, list[tuple[int, bytes]]]) -> None:
    """Zero of each finding of `history_report`."""
    report = history_report(acked, log)
    counts = {k: len(v) for k, v in report.items()}
    print(f"history: {len(acked)} acknowledged, {sum(len(r) for r in log.values())} stored, findings {counts}")
    assert all(n == 0 for n in counts.values()), {k: v[:3] for k, v in report.items() if v}
