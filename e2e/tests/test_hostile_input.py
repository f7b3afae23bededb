"""Hostile and malformed input against a real broker, one class at a time:
hostile lengths in every request kind, valid-CRC batches with broken
contents, decompression bombs, repeated fetch partitions, connection floods,
idle and half-sent connections, clients that never read.

After each case a separate healthy client (127.0.0.1; the hostile ones come
from 127.0.0.2) produces with acks=all and reads everything back, every
record acknowledged before is still at its offset, and the broker's RSS
stays under the bound of the budgets configured here."""

import os
import random
import socket
import struct
import threading
import time
import zlib

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from conftest import create_topic, running
from harness import Cluster, scrape
from rawkafka import (closed_by_peer, fetch_v4, frame, parse_fetch_v4_response, parse_produce_v3_response,
                      produce_v3, raw_batch, read_frame, record, record_batch)

MiB = 1024 * 1024
INVALID_RECORD = 87
MESSAGE_TOO_LARGE = 10
CORRUPT_MESSAGE = 2

# Budgets of the broker under test; RSS must stay below their sum plus a
# constant for code, runtime, metadata and allocator slack (a debug build).
LIMITS = {
    "--memory-budget-bytes": 32 * MiB,
    "--max-pending-bytes": 8 * MiB,
    "--max-request-bytes": 8 * MiB,
    "--queued-max-request-bytes": 24 * MiB,
    "--fetch-memory-bytes": 24 * MiB,
    "--fetch-max-bytes": 4 * MiB,
    "--max-uncompressed-batch-bytes": 2 * MiB,
    "--group-memory-bytes": 16 * MiB,
    "--max-idempotent-producers": 5000,
}
RSS_CONSTANT = 160 * MiB
RSS_BOUND = LIMITS["--memory-budget-bytes"] + LIMITS["--queued-max-request-bytes"] + \
    LIMITS["--fetch-memory-bytes"] + 3 * LIMITS["--max-pending-bytes"] + LIMITS["--group-memory-bytes"] + \
    200 * LIMITS["--max-idempotent-producers"] + RSS_CONSTANT
PER_IP = 40
STALL_S = 2
IDLE_S = 3
HOSTILE_SOURCE = "127.0.0.2"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    args = [str(x) for kv in LIMITS.items() for x in kv]
    args += ["--max-connections-per-ip", str(PER_IP), "--stall-timeout-ms", str(STALL_S * 1000),
             "--connections-max-idle-ms", str(IDLE_S * 1000)]
    with running(Cluster(tmp_path_factory.mktemp("hostile"), name="hostile", broker_args=args)) as c:
        create_topic(c.bootstrap, "healthy", 1)
        create_topic(c.bootstrap, "target", 2)
        yield c


class Ledger:
    """Every record the healthy client got acknowledged, by offset."""

    def __init__(self):
        self.acked: dict[int, bytes] = {}


@pytest.fixture(scope="module")
def ledger():
    return Ledger()


