"""The intake write path (--write-path intake) against MinIO and etcd: the
flusher puts the batches of all partitions from one window into one object,
every acknowledged record is read back exactly once at its offset (from
memory, cold from intake objects after kill -9, and from the segments that
compaction writes), and intake objects are deleted once compacted."""

import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer

import test_leadership as leadership
from conftest import create_topic, running
from harness import Cluster, MultiCluster, scrape
from history import BackgroundProducer
from verify import check_history, read_all, watermarks

# Compact parts two seconds after upload; maintenance starts once a leader
# has led for a session timeout.
INTAKE_ARGS = ["--write-path", "intake", "--intake-compaction-delay-ms", "2000",
               "--session-timeout-ms", "2000"]
PARTITIONS = 12


@pytest.fixture(scope="module")
def intake(tmp_path_factory):
    with running(Cluster(tmp_path_factory.mktemp("intake"), name="intake", broker_args=INTAKE_ARGS)) as c:
        yield c


def segments(cluster: Cluster, topic: str) -> int:
    return sum(1 for p in cluster.objects(topic) if p.name.endswith(".kfs"))


def produce_for(bootstrap: str, topic: str, seconds: float) -> BackgroundProducer:
    producer = BackgroundProducer(bootstrap, topic)
    producer.start()
    time.sleep(seconds)
    producer.stopping.set()
    producer.join(60)
    assert producer.fatal is None, producer.fatal
    assert len(producer.acked) > 2000, f"too little acknowledged to prove anything ({len(producer.acked)})"
    return producer


def assert_kept_once_and_cleaned_up(cluster: Cluster, producer: BackgroundProducer, topic: str) -> None:
    """Every acknowledged record once at its offset, the intake objects all
    deleted in the end, and the same again read cold after a restart."""
    assert producer.fatal is None, producer.fatal
    assert len(producer.acked) > 1000, len(producer.acked)
    check_history(producer.acked, read_all(cluster.bootstrap, topic))
    deadline = time.time() + 90
    while time.time() < deadline and cluster.intake_objects():
        time.sleep(0.5)
    assert not cluster.intake_objects(), "intake objects left after compaction"
    cluster.restart_broker_and_flusher()
    check_history(producer.acked, read_all(cluster.bootstrap, topic))


def test_one_object_per_window_holds_every_partition_and_nothing_is_lost(intake):
    topic = "intake-all"
    create_topic(intake.bootstrap, topic, PARTITIONS)
    producer = produce_for(intake.bootstrap, topic, 4)
    flusher = scrape(intake.flusher.http_port)
    broker = scrape(intake.broker.http_port)
    objects = flusher.get("kafscale_flusher_intake_objects_written_total", 0)
    parts = broker.get("kafscale_broker_flush_size_bytes_count", 0)
    puts = flusher.get('kafscale_flusher_s3_requests_total{op="put"}', 0)
    print(f"{len(producer.acked)} acknowledged; {parts:.0f} partition uploads in {objects:.0f} intake objects, "
          f"{puts:.0f} PUTs in all")
    assert objects > 0
    assert parts >= 4 * objects, f"{parts} partition uploads took {objects} objects: not shared"
    check_history(producer.acked, read_all(intake.bootstrap, topic))

    # Cold, before compaction: a new broker and flusher read the intake objects.
    intake.restart_broker_and_flusher()
    check_history(producer.acked, read_all(intake.bootstrap, topic))


def test_compaction_moves_everything_into_segments_and_deletes_the_intake_objects(intake):
    topic = "intake-compacted"
    create_topic(intake.bootstrap, topic, 3)
    producer = produce_for(intake.bootstrap, topic, 3)
    deadline = time.time() + 90
    while time.time() < deadline:
        compacted = scrape(intake.flusher.http_port).get("kafscale_flusher_compacted_intake_parts_total", 0)
        if segments(intake, topic) >= 3 and compacted > 0 and not intake.intake_objects():
            break
        time.sleep(0.5)
    left = intake.intake_objects()
    print(f"segments {segments(intake, topic)}, intake objects left {len(left)}")
    assert segments(intake, topic) >= 3, "no partition was compacted"
    assert not left, f"{len(left)} intake objects were never deleted"
    check_history(producer.acked, read_all(intake.bootstrap, topic))
    intake.restart_broker_and_flusher()
    check_history(producer.acked, read_all(intake.bootstrap, topic))


