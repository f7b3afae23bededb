"""The consumer side of the fault campaign: members of one consumer group that
commit offsets as they read (librdkafka, in threads of the campaign), and a
monitor that samples the group's committed offsets."""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import Consumer, KafkaException, TopicPartition


def client_logger(path) -> logging.Logger:
    """librdkafka's own log lines go to a file of the run, not the terminal:
    under faults they are many and expected."""
    log = logging.getLogger(f"faults-clients-{path}")
    if not log.handlers:
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    return log


class GroupMember(threading.Thread):
    """Subscribes to the topic in `group`, auto-commits what it has read every
    half second, and remembers what it read at which position."""

    def __init__(self, bootstrap: str, topic: str, group: str, name: str, logger: logging.Logger):
        super().__init__(daemon=True, name=name)
        self.topic = topic
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.seen: dict[tuple[int, int], bytes] = {}  # (partition, offset) -> value
        self.deliveries = 0
        # Positions whose value differed between two reads (a record changed
        # under a reader): found as they happen, checked again at the end.
        self.changed: list[tuple[int, int, bytes, bytes]] = []
        # Commits the coordinator acknowledged: (monotonic time, partition, offset).
        self.acked_commits: list[tuple[float, int, int]] = []
        self.commit_errors = 0
        self.errors: list[str] = []
        # Evidence for a failed check, in wall-clock ms: ("assign"|"revoke",
        # ms, partitions), ("commit", ms, partition, offset) acknowledged by the
        # coordinator, ("resume", ms, partition, offset) the first record read
        # of a partition after it was assigned.
        self.events: list[tuple] = []
        self.resumed: set[int] = set()
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": group, "client.id": name,
            "enable.auto.commit": True, "auto.commit.interval.ms": 500,
            "auto.offset.reset": "earliest", "session.timeout.ms": 10000, "heartbeat.interval.ms": 1000,
            "reconnect.backoff.ms": 100, "reconnect.backoff.max.ms": 1000,
            "on_commit": self._on_commit, "error_cb": lambda e: self.errors.append(str(e)),
            "logger": logger,
        })

    def _on_commit(self, err, partitions) -> None:
        now = time.monotonic()
        ms = int(time.time() * 1000)
        if err is not None:
            self.commit_errors += 1
            return
        with self.lock:
            for tp in partitions:
                if tp.error is None and tp.offset >= 0 and tp.topic == self.topic:
                    self.acked_commits.append((now, tp.partition, tp.offset))
                    self.events.append(("commit", ms, tp.partition, tp.offset))

    def _on_assign(self, consumer, partitions) -> None:
        with self.lock:
            self.events.append(("assign", int(time.time() * 1000), [tp.partition for tp in partitions]))
            self.resumed -= {tp.partition for tp in partitions}

    def _on_revoke(self, consumer, partitions) -> None:
        with self.lock:
            self.events.append(("revoke", int(time.time() * 1000), [tp.partition for tp in partitions]))

    def run(self) -> None:
        self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_revoke)
        try:
            while not self.stopping.is_set():
                msg = self.consumer.poll(0.5)
                if msg is None or msg.error() is not None:
                    continue
                key = (msg.partition(), msg.offset())
                with self.lock:
                    self.deliveries += 1
                    before = self.seen.get(key)
                    if before is not None and before != msg.value():
                        self.changed.append((*key, before, msg.value()))
                    self.seen[key] = msg.value()
                    if key[0] not in self.resumed:
                        self.resumed.add(key[0])
                        self.events.append(("resume", int(time.time() * 1000), *key))
        finally:
            # Closing commits the last position and leaves the group.
            try:
                self.consumer.close()
            except KafkaException as e:
                self.errors.append(f"close: {e}")

    def values(self) -> set[bytes]:
        with self.lock:
            return set(self.seen.values())

    def stop(self) -> None:
        self.stopping.set()
        self.join(60)


class CommitMonitor(threading.Thread):
    """Samples the group's committed offsets (OffsetFetch to the group's
    coordinator, through a consumer that has the group's id but never joins
    it) every `interval` seconds. A committed offset of a partition must
    never go below one seen before.

    (librdkafka's admin ListConsumerGroupOffsets crashed the process under
    coordinator failovers in this setup, hence a consumer's `committed()`.)"""

    def __init__(self, bootstrap: str, topic: str, group: str, partitions: int, logger: logging.Logger,
                 interval: float = 0.5):
        super().__init__(daemon=True, name="commit-monitor")
        self.topic = topic
        self.partitions = partitions
        self.interval = interval
        self.stopping = threading.Event()
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                                  "reconnect.backoff.ms": 100, "reconnect.backoff.max.ms": 1000, "logger": logger})
        self.samples = 0  # answers with at least one committed offset
        self.offsets_checked = 0  # partition offsets compared with what came before
        self.failed = 0  # requests that failed (coordinator down or moving)
        self.highest: dict[int, int] = {}
        self.last: dict[int, int] = {}  # the latest answer's offsets
        # (wall-clock ms, partition, highest seen before, offset now)
        self.backwards: list[tuple[int, int, int, int]] = []
        self.vanished: list[tuple[int, int, int]] = []  # (ms, partition, highest seen before): no offset any more
        self.history: list[tuple[int, dict[int, int]]] = []  # every answer: (ms, partition -> offset)

    def sample(self) -> None:
        wanted = [TopicPartition(self.topic, p) for p in range(self.partitions)]
        try:
            answer = self.consumer.committed(wanted, timeout=5)
        except Exception:
            self.failed += 1
            return
        finally:
            self.consumer.poll(0)  # serves librdkafka's queued log lines
        now = int(time.time() * 1000)
        seen = {tp.partition: tp.offset for tp in answer if tp.error is None}
        self.history.append((now, seen))
        for p, before in self.highest.items():
            # A partition answered with an error says nothing; one answered
            # without an offset after it had one lost its commit.
            if p in seen and seen[p] < 0:
                self.vanished.append((now, p, before))
        got = False
        for p, offset in seen.items():
            if offset < 0:
                continue
            got = True
            self.offsets_checked += 1
            before = self.highest.get(p, -1)
            if offset < before:
                self.backwards.append((now, p, before, offset))
            else:
                self.highest[p] = offset
        if got:
            self.samples += 1
            self.last = {p: o for p, o in seen.items() if o >= 0}

    def run(self) -> None:
        while not self.stopping.is_set():
            self.sample()
            self.stopping.wait(self.interval)

    def stop(self) -> None:
        self.stopping.set()
        self.join(30)
        self.consumer.close()
