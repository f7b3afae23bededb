"""Consumer groups with real clients against broker + flusher + etcd + MinIO:
members join and leave while a producer runs; every record is consumed, no
partition is owned twice at once, committed offsets match what was processed."""

import subprocess
import threading
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from conftest import create_topic
from groups import JavaMember, check_no_double_ownership
from harness import CACHE, Cluster

PARTITIONS = 6


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("groups"), "groups", broker_args=["--group-initial-rebalance-delay-ms", "300"])
    yield c
    c.close()


class SteadyProducer(threading.Thread):
    def __init__(self, bootstrap, topic, rate=500):
        super().__init__(daemon=True)
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "log_level": 2})
        self.topic, self.rate = topic, rate
        self.sent = 0
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            for _ in range(self.rate // 10):
                self.producer.produce(self.topic, key=str(self.sent).encode(), value=f"v{self.sent}".encode())
                self.sent += 1
            self.producer.poll(0)
            time.sleep(0.1)
        assert self.producer.flush(30) == 0


def log_end(bootstrap, topic):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe"})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(PARTITIONS)}
    finally:
        c.close()


def committed(bootstrap, group, topic):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        return {tp.partition: tp.offset for tp in c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)}
    finally:
        c.close()


def assert_committed_at_log_end(bootstrap, group, topic, partitions):
    """Every partition holding records has its log end committed."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        committed = {tp.partition: tp.offset for tp in c.committed([TopicPartition(topic, q) for q in range(partitions)], timeout=10)}
        highs = {q: c.get_watermark_offsets(TopicPartition(topic, q), timeout=10)[1] for q in range(partitions)}
    finally:
        c.close()
    assert sum(highs.values()) == 4000
    assert {q: committed[q] for q, h in highs.items() if h > 0} == {q: h for q, h in highs.items() if h > 0}


@pytest.mark.parametrize("assignor", ["range", "cooperative-sticky"])
def test_java_members_join_and_leave_one_at_a_time(cluster, assignor):
    topic, group = f"g-{assignor}", f"group-{assignor}"
    create_topic(cluster.bootstrap, topic, PARTITIONS)
    producer = SteadyProducer(cluster.bootstrap, topic)
    producer.start()
    members = []
    try:
        for _ in range(3):
            m = JavaMember(cluster.bootstrap, topic, group, assignor)
            members.append(m)
            m.wait_for(m.assigned, what="a partition assignment")
            time.sleep(3)
        for m in members[:2]:
            m.stop()
            time.sleep(3)
        producer.stopping.set()
        producer.join(60)
        ends = log_end(cluster.bootstrap, topic)
        last = members[2]
        last.wait_for(lambda: {p: max([o for q, o, _ in last.records() if q == p], default=-1) + 1 for p in ends} == ends,
                      what="the last member to reach the log end")
        last.stop()
    finally:
        producer.stopping.set()
        for m in members:
            if m.proc.poll() is None:
                m.kill()

    consumed = {}
    for m in members:
        for p, o, v in m.records():
            consumed.setdefault((p, o), set()).add(v)
    expected = {(p, o) for p, end in ends.items() for o in range(end)}
    assert sum(ends.values()) == producer.sent
    assert expected <= consumed.keys(), f"{len(expected - consumed.keys())} records never consumed"
    check_no_double_ownership(members)
    assert committed(cluster.bootstrap, group, topic) == ends, "committed offsets differ from what was processed"


def test_group_resumes_from_committed_offsets_after_broker_restart(cluster):
    topic, group = "g-restart", "group-restart"
    create_topic(cluster.bootstrap, topic, PARTITIONS)
    producer = SteadyProducer(cluster.bootstrap, topic)
    producer.start()
    member = JavaMember(cluster.bootstrap, topic, group, "range")
    try:
        member.wait_for(lambda: len(member.records()) > 500, what="records before the restart")
        cluster.restart_broker_and_flusher(kill=True)
        before = len(member.records())
        member.wait_for(lambda: len(member.records()) > before + 500, what="records after the restart")
        producer.stopping.set()
        producer.join(60)
        ends = log_end(cluster.bootstrap, topic)
        member.wait_for(lambda: {p: max([o for q, o, _ in member.records() if q == p], default=-1) + 1 for p in ends} == ends,
                        what="the log end")
        member.stop()
    finally:
        producer.stopping.set()
        if member.proc.poll() is None:
            member.kill()
    # Nothing below an offset this member had committed was read again.
    committed_so_far = {}
    for e in member.events:
        if e[0] == "COMMIT":
            for item in e[1].split(","):
                p, o = item.split(":")
                committed_so_far[int(p)] = max(committed_so_far.get(int(p), 0), int(o))
        elif e[0] == "REC":
            p, o = int(e[1]), int(e[2])
            assert o >= committed_so_far.get(p, 0), f"re-read committed offset {p}/{o}"
    assert committed(cluster.bootstrap, group, topic) == ends


def test_librdkafka_group_consumers(cluster):
    topic, group = "g-librdkafka", "group-librdkafka"
    create_topic(cluster.bootstrap, topic, 4)
    p = Producer({"bootstrap.servers": cluster.bootstrap, "log_level": 2})
    for i in range(4000):
        p.produce(topic, key=str(i).encode(), value=str(i).encode())
    assert p.flush(30) == 0
    seen, lock = [], threading.Lock()

    def consume():
        c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                      "enable.auto.commit": False, "session.timeout.ms": 10000, "log_level": 2})
        c.subscribe([topic])
        idle_since = time.time()
        while time.time() - idle_since < 6:
            msg = c.poll(0.5)
            if msg is None or msg.error():
                continue
            idle_since = time.time()
            with lock:
                seen.append((msg.partition(), msg.offset()))
            c.commit(msg, asynchronous=False)
        c.close()

    threads = [threading.Thread(target=consume) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(set(seen)) == 4000
    assert_committed_at_log_end(cluster.bootstrap, group, topic, 4)


def test_franz_go_group_consumers(cluster):
    topic, group = "g-franz", "group-franz"
    create_topic(cluster.bootstrap, topic, 4)
    p = Producer({"bootstrap.servers": cluster.bootstrap, "log_level": 2})
    for i in range(4000):
        p.produce(topic, value=str(i).encode())
    assert p.flush(30) == 0
    procs = [subprocess.Popen([str(CACHE / "bin" / "franz-client"), "group", "-brokers", cluster.bootstrap,
                               "-topic", topic, "-group", group], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [proc.communicate(timeout=120) for proc in procs]
    for proc, (out, err) in zip(procs, outs):
        assert proc.returncode == 0, err[-2000:]
    values = [line.split()[3] for out, _ in outs for line in out.splitlines() if line.startswith("REC")]
    assert sorted(set(values), key=int) == [str(i) for i in range(4000)]
    assert_committed_at_log_end(cluster.bootstrap, group, topic, 4)


def test_consumer_group_command(cluster):
    tool = lambda *a: subprocess.run(
        ["java", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp", str(CACHE / "jars" / "kafka-4.1.1" / "*"),
         "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand", "--bootstrap-server", cluster.bootstrap, *a],
        capture_output=True, text=True, timeout=120)
    out = tool("--list")
    assert out.returncode == 0 and "group-range" in out.stdout.split()

    out = tool("--describe", "--group", "group-range")
    assert out.returncode == 0, out.stderr
    rows = [l.split() for l in out.stdout.splitlines() if l.startswith("group-range ")]
    assert len(rows) == PARTITIONS
    for row in rows:  # GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG ...
        assert row[3] == row[4] and row[5] == "0", row

    out = tool("--reset-offsets", "--group", "group-range", "--topic", "g-range", "--to-earliest", "--execute")
    assert out.returncode == 0, out.stderr
    assert all(l.split()[3] == "0" for l in out.stdout.splitlines() if l.startswith("group-range "))
    rows = [l.split() for l in tool("--describe", "--group", "group-range").stdout.splitlines() if l.startswith("group-range ")]
    assert all(row[3] == "0" and row[5] == row[4] for row in rows), "lag is the whole log after the reset"

    out = tool("--delete", "--group", "group-range")
    assert out.returncode == 0 and "Deletion of requested consumer groups ('group-range') was successful." in out.stdout
    assert "group-range" not in tool("--list").stdout.split()


def test_committed_offsets_expire_once_the_retention_passes(tmp_path):
    """Kafka's offsets.retention.minutes (1 here): a consumer group that
    emptied and a group that only stored offsets lose their offsets, and
    disappear, a minute after they emptied or committed; a group whose
    consumer keeps running keeps its offsets."""
    from conftest import running

    args = ["--offsets-retention-minutes", "1", "--offsets-retention-check-interval-ms", "1000",
            "--group-initial-rebalance-delay-ms", "300"]
    with running(Cluster(tmp_path, name="offsets-expiry", broker_args=args)) as cluster:
        topic = "expiring"
        create_topic(cluster.bootstrap, topic, 1)
        p = Producer({"bootstrap.servers": cluster.bootstrap, "log_level": 2})
        for i in range(10):
            p.produce(topic, value=b"%d" % i)
        assert p.flush(30) == 0

        def member(group):
            c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                          "enable.auto.commit": False, "log_level": 2})
            c.subscribe([topic])
            got = 0
            deadline = time.time() + 60
            while got < 10:
                assert time.time() < deadline, f"{group} consumed {got} of 10"
                m = c.poll(1)
                if m is not None and not m.error():
                    got += 1
            c.commit(asynchronous=False)
            return c

        member("emptied").close()
        standalone = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "offsets-only", "log_level": 2})
        standalone.commit(offsets=[TopicPartition(topic, 0, 4)], asynchronous=False)
        standalone.close()
        emptied_at = time.monotonic()
        running_member = member("running")
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})

        def groups():
            return {g.group_id for g in admin.list_consumer_groups().result(timeout=10).valid}

        try:
            assert groups() == {"emptied", "offsets-only", "running"}
            while groups() != {"running"}:
                running_member.poll(0.5)
                assert time.monotonic() - emptied_at < 100, f"still listed: {groups()}"
            took = time.monotonic() - emptied_at
            assert took > 50, f"offsets expired {took:.0f} s after the group emptied; the retention is 60 s"
            assert committed(cluster.bootstrap, "emptied", topic)[0] < 0
            assert committed(cluster.bootstrap, "offsets-only", topic)[0] < 0
            assert committed(cluster.bootstrap, "running", topic)[0] == 10
        finally:
            running_member.close()
