"""Many brokers sharing one cluster: leadership spread and routing, failover
after kill -9, fencing of a paused leader, scale-out and scale-in, rolling
restarts, and clients following leader changes by themselves. Every test ends
with the history checker: zero acknowledged records missing, duplicated,
stored elsewhere than acknowledged, and zero offset gaps."""

from __future__ import annotations

import json
import re
import signal
import socket
import statistics
import subprocess
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition, OFFSET_BEGINNING
from confluent_kafka.admin import AdminClient

from conftest import create_topic
from groups import JavaMember
from harness import CACHE, MultiCluster, http_get
from history import AckLogProducer, first_acks_after
from rawkafka import parse_produce_v3_response, produce_v3, read_frame, record_batch
from verify import check_history, read_all

NOT_LEADER_OR_FOLLOWER = 6
# Failover times measured by the kill tests, printed at the end of the session.
FAILOVER_MS: list[int] = []


@pytest.fixture
def multi(tmp_path, request):
    c = MultiCluster(tmp_path, name=request.node.name[:40])
    try:
        yield c
    finally:
        # Shown by pytest only when the test fails.
        print(c.logs())
        c.close()


def leaders(bootstrap: str, topic: str) -> dict[int, int]:
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return {p.id: p.leader for p in md.topics[topic].partitions.values()}


def brokers(bootstrap: str) -> set[int]:
    return set(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).brokers)


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            if predicate():
                return
        except Exception as e:  # a broker being down is expected here
            last = e
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} (last error: {last})")


def spread(bootstrap: str, topic: str, live: set[int]) -> bool:
    """Every partition led by a live broker, each live broker leading its share."""
    ls = leaders(bootstrap, topic)
    counts = {b: list(ls.values()).count(b) for b in live}
    return set(ls.values()) <= live and max(counts.values()) - min(counts.values()) <= 1


def start_with_topic(multi, topic: str) -> str:
    """Starts every node, creates `topic` with 6 partitions and waits until its
    leaders are spread; returns the bootstrap list."""
    for n in multi.nodes:
        n.start()
    boot = multi.bootstrap()
    create_topic(boot, topic, 6)
    wait_until(lambda: spread(boot, topic, {n.id for n in multi.nodes}), 20, "leaders spread")
    return boot


def test_leaders_spread_and_requests_are_routed(multi):
    for n in multi.nodes:
        n.start()
    boot = multi.bootstrap()
    wait_until(lambda: brokers(boot) == {0, 1, 2}, 20, "three live brokers in Metadata")
    create_topic(boot, "spread", 6)
    wait_until(lambda: spread(boot, "spread", {0, 1, 2}), 20, "two partitions led by each broker")
    ls = leaders(boot, "spread")

    # A produce sent to a broker that does not lead the partition is refused
    # with NOT_LEADER_OR_FOLLOWER, so clients re-route by themselves.
    partition = 0
    other = next(n for n in multi.nodes if n.id != ls[partition])
    with socket.create_connection(("127.0.0.1", other.broker.port), timeout=10) as s:
        s.sendall(produce_v3(1, "spread", {partition: record_batch(b"misrouted")}))
        assert parse_produce_v3_response(read_frame(s)) == {partition: NOT_LEADER_OR_FOLLOWER}

    # Group coordinators are spread too, and every broker names the same one.
    coordinators = set()
    for g in range(12):
        found = set()
        for n in multi.nodes:
            admin = AdminClient({"bootstrap.servers": n.broker.bootstrap})
            desc = admin.describe_consumer_groups([f"g{g}"])[f"g{g}"].result(timeout=10)
            found.add(desc.coordinator.id)
        assert len(found) == 1, f"brokers disagree on the coordinator of g{g}: {found}"
        coordinators |= found
    assert len(coordinators) > 1, "all groups on one coordinator"

    # librdkafka, which routes by the leaders in Metadata, reads and writes all partitions.
    p = Producer({"bootstrap.servers": boot})
    for i in range(60):
        p.produce("spread", value=f"v{i}".encode(), partition=i % 6)
    assert p.flush(30) == 0
    stored = read_all(boot, "spread")
    assert sum(len(r) for r in stored.values()) == 60
    status, body = http_get(multi.nodes[ls[0]].broker.http_port, "/readyz")
    assert status == 200 and "cluster_session" in body, body

    # The ops API of any broker names each partition's leader; offsets come
    # only from the leader itself.
    node = multi.nodes[ls[0]]
    status, body = http_get(node.broker.http_port, "/api/v1/topics/spread")
    assert status == 200, body
    for part in json.loads(body)["partitions"]:
        assert part["leader"] == ls[part["partition"]], part
        if part["leader"] == node.id:
            assert part["high_watermark"] == 10 and part["error"] is None, part
        else:
            assert part["high_watermark"] is None and "does not lead" in part["error"], part


