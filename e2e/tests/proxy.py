"""A loopback TCP proxy that understands Kafka framing just enough to lose the
response to the first Produce request: it closes the connection after the
broker has appended the batch, so the client must retry it."""

from __future__ import annotations

import socket
import struct
import threading

PRODUCE = 0


def _read_frame(sock: socket.socket) -> bytes | None:
    def exact(n: int) -> bytes | None:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    head = exact(4)
    if head is None:
        return None
    body = exact(struct.unpack(">i", head)[0])
    return None if body is None else head + body


class DropFirstProduceResponse:
    def __init__(self, upstream_port: int, listen_port: int):
        self.upstream = ("127.0.0.1", upstream_port)
        self.listener = socket.create_server(("127.0.0.1", listen_port))
        self.dropped = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            produce_ids: set[int] = set()
            threading.Thread(target=self._requests, args=(client, upstream, produce_ids), daemon=True).start()
            threading.Thread(target=self._responses, args=(upstream, client, produce_ids), daemon=True).start()

    def _requests(self, client, upstream, produce_ids) -> None:
        try:
            while (frame := _read_frame(client)) is not None:
                api_key, _version, correlation = struct.unpack_from(">hhi", frame, 4)
                if api_key == PRODUCE:
                    produce_ids.add(correlation)
                upstream.sendall(frame)
        except OSError:
            pass  # the other direction closed this connection on purpose
        upstream.close()

    def _responses(self, upstream, client, produce_ids) -> None:
        try:
            self._forward_responses(upstream, client, produce_ids)
        except OSError:
            pass

    def _forward_responses(self, upstream, client, produce_ids) -> None:
        while (frame := _read_frame(upstream)) is not None:
            (correlation,) = struct.unpack_from(">i", frame, 4)
            with self.lock:
                drop = correlation in produce_ids and self.dropped == 0
                if drop:
                    self.dropped += 1
            if drop:
                # The broker stored the batch; the client never hears of it.
                client.shutdown(socket.SHUT_RDWR)
                client.close()
                upstream.close()
                return
            client.sendall(frame)
        client.close()
