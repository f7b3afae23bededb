#!/usr/bin/env python3
"""A Jepsen-style fault campaign against a local Kafscale cluster.

Three (flusher, broker) nodes, etcd and MinIO run as real processes on
loopback ports (e2e/tests/harness.py). Two idempotent Java producers log
every acknowledgement; a consumer group of two members reads and commits;
a monitor samples the group's committed offsets. Meanwhile faults are
injected one at a time at random moments (seeded), each held for a random
while and then healed. At the end a checker proves, from what was
acknowledged and what the log holds, that nothing acknowledged was lost,
moved or duplicated, that nothing appears twice, that readers never saw a
record the final log disagrees with, and that committed offsets never went
backwards. See docs/fault-campaign.md.

    python3 e2e/faults/campaign.py --minutes 4 --faults 16 --seed 7
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV_PYTHON = Path(os.environ.get("KAFSCALE_CACHE", Path.home() / ".cache" / "kafscale")) / "venv" / "bin" / "python"

if __name__ == "__main__":
    # Run by a python3 without the client library: start again in the test venv.
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        if VENV_PYTHON.exists() and Path(sys.executable) != VENV_PYTHON:
            os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), __file__, *sys.argv[1:]])
        raise

sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

import argparse  # noqa: E402
import collections  # noqa: E402
import faulthandler  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Callable  # noqa: E402

from confluent_kafka.admin import AdminClient  # noqa: E402

from conftest import create_topic  # noqa: E402
from fault_proxies import S3FaultProxy, TcpFaultProxy  # noqa: E402
from harness import MultiCluster  # noqa: E402
from history import AckLogProducer  # noqa: E402
from verify import history_report  # noqa: E402
from workload import CommitMonitor, GroupMember, client_logger  # noqa: E402

TOPIC = "campaign"
GROUP = "campaign-readers"
PARTITIONS = 6


class Rig:
    """The cluster with a fault proxy on each of a node's links: its broker's
    etcd connection, its Kafka port (brokers advertise the proxy's port, so
    every client goes through it) and its flusher's S3 endpoint."""

    def __init__(self, workdir: Path, session_timeout_ms: int, write_path: str | None, seed: int):
        self.workdir = workdir
        self.session_timeout = session_timeout_ms / 1000
        args = ["--session-timeout-ms", str(session_timeout_ms)]
        if write_path:
            args += ["--write-path", write_path]
        self.cluster = MultiCluster(workdir, name="faults", nodes=3, broker_args=args)
        self.nodes = self.cluster.nodes
        self.etcd_proxies: list[TcpFaultProxy] = []
        self.kafka_proxies: list[TcpFaultProxy] = []
        self.s3_proxies: list[S3FaultProxy] = []
        try:
            for node in self.nodes:
                etcd = TcpFaultProxy(self.cluster.etcd.port, f"etcd-{node.id}")
                kafka = TcpFaultProxy(node.broker.port, f"kafka-{node.id}")
                s3 = S3FaultProxy(self.cluster.minio.port, f"s3-{node.id}", seed=seed * 10 + node.id)
                self.etcd_proxies.append(etcd)
                self.kafka_proxies.append(kafka)
                self.s3_proxies.append(s3)
                node.broker.proc.set_arg("--etcd-endpoints", etcd.endpoint)
                node.broker.proc.argv += ["--advertised-host", "127.0.0.1", "--advertised-port", str(kafka.port)]
                node.flusher.proc.set_arg("--endpoint", s3.endpoint)
            for node in self.nodes:
                node.start()
        except BaseException:
            self.close()
            raise

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{p.port}" for p in self.kafka_proxies)

    def proxies(self, node_id: int | None = None) -> list:
        chosen = range(len(self.nodes)) if node_id is None else [node_id]
        return [px for i in chosen for px in (self.etcd_proxies[i], self.kafka_proxies[i], self.s3_proxies[i])]

    def processes(self) -> list[tuple[str, object, Callable[[], object]]]:
        """(name, Proc, start) of every process a fault may stop."""
        out = [("etcd", self.cluster.etcd.proc, self.cluster.etcd.start),
               ("minio", self.cluster.minio.proc, self.cluster.minio.start)]
        for n in self.nodes:
            out.append((f"flusher {n.id}", n.flusher.proc, n.flusher.start))
            out.append((f"broker {n.id}", n.broker.proc, lambda n=n: start_broker(n)))
        return out

    def heal_everything(self) -> None:
        for px in self.proxies():
            px.heal()
        for n in self.nodes:
            if n.broker.proc.alive():
                n.signal(signal.SIGCONT)
        for _, proc, start in self.processes():
            if not proc.alive():
                start()

    def close(self) -> None:
        for px in self.proxies():
            px.heal()
            px.close()
        self.cluster.close()


