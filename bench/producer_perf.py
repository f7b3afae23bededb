"""Produce throughput and latency with acks=all, measured by Kafka's own
ProducerPerformance tool against broker + flusher + MinIO + etcd (release
build), plus S3 PUTs per GiB. Prints numbers; asserts nothing.

    cargo build --release --bins
    KAFSCALE_PROFILE=release ~/.cache/kafscale/venv/bin/python bench/producer_perf.py [--records N]
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e" / "tests"))
os.environ.setdefault("KAFSCALE_PROFILE", "release")

from harness import CACHE, Cluster  # noqa: E402
from conftest import create_topic  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=500_000)
    ap.add_argument("--record-size", type=int, default=1024)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--kafka-version", default="4.1.1")
    ap.add_argument("--throughput", type=int, default=-1, help="records/s cap (-1: unthrottled)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp), "bench")
        try:
            create_topic(cluster.bootstrap, "perf", args.partitions)
            jars = CACHE / "jars" / f"kafka-{args.kafka_version}" / "*"
            cmd = ["java", "-Xmx1g", "-cp", str(jars), "org.apache.kafka.tools.ProducerPerformance",
                   "--topic", "perf", "--num-records", str(args.records), "--record-size", str(args.record_size),
                   "--throughput", str(args.throughput), "--producer-props", f"bootstrap.servers={cluster.bootstrap}", "acks=all",
                   "enable.idempotence=false", "linger.ms=5", "batch.size=262144", "max.in.flight.requests.per.connection=5"]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
            summary = [l for l in out.stdout.splitlines() if "records sent" in l]
            if out.returncode != 0 or not summary:
                print(out.stdout[-2000:], out.stderr[-2000:])
                raise SystemExit("ProducerPerformance failed")
            final = summary[-1]
            m = re.search(r"\(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, ([\d.]+) ms max latency, "
                          r"(\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99.9th", final)
            objects = cluster.objects("perf")
            puts = len(objects)  # one PUT per .kfs and .index object; no retries were needed
            gib = args.records * args.record_size / 2**30
            print(f"ProducerPerformance (Kafka {args.kafka_version} tool), {args.records} x {args.record_size} B, "
                  f"{args.partitions} partitions, acks=all, throughput cap {args.throughput} records/s")
            print(final)
            if m:
                print(f"throughput_mb_s={m.group(1)} p50_ms={m.group(4)} p99_ms={m.group(6)} p999_ms={m.group(7)}")
            print(f"s3_puts={puts} produced_gib={gib:.3f} puts_per_gib={puts / gib:.0f}")
        finally:
            cluster.close()


if __name__ == "__main__":
    main()
