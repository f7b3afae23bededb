"""Kafscale and Apache Kafka side by side on this machine, measured with Kafka's
own tools (ProducerPerformance, ConsumerPerformance, EndToEndLatency). Prints
one Markdown table: each metric for both systems and the ratio Kafscale/Kafka.

    bench/run.sh [--records N] [--backlog-mib M] [--write-path segments|intake] [--flush-preset P]

Kafscale runs as release builds of broker + flusher with MinIO and etcd and
acknowledges only what is in MinIO. Kafka runs as one KRaft node (jars from
Maven Central) with its data in a temp dir. Numbers are printed; nothing is
asserted.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e" / "tests"))
os.environ.setdefault("KAFSCALE_PROFILE", "release")

from conftest import create_topic  # noqa: E402
from harness import CACHE, Cluster, Proc, free_port, scrape, wait_for_port  # noqa: E402

KAFKA_VERSION = "4.1.1"
JARS = CACHE / "jars" / f"kafka-{KAFKA_VERSION}" / "*"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def java(main_class: str, *args: str, timeout: float = 1800) -> str:
    out = subprocess.run(["java", "-Xmx1g", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp", str(JARS),
                          main_class, *args], capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{main_class} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return out.stdout


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / CLK_TCK


def peak_rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1])
    return total / 1024


class KafkaNode:
    """Apache Kafka as a single KRaft broker+controller."""

    def __init__(self, work: Path):
        self.port, controller = free_port(), free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        props = work / "server.properties"
        props.write_text("\n".join([
            "process.roles=broker,controller", "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{controller}",
            f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{controller}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names=CONTROLLER", "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            f"log.dirs={work / 'data'}", "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1", "transaction.state.log.min.isr=1",
            "group.initial.rebalance.delay.ms=0", "num.partitions=6",
        ]) + "\n")
        java("kafka.tools.StorageTool", "format", "-t", str(uuid.uuid4()).replace("-", "")[:22], "-c", str(props))
        self.proc = Proc("kafka", ["java", "-Xmx1g", "-cp", str(JARS), "kafka.Kafka", str(props)], work / "kafka.log")

    def start(self) -> "KafkaNode":
        self.proc.start()
        wait_for_port(self.port, self.proc, timeout=90)
        return self

    def restart(self) -> None:
        self.proc.stop(30)
        self.start()

    def pids(self) -> list[int]:
        return [self.proc.popen.pid]

    def stop(self) -> None:
        self.proc.stop(30)


def producer_perf(bootstrap, topic, records, throughput=-1, size=1024, config_file=None):
    """`config_file`: a producer properties file (security settings)."""
    extra = ["--producer.config", str(config_file)] if config_file else []
    out = java("org.apache.kafka.tools.ProducerPerformance", "--topic", topic, "--num-records", str(records),
               "--record-size", str(size), "--throughput", str(throughput), *extra, "--producer-props",
               f"bootstrap.servers={bootstrap}", "acks=all", "linger.ms=5", "batch.size=262144")
    line = [l for l in out.splitlines() if "records sent" in l][-1]
    m = re.search(r"\(([\d.]+) MB/sec\).*?(\d+) ms 50th, \d+ ms 95th, (\d+) ms 99th, (\d+) ms 99.9th", line)
    return {"mb_s": float(m.group(1)), "p50": float(m.group(2)), "p99": float(m.group(3)), "p999": float(m.group(4))}


def consumer_perf(bootstrap, topic, messages):
    out = java("org.apache.kafka.tools.ConsumerPerformance", "--bootstrap-server", bootstrap, "--topic", topic,
               "--messages", str(messages), "--timeout", "60000")
    row = [l for l in out.splitlines() if re.match(r"^\d{4}-", l)][-1].split(",")
    return float(row[3])  # MB.sec


def end_to_end(bootstrap, topic):
    out = java("org.apache.kafka.tools.EndToEndLatency", bootstrap, topic, "3000", "all", "1024")
    m = re.search(r"50th = ([\d.]+), 99th = ([\d.]+)", out)
    return float(m.group(1)), float(m.group(2))


def idle_connections(host_port, n=1000):
    host, port = host_port.split(":")
    socks = []
    for _ in range(n):
        socks.append(socket.create_connection((host, int(port))))
    return socks


def run_suite(bootstrap, pids_fn, restart_fn, args, s3=None, settle=None):
    """`s3()` returns the flusher's request counters (Kafscale only); they are
    read per workload because a restart resets them. `settle(topic)` waits
    until background segment merging of a topic is done (Kafscale only) and
    returns the seconds it took."""
    r = {}
    create_topic(bootstrap, "w1", 6)
    cpu0 = cpu_seconds(pids_fn())
    s3_before = s3() if s3 else None
    p = producer_perf(bootstrap, "w1", args.records)
    cpu1 = cpu_seconds(pids_fn())
    gib = args.records * 1024 / 2**30
    r["produce MB/s (w1)"] = p["mb_s"]
    r["CPU s per GiB produced"] = (cpu1 - cpu0) / gib
    r["peak RSS MiB"] = peak_rss_mib(pids_fn())
    if s3:
        r["S3 PUTs per GiB produced (w1)"] = (s3()["puts"] - s3_before["puts"]) / gib
    create_topic(bootstrap, "w2", 6)
    s3_before = s3() if s3 else None
    w2_records = 20 * 20 * 1024  # 20 s at 20 MB/s
    p = producer_perf(bootstrap, "w2", w2_records, throughput=20 * 1024)
    r["produce p50 ms @20MB/s"], r["produce p99 ms @20MB/s"], r["produce p99.9 ms @20MB/s"] = p["p50"], p["p99"], p["p999"]
    if s3:
        r["S3 PUTs per GiB @20MB/s (w2, uploads)"] = (s3()["puts"] - s3_before["puts"]) / (w2_records * 1024 / 2**30)
    create_topic(bootstrap, "w3", 1)
    r["e2e p50 ms"], r["e2e p99 ms"] = end_to_end(bootstrap, "w3")
    r["consume MB/s (tail)"] = consumer_perf(bootstrap, "w1", args.records)
    backlog = args.backlog_mib * 1024
    create_topic(bootstrap, "w4", 6)
    s3_written = s3() if s3 else None
    producer_perf(bootstrap, "w4", backlog)
    if settle:
        s3_before = s3()
        r["merge/compaction of the backlog done after s"] = settle("w4")
        backlog_gib = backlog * 1024 / 2**30
        r["S3 PUTs per GiB merged/compacted after the produce (w4)"] = (s3()["puts"] - s3_before["puts"]) / backlog_gib
        r["S3 PUTs per GiB written and settled (w4)"] = (s3()["puts"] - s3_written["puts"]) / backlog_gib
    restart_fn()
    s3_before = s3() if s3 else None
    r["catch-up MB/s after restart"] = consumer_perf(bootstrap, "w4", backlog)
    if s3:
        r["S3 GETs per GiB read cold"] = (s3()["gets"] - s3_before["gets"]) / (backlog * 1024 / 2**30)
    create_topic(bootstrap, "w5", 1000)
    s3_before = s3() if s3 else None
    r["produce MB/s, 1000 partitions"] = producer_perf(bootstrap, "w5", args.records // 3)["mb_s"]
    if s3:
        r["S3 PUTs per GiB, 1000 partitions (uploads)"] = (s3()["puts"] - s3_before["puts"]) / (args.records // 3 * 1024 / 2**30)
    s3_before = s3() if s3 else None
    p = producer_perf(bootstrap, "w5", w2_records, throughput=20 * 1024)
    r["produce p50 ms @20MB/s, 1000 partitions"], r["produce p99 ms @20MB/s, 1000 partitions"] = p["p50"], p["p99"]
    if s3:
        r["S3 PUTs per GiB @20MB/s, 1000 partitions (uploads)"] = (
            (s3()["puts"] - s3_before["puts"]) / (w2_records * 1024 / 2**30))
    socks = idle_connections(bootstrap)
    time.sleep(2)
    r["RSS MiB with 1000 idle connections"] = sum(
        int(line.split()[1]) for pid in pids_fn() for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")) / 1024
    for s in socks:
        s.close()
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=500_000, help="1 KiB records for workload 1")
    ap.add_argument("--backlog-mib", type=int, default=2048, help="backlog read back cold after a restart")
    ap.add_argument("--write-path", choices=["segments", "intake"], help="Kafscale's write path (default: the broker's)")
    ap.add_argument("--flush-preset", choices=["latency", "balanced", "cost"], help="the flusher's intake preset")
    args = ap.parse_args()
    broker_args = ["--group-initial-rebalance-delay-ms", "0"]
    if args.write_path:
        broker_args += ["--write-path", args.write_path]
    flusher_args = ["--flush-preset", args.flush_preset] if args.flush_preset else []
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "kafscale").mkdir()
        # Same group setting as the Kafka node: no initial rebalance delay.
        cluster = Cluster(work / "kafscale", "bench", broker_args=broker_args, flusher_args=flusher_args)
        try:
            pids = lambda: [cluster.broker.proc.popen.pid, cluster.flusher.proc.popen.pid]

            def restart():
                cluster.restart_broker_and_flusher(kill=False)

            def settle(topic):
                """Seconds until the topic's small segments are merged (and, on
                the intake path, its parts compacted as far as the size
                threshold takes them): the count of segments stops changing."""
                start = last_change = time.time()
                last = None
                while time.time() - start < 600:
                    n = sum(1 for p in cluster.objects(topic) if p.name.endswith(".kfs"))
                    if n != last:
                        last, last_change = n, time.time()
                    # Unchanged for 30 s once all of the backlog is past the
                    # 60 s merge age and a 10 s merge interval has run.
                    elif time.time() - start > 75 and time.time() - last_change >= 30:
                        return last_change - start
                    time.sleep(2)
                return time.time() - start

            def s3_counters():
                m = scrape(cluster.flusher.http_port)
                return {"puts": m.get('kafscale_flusher_s3_requests_total{op="put"}', 0),
                        "gets": m.get('kafscale_flusher_s3_requests_total{op="get"}', 0)}
            results["kafscale"] = run_suite(cluster.bootstrap, pids, restart, args, s3_counters, settle)
            print(f"kafscale: {results['kafscale']}", flush=True)
        finally:
            cluster.close()
        (work / "kafka").mkdir()
        kafka = KafkaNode(work / "kafka").start()
        try:
            results["kafka"] = run_suite(kafka.bootstrap, kafka.pids, kafka.restart, args)
        finally:
            kafka.stop()
    print(f"\nKafscale write path {args.write_path or 'default'}, flush preset {args.flush_preset or 'default'}")
    print(f"\n| metric | Kafscale | Kafka {KAFKA_VERSION} | Kafscale/Kafka |\n|---|---|---|---|")
    for metric, value in results["kafscale"].items():
        other = results["kafka"].get(metric)
        ratio = f"{value / other:.2f}" if other else "—"
        print(f"| {metric} | {value:.1f} | {other:.1f} | {ratio} |" if other is not None else f"| {metric} | {value:.1f} | — | — |")


if __name__ == "__main__":
    main()