def start_broker(node) -> None:
    """Restarts a broker; a restart can lose a port race or meet etcd still
    coming back, so it is tried a few times."""
    for attempt in range(3):
        try:
            node.broker.start()
            return
        except (RuntimeError, TimeoutError):
            if attempt == 2:
                raise
            node.broker.proc.kill()
            time.sleep(2)


def start_flusher(node) -> None:
    for attempt in range(3):
        try:
            node.flusher.start()
            return
        except (RuntimeError, TimeoutError):
            if attempt == 2:
                raise
            node.flusher.proc.kill()
            time.sleep(2)


# ---- fault kinds: each injects and returns (what it did, how to heal it) ----

Fault = tuple[str, Callable[[], None]]


def kill_broker(rig: Rig, rng: random.Random) -> Fault:
    node = rng.choice(rig.nodes)
    node.broker.proc.kill()
    return f"node {node.id}", lambda: start_broker(node)


def kill_flusher(rig: Rig, rng: random.Random) -> Fault:
    node = rng.choice(rig.nodes)
    node.flusher.proc.kill()
    return f"node {node.id}", lambda: start_flusher(node)


def kill_node(rig: Rig, rng: random.Random) -> Fault:
    node = rng.choice(rig.nodes)
    first = rng.choice(["broker", "flusher"])
    for which in (first, "flusher" if first == "broker" else "broker"):
        getattr(node, which).proc.kill()

    def heal():
        start_flusher(node)
        start_broker(node)
    return f"node {node.id} ({first} first)", heal


def pause_broker(rig: Rig, rng: random.Random) -> Fault:
    node = rng.choice(rig.nodes)
    node.signal(signal.SIGSTOP)
    return f"node {node.id}", lambda: node.signal(signal.SIGCONT)


def s3_slow_puts(rig: Rig, rng: random.Random) -> Fault:
    # Tens of seconds, but under the upload grace (half of --merge-min-age-ms,
    # 30 s by default): the design assumes no PUT lands later than that after
    # its deadline, and a PUT held here still lands when the delay is over.
    delay = round(rng.uniform(10, 25), 1)
    for px in rig.s3_proxies:
        px.set(delays={"PUT": delay})
    return f"every PUT held {delay} s", lambda: [px.set(delays={}) for px in rig.s3_proxies]


def s3_errors(rig: Rig, rng: random.Random) -> Fault:
    rate = rng.choice([0.5, 0.9, 1.0])
    for px in rig.s3_proxies:
        px.set(error_rate=rate)
    return f"{int(rate * 100)}% of requests answered 503", lambda: [px.set(error_rate=0.0) for px in rig.s3_proxies]


def s3_outage(rig: Rig, rng: random.Random) -> Fault:
    if rng.random() < 0.5:
        for px in rig.s3_proxies:
            px.set(refusing=True)
        return "every connection refused", lambda: [px.set(refusing=False) for px in rig.s3_proxies]
    rig.cluster.minio.proc.kill()
    return "MinIO killed", rig.cluster.minio.start


def etcd_outage(rig: Rig, rng: random.Random) -> Fault:
    rig.cluster.etcd.proc.kill()
    # Restarted on the same data directory and port.
    return "etcd killed", rig.cluster.etcd.start


def etcd_slow(rig: Rig, rng: random.Random) -> Fault:
    one_way = round(rng.uniform(0.1, 0.75), 2)
    for px in rig.etcd_proxies:
        px.set_delay(one_way)
    return f"+{int(one_way * 2000)} ms per round trip", lambda: [px.set_delay(0.0) for px in rig.etcd_proxies]