def rss(cluster) -> int:
    with open(f"/proc/{cluster.broker.proc.popen.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def assert_healthy(cluster, ledger: Ledger, n: int = 50) -> None:
    """The broker lives, a fresh client produces with acks=all and reads back,
    and every earlier acknowledged record is still at its offset."""
    assert cluster.broker.proc.alive(), cluster.broker.proc.tail()
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "linger.ms": 2,
                         "message.timeout.ms": 30000})
    errors = []
    stamp = f"{time.time_ns()}"

    def delivered(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            ledger.acked[msg.offset()] = msg.value()

    for i in range(n):
        producer.produce("healthy", value=f"{stamp}-{i}".encode(), partition=0, on_delivery=delivered)
    assert producer.flush(30) == 0
    assert errors == []
    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": f"check-{stamp}",
                         "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition("healthy", 0, 0)])
        seen = {}
        end = max(ledger.acked) + 1
        deadline = time.time() + 30
        while len(seen) < end and time.time() < deadline:
            for m in consumer.consume(500, 1.0):
                if m.error() is None:
                    seen[m.offset()] = m.value()
        for offset, value in ledger.acked.items():
            assert seen.get(offset) == value, f"offset {offset}: {seen.get(offset)!r} != {value!r}"
    finally:
        consumer.close()
    used = rss(cluster)
    assert used < RSS_BOUND, f"broker RSS {used / MiB:.0f} MiB over the bound {RSS_BOUND / MiB:.0f} MiB"
    print(f"broker RSS {used / MiB:.1f} MiB (bound {RSS_BOUND / MiB:.0f} MiB)")


def hostile_connection(cluster, timeout: float = 5.0) -> socket.socket:
    host, port = cluster.bootstrap.split(":")
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((HOSTILE_SOURCE, 0))
    s.connect((host, int(port)))
    return s


def send_then_probe(cluster, payload: bytes) -> str:
    """Sends `payload`, then an ApiVersions request on the same connection:
    the connection is either closed or still answers ('closed'/'answered')."""
    with hostile_connection(cluster, timeout=10) as s:
        try:
            s.sendall(payload + frame(18, 0, 0x5EED, b""))
            while True:
                reply = read_frame(s)
                if struct.unpack_from(">i", reply)[0] == 0x5EED:
                    return "answered"
        except (ConnectionError, BrokenPipeError):
            return "closed"


def send_and_expect_close(cluster, payload: bytes) -> None:
    with hostile_connection(cluster) as s:
        try:
            s.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            return
        assert closed_by_peer(s), f"not closed after {payload[:32]!r}"


def test_the_reported_metadata_frame(cluster, ledger):
    assert_healthy(cluster, ledger)
    send_and_expect_close(cluster, b"\x00\x00\x00\x13\x00\x03\x00\x01\x00\x00\x00\x01\x00\x05probe\x7f\xff\xff\xff")
    assert_healthy(cluster, ledger)


HUGE_I32 = struct.pack(">i", 0x7FFFFFFF)
HUGE_VARINT = b"\xff\xff\xff\xff\x0f"


@pytest.mark.parametrize("api_key,version,flexible", [
    (0, 3, False), (0, 9, True),   # Produce
    (1, 4, False), (1, 12, True),  # Fetch
    (2, 1, False), (2, 6, True),   # ListOffsets
    (3, 1, False), (3, 9, True),   # Metadata
    (19, 2, False), (19, 5, True),  # CreateTopics
    (8, 2, False), (8, 8, True),   # OffsetCommit
    (11, 0, False), (11, 6, True),  # JoinGroup
])
def test_hostile_lengths_in_request_bodies(cluster, ledger, api_key, version, flexible):
    """A huge array, string or bytes length at each early position of the body."""
    outcomes = {"closed": 0, "answered": 0}
    for at in range(0, 24, 2):
        for huge in (HUGE_I32, HUGE_VARINT, struct.pack(">h", 0x7FFF)):
            body = b"\x00" * at + huge * 3 + b"\x00" * 8
            if flexible:
                # Flexible headers carry a tagged-field count after the client id.
                payload = struct.pack(">hhi", api_key, version, at) + struct.pack(">h", 5) + b"probe" + b"\x00" + body
                outcomes[send_then_probe(cluster, struct.pack(">i", len(payload)) + payload)] += 1
            else:
                outcomes[send_then_probe(cluster, frame(api_key, version, at, body))] += 1
    # Where a huge value lands on a length the frame is refused; elsewhere it
    # is just a large number (a timeout, an id) and gets an answer.
    assert outcomes["closed"] > 0, outcomes
    assert_healthy(cluster, ledger)


def test_random_bytes_after_valid_headers(cluster, ledger):
    rng = random.Random(13)
    served = [(0, 3), (0, 11), (1, 4), (1, 16), (2, 8), (3, 0), (3, 12), (8, 9), (9, 9), (10, 5),
              (11, 9), (12, 4), (14, 5), (15, 5), (16, 5), (19, 7), (20, 6), (32, 4), (37, 3), (42, 2)]
    for i in range(400):
        api_key, version = served[i % len(served)]
        body = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 200)))
        with hostile_connection(cluster) as s:
            s.sendall(frame(api_key, version, i, body))
            # An answer (the bytes happened to decode), a close, or a long poll:
            # the broker's survival is what counts, checked below.
            s.settimeout(0.2)
            try:
                s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                pass
    assert_healthy(cluster, ledger)


