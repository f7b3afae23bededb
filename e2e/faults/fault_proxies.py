"""Loopback proxies whose faults can be switched at run time, put between the
processes of a cluster so the fault campaign can slow, break or cut single
links without touching the kernel (no iptables, no namespaces: nothing to
restore if the campaign dies).

- `TcpFaultProxy`: any TCP stream (a broker's etcd connection, clients to a
  broker's Kafka port). It can delay every chunk, in both directions and in
  order, or *blackhole* the link: connections stay open but nothing is
  forwarded either way until the fault heals, when what was held is
  delivered (as TCP retransmission would after a short partition).
- `S3FaultProxy`: HTTP/1.1 in front of MinIO, request by request. It can hold
  requests of some methods back for a while (a PUT held this way is still
  forwarded after the client gave up: a late landing, which recovery must
  cope with), answer 503 instead of forwarding, refuse every connection, or
  blackhole requests until healed.
"""

from __future__ import annotations

import collections
import random
import socket
import struct
import threading
import time
from typing import Callable


def _hard_close(sock: socket.socket) -> None:
    """Close with a reset (SO_LINGER 0), as a dead server's host would."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class TcpFaultProxy:
    def __init__(self, target_port: int, name: str):
        self.name = name
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.cond = threading.Condition()
        self.delay = 0.0
        self.blackholed = False
        self.closed = False
        self.sockets: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True, name=f"{name}-accept").start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_delay(self, seconds: float) -> None:
        with self.cond:
            self.delay = seconds
            self.cond.notify_all()

    def set_blackhole(self, on: bool) -> None:
        with self.cond:
            self.blackholed = on
            self.cond.notify_all()

    def heal(self) -> None:
        with self.cond:
            self.delay = 0.0
            self.blackholed = False
            self.cond.notify_all()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
                server.settimeout(None)
            except OSError:
                # The target is down (an etcd outage): like a refused connection.
                _hard_close(client)
                continue
            with self.cond:
                self.sockets |= {client, server}
            ended = []

            def finished(pair=(client, server), ended=ended) -> None:
                # Once both directions are done the sockets are closed (their
                # descriptors would otherwise pile up over a long campaign).
                with self.cond:
                    ended.append(True)
                    if len(ended) < 2:
                        return
                    self.sockets -= set(pair)
                for s in pair:
                    try:
                        s.close()
                    except OSError:
                        pass
            self._pipe(client, server, finished)
            self._pipe(server, client, finished)

    def _pipe(self, src: socket.socket, dst: socket.socket, finished: Callable[[], None]) -> None:
        """One direction: a reader that stamps each chunk with its release
        time, and a writer that sends chunks once due and not blackholed."""
        held: collections.deque[tuple[float, bytes | None]] = collections.deque()

        def read() -> None:
            try:
                while chunk := src.recv(65536):
                    with self.cond:
                        held.append((time.monotonic() + self.delay, chunk))
                        self.cond.notify_all()
            except OSError:
                pass
            with self.cond:
                held.append((time.monotonic() + self.delay, None))  # end of stream
                self.cond.notify_all()

        def write() -> None:
            while True:
                with self.cond:
                    while not self.closed and (not held or self.blackholed):
                        self.cond.wait()
                    if self.closed:
                        return
                    due, chunk = held[0]
                    wait = due - time.monotonic()
                    if wait > 0:
                        self.cond.wait(wait)
                        continue
                    held.popleft()
                try:
                    if chunk is None:
                        dst.shutdown(socket.SHUT_WR)
                        return
                    dst.sendall(chunk)
                except OSError:
                    # One side is gone: so is the connection, both ways.
                    for s in (src, dst):
                        try:
                            s.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
                    return

        def write_then_finish() -> None:
            try:
                write()
            finally:
                finished()

        threading.Thread(target=read, daemon=True, name=f"{self.name}-read").start()
        threading.Thread(target=write_then_finish, daemon=True, name=f"{self.name}-write").start()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
            sockets = list(self.sockets)
        self.listener.close()
        for s in sockets:
            try:
                s.close()
            except OSError:
                pass


class _Reader:
    """Buffered reads from a socket: lines and exact byte counts."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = b""

    def _more(self) -> bool:
        chunk = self.sock.recv(65536)
        if not chunk:
            return False
        self.buf += chunk
        return True

    def until(self, marker: bytes) -> bytes | None:
        while (i := self.buf.find(marker)) < 0:
            if not self._more():
                return None
        out, self.buf = self.buf[: i + len(marker)], self.buf[i + len(marker):]
        return out

    def exact(self, n: int) -> bytes | None:
        while len(self.buf) < n:
            if not self._more():
                return None
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def _error_response(method: str, code: str) -> bytes:
    body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
            f"<Message>injected by the fault campaign</Message></Error>").encode()
    head = (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    return head if method == "HEAD" else head + body


class S3FaultProxy:
    """HTTP/1.1 proxy in front of MinIO. Clients (the AWS SDK) send one request
    at a time per connection, so a request's answer always precedes the next
    request and an injected 503 can be written in place of forwarding."""

    def __init__(self, target_port: int, name: str, seed: int = 0):
        self.name = name
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.cond = threading.Condition()
        self.rng = random.Random(seed)
        self.delays: dict[str, float] = {}  # method -> seconds each request is held
        self.error_rate = 0.0  # share of requests answered 503
        self.refusing = False
        self.blackholed = False
        self.closed = False
        self.sockets: set[socket.socket] = set()
        self.counts = collections.Counter()  # what was done to how many requests
        threading.Thread(target=self._accept, daemon=True, name=f"{name}-accept").start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set(self, delays: dict[str, float] | None = None, error_rate: float | None = None,
            refusing: bool | None = None, blackholed: bool | None = None) -> None:
        with self.cond:
            if delays is not None:
                self.delays = dict(delays)
            if error_rate is not None:
                self.error_rate = error_rate
            if blackholed is not None:
                self.blackholed = blackholed
            if refusing is not None:
                self.refusing = refusing
                if refusing:
                    # Open connections die with the server.
                    for s in list(self.sockets):
                        _hard_close(s)
                    self.sockets.clear()
            self.cond.notify_all()

    def heal(self) -> None:
        self.set(delays={}, error_rate=0.0, refusing=False, blackholed=False)

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.refusing:
                self.counts["refused"] += 1
                _hard_close(client)
                continue
            with self.cond:
                self.sockets.add(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True, name=f"{self.name}-conn").start()

    def _read_request(self, r: _Reader, client: socket.socket) -> tuple[str, bytes] | None:
        head = r.until(b"\r\n\r\n")
        if head is None:
            return None
        lines = head.decode("latin-1").split("\r\n")
        method = lines[0].split(" ", 1)[0]
        headers = {}
        kept = [lines[0]]
        for line in lines[1:]:
            if not line:
                continue
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
            if k.strip().lower() == "expect":
                continue  # answered here, below: MinIO never sees it
            kept.append(line)
        if headers.get("expect", "").lower() == "100-continue":
            client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = b""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                size_line = r.until(b"\r\n")
                if size_line is None:
                    return None
                body += size_line
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while (trailer := r.until(b"\r\n")) not in (None, b"\r\n"):
                        body += trailer
                    if trailer is None:
                        return None
                    body += trailer
                    break
                data = r.exact(size + 2)
                if data is None:
                    return None
                body += data
        elif (length := int(headers.get("content-length", "0") or 0)) > 0:
            body = r.exact(length)
            if body is None:
                return None
        return method, ("\r\n".join(kept) + "\r\n\r\n").encode("latin-1") + body

    def _serve(self, client: socket.socket) -> None:
        r = _Reader(client)
        upstream: socket.socket | None = None
        try:
            while True:
                try:
                    req = self._read_request(r, client)
                except (OSError, ValueError):
                    req = None
                if req is None:
                    break
                method, raw = req
                with self.cond:
                    held = False
                    while self.blackholed and not self.closed:
                        held = True
                        self.cond.wait()
                    if held:
                        self.counts["held by a partition"] += 1
                    refuse = self.refusing
                    fail = self.error_rate > 0 and self.rng.random() < self.error_rate
                    delay = self.delays.get(method, 0.0)
                if refuse or self.closed:
                    _hard_close(client)
                    return
                if fail:
                    self.counts["answered 503"] += 1
                    client.sendall(_error_response(method, self.rng.choice(["SlowDown", "ServiceUnavailable"])))
                    break
                if delay > 0:
                    self.counts[f"{method} delayed"] += 1
                    # Held even if the client gives up meanwhile: the request is
                    # on its way and lands late.
                    time.sleep(delay)
                if upstream is None:
                    try:
                        upstream = socket.create_connection(self.target, timeout=5)
                        upstream.settimeout(None)
                    except OSError:
                        _hard_close(client)  # MinIO itself is down
                        return
                    with self.cond:
                        self.sockets.add(upstream)
                    threading.Thread(target=self._responses, args=(upstream, client), daemon=True,
                                     name=f"{self.name}-resp").start()
                upstream.sendall(raw)
                self.counts["forwarded"] += 1
        except OSError:
            pass
        finally:
            with self.cond:
                self.sockets.discard(client)
            try:
                client.close()
            except OSError:
                pass
            if upstream is not None:
                # Let MinIO finish (and answer) what was forwarded last before
                # the connection goes: closing at once could abort a PUT that
                # is meant to land late.
                def close_upstream(upstream=upstream) -> None:
                    with self.cond:
                        self.sockets.discard(upstream)
                    upstream.close()
                closer = threading.Timer(10.0, close_upstream)
                closer.daemon = True
                closer.start()

    def _responses(self, upstream: socket.socket, client: socket.socket) -> None:
        client_gone = False
        try:
            while chunk := upstream.recv(65536):
                if not client_gone:
                    try:
                        client.sendall(chunk)
                    except OSError:
                        client_gone = True  # keep draining MinIO's answer
        except OSError:
            pass
        try:
            client.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
            sockets = list(self.sockets)
        self.listener.close()
        for s in sockets:
            try:
                s.close()
            except OSError:
                pass
