"""kill -9 of broker and flusher at random moments while a producer sends with
acks=all: every acknowledged record is read back exactly once at its offset."""

import random
import threading
import time

from confluent_kafka import Producer

from conftest import create_topic
from verify import check_history, read_all

KILLS = 6


class BackgroundProducer(threading.Thread):
    """Sends unique values as fast as acks allow; remembers where each was acked.
    Without idempotence it does not retry, so a value is never sent twice and
    any second copy in the log would be the broker's fault. With idempotence it
    retries, and the broker must recognise every retried batch."""

    def __init__(self, bootstrap: str, topic: str, idempotent: bool = False):
        super().__init__(daemon=True)
        self.topic = topic
        config = {
            "bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 2, "message.timeout.ms": 30000,
            "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 500, "log_level": 2,
        }
        config.update({"enable.idempotence": True} if idempotent else {"enable.idempotence": False, "retries": 0})
        self.producer = Producer({**config, "error_cb": self.on_error})
        self.fatal = None
        self.acked: dict[bytes, tuple[int, int]] = {}
        self.failed = 0
        self.stopping = threading.Event()

    def on_error(self, err):
        if err.fatal():
            self.fatal = str(err)

    def on_delivery(self, err, msg):
        if err is None:
            self.acked[msg.value()] = (msg.partition(), msg.offset())
        else:
            self.failed += 1

    def run(self):
        i = 0
        while not self.stopping.is_set():
            try:
                self.producer.produce(self.topic, value=f"v{i:08d}".encode(), key=str(i % 97).encode(),
                                      on_delivery=self.on_delivery)
                i += 1
            except BufferError:
                pass
            self.producer.poll(0.001 if i % 50 == 0 else 0)
        self.producer.flush(30)


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