def valid_records(n: int) -> bytes:
    return b"".join(record(f"v{i}".encode(), i) for i in range(n))


def broken_batches() -> dict[str, bytes]:
    two = valid_records(2)
    return {
        "half a record": raw_batch(two[: len(two) - 4], 2, 1),
        "random record bytes": raw_batch(bytes(random.Random(5).getrandbits(8) for _ in range(40)), 2, 1),
        "codec 5": raw_batch(two, 2, 1, attributes=5),
        "codec 6": raw_batch(two, 2, 1, attributes=6),
        "codec 7": raw_batch(two, 2, 1, attributes=7),
        "recordsCount 2^31-1": raw_batch(two, 0x7FFFFFFF, 0x7FFFFFFE),
        "recordsCount 0 with one record": raw_batch(valid_records(1), 0, 0),
        "lastOffsetDelta 2^31-1": raw_batch(two, 2, 0x7FFFFFFF),
        "negative offset delta": raw_batch(record(b"a", 0) + record(b"b", -1), 2, 1),
        "offset deltas out of order": raw_batch(record(b"a", 1) + record(b"b", 0), 2, 1),
        "bytes after the last record": raw_batch(two + b"\x00\x00\x00", 2, 1),
        "negative header count": raw_batch(record(b"a", 0)[:-1] + b"\x01", 1, 0),
        "sequence without producer epoch": raw_batch(two, 2, 1, producer_id=7, base_sequence=-1),
        "gzip garbage": raw_batch(b"\x1f\x8b" + os.urandom(30), 2, 1, attributes=1),
    }


def high_watermark(cluster, topic: str, partition: int) -> int:
    c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "hw"})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]
    finally:
        c.close()


@pytest.mark.parametrize("name", list(broken_batches()))
def test_valid_crc_broken_batches_are_refused_and_not_stored(cluster, ledger, name):
    before = high_watermark(cluster, "target", 1)
    with hostile_connection(cluster) as s:
        s.sendall(produce_v3(1, "target", {0: record_batch(b"fine"), 1: broken_batches()[name]}))
        errors = parse_produce_v3_response(read_frame(s))
    assert errors[0] == 0, "the other partition of the request must succeed"
    assert errors[1] == INVALID_RECORD, f"{name}: {errors}"
    assert high_watermark(cluster, "target", 1) == before, "nothing of a refused batch is stored"
    # A consumer of the partition is not stuck on anything.
    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": f"read-{time.time_ns()}",
                         "auto.offset.reset": "earliest"})
    try:
        consumer.assign([TopicPartition("target", 0, 0)])
        got = [m for m in consumer.consume(1000, 5.0) if m.error() is None]
        assert got and all(m.value() == b"fine" for m in got)
    finally:
        consumer.close()
    assert_healthy(cluster, ledger, n=10)