def partition(rig: Rig, rng: random.Random) -> Fault:
    node = rng.choice(rig.nodes)
    for px in rig.proxies(node.id):
        px.set_blackhole(True) if isinstance(px, TcpFaultProxy) else px.set(blackholed=True)
    return (f"node {node.id} cut from etcd, clients and S3",
            lambda: [px.heal() for px in rig.proxies(node.id)])


@dataclass
class Kind:
    inject: Callable[[Rig, random.Random], Fault]
    hold: tuple[float, float]  # seconds, before pacing
    # Faults that only matter once a session has ended (a pause, a
    # partition) are held longer than the session timeout plus this.
    past_session: float | None = None


KINDS: dict[str, Kind] = {
    "kill-broker": Kind(kill_broker, (0.5, 4)),
    "kill-flusher": Kind(kill_flusher, (0.5, 4)),
    "kill-node": Kind(kill_node, (0.5, 4)),
    "pause-broker": Kind(pause_broker, (1, 6), past_session=1.0),
    "s3-slow-puts": Kind(s3_slow_puts, (3, 8)),
    "s3-errors": Kind(s3_errors, (2, 6)),
    "s3-outage": Kind(s3_outage, (3, 10)),
    "etcd-outage": Kind(etcd_outage, (2, 8)),
    "etcd-slow": Kind(etcd_slow, (3, 10)),
    "partition": Kind(partition, (1, 6), past_session=1.0),
}


def schedule(rng: random.Random, count: int, kinds: list[str]) -> list[str]:
    """`count` faults, every kind at least once when count allows, in random order."""
    chosen = list(kinds) if count >= len(kinds) else rng.sample(kinds, count)
    chosen += [rng.choice(kinds) for _ in range(count - len(chosen))]
    rng.shuffle(chosen)
    return chosen


# ---- the report ----


