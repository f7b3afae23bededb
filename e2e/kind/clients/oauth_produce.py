#!/usr/bin/env python3
"""The kind suite's OAUTHBEARER client, run in the toolbox pod: sends one
record with acks=all over SASL_SSL, authenticating with the JWT in the
TOKEN environment variable (librdkafka's token callback), and prints

  OK <partition> <offset>
  ERR <error name> <message>

Usage: oauth_produce.py BOOTSTRAP TOPIC CA_FILE
"""

from __future__ import annotations

import os
import sys
import time

from confluent_kafka import KafkaException, Producer


def main() -> int:
    bootstrap, topic, ca = sys.argv[1:4]
    token = os.environ["TOKEN"]
    client_errors: list[str] = []
    producer = Producer({
        "bootstrap.servers": bootstrap, "security.protocol": "SASL_SSL", "ssl.ca.location": ca,
        "sasl.mechanisms": "OAUTHBEARER", "oauth_cb": lambda _config: (token, time.time() + 300),
        "acks": "all", "message.timeout.ms": 15000,
        # An authentication failure is reported here, not per record.
        "error_cb": lambda e: client_errors.append(f"{e.name()} {e.str()}"),
    })
    result: list[str] = []

    def delivered(err, msg) -> None:
        result.append(f"ERR {err.name()} {err.str()}" if err else f"OK {msg.partition()} {msg.offset()}")

    try:
        producer.produce(topic, value=b"oauth", on_delivery=delivered)
    except KafkaException as e:
        print(f"ERR {e.args[0].name()} {e.args[0].str()}")
        return 0
    producer.flush(20)
    line = result[0] if result else "ERR TIMEOUT no answer in 20 s"
    # A refused authentication times the record out; its reason is the
    # client-level error.
    if client_errors and (not result or "_MSG_TIMED_OUT" in line):
        line = f"ERR {client_errors[0]}"
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