def test_leaders_killed_under_load_keep_every_acknowledged_record(tmp_path: Path):
    with running(MultiCluster(tmp_path, name="intake-multi", nodes=3, broker_args=INTAKE_ARGS)) as c:
        for n in c.nodes:
            n.start()
        boot = c.bootstrap()
        topic = "intake-failover"
        create_topic(boot, topic, 6)
        # Idempotent: a batch whose answer was lost in a move is sent again,
        # and the new leader must recognise it from the intake parts.
        producer = BackgroundProducer(boot, topic, idempotent=True)
        producer.start()
        try:
            for victim in (1, 2):
                time.sleep(2.5)
                node = c.nodes[victim]
                node.broker.proc.kill()
                node.flusher.proc.kill()
                time.sleep(3)
                node.flusher.start()
                node.broker.start()
            time.sleep(2)
        finally:
            producer.stopping.set()
            producer.join(90)
        assert producer.fatal is None, producer.fatal
        assert len(producer.acked) > 1000, len(producer.acked)
        check_history(producer.acked, read_all(boot, topic))


@pytest.fixture
def multi_intake(tmp_path, request):
    """Three nodes on the intake path with the default session timeout, for
    the leadership suite's scenarios."""
    c = MultiCluster(tmp_path, name=request.node.name[:40],
                     broker_args=["--write-path", "intake", "--intake-compaction-delay-ms", "2000"])
    try:
        yield c
    finally:
        print(c.logs())
        c.close()


# The leadership suite's hardest scenarios, on the intake path: there a
# stored part is acknowledged only after the leadership check, and a new
# leader's generation overrides what an old one lands late.

def test_a_paused_leader_acknowledges_no_intake_part_after_losing_its_session(multi_intake):
    leadership.test_paused_leader_acknowledges_nothing_after_losing_its_session(multi_intake)


def test_a_controlled_move_shows_every_intake_part_the_old_leader_acknowledged(multi_intake):
    leadership.test_a_controlled_move_shows_everything_the_old_leader_acknowledged(multi_intake)


def test_a_rolling_restart_on_the_intake_path_loses_and_duplicates_nothing(multi_intake):
    leadership.test_rolling_restart_loses_and_duplicates_nothing(multi_intake)


def test_flusher_kills_during_uploads_and_compaction_keep_every_record_once(intake):
    """kill -9 of the flusher at random moments while parts are uploaded and
    compacted (here 2 s after upload): interrupted uploads are
    retried by the producers, interrupted compaction steps are redone, and
    every acknowledged record stays readable exactly once at its offset."""
    import random

    topic = "intake-kills"
    create_topic(intake.bootstrap, topic, 4)
    producer = BackgroundProducer(intake.bootstrap, topic, idempotent=True)
    producer.start()
    rng = random.Random(7)
    try:
        for _ in range(6):
            time.sleep(rng.uniform(1.0, 2.5))
            intake.flusher.proc.kill()
            intake.flusher.start()
        time.sleep(1.0)
    finally:
        producer.stopping.set()
        producer.join(90)
    assert_kept_once_and_cleaned_up(intake, producer, topic)


# Every step of an upload and of compaction where a process can die, as the
# fault-injecting store (flusher) and the crash points (broker) name them;
# `@n` is the n-th arrival, so some parts landed before.
CRASH_STEPS = [
    ("flusher", "put:intake:before@5"),     # an intake object never stored
    ("flusher", "put:intake:after@5"),      # stored, never answered
    ("broker", "broker:upload:stored@5"),   # answered, leadership never checked
    ("flusher", "put:segment:after"),       # compacted segment without its index
    ("flusher", "put:index:after"),         # segment and index, step never answered
    ("broker", "broker:compaction:stepped"),  # compacted, point never recorded
    ("flusher", "delete:intake:partial"),   # clean-up deleted one object of several
]