def test_decompression_bomb_is_refused(cluster, ledger):
    limit = LIMITS["--max-uncompressed-batch-bytes"]
    records = b"".join(record(b"\x00" * (limit // 4), i) for i in range(8))  # 2x the limit
    bomb = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip framing
    compressed = bomb.compress(records) + bomb.flush()
    assert len(compressed) < 64 * 1024
    with hostile_connection(cluster) as s:
        s.sendall(produce_v3(2, "target", {1: raw_batch(compressed, 8, 7, attributes=1)}))
        assert parse_produce_v3_response(read_frame(s)) == {1: MESSAGE_TOO_LARGE}
    # Under the limit the same codec is accepted.
    small = zlib.compressobj(9, zlib.DEFLATED, 31)
    ok = small.compress(valid_records(3)) + small.flush()
    with hostile_connection(cluster) as s:
        s.sendall(produce_v3(3, "target", {1: raw_batch(ok, 3, 2, attributes=1)}))
        assert parse_produce_v3_response(read_frame(s)) == {1: 0}
    assert_healthy(cluster, ledger)


def fill(cluster, topic: str, mib: int) -> None:
    p = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "linger.ms": 20,
                  "batch.size": 512 * 1024})
    value = os.urandom(64 * 1024)
    for _ in range(mib * 16):
        p.produce(topic, value=value, partition=0)
        p.poll(0)
    assert p.flush(60) == 0


def test_a_partition_named_many_times_is_served_once(cluster, ledger):
    create_topic(cluster.bootstrap, "bulk", 1)
    fill(cluster, "bulk", 16)
    with hostile_connection(cluster, timeout=30) as s:
        s.sendall(fetch_v4(5, "bulk", [0] * 16, max_bytes=0x7FFFFFFF, partition_max_bytes=0x7FFFFFFF))
        parts = parse_fetch_v4_response(read_frame(s))
    assert [p for p, _, _ in parts] == [0]
    total = sum(size for _, _, size in parts)
    # Capped by --fetch-max-bytes (the first batch may exceed it, as in Kafka).
    assert 0 < total <= LIMITS["--fetch-max-bytes"] + MiB
    assert_healthy(cluster, ledger)


def test_clients_that_never_read(cluster, ledger):
    """Fetches sent in a loop on connections that never read: the broker keeps
    each to its share, closes them once their responses stall, and stays
    within its memory bound throughout."""
    create_topic(cluster.bootstrap, "bulk", 1, exist_ok=True)
    fill(cluster, "bulk", 8)
    socks = []
    peak = 0
    for c in range(8):
        s = hostile_connection(cluster)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setblocking(False)
        socks.append(s)
    deadline = time.time() + STALL_S + 6
    i = 0
    while time.time() < deadline:
        for s in socks:
            try:
                s.send(fetch_v4(i, "bulk", [0], max_bytes=64 * MiB, partition_max_bytes=64 * MiB))
            except (BlockingIOError, BrokenPipeError, ConnectionResetError, OSError):
                pass
            i += 1
        peak = max(peak, rss(cluster))
        time.sleep(0.05)
    for s in socks:
        s.close()
    print(f"never-reading clients: peak broker RSS {peak / MiB:.1f} MiB")
    assert peak < RSS_BOUND
    metrics = scrape(cluster.broker.http_port)
    assert metrics.get('kafscale_broker_fetch_reserved_bytes', 0) <= LIMITS["--fetch-memory-bytes"]
    assert_healthy(cluster, ledger)


def test_tail_budget_holds_across_partitions(cluster, ledger):
    """Twice the in-memory budget written over eight partitions: the tail
    evicts the coldest data of any partition, and everything stays readable
    (from object storage where it left memory)."""
    create_topic(cluster.bootstrap, "spread", 8)
    p = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "linger.ms": 5})
    value = os.urandom(32 * 1024)
    total = 2 * LIMITS["--memory-budget-bytes"]
    count = total // len(value)
    for i in range(count):
        p.produce("spread", value=value, partition=i % 8)
        p.poll(0)
    assert p.flush(60) == 0
    metrics = scrape(cluster.broker.http_port)
    assert metrics["kafscale_broker_memory_log_bytes"] <= LIMITS["--memory-budget-bytes"]
    c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "spread-check",
                  "auto.offset.reset": "earliest", "fetch.max.bytes": 4 * MiB})
    try:
        c.subscribe(["spread"])
        got, deadline = 0, time.time() + 60
        while got < count and time.time() < deadline:
            got += sum(1 for m in c.consume(500, 1.0) if m.error() is None)
        assert got == count
    finally:
        c.close()
    assert_healthy(cluster, ledger, n=10)