def kill_leader_and_measure(multi, boot: str, topic: str, producers, victim: int) -> int:
    """Once leadership is spread over all brokers, kill -9 one; returns ms from
    its death until every partition it led had acknowledged a produce (sent
    after the death) on its new leader."""
    live = {n.id for n in multi.nodes}
    wait_until(lambda: spread(boot, topic, live), 30, "leaders spread over every broker")
    led = {p for p, l in leaders(boot, topic).items() if l == victim}
    assert led, f"broker {victim} leads nothing"
    node = multi.nodes[victim]
    killed_ms = int(time.time() * 1000)
    node.broker.proc.kill()
    wait_until(lambda: set(first_acks_after(producers, led, killed_ms)) == led, 40,
               f"produces to the partitions of broker {victim} after its death")
    took = max(first_acks_after(producers, led, killed_ms).values()) - killed_ms
    FAILOVER_MS.append(took)
    print(f"failover after kill -9 of broker {victim}: {took} ms ({len(led)} partitions)")
    node.broker.start()
    return took


def test_kill_leaders_under_load(multi):
    """Eight kill -9 of partition leaders while two idempotent Java producers and
    a Java consumer group run, with the default session timeout (6 s)."""
    boot = start_with_topic(multi, "history")
    producers = [AckLogProducer(boot, "history", f"p{i}", rate=250) for i in range(2)]
    members = [JavaMember(boot, "history", "history-readers", "cooperative-sticky") for _ in range(2)]
    for p in producers:
        p.wait_acked(200)
    for k in range(8):
        kill_leader_and_measure(multi, boot, "history", producers, victim=k % 3)
    acked = {}
    for p in producers:
        acked.update(p.stop())
        assert not p.errors(), p.errors()[:5]
    check_history(acked, read_all(boot, "history"))
    # The group kept consuming through every failover: everything acknowledged was read.
    wait_until(lambda: {v.decode() for v in acked} <= {r[2] for m in members for r in m.records()}, 90,
               "the consumer group to read every acknowledged record")
    for m in members:
        m.stop()
    print(f"failover ms over {len(FAILOVER_MS)} kills: median {statistics.median(FAILOVER_MS)}, max {max(FAILOVER_MS)}")


def test_paused_leader_acknowledges_nothing_after_losing_its_session(multi):
    boot = start_with_topic(multi, "paused")
    producers = [AckLogProducer(boot, "paused", "p", rate=300)]
    producers[0].wait_acked(300)
    victim = leaders(boot, "paused")[0]
    others = multi.bootstrap([n.id for n in multi.nodes if n.id != victim])
    led = {p for p, l in leaders(boot, "paused").items() if l == victim}
    multi.nodes[victim].signal(signal.SIGSTOP)
    paused_ms = int(time.time() * 1000)
    wait_until(lambda: not (set(leaders(others, "paused").values()) & {victim}), 30,
               "leadership to move away from the paused broker")
    wait_until(lambda: set(first_acks_after(producers, led, paused_ms)) == led, 30, "produces on the new leaders")
    multi.nodes[victim].signal(signal.SIGCONT)
    # Back, it finds its session gone, acknowledges nothing it still had, and
    # registers again (and is given partitions again).
    wait_until(lambda: victim in leaders(boot, "paused").values(), 30, "the resumed broker leading again")
    time.sleep(2)
    acked = producers[0].stop()
    assert not producers[0].errors(), (f"{producers[0].errors()[:5]}\nclient:\n{producers[0].warnings()}"
                                       f"\nnodes:\n{multi.warnings()}")
    check_history(acked, read_all(boot, "paused"))
    log = multi.nodes[victim].broker.proc.log.read_text()
    assert "session lease ended" in log, "the paused broker did not notice it lost its session"


