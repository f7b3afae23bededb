"""Send/acknowledgement histories of producers (librdkafka in-process, Java
idempotent producers as processes), for the history checker in verify.py."""

from __future__ import annotations

import subprocess
import threading
import time

from confluent_kafka import Producer

from harness import CACHE, REPO


class AckLogProducer:
    """One AckLogProducer.java process sending PREFIX-n values at a fixed rate;
    every ACK and ERR line is collected as it comes."""

    def __init__(self, bootstrap: str, topic: str, prefix: str, rate: int = 300, version: str = "4.1.1",
                 value_bytes: int = 0):
        self.prefix = prefix
        self.lines: list[list[str]] = []
        self.proc = subprocess.Popen(
            ["java", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp", str(CACHE / "jars" / f"kafka-{version}" / "*"),
             str(REPO / "e2e" / "clients" / "java" / "AckLogProducer.java"), bootstrap, topic, prefix, str(rate),
             str(value_bytes)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.split())

    def acks(self) -> list[tuple[bytes, int, int, int, int]]:
        """(value, partition, offset, ack time, send time) per acknowledged send (times in ms)."""
        return [(l[1].encode(), int(l[2]), int(l[3]), int(l[4]), int(l[5])) for l in list(self.lines) if l[0] == "ACK"]

    def errors(self) -> list[list[str]]:
        return [l for l in list(self.lines) if l[0] == "ERR"]

    def warnings(self, count: int = 8) -> str:
        """The client's last warnings (why it retried), for failure messages."""
        lines = [l.strip() for l in "".join(self.stderr).splitlines() if " WARN " in l or "Exception" in l]
        return "\n".join(l[-400:] for l in lines[-count:])

    def wait_acked(self, count: int, timeout: float = 60.0) -> None:
        deadline = time.time() + timeout
        while len(self.acks()) < count:
            assert self.proc.poll() is None, f"producer {self.prefix} exited: {''.join(self.stderr)[-3000:]}"
            assert time.time() < deadline, f"producer {self.prefix}: only {len(self.acks())} of {count} acknowledged"
            time.sleep(0.1)

    def stop(self, timeout: float = 150.0) -> dict[bytes, tuple[int, int]]:
        """Stops sending, waits for every answer; returns value -> (partition, offset)."""
        self.proc.stdin.write("stop\n")
        self.proc.stdin.flush()
        self.proc.wait(timeout)
        done = [l for l in self.lines if l[0] == "DONE"]
        assert done, f"producer {self.prefix} did not finish: {''.join(self.stderr)[-3000:]}"
        sent, acked, failed = (int(x) for x in done[0][1:])
        assert acked + failed == sent, f"{self.prefix}: {sent} sent, {acked} acked, {failed} failed"
        return {v: (p, o) for v, p, o, _, _ in self.acks()}


def first_acks_after(producers: list[AckLogProducer], partitions: set[int], since_ms: int) -> dict[int, int]:
    """Per partition, the earliest acknowledgement time of a record sent after
    `since_ms` (so necessarily written by whoever leads after that moment)."""
    out: dict[int, int] = {}
    for producer in producers:
        for _, p, _, acked, sent in producer.acks():
            if p in partitions and sent > since_ms:
                out[p] = min(out.get(p, acked), acked)
    return out


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