def test_members_that_never_rejoin_are_forgotten(cluster, ledger):
    """JoinGroup with an empty member id, many times, never coming back: the
    handed-out ids expire after the session timeout."""
    from confluent_kafka.admin import AdminClient
    group = "never-rejoins"
    body = struct.pack(">h", len(group)) + group.encode() + struct.pack(">iih", 6000, 6000, 0) + \
        struct.pack(">h", 8) + b"consumer" + struct.pack(">i", 1) + struct.pack(">h", 5) + b"range" + \
        struct.pack(">i", 0)
    with hostile_connection(cluster) as s:
        # FindCoordinator first is not needed: a single broker coordinates all.
        for i in range(200):
            s.sendall(frame(11, 4, i, body))
            reply = read_frame(s)
            (error,) = struct.unpack_from(">h", reply, 8)
            assert error == 79  # MEMBER_ID_REQUIRED
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    described = admin.describe_consumer_groups([group])[group].result(timeout=10)
    assert len(described.members) == 0
    assert_healthy(cluster, ledger, n=10)


def join_group_v4(correlation_id: int, group: str, member_id: str, metadata: bytes) -> bytes:
    body = struct.pack(">h", len(group)) + group.encode() + struct.pack(">ii", 30000, 30000) + \
        struct.pack(">h", len(member_id)) + member_id.encode() + struct.pack(">h", 8) + b"consumer" + \
        struct.pack(">i", 1) + struct.pack(">h", 5) + b"range" + struct.pack(">i", len(metadata)) + metadata
    return frame(11, 4, correlation_id, body)


def join_group_v4_answer(reply: bytes) -> tuple[int, str]:
    """(error code, member id) of a JoinGroup v4 response."""
    (error,) = struct.unpack_from(">h", reply, 8)
    pos = 14
    for _ in range(2):  # protocol name, leader
        (n,) = struct.unpack_from(">h", reply, pos)
        pos += 2 + max(n, 0)
    (n,) = struct.unpack_from(">h", reply, pos)
    return error, reply[pos + 2:pos + 2 + n].decode()


def test_hostile_groups_and_producers_stay_within_the_bound(cluster, ledger):
    """Issue 27's hostile mixes at once: groups whose members carry 600 KiB
    of metadata each (more than --group-memory-bytes holds in all), and
    thousands of one-shot idempotent producers (more than
    --max-idempotent-producers). Past each limit the broker refuses
    retriably (COORDINATOR_NOT_AVAILABLE, KAFKA_STORAGE_ERROR); its RSS
    stays under the bound of its budgets (printed), and the healthy client
    notices nothing."""
    COORDINATOR_NOT_AVAILABLE, KAFKA_STORAGE_ERROR = 15, 56
    metadata = os.urandom(600 * 1024)
    members, join_codes = [], {}
    peak = rss(cluster)
    for g in range(30):  # fewer connections than --max-connections-per-ip
        s = hostile_connection(cluster, timeout=60)
        s.sendall(join_group_v4(1, f"heavy-{g}", "", metadata))
        error, member = join_group_v4_answer(read_frame(s))
        if error == 79:  # MEMBER_ID_REQUIRED: join with the id, answered after the rebalance
            s.sendall(join_group_v4(2, f"heavy-{g}", member, metadata))
            members.append(s)
        else:
            join_codes[error] = join_codes.get(error, 0) + 1
            s.close()
        peak = max(peak, rss(cluster))
    for s in members:
        error, _ = join_group_v4_answer(read_frame(s))
        join_codes[error] = join_codes.get(error, 0) + 1
        peak = max(peak, rss(cluster))
    produce_codes = {}
    producers = 8000
    with hostile_connection(cluster, timeout=60) as s:
        for first in range(0, producers, 200):
            for i in range(first, first + 200):
                batch = raw_batch(record(b"once", 0), 1, 0, producer_id=10**12 + i, base_sequence=0)
                s.sendall(produce_v3(i, "target", {i % 2: batch}))
            for _ in range(200):
                for code in parse_produce_v3_response(read_frame(s)).values():
                    produce_codes[code] = produce_codes.get(code, 0) + 1
            peak = max(peak, rss(cluster))
    metrics = scrape(cluster.broker.http_port)
    print(f"hostile groups: JoinGroup answers {join_codes}; group memory "
          f"{metrics.get('kafscale_broker_group_memory_bytes', 0) / MiB:.1f} MiB; "
          f"one-shot producers: {produce_codes}, {metrics.get('kafscale_broker_idempotent_producers', 0):.0f} "
          f"remembered; peak broker RSS {peak / MiB:.1f} MiB (bound {RSS_BOUND / MiB:.0f} MiB)")
    assert join_codes.get(COORDINATOR_NOT_AVAILABLE, 0) > 0, join_codes
    assert set(join_codes) <= {0, COORDINATOR_NOT_AVAILABLE}, join_codes
    assert produce_codes.get(KAFKA_STORAGE_ERROR, 0) >= producers - LIMITS["--max-idempotent-producers"]
    assert set(produce_codes) <= {0, KAFKA_STORAGE_ERROR}, produce_codes
    assert peak < RSS_BOUND
    for s in members:
        s.close()
    assert_healthy(cluster, ledger, n=10)


