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


def produce_v3(correlation_id: int, topic: str, partitions: dict[int, bytes]) -> bytes:
    header = struct.pack(">hhi", 0, 3, correlation_id) + _string("raw-test")
    body = struct.pack(">hhi", -1, -1, 10000) + struct.pack(">i", 1) + _string(topic)
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