def test_scale_out_then_in_under_load(multi):
    multi.nodes[0].start()
    boot0 = multi.bootstrap([0])
    create_topic(boot0, "scale", 6)
    wait_until(lambda: set(leaders(boot0, "scale").values()) == {0}, 20, "one broker leading all")
    producer = AckLogProducer(boot0, "scale", "s", rate=300)
    producer.wait_acked(300)
    multi.nodes[1].start()
    multi.nodes[2].start()
    started = time.time()
    wait_until(lambda: spread(boot0, "scale", {0, 1, 2}), 30, "leaders spread over three brokers")
    print(f"scale-out: leaders spread {time.time() - started:.1f} s after two brokers started")
    n = len(producer.acks())
    producer.wait_acked(n + 600)
    for i in (2, 1):
        multi.nodes[i].broker.proc.stop(timeout=30)
        assert multi.nodes[i].broker.proc.popen.returncode == 0, multi.nodes[i].broker.proc.tail()
        wait_until(lambda: i not in leaders(boot0, "scale").values(), 10, f"broker {i} drained")
    assert set(leaders(boot0, "scale").values()) == {0}
    n = len(producer.acks())
    producer.wait_acked(n + 300)
    acked = producer.stop()
    assert not producer.errors(), producer.errors()[:5]
    check_history(acked, read_all(boot0, "scale"))


def test_rolling_restart_loses_and_duplicates_nothing(multi):
    boot = start_with_topic(multi, "rolling")
    producers = [AckLogProducer(boot, "rolling", f"r{i}", rate=250) for i in range(2)]
    member = JavaMember(boot, "rolling", "rolling-readers", "range")
    for p in producers:
        p.wait_acked(200)
    for node in multi.nodes:
        node.broker.proc.stop(timeout=30)
        assert node.broker.proc.popen.returncode == 0, node.broker.proc.tail()
        node.broker.start()
        wait_until(lambda: spread(boot, "rolling", {0, 1, 2}) and node.id in leaders(boot, "rolling").values(),
                   30, f"broker {node.id} back and leading")
    acked = {}
    for p in producers:
        n = len(p.acks())
        p.wait_acked(n + 200)
        acked.update(p.stop())
        assert not p.errors(), p.errors()[:5]
    check_history(acked, read_all(boot, "rolling"))
    wait_until(lambda: {v.decode() for v in acked} <= {r[2] for r in member.records()}, 90,
               "the consumer to read every acknowledged record")
    member.stop()