def test_connection_flood_from_one_address(cluster, ledger):
    host, port = cluster.bootstrap.split(":")
    held, refused = [], 0
    for _ in range(PER_IP + 20):
        s = hostile_connection(cluster)
        held.append(s)
    for s in held[PER_IP:]:
        if closed_by_peer(s, timeout=2):
            refused += 1
    assert refused == 20
    # The healthy client from another address connects and works meanwhile.
    assert_healthy(cluster, ledger, n=10)
    for s in held:
        s.close()
    metrics = scrape(cluster.broker.http_port)
    assert metrics.get('kafscale_broker_connections_refused_total{reason="max_connections_per_ip"}', 0) >= 20


def test_idle_and_half_sent_connections_are_closed(cluster, ledger):
    started = time.time()
    with hostile_connection(cluster, timeout=IDLE_S + 5) as idle, \
            hostile_connection(cluster, timeout=IDLE_S + 5) as half:
        half.sendall(struct.pack(">i", 1000) + b"\x00\x03\x00\x01")
        assert closed_by_peer(half, timeout=STALL_S + 3)
        assert STALL_S - 0.5 <= time.time() - started
        assert closed_by_peer(idle, timeout=IDLE_S + 3)
        assert IDLE_S - 0.5 <= time.time() - started
    # Many half-sent frames at once, each claiming the largest request: as
    # many as the request pool holds are read (and closed once they stall),
    # the others wait for room without being read; small requests of the
    # healthy client get through meanwhile.
    claimants = PER_IP - 5
    socks = []
    for _ in range(claimants):
        s = hostile_connection(cluster)
        s.sendall(struct.pack(">i", LIMITS["--max-request-bytes"]) + b"\x00\x00")
        socks.append(s)
    assert_healthy(cluster, ledger, n=10)
    at_once = LIMITS["--queued-max-request-bytes"] // LIMITS["--max-request-bytes"]
    deadline = time.time() + (claimants // at_once + 2) * STALL_S + 10
    for s in socks:
        assert closed_by_peer(s, timeout=max(deadline - time.time(), 0.1))
        s.close()
    assert_healthy(cluster, ledger, n=10)


def test_healthy_producer_keeps_going_during_every_attack(cluster, ledger):
    """All of the above at once against a producer that never stops."""
    stop = threading.Event()
    errors, acked = [], [0]
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "linger.ms": 1})

    def delivered(err, _msg):
        if err is None:
            acked[0] += 1
        else:
            errors.append(str(err))

    def produce():
        while not stop.is_set():
            producer.produce("healthy", value=b"through it all", partition=0, on_delivery=delivered)
            producer.poll(0.005)
        producer.flush(30)

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    try:
        test_the_reported_metadata_frame(cluster, ledger)
        for name, batch in broken_batches().items():
            with hostile_connection(cluster) as s:
                s.sendall(produce_v3(9, "target", {1: batch}))
                assert parse_produce_v3_response(read_frame(s)) == {1: INVALID_RECORD}, name
        test_random_bytes_after_valid_headers(cluster, ledger)
    finally:
        stop.set()
        t.join(60)
    assert errors == [], errors[:5]
    assert acked[0] > 100