@dataclass
class Report:
    seed: int
    minutes_planned: float
    minutes_taken: float = 0.0
    write_path: str = ""
    faults: list[dict] = field(default_factory=list)
    acknowledged: int = 0
    producer_errors: int = 0
    stored: int = 0
    lost: list = field(default_factory=list)
    moved: list = field(default_factory=list)
    duplicated: list = field(default_factory=list)
    gaps: list = field(default_factory=list)
    delivered: int = 0
    distinct_read: int = 0
    not_delivered: list = field(default_factory=list)
    divergent_reads: list = field(default_factory=list)
    commit_samples: int = 0
    commit_offsets_checked: int = 0
    commit_sample_failures: int = 0
    commits_acknowledged: int = 0
    commits_backwards: list = field(default_factory=list)
    commits_vanished: list = field(default_factory=list)
    # backwards because an older commit, re-sent by the client, was acknowledged after a newer one
    commits_backwards_by_client: list = field(default_factory=list)
    commits_undone: list = field(default_factory=list)
    unexpected_exits: list = field(default_factory=list)
    unreadable: list = field(default_factory=list)  # (partition, why) the final read could not read
    unverified: int = 0  # acknowledged records in unreadable partitions
    s3_requests: collections.Counter = field(default_factory=collections.Counter)  # what the S3 proxies did
    stalled: str = ""
    workdir: str = ""

    def violations(self) -> dict[str, int]:
        found = {
            "lost": len(self.lost), "moved": len(self.moved), "duplicated": len(self.duplicated),
            "offset gaps": len(self.gaps), "acknowledged but never delivered to the group": len(self.not_delivered),
            "reads the final log disagrees with": len(self.divergent_reads),
            "committed offsets gone backwards": len(self.commits_backwards),
            "committed offsets vanished": len(self.commits_vanished),
            "acknowledged commits undone": len(self.commits_undone),
            "no progress after healing": int(bool(self.stalled)),
            "partitions unreadable after healing": len(self.unreadable),
            "heals that failed": sum(1 for f in self.faults if f.get("heal_error")),
        }
        return {k: v for k, v in found.items() if v}

    @property
    def ok(self) -> bool:
        return not self.violations()

    def text(self) -> str:
        per_kind = collections.OrderedDict((k, [0, 0]) for k in KINDS)
        for f in self.faults:
            per_kind.setdefault(f["kind"], [0, 0])
            per_kind[f["kind"]][0] += 1
            per_kind[f["kind"]][1] += int(f.get("healed", False))
        lines = [
            f"fault campaign: seed {self.seed}, {len(self.faults)} faults in {self.minutes_taken:.1f} min "
            f"(planned {self.minutes_planned:g}), write path {self.write_path}",
            f"  {'fault':<14}{'injected':>10}{'healed':>8}",
            *[f"  {k:<14}{i:>10}{h:>8}" for k, (i, h) in per_kind.items() if i or k in KINDS],
            f"records: acknowledged {self.acknowledged}, producer errors (unacknowledged) {self.producer_errors}, "
            f"stored {self.stored}",
            f"  lost {len(self.lost)}, moved {len(self.moved)}, duplicated {len(self.duplicated)}, "
            f"offset gaps {len(self.gaps)}",
            f"consumer group: {self.delivered} deliveries of {self.distinct_read} distinct records, "
            f"acknowledged but not delivered {len(self.not_delivered)}, "
            f"reads the final log disagrees with {len(self.divergent_reads)}",
            f"commits: {self.commit_samples} samples, {self.commit_offsets_checked} partition offsets checked "
            f"({self.commit_sample_failures} samples failed), backwards {len(self.commits_backwards)} "
            f"(+{len(self.commits_backwards_by_client)} by re-sent older commits), "
            f"vanished {len(self.commits_vanished)}; {self.commits_acknowledged} acknowledged commits, "
            f"undone {len(self.commits_undone)}",
            f"S3 requests through the proxies: {dict(sorted(self.s3_requests.items()))}",
            f"unexpected process exits: {len(self.unexpected_exits)}"
            + "".join(f"\n  {e['at']:.1f}s {e['process']}: {e['tail']}" for e in self.unexpected_exits[:5]),
        ]
        if self.stalled:
            lines.append(f"no progress after healing: {self.stalled}")
        if self.unreadable:
            lines.append(f"partitions unreadable after healing: {self.unreadable} "
                         f"({self.unverified} acknowledged records there not checked)")
        for name, items in (("lost", self.lost), ("moved", self.moved), ("duplicated", self.duplicated),
                            ("gaps", self.gaps), ("not delivered", self.not_delivered),
                            ("divergent reads", self.divergent_reads), ("commits backwards", self.commits_backwards),
                            ("commits vanished", self.commits_vanished), ("commits undone", self.commits_undone)):
            if items:
                lines.append(f"  first {name}: {items[:5]}")
        verdict = "PASS" if self.ok else f"FAIL: {self.violations()}"
        lines.append(f"result: {verdict}  (seed {self.seed}, logs in {self.workdir})")
        return "\n".join(lines)

    def to_json(self) -> str:
        def plain(x):
            if isinstance(x, bytes):
                return x.decode(errors="replace")
            if isinstance(x, (list, tuple)):
                return [plain(i) for i in x]
            if isinstance(x, dict):
                return {str(k): plain(v) for k, v in x.items()}
            return x
        return json.dumps(plain(self.__dict__ | {"violations": self.violations()}), indent=1)


# ---- the campaign ----


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if predicate():
                return True
        except Exception:
            pass
        time.sleep(0.5)
    return False


def leaders_ready(bootstrap: str) -> bool:
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(TOPIC, timeout=10)
    parts = md.topics[TOPIC].partitions.values()
    return len(md.brokers) == 3 and len(parts) == PARTITIONS and all(p.leader >= 0 for p in parts)


