"""Kafscale alone under one produce workload, with broker flags of your
choice: throughput and client latency (Kafka's ProducerPerformance with the
settings of bench/run.sh), the broker's own acknowledgement latency (its
`produce_ack_duration` histogram), S3 PUTs per GiB and CPU seconds of broker,
flusher and MinIO. For trying flush windows and the like; bench/run.sh is the
side-by-side comparison. Prints numbers; asserts nothing.

    cargo build --release --bins
    ~/.cache/kafscale/venv/bin/python bench/producer_perf.py [--records N] [--throughput R] \\
        [--partitions P] [--settle S] [--cold-read [--trickle N] [--drop-summaries]] \\
        [--put-delay MS[,EVERY:SLOW_MS]] [--security ssl|sasl_ssl|sasl_plaintext] [-- broker flags...]

Example: `bench/producer_perf.py --throughput 20480 -- --flush-window-ms 1`
(20 MB/s of 1 KiB records with a 1 ms flush window).

`--security` produces through a TLS, SASL_SSL (SCRAM-SHA-512) or
SASL_PLAINTEXT listener instead of PLAINTEXT: the cost of TLS and SASL.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # noqa: E402  (also puts the e2e harness on the path)
from confluent_kafka import Producer  # noqa: E402
from conftest import create_topic  # noqa: E402
from harness import Cluster, free_port, scrape  # noqa: E402
from pki import CA  # noqa: E402

ACK = "kafscale_broker_produce_ack_duration_seconds"
PUTS = 'kafscale_flusher_s3_requests_total{op="put"}'
GETS = 'kafscale_flusher_s3_requests_total{op="get"}'


def ack_latency(metrics: dict[str, float]) -> str:
    """Mean and the share of acknowledgements under each histogram bound."""
    count = metrics.get(f"{ACK}_count", 0)
    if not count:
        return "no acknowledgements"
    buckets = sorted((float(k.split('le="')[1].split('"')[0]), v) for k, v in metrics.items()
                     if k.startswith(f"{ACK}_bucket") and "+Inf" not in k)
    shares = " ".join(f"<{le * 1000:g}ms:{v / count:.1%}" for le, v in buckets if 0.002 <= le <= 0.128)
    return f"mean {metrics[f'{ACK}_sum'] / count * 1000:.1f} ms; {shares}"


def trickle(bootstrap: str, records: int) -> None:
    create_topic(bootstrap, "trickle", 1)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})
    for i in range(records):
        producer.produce("trickle", f"t{i}".encode())
        producer.flush(10)


def settle(cluster: Cluster, topic: str, limit_s: float) -> tuple[float, int, float]:
    """Waits until the topic has segments and they stop changing (compaction
    or merging done with what the run wrote: no new segment for 60 s), at
    most `limit_s`.
    Returns the seconds waited, the number of segments and their mean size
    in MB."""
    start = last_change = time.time()
    last = None
    while time.time() - start < limit_s and (not last or time.time() - last_change < 60):
        segments = [p for p in cluster.objects(topic) if p.name.endswith(".kfs")]
        if len(segments) != last:
            last, last_change = len(segments), time.time()
        time.sleep(5)
    # MinIO's single-drive layout stores an object as a directory holding
    # its metadata and data parts; their sizes add up to the object's.
    sizes = [sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
             for p in cluster.objects(topic) if p.name.endswith(".kfs")]
    return time.time() - start, len(sizes), sum(sizes) / max(len(sizes), 1) / 1e6


def grant(bootstrap: str, principal: str, topic: str) -> None:
    from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType, AdminClient,
                                       ResourcePatternType, ResourceType)
    bindings = [AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, principal, "*", op,
                           AclPermissionType.ALLOW) for op in (AclOperation.WRITE, AclOperation.DESCRIBE)]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_acls(bindings).values():
        f.result(timeout=30)


def secured(tmp: Path, protocol: str) -> tuple[list[str], dict, int, int, Path]:
    """Broker flags, broker environment, the secured listener's port and the
    producer's properties file for `protocol`."""
    pki = tmp / "pki"
    pki.mkdir()
    ca = CA(pki, "ca")
    cert, key = ca.issue("server", "/CN=broker", server=True)
    plain_port, port = free_port(), free_port()
    flags = ["--listeners", f"PLAINTEXT://127.0.0.1:{plain_port},{protocol.upper()}://127.0.0.1:{port}",
             "--tls-cert-file", str(cert), "--tls-key-file", str(key)]
    props = [f"security.protocol={protocol.upper()}"]
    if protocol != "sasl_plaintext":
        props += ["ssl.truststore.type=PEM", f"ssl.truststore.location={ca.cert}"]
    if protocol.startswith("sasl"):
        props += ["sasl.mechanism=SCRAM-SHA-512",
                  "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
                  'username="bench" password="bench-secret";']
    config = pki / "producer.properties"
    config.write_text("\n".join(props) + "\n")
    return flags, {"KAFSCALE_SASL_BOOTSTRAP_USERS": "bench:bench-secret"}, plain_port, port, config


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=300_000, help="1 KiB records")
    ap.add_argument("--throughput", type=int, default=-1, help="records/s cap (-1: unthrottled)")
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--settle", type=float, default=0, metavar="S",
                    help="then wait (at most S seconds) until compaction into segments is done with the run's "
                         "data, and count its PUTs too (set the broker's --intake-compaction-delay-ms to fit)")
    ap.add_argument("--cold-read", action="store_true",
                    help="then restart broker and flusher and read everything back (ConsumerPerformance)")
    ap.add_argument("--trickle", type=int, default=0,
                    help="before the cold read, send this many records one at a time to another topic "
                         "(each its own intake object, as bench/run.sh's latency workload leaves them)")
    ap.add_argument("--drop-summaries", action="store_true",
                    help="delete the intake directory summaries before the cold read (how it read without them)")
    ap.add_argument("--flusher-arg", action="append", default=[], dest="flusher_args",
                    help="an extra flusher flag, e.g. --flusher-arg=--flush-preset=cost (repeatable)")
    ap.add_argument("--put-delay", metavar="MS[,EVERY:SLOW_MS]",
                    help="hold every PUT of the flusher back MS (every EVERY-th one SLOW_MS): "
                         "object storage's latency from a local MinIO (KAFSCALE_BENCH_PUT_DELAY)")
    ap.add_argument("--security", choices=["ssl", "sasl_ssl", "sasl_plaintext"],
                    help="produce through a listener of this protocol (a PLAINTEXT one stays for set-up)")
    ap.add_argument("--acl", action="store_true",
                    help="with a SASL --security: --authorizer acl, the producer allowed by ACL bindings "
                         "(WRITE and DESCRIBE on the topic), not a super user: the cost of authorization")
    ap.add_argument("broker_args", nargs="*", help="extra broker flags (after --)")
    args = ap.parse_args()
    if args.put_delay:
        os.environ["KAFSCALE_BENCH_PUT_DELAY"] = args.put_delay
    with tempfile.TemporaryDirectory() as tmp:
        broker_args, broker_env, broker_port, config = list(args.broker_args), {}, None, None
        if args.acl and not (args.security or "").startswith("sasl"):
            ap.error("--acl needs --security sasl_plaintext or sasl_ssl (a principal to authorize)")
        if args.security:
            flags, broker_env, broker_port, secure_port, config = secured(Path(tmp), args.security)
            broker_args += flags
        if args.acl:
            # Set-up goes through the PLAINTEXT listener, whose ANONYMOUS is
            # the super user; the measured producer is authorized by bindings.
            broker_args += ["--authorizer", "acl", "--super-users", "User:ANONYMOUS"]
        cluster = Cluster(Path(tmp), "perf", broker_args=broker_args, flusher_args=args.flusher_args,
                          broker_env=broker_env, broker_port=broker_port)
        produce_to = f"127.0.0.1:{secure_port}" if args.security else cluster.bootstrap
        try:
            create_topic(cluster.bootstrap, "perf", args.partitions)
            if args.acl:
                grant(cluster.bootstrap, "User:bench", "perf")
            procs = {"broker": cluster.broker.proc, "flusher": cluster.flusher.proc, "minio": cluster.minio.proc}
            cpu_before = {name: compare.cpu_seconds([p.popen.pid]) for name, p in procs.items()}
            puts_before = scrape(cluster.flusher.http_port).get(PUTS, 0)
            result = compare.producer_perf(produce_to, "perf", args.records, throughput=args.throughput,
                                           config_file=config)
            cpu = {name: compare.cpu_seconds([p.popen.pid]) - cpu_before[name] for name, p in procs.items()}
            gib = args.records * 1024 / 2**30
            puts = scrape(cluster.flusher.http_port).get(PUTS, 0) - puts_before
            print(f"{args.records} x 1 KiB, {args.partitions} partitions, cap {args.throughput} records/s, "
                  f"listener {args.security or 'plaintext'}{' with ACLs' if args.acl else ''}, "
                  f"broker flags {args.broker_args or 'default'}, flusher flags {args.flusher_args or 'default'}")
            print(f"client: {result['mb_s']} MB/s, p50 {result['p50']:g} ms, p99 {result['p99']:g} ms, "
                  f"p99.9 {result['p999']:g} ms")
            print(f"broker acknowledgement: {ack_latency(scrape(cluster.broker.http_port))}")
            print(f"S3 PUTs per GiB: {puts / gib:.0f}")
            print("CPU seconds: " + ", ".join(f"{name} {secs:.1f}" for name, secs in cpu.items()))
            if args.settle:
                waited, count, mean_mb = settle(cluster, "perf", args.settle)
                settled = scrape(cluster.flusher.http_port).get(PUTS, 0) - puts_before
                print(f"settled after {waited:.0f} s: {count} segments of {mean_mb:.1f} MB on average; "
                      f"S3 PUTs per GiB, uploads and compaction: {settled / gib:.0f} "
                      f"(compaction and what ran after the produce: {(settled - puts) / gib:.0f})")
            if args.trickle:
                trickle(cluster.bootstrap, args.trickle)
            if args.cold_read:
                if args.drop_summaries:
                    shutil.rmtree(cluster.minio.data / "kafscale" / cluster.prefix / "!intake-directories",
                                  ignore_errors=True)
                cluster.restart_broker_and_flusher(kill=False)
                mb_s = compare.consumer_perf(cluster.bootstrap, "perf", args.records)
                gets = scrape(cluster.flusher.http_port).get(GETS, 0)
                print(f"cold read after a restart: {mb_s:.1f} MB/s, S3 GETs per GiB {gets / gib:.0f}")
        finally:
            cluster.close()


if __name__ == "__main__":
    main()
