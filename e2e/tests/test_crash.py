"""kill -9 of broker and flusher at random moments while a producer sends with
acks=all: every acknowledged record is read back exactly once at its offset."""

import random
import time

from conftest import create_topic
from history import BackgroundProducer
from verify import check_history, read_all

KILLS = 6


def test_acknowledged_records_survive_kill_9(cluster):
    topic = "crash"
    create_topic(cluster.bootstrap, topic, 3)
    producer = BackgroundProducer(cluster.bootstrap, topic)
    producer.start()
    rng = random.Random(7)
    try:
        for n in range(KILLS):
            time.sleep(rng.uniform(0.5, 2.0))
            victims = rng.choice([("broker",), ("flusher",), ("broker", "flusher")])
            if "broker" in victims:
                cluster.broker.proc.kill()
            if "flusher" in victims:
                cluster.flusher.proc.kill()
                cluster.flusher.start()
            if "broker" in victims:
                cluster.broker.start()
        time.sleep(2.0)
    finally:
        producer.stopping.set()
        producer.join(60)
    assert len(producer.acked) > 1000, f"too little acknowledged to prove anything ({len(producer.acked)})"
    log = read_all(cluster.bootstrap, topic)
    check_history(producer.acked, log)
    print(f"acked={len(producer.acked)} failed={producer.failed} stored={sum(len(v) for v in log.values())}")
