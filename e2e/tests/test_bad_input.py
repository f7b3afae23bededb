"""Garbage, truncated frames, oversized length prefixes, unknown APIs and
corrupt batches: the broker answers with an error code or closes only that
connection, and a concurrent healthy client keeps working throughout."""

import os
import socket
import struct
import threading
import time

import pytest
from confluent_kafka import Producer

from conftest import create_topic
from rawkafka import closed_by_peer, parse_produce_v3_response, produce_v3, read_frame, record_batch

CORRUPT_MESSAGE = 2
UNSUPPORTED_VERSION = 35


@pytest.fixture
def healthy_client(cluster):
    """A producer that keeps sending while the bad input arrives."""
    create_topic(cluster.bootstrap, "healthy", 1, exist_ok=True)
    stop = threading.Event()
    results = {"ok": 0, "err": []}
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "linger.ms": 1, "log_level": 2})

    def cb(err, _msg):
        if err is None:
            results["ok"] += 1
        else:
            results["err"].append(str(err))

    def run():
        while not stop.is_set():
            producer.produce("healthy", value=b"still here", on_delivery=cb)
            producer.poll(0.01)
        producer.flush(30)

    def wait_for_progress(n):
        target = results["ok"] + n
        deadline = time.time() + 15
        while results["ok"] < target and time.time() < deadline:
            time.sleep(0.05)
        return results["ok"] >= target

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert wait_for_progress(20), "the healthy client never got going"
    yield results
    # It must keep being served after the bad input, not just before.
    progressed = wait_for_progress(20)
    stop.set()
    t.join(60)
    assert results["err"] == [], results["err"][:5]
    assert progressed, "the healthy client stopped making progress"


def connect(cluster):
    host, port = cluster.bootstrap.split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def test_garbage_bytes_close_the_connection(cluster, healthy_client):
    with connect(cluster) as s:
        payload = os.urandom(64)
        s.sendall(struct.pack(">i", len(payload)) + payload)
        assert closed_by_peer(s)


def test_truncated_frame_and_early_close(cluster, healthy_client):
    with connect(cluster) as s:
        s.sendall(struct.pack(">i", 100) + b"\x00\x12\x00\x03")
    with connect(cluster) as s:
        s.sendall(struct.pack(">i", 6) + b"\x00\x12\x00\x00\x00\x01")  # header too short
        assert closed_by_peer(s)


def test_oversized_length_prefix_is_refused(cluster, healthy_client):
    with connect(cluster) as s:
        s.sendall(struct.pack(">i", 0x7FFFFFFF) + b"\x00" * 16)
        assert closed_by_peer(s)
    with connect(cluster) as s:
        s.sendall(struct.pack(">i", -5))
        assert closed_by_peer(s)


def test_unknown_api_key_closes_and_unknown_api_versions_version_is_answered(cluster, healthy_client):
    with connect(cluster) as s:
        body = struct.pack(">hhih", 999, 0, 1, -1)
        s.sendall(struct.pack(">i", len(body)) + body)
        assert closed_by_peer(s)
    with connect(cluster) as s:
        body = struct.pack(">hhih", 18, 99, 42, -1)  # ApiVersions v99
        s.sendall(struct.pack(">i", len(body)) + body)
        frame = read_frame(s)
        correlation, error = struct.unpack_from(">ih", frame, 0)
        assert (correlation, error) == (42, UNSUPPORTED_VERSION)


def test_corrupt_batch_fails_only_its_partition(cluster, healthy_client):
    create_topic(cluster.bootstrap, "crc-check", 2)
    with connect(cluster) as s:
        s.sendall(produce_v3(7, "crc-check", {0: record_batch(b"good"), 1: record_batch(b"bad", corrupt_crc=True)}))
        errors = parse_produce_v3_response(read_frame(s))
        assert errors == {0: 0, 1: CORRUPT_MESSAGE}
        # The connection stays usable after a partition-level error.
        s.sendall(produce_v3(8, "crc-check", {1: record_batch(b"good too")}))
        assert parse_produce_v3_response(read_frame(s)) == {1: 0}
