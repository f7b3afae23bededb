"""Hand-made Kafka frames for feeding the broker bad input. Test-only: real
clients are used for everything else."""

from __future__ import annotations

import socket
import struct

_CRC32C_TABLE = []
for _n in range(256):
    _c = _n
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC32C_TABLE.append(_c)


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC32C_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _varint(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        if z & ~0x7F:
            out.append((z & 0x7F) | 0x80)
            z >>= 7
        else:
            out.append(z)
            return bytes(out)


def record_batch(value: bytes, corrupt_crc: bool = False) -> bytes:
    """One v2 batch holding one record with a null key."""
    body = bytes([0]) + _varint(0) + _varint(0) + _varint(-1) + _varint(len(value)) + value + _varint(0)
    record = _varint(len(body)) + body
    after_crc = struct.pack(">hiqqqhii", 0, 0, 1000, 1000, -1, -1, -1, 1) + record
    crc = crc32c(after_crc) ^ (1 if corrupt_crc else 0)
    after_length = struct.pack(">ibI", 0, 2, crc) + after_crc
    return struct.pack(">qi", 0, len(after_length)) + after_length


def _string(s: str) -> bytes:
    return struct.pack(">h", len(s)) + s.encode()


def produce_v3(correlation_id: int, topic: str, partitions: dict[int, bytes], timeout_ms: int = 10000) -> bytes:
    header = struct.pack(">hhi", 0, 3, correlation_id) + _string("raw-test")
    body = struct.pack(">hhi", -1, -1, timeout_ms) + struct.pack(">i", 1) + _string(topic)
    body += struct.pack(">i", len(partitions))
    for p, records in partitions.items():
        body += struct.pack(">ii", p, len(records)) + records
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def read_frame(sock: socket.socket) -> bytes:
    def exact(n):
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf
    (n,) = struct.unpack(">i", exact(4))
    return exact(n)


def parse_produce_v3_response(frame: bytes) -> dict[int, int]:
    """partition -> error code."""
    pos = 4  # correlation id
    (topics,) = struct.unpack_from(">i", frame, pos)
    pos += 4
    out = {}
    for _ in range(topics):
        (nlen,) = struct.unpack_from(">h", frame, pos)
        pos += 2 + nlen
        (parts,) = struct.unpack_from(">i", frame, pos)
        pos += 4
        for _ in range(parts):
            p, err, _base, _ts = struct.unpack_from(">ihqq", frame, pos)
            pos += 22
            out[p] = err
    return out


def closed_by_peer(sock: socket.socket, timeout: float = 5.0) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def record(value: bytes | None, offset_delta: int, key: bytes | None = None,
           headers: list[tuple[bytes, bytes | None]] = ()) -> bytes:
    """One v2 record with its length prefix."""
    def blob(b):
        return _varint(-1) if b is None else _varint(len(b)) + b
    body = bytes([0]) + _varint(0) + _varint(offset_delta) + blob(key) + blob(value)
    body += _varint(len(headers)) + b"".join(_varint(len(k)) + k + blob(v) for k, v in headers)
    return _varint(len(body)) + body


def raw_batch(records: bytes, records_count: int, last_offset_delta: int, attributes: int = 0,
              producer_id: int = -1, base_sequence: int = -1) -> bytes:
    """A v2 batch around `records` with whatever header fields are asked for,
    and a valid CRC: only what is asked for is wrong."""
    after_crc = struct.pack(">hiqqqhii", attributes, last_offset_delta, 1000, 1000, producer_id, 0,
                            base_sequence, records_count) + records
    after_length = struct.pack(">ibI", 0, 2, crc32c(after_crc)) + after_crc
    return struct.pack(">qi", 0, len(after_length)) + after_length


def frame(api_key: int, version: int, correlation_id: int, body: bytes, client_id: str = "raw-test") -> bytes:
    """A request frame with a non-flexible (v1) request header."""
    payload = struct.pack(">hhi", api_key, version, correlation_id) + _string(client_id) + body
    return struct.pack(">i", len(payload)) + payload


def fetch_v4(correlation_id: int, topic: str, partitions: list[int], max_bytes: int,
             partition_max_bytes: int, max_wait_ms: int = 0) -> bytes:
    """Fetch v4 from offset 0 of each listed partition (repeats allowed)."""
    body = struct.pack(">iiiib", -1, max_wait_ms, 1, max_bytes, 0) + struct.pack(">i", 1) + _string(topic)
    body += struct.pack(">i", len(partitions))
    for p in partitions:
        body += struct.pack(">iqi", p, 0, partition_max_bytes)
    return frame(1, 4, correlation_id, body)


def parse_fetch_v4_response(frame_bytes: bytes) -> list[tuple[int, int, int]]:
    """[(partition, error code, record bytes)] in response order."""
    pos = 8  # correlation id, throttle time
    (topics,) = struct.unpack_from(">i", frame_bytes, pos)
    pos += 4
    out = []
    for _ in range(topics):
        (nlen,) = struct.unpack_from(">h", frame_bytes, pos)
        pos += 2 + nlen
        (parts,) = struct.unpack_from(">i", frame_bytes, pos)
        pos += 4
        for _ in range(parts):
            p, err, _hw, _lso, aborted = struct.unpack_from(">ihqqi", frame_bytes, pos)
            pos += 26 + max(aborted, 0) * 16
            (size,) = struct.unpack_from(">i", frame_bytes, pos)
            pos += 4 + max(size, 0)
            out.append((p, err, max(size, 0)))
    return out


def list_offsets_v1(correlation_id: int, topic: str, partitions: list[int], timestamp: int = -1) -> bytes:
    """ListOffsets v1 for `timestamp` (-1: latest) of each partition."""
    body = struct.pack(">i", -1) + struct.pack(">i", 1) + _string(topic) + struct.pack(">i", len(partitions))
    for p in partitions:
        body += struct.pack(">iq", p, timestamp)
    return frame(2, 1, correlation_id, body)


def parse_list_offsets_v1_response(frame_bytes: bytes) -> dict[int, tuple[int, int]]:
    """partition -> (error code, offset)."""
    pos = 4  # correlation id
    (topics,) = struct.unpack_from(">i", frame_bytes, pos)
    pos += 4
    out = {}
    for _ in range(topics):
        (nlen,) = struct.unpack_from(">h", frame_bytes, pos)
        pos += 2 + nlen
        (parts,) = struct.unpack_from(">i", frame_bytes, pos)
        pos += 4
        for _ in range(parts):
            p, err, _ts, offset = struct.unpack_from(">ihqq", frame_bytes, pos)
            pos += 22
            out[p] = (err, offset)
    return out