def test_franz_go_and_librdkafka_follow_a_leader_change(multi):
    for n in multi.nodes:
        n.start()
    boot = multi.bootstrap()
    create_topic(boot, "franz-failover", 6)
    create_topic(boot, "rdkafka-failover", 6)
    wait_until(lambda: spread(boot, "rdkafka-failover", {0, 1, 2}), 20, "leaders spread")

    # franz-go's default producer (idempotent) writes 60,000 records while the
    # leader of partition 0 dies; it then reads everything back exactly once.
    franz = subprocess.Popen(
        [str(CACHE / "bin" / "franz-client"), "default", "-brokers", boot, "-topic", "franz-failover", "-count", "60000"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1.0)
    victim = leaders(boot, "franz-failover")[0]
    multi.nodes[victim].broker.proc.kill()
    out, _ = franz.communicate(timeout=240)
    assert franz.returncode == 0, out[-3000:]
    assert "records=60000" in out, out[-500:]
    multi.nodes[victim].broker.start()
    wait_until(lambda: spread(boot, "rdkafka-failover", {0, 1, 2}), 30, "leaders spread again")

    # librdkafka with idempotence, across a kill -9 of a leader mid-stream.
    acked: dict[bytes, tuple[int, int]] = {}
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)
        else:
            acked[msg.value()] = (msg.partition(), msg.offset())

    producer = Producer({"bootstrap.servers": boot, "enable.idempotence": True, "linger.ms": 5})
    victim = leaders(boot, "rdkafka-failover")[1]
    for i in range(20000):
        if i == 5000:
            multi.nodes[victim].broker.proc.kill()
        while True:
            try:
                producer.produce("rdkafka-failover", value=f"rd-{i}".encode(), key=str(i % 50).encode(),
                                 on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
        if i % 100 == 0:
            time.sleep(0.01)
    assert producer.flush(120) == 0
    assert not errors, errors[:5]
    assert len(acked) == 20000
    check_history(acked, read_all(boot, "rdkafka-failover"))
    consumer = Consumer({"bootstrap.servers": boot, "group.id": "rd-failover", "enable.auto.commit": False})
    consumer.assign([TopicPartition("rdkafka-failover", p, OFFSET_BEGINNING) for p in range(6)])
    seen = set()
    deadline = time.time() + 60
    while len(seen) < 20000 and time.time() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            seen.add(msg.value())
    consumer.close()
    assert len(seen) == 20000


def test_deleting_a_topic_under_load_reaches_every_leader_and_leaves_nothing(multi):
    """Partitions led by other brokers keep being written while node 0
    deletes the topic: when the delete returns, and after any late upload
    could have landed, the bucket holds nothing of it, and a topic re-created
    under the name starts empty."""
    import threading

    boot = start_with_topic(multi, "doomed")
    assert {l for l in leaders(boot, "doomed").values()} != {0}, "every partition on the deleting node"
    stop = threading.Event()

    def produce_until_stopped():
        p = Producer({"bootstrap.servers": boot, "acks": "all", "linger.ms": 2,
                      "message.timeout.ms": 5000, "log_level": 0})
        i = 0
        while not stop.is_set():
            try:
                p.produce("doomed", value=b"old-%d" % i, partition=i % 6)
                i += 1
            except BufferError:
                pass
            p.poll(0.001)
        p.purge()
        p.flush(5)

    writers = [threading.Thread(target=produce_until_stopped) for _ in range(2)]
    for w in writers:
        w.start()
    try:
        if multi.write_path == "segments":
            wait_until(lambda: len(multi.objects("doomed")) > 12, 20, "segments of every partition")
        else:
            wait_until(lambda: len(multi.intake_objects()) > 12, 20, "intake objects of every node")
        admin = AdminClient({"bootstrap.servers": multi.nodes[0].broker.bootstrap})
        admin.delete_topics(["doomed"], operation_timeout=30)["doomed"].result(timeout=60)
        assert multi.objects("doomed") == [], "objects left when the delete returned"
    finally:
        stop.set()
        for w in writers:
            w.join()
    time.sleep(3)  # longer than any upload that was in flight takes to land
    assert multi.objects("doomed") == [], "a late upload survived the delete"
    if multi.write_path == "intake":
        # Intake objects hold only the deleted topic here: the controller's
        # clean-up deletes them once they are 30 s old (every 15 s).
        wait_until(lambda: not multi.intake_objects(), 90, "the deleted topic's intake objects to go")

    create_topic(boot, "doomed", 6)
    wait_until(lambda: spread(boot, "doomed", {n.id for n in multi.nodes}), 20, "leaders spread")
    c = Consumer({"bootstrap.servers": boot, "group.id": "after-delete", "auto.offset.reset": "earliest"})
    try:
        for partition in range(6):
            assert c.get_watermark_offsets(TopicPartition("doomed", partition), timeout=10) == (0, 0)
        c.assign([TopicPartition("doomed", partition, OFFSET_BEGINNING) for partition in range(6)])
        old = [m for m in (c.poll(1.0) for _ in range(3)) if m is not None and m.error() is None]
        assert old == [], f"the re-created topic served {len(old)} records of the deleted one"
    finally:
        c.close()


def test_a_controlled_move_shows_everything_the_old_leader_acknowledged(multi):
    """Scale-out moves partitions away from a live leader that learns of the
    move late (its etcd answers are delayed here, as under load): it goes on
    acknowledging until it does. The new leader must not read the log end
    before the old one has handed over, or what was acknowledged meanwhile
    would be invisible there (OFFSET_OUT_OF_RANGE, a false truncation) until
    its next write."""
    import threading

    from delay_proxy import DelayProxy
    from rawkafka import list_offsets_v1, parse_list_offsets_v1_response

    proxy = DelayProxy(multi.etcd.port)
    try:
        multi.nodes[0].broker.proc.set_arg("--etcd-endpoints", proxy.endpoint)
        multi.nodes[0].start()
        boot0 = multi.bootstrap([0])
        create_topic(boot0, "handover", 4)
        wait_until(lambda: set(leaders(boot0, "handover").values()) == {0}, 20, "broker 0 leading all")
        producer = AckLogProducer(boot0, "handover", "h", rate=400)
        producer.wait_acked(200)

        # Broker 1 samples its high watermarks from the moment it is up:
        # a sample sent after an acknowledgement must include it.
        samples: list[tuple[float, int, int]] = []  # (sent ms, partition, high watermark)
        stop = threading.Event()

        def sample(port: int):
            while not stop.is_set():
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                        s.settimeout(30)
                        n = 0
                        while not stop.is_set():
                            n += 1
                            sent = time.time() * 1000
                            s.sendall(list_offsets_v1(n, "handover", [0, 1, 2, 3]))
                            for p, (err, offset) in parse_list_offsets_v1_response(read_frame(s)).items():
                                if err == 0:
                                    samples.append((sent, p, offset))
                            time.sleep(0.02)
                except OSError:
                    time.sleep(0.05)

        proxy.delay = 0.6
        multi.nodes[1].start()
        sampler = threading.Thread(target=sample, args=(multi.nodes[1].broker.port,), daemon=True)
        sampler.start()
        wait_until(lambda: spread(boot0, "handover", {0, 1}), 40, "leaders spread over two brokers")
        n = len(producer.acks())
        producer.wait_acked(n + 400)
        stop.set()
        sampler.join(timeout=60)
        acked = producer.stop()
        assert not producer.errors(), producer.errors()[:5]
        moved = {p for p, leader in leaders(boot0, "handover").items() if leader == 1}
        assert moved and samples, (moved, len(samples))
        hidden = []
        for _, p, offset, ack_ms, _ in producer.acks():
            if p not in moved:
                continue
            later = [hw for sent, sp, hw in samples if sp == p and sent > ack_ms + 5]
            if later and min(later) <= offset:
                hidden.append((p, offset, min(later)))
        assert not hidden, f"{len(hidden)} acknowledged records were not visible on the new leader, e.g. {hidden[:5]}"
        check_history(acked, read_all(boot0, "handover"))
    finally:
        proxy.close()


def test_sigterm_under_load_loses_nothing_and_fails_no_send(multi):
    """A graceful stop (SIGTERM) of a broker while a producer sends 1 KiB
    records at up to 20 MB/s: the broker exits 0 after handing its partitions
    over, every acknowledged record is stored once where it was acknowledged,
    and the producer reports no failed send (retriable errors are retried by
    the client; anything else would be reported)."""
    boot = start_with_topic(multi, "sigterm")
    producer = AckLogProducer(boot, "sigterm", "g", rate=20_000, value_bytes=1024)
    producer.wait_acked(10_000)
    before, since = len(producer.acks()), time.time()
    time.sleep(2)
    rate = (len(producer.acks()) - before) / (time.time() - since)
    victim = multi.nodes[1].broker.proc
    started = time.time()
    victim.stop(timeout=60)
    took = time.time() - started
    assert victim.popen.returncode == 0, victim.tail()
    stopped = re.sub(r"\x1b\[[0-9;]*m", "", victim.log.read_text(errors="replace"))
    assert "handed_over=true" in stopped and "background tasks stopped" in stopped, victim.tail()
    producer.wait_acked(len(producer.acks()) + 10_000, timeout=120)
    acked = producer.stop()
    assert not producer.errors(), producer.errors()[:5]
    stored = read_all(boot, "sigterm", timeout=240)
    check_history(acked, {p: [(o, v.split(b".", 1)[0]) for o, v in records] for p, records in stored.items()})
    print(f"SIGTERM under load: {rate * 1024 / 1e6:.1f} MB/s acknowledged before the stop, "
          f"the broker stopped in {took:.1f} s, {len(acked)} records acknowledged in all")