def test_kill_9_at_every_step_of_upload_and_compaction_keeps_every_record_once(tmp_path: Path):
    """Each process is restarted with one crash point armed, dies exactly
    there (SIGKILL from itself), and is restarted unarmed while an
    idempotent producer keeps writing: every acknowledged record is read
    exactly once at its offset, and compaction and clean-up still finish."""
    with running(Cluster(tmp_path, name="intake-steps", broker_args=INTAKE_ARGS)) as c:
        topic = "intake-steps"
        create_topic(c.bootstrap, topic, 4)
        producer = BackgroundProducer(c.bootstrap, topic, idempotent=True)
        producer.start()
        try:
            for who, step in CRASH_STEPS:
                proc = c.flusher.proc if who == "flusher" else c.broker.proc
                starter = c.flusher.start if who == "flusher" else c.broker.start
                proc.stop()
                proc.env["KAFSCALE_CRASH_AT"] = step
                starter()
                deadline = time.time() + 90
                while proc.alive() and time.time() < deadline:
                    time.sleep(0.1)
                assert not proc.alive(), f"{who} never reached crash point {step}"
                assert f"crash point {step.split('@')[0]} reached" in proc.tail(200), proc.tail(20)
                del proc.env["KAFSCALE_CRASH_AT"]
                starter()
                time.sleep(1.0)
        finally:
            producer.stopping.set()
            producer.join(90)
        assert_kept_once_and_cleaned_up(c, producer, topic)


def test_a_flusher_starting_cold_reads_summaries_not_one_directory_per_object(tmp_path: Path):
    """A topic that gets one record at a time leaves one small intake object
    per record until compaction; a restarted flusher learns them from the
    directory summaries, with a few GETs instead of one per object."""
    args = ["--write-path", "intake", "--intake-compaction-delay-ms", "600000"]
    with running(Cluster(tmp_path, name="intake-summaries", broker_args=args,
                         flusher_args=["--flush-preset", "latency"])) as c:
        topic = "one-at-a-time"
        create_topic(c.bootstrap, topic, 1)
        producer = Producer({"bootstrap.servers": c.bootstrap, "acks": "all", "linger.ms": 0})
        acked: dict[bytes, tuple[int, int]] = {}

        def on_delivery(err, msg):
            assert err is None, err
            acked[msg.value()] = (msg.partition(), msg.offset())

        records = 600
        for i in range(records):
            producer.produce(topic, f"r{i}".encode(), on_delivery=on_delivery)
            producer.flush(10)  # one at a time: each its own intake object
        assert len(acked) == records
        written = scrape(c.flusher.http_port)
        objects = written.get("kafscale_flusher_intake_objects_written_total", 0)
        assert objects >= records, f"{objects:.0f} objects for {records} records sent one at a time"
        deadline = time.time() + 10
        while scrape(c.flusher.http_port).get("kafscale_flusher_intake_summaries_written_total", 0) < 2:
            assert time.time() < deadline, "no directory summary was stored"
            time.sleep(0.2)

        c.restart_broker_and_flusher()
        # The high watermark needs the partition recovered, which lists the
        # intake objects; nothing is read yet.
        consumer = Consumer({"bootstrap.servers": c.bootstrap, "group.id": "summaries"})
        try:
            consumer.list_topics(topic, timeout=10)
            _, high = watermarks(consumer, topic, 0, time.time() + 30)
        finally:
            consumer.close()
        assert high == records
        gets = scrape(c.flusher.http_port).get('kafscale_flusher_s3_requests_total{op="get"}', 0)
        print(f"{objects:.0f} intake objects listed cold with {gets:.0f} GETs")
        # Two summaries cover 512 objects, the other 88 are read one by one,
        # and the producer-state rebuild reads the newest 128 parts: about
        # 220 GETs, against 730 if every directory cost its own.
        assert gets < objects / 2, f"{gets:.0f} GETs for {objects:.0f} objects: the summaries were not used"
        check_history(acked, read_all(c.bootstrap, topic))
