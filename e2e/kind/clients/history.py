#!/usr/bin/env python3
"""The kind suite's history client, run in a toolbox pod (librdkafka through
confluent-kafka). Two modes:

  history.py produce --bootstrap B --topic T --prefix P [--rate N] [--seconds S] [--no-retries]
      sends P-0, P-1, ... with acks=all and idempotence at N records/s until
      /tmp/stop exists or S seconds passed, waits for every answer, and
      prints one line per answer:
        ACK <value> <partition> <offset>
        ERR <value> <error name> <retriable>
      plus `WARN <text>` for client-level errors (a broker going away) and a
      last line `DONE sent=<n> acked=<n> failed=<n>`.

  history.py dump --bootstrap B --topic T
      reads every partition from its start to the high watermark it had when
      the dump began and prints `REC <partition> <offset> <value>` per record,
      then `END records=<n>`.

The suite's driver (e2e/kind/scenarios.py) compares the two: every
acknowledged value must be at the partition and offset it was acknowledged
with.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition


def out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def produce(args: argparse.Namespace) -> int:
    def on_error(err) -> None:
        out(f"WARN {err.name()} {err.str()}".replace("\n", " "))

    config = {
        "bootstrap.servers": args.bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        # Long enough to ride out a broker's restart: a record fails only if
        # no broker took it for two minutes.
        "message.timeout.ms": 120000,
        "linger.ms": 5,
        "error_cb": on_error,
    }
    if args.no_retries:
        # The broker's own answer to the first attempt, not the client's
        # timeout after retrying.
        config.update({"enable.idempotence": False, "retries": 0, "message.timeout.ms": 60000})
    producer = Producer(config)
    counts = {"acked": 0, "failed": 0}

    def on_delivery(err, msg) -> None:
        value = msg.value().decode()
        if err is None:
            counts["acked"] += 1
            out(f"ACK {value} {msg.partition()} {msg.offset()}")
        else:
            counts["failed"] += 1
            out(f"ERR {value} {err.name()} {err.retriable()}")

    interval = 1.0 / args.rate
    start = time.monotonic()
    sent = 0
    while not os.path.exists("/tmp/stop") and time.monotonic() - start < args.seconds:
        due = start + sent * interval
        now = time.monotonic()
        if due > now:
            producer.poll(due - now)
            continue
        try:
            producer.produce(args.topic, value=f"{args.prefix}-{sent}".encode(), on_delivery=on_delivery)
            sent += 1
        except BufferError:
            producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(150)
    out(f"DONE sent={sent} acked={counts['acked']} failed={counts['failed']} unanswered={remaining}")
    return 0


def dump(args: argparse.Namespace) -> int:
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": f"history-dump-{os.getpid()}",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
    })
    metadata = consumer.list_topics(args.topic, timeout=30)
    topic = metadata.topics.get(args.topic)
    if topic is None or topic.error is not None:
        out(f"FAIL topic {args.topic}: {topic.error if topic else 'missing'}")
        return 1
    ends: dict[int, int] = {}
    starts = []
    for partition in sorted(topic.partitions):
        low, high = consumer.get_watermark_offsets(TopicPartition(args.topic, partition), timeout=30)
        if high > low:
            ends[partition] = high
            starts.append(TopicPartition(args.topic, partition, low))
    consumer.assign(starts)
    records = 0
    deadline = time.monotonic() + args.seconds
    while ends and time.monotonic() < deadline:
        msg = consumer.poll(1.0)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                continue
            out(f"WARN {msg.error().name()} {msg.error().str()}")
            continue
        out(f"REC {msg.partition()} {msg.offset()} {msg.value().decode(errors='replace')}")
        records += 1
        if msg.offset() + 1 >= ends.get(msg.partition(), 0):
            ends.pop(msg.partition(), None)
    consumer.close()
    if ends:
        out(f"FAIL partitions {sorted(ends)} not read to their end within {args.seconds}s")
        return 1
    out(f"END records={records}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["produce", "dump"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--prefix", default="r")
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--no-retries", action="store_true", help="produce: report the first attempt's answer")
    args = parser.parse_args()
    return produce(args) if args.mode == "produce" else dump(args)


if __name__ == "__main__":
    sys.exit(main())