def read_partitions(bootstrap: str, topic: str, partitions: int, timeout: float
                    ) -> tuple[dict[int, list[tuple[int, bytes]]], dict[int, str]]:
    """Every record of each partition, from the log start to the high
    watermark, like verify.read_all, but a partition that cannot be read (its
    leader refuses it, or it never finishes) is reported instead of failing
    the whole check: (records per readable partition, error per unreadable)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    out: dict[int, list[tuple[int, bytes]]] = {}
    unreadable: dict[int, str] = {}
    for p in range(partitions):
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"verify-{topic}",
                             "enable.auto.commit": False, "log_level": 0})
        deadline = time.time() + timeout
        try:
            while True:
                try:
                    low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                    break
                except Exception as e:
                    if time.time() > deadline:
                        raise RuntimeError(f"no watermarks: {e}")
                    time.sleep(1)
            records: list[tuple[int, bytes]] = []
            consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING)])
            last_error = None
            while high > low and (not records or records[-1][0] + 1 < high):
                if time.time() > deadline:
                    raise RuntimeError(f"read {len(records)} of {high - low} records; last error {last_error}")
                msg = consumer.poll(0.5)
                if msg is None:
                    continue
                if msg.error() is not None:
                    last_error = str(msg.error())
                    continue
                records.append((msg.offset(), msg.value()))
            out[p] = records
        except Exception as e:
            unreadable[p] = str(e)
        finally:
            consumer.close()
    return out, unreadable


def strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


# Run as a separate process: if the campaign dies without its clean-up (a
# crash of a native client library, kill -9), this kills what it had started.
# The campaign keeps `pids` in its work directory up to date; a pid counts
# only with the start time it had then, so a reused pid is left alone.
REAPER = r"""
import os, signal, sys, time
parent, pids = int(sys.argv[1]), sys.argv[2]
def started(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except OSError:
        return None
while True:
    try:
        os.kill(parent, 0)
    except ProcessLookupError:
        break
    time.sleep(1)
try:
    lines = open(pids).read().split()
except OSError:
    lines = []
for pid, start in zip(lines[::2], lines[1::2]):
    if started(int(pid)) == start:
        try:
            os.kill(int(pid), signal.SIGCONT)
            os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass
"""


def proc_start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except OSError:
        return None


def run_campaign(workdir: Path, minutes: float, faults: int, seed: int, kinds: list[str] | None = None,
                 session_timeout_ms: int = 3000, write_path: str | None = None, rate: int = 120,
                 out=print) -> Report:
    kinds = kinds or list(KINDS)
    rng = random.Random(seed)
    plan = schedule(rng, faults, kinds)
    report = Report(seed=seed, minutes_planned=minutes, workdir=str(workdir))
    out(f"fault campaign: seed {seed}, {faults} faults over {minutes:g} min, work directory {workdir}")
    out(f"plan: {', '.join(plan)}")
    rig = Rig(workdir, session_timeout_ms, write_path, seed)
    report.write_path = rig.cluster.write_path
    logger = client_logger(workdir / "clients.log")
    producers: list[AckLogProducer] = []
    members: list[GroupMember] = []
    monitor = None
    fault_log = open(workdir / "faults.log", "w")
    started = time.monotonic()
    pid_file = workdir / "pids"
    reaper = subprocess.Popen([sys.executable, "-c", REAPER, str(os.getpid()), str(pid_file)],
                              start_new_session=True)

    def record_pids() -> None:
        """Writes the pids of every process started so far, for the reaper."""
        procs = [proc.popen for _, proc, _ in rig.processes()] + [p.proc for p in producers]
        lines = []
        for popen in procs:
            if popen is not None and (start := proc_start_time(popen.pid)):
                lines.append(f"{popen.pid} {start}")
        tmp = pid_file.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(pid_file)
    record_pids()

    def note(line: str) -> None:
        line = f"[{time.monotonic() - started:7.1f}s] {line}"
        out(line)
        fault_log.write(line + "\n")
        fault_log.flush()

    def revive(busy: set[str]) -> None:
        """Restarts what died without being killed by a fault, and records it."""
        for name, proc, start in rig.processes():
            if name in busy or proc.alive():
                continue
            tail = strip_ansi(proc.tail(12)).replace("\n", " | ")[-600:]
            report.unexpected_exits.append({"at": time.monotonic() - started, "process": name, "tail": tail})
            note(f"unexpected exit of {name}; restarting. log: {tail}")
            try:
                start()
            except Exception as e:  # recorded; the final heal tries again
                note(f"restart of {name} failed: {e}")

    try:
        boot = rig.bootstrap
        create_topic(boot, TOPIC, PARTITIONS)
        if not wait_until(lambda: leaders_ready(boot), 60):
            raise RuntimeError("the topic's partitions did not get leaders")
        producers = [AckLogProducer(boot, TOPIC, f"p{i}", rate=rate) for i in range(2)]
        members = [GroupMember(boot, TOPIC, GROUP, f"member-{i}", logger) for i in range(2)]
        for m in members:
            m.start()
        monitor = CommitMonitor(boot, TOPIC, GROUP, PARTITIONS, logger)
        monitor.start()
        record_pids()
        for p in producers:
            p.wait_acked(100, timeout=90)
        note("workload running")

        started = time.monotonic()  # pacing and the timeline count from here
        note("faults start")
        deadline = started + minutes * 60
        for i, kind_name in enumerate(plan):
            kind = KINDS[kind_name]
            slot_start = time.monotonic()
            slot = max(deadline - slot_start, 0) / (len(plan) - i)
            # A random moment in the first quarter of the slot.
            time.sleep(rng.uniform(0, slot * 0.25))
            low, high = kind.hold
            hold = rng.uniform(low, high)
            if kind.past_session is not None:
                low = rig.session_timeout + kind.past_session
                hold = max(hold + rig.session_timeout, low)
            # Fit the slot, but never below what makes the fault bite.
            hold = round(max(low, min(hold, slot * 0.6)), 1)
            record = {"n": i + 1, "kind": kind_name, "at": round(time.monotonic() - started, 1), "hold": hold}
            report.faults.append(record)
            try:
                detail, heal = kind.inject(rig, rng)
            except Exception as e:
                record["inject_error"] = str(e)
                note(f"#{i + 1} {kind_name}: could not inject: {e}")
                continue
            record["detail"] = detail
            note(f"#{i + 1} {kind_name}: {detail}; held {hold} s")
            time.sleep(hold)
            try:
                heal()
                record["healed"] = True
            except Exception as e:
                record["heal_error"] = str(e)
                note(f"#{i + 1} {kind_name}: heal failed: {e}")
            revive(set())
            record_pids()
            # Settle: the rest of the slot, at least a second.
            time.sleep(max(1.0, slot_start + slot - time.monotonic()))
            revive(set())
            record_pids()
        report.minutes_taken = (time.monotonic() - started) / 60

        note("faults over; healing everything and checking")
        rig.heal_everything()
        record_pids()
        wait_until(lambda: leaders_ready(boot), 60)
        # Liveness: every producer gets new acknowledgements after the last heal.
        healed_ms = int(time.time() * 1000)

        def progressed() -> set[int]:
            """Partitions with an acknowledgement of a record sent after the heal."""
            return {part for p in producers for _, part, _, _, sent in p.acks() if sent > healed_ms}
        if not wait_until(lambda: progressed() == set(range(PARTITIONS)), 120):
            report.stalled = (f"no acknowledgement in 120 s on partitions "
                              f"{sorted(set(range(PARTITIONS)) - progressed())}")
            note(report.stalled)
        acked: dict[bytes, tuple[int, int]] = {}
        for p in producers:
            acked.update(p.stop())
            report.producer_errors += len(p.errors())
        report.acknowledged = len(acked)
        # The history itself, for a failed check to be examined later.
        with open(workdir / "acknowledged.tsv", "w") as f:
            for v, (p, o) in acked.items():
                f.write(f"{v.decode()}\t{p}\t{o}\n")
        note(f"producers stopped: {len(acked)} acknowledged, {report.producer_errors} failed")

        # The group reads everything acknowledged (at least once).
        def unread() -> set[bytes]:
            seen = set().union(*(m.values() for m in members))
            return set(acked) - seen
        wait_until(lambda: not unread(), 180)
        report.not_delivered = sorted(unread())
        for m in members:
            m.stop()
        monitor.sample()
        monitor.stop()

        log, unreadable = read_partitions(boot, TOPIC, PARTITIONS, timeout=120)
        report.unreadable = [(p, e) for p, e in sorted(unreadable.items())]
        if unreadable:
            # What was acknowledged there cannot be checked: counted apart,
            # not as lost (the unreadable partition is the violation).
            report.unverified = sum(1 for p, _ in acked.values() if p in unreadable)
            acked = {v: pos for v, pos in acked.items() if pos[0] not in unreadable}
        report.stored = sum(len(r) for r in log.values())
        found = history_report(acked, log)
        report.lost, report.moved = found["missing"], found["moved"]
        report.duplicated, report.gaps = found["duplicates"], found["gaps"]

        at = {(p, o): v for p, records in log.items() for o, v in records}
        for m in members:
            report.delivered += m.deliveries
            for (p, o), v in m.seen.items():
                if at.get((p, o)) != v:
                    report.divergent_reads.append((p, o, v, at.get((p, o))))
            report.divergent_reads += [("changed", *c) for c in m.changed]
        report.distinct_read = len(set().union(*(m.values() for m in members)))

        report.commit_samples = monitor.samples
        report.commit_offsets_checked = monitor.offsets_checked
        report.commit_sample_failures = monitor.failed
        # librdkafka re-sends a commit that failed; when the retry of an older
        # commit is acknowledged after a newer one, the committed offset goes
        # back (Kafka's coordinator, last writer wins, does the same). Such a
        # move is the client's doing; any other is the coordinator's.
        acked_at: dict[tuple[int, int], list[int]] = collections.defaultdict(list)
        for m in members:
            for e in m.events:
                if e[0] == "commit":
                    acked_at[(e[2], e[3])].append(e[1])
        for ms, p, before, now in monitor.backwards:
            higher_acked = min(acked_at.get((p, before), [ms]))
            if any(higher_acked <= t <= ms for t in acked_at.get((p, now), [])):
                report.commits_backwards_by_client.append((ms, p, before, now))
            else:
                report.commits_backwards.append((ms, p, before, now))
        report.commits_vanished = monitor.vanished
        final = dict(monitor.last)
        for m in members:
            report.commits_acknowledged += len(m.acked_commits)
            for t, p, offset in m.acked_commits:
                if offset > final.get(p, -1):
                    report.commits_undone.append((p, offset, final.get(p)))
        for px in rig.s3_proxies:
            report.s3_requests.update(px.counts)
        note("checked")
    finally:
        for p in producers:
            if p.proc.poll() is None:
                p.proc.kill()
                p.proc.wait()
        for m in members:
            m.stopping.set()
        if monitor is not None:
            monitor.stopping.set()
        for m in members:
            m.join(30)
        rig.close()
        # Evidence for the commit checks: what the members did and what the monitor saw.
        (workdir / "group-events.json").write_text(json.dumps({m.name: m.events for m in members}))
        if monitor is not None:
            (workdir / "commit-samples.json").write_text(json.dumps(monitor.history))
        reaper.kill()
        reaper.wait()
        fault_log.close()
        (workdir / "report.json").write_text(report.to_json())
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=3.0, help="how long faults go on (default 3)")
    parser.add_argument("--faults", type=int, default=12, help="how many faults (default 12)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the fault schedule (default: from the clock)")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated fault kinds (default all: {','.join(KINDS)})")
    parser.add_argument("--session-timeout-ms", type=int, default=3000, help="brokers' session timeout (default 3000)")
    parser.add_argument("--write-path", choices=["intake", "segments"], default=None,
                        help="brokers' write path (default: the harness's, intake unless KAFSCALE_E2E_WRITE_PATH)")
    parser.add_argument("--rate", type=int, default=120, help="records per second of each of the two producers")
    parser.add_argument("--workdir", type=Path, default=None, help="where logs go (default: a new temp directory)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory after a passing run")
    a = parser.parse_args()
    seed = a.seed if a.seed is not None else int(time.time()) % 1_000_000
    kinds = [k.strip() for k in a.kinds.split(",") if k.strip()]
    unknown = set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown fault kinds {sorted(unknown)}")
    workdir = a.workdir or Path(tempfile.mkdtemp(prefix=f"kafscale-faults-{seed}-"))
    workdir.mkdir(parents=True, exist_ok=True)

    # Ctrl-C or SIGTERM unwinds through run_campaign's clean-up.
    def interrupted(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, interrupted)

    faulthandler.enable()  # a crash of a native client library shows where it happened
    print(f"seed {seed}")
    try:
        report = run_campaign(workdir, a.minutes, a.faults, seed, kinds, a.session_timeout_ms, a.write_path, a.rate)
    except KeyboardInterrupt:
        print(f"interrupted; logs in {workdir}")
        return 130
    except Exception as e:
        print(f"campaign could not run to the end (a harness problem unless the logs say otherwise): {e!r}\n"
              f"seed {seed}, logs in {workdir}")
        return 2
    print(report.text())
    if report.ok and not a.keep and a.workdir is None:
        # MinIO's and etcd's data are gone already; the logs are not needed.
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
