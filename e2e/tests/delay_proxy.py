"""A loopback TCP proxy that holds back what the server sends by a delay that
can change at run time (bytes stay in order): a broker behind it sees etcd's
watch events, and the answers to its own requests, that much later."""

from __future__ import annotations

import collections
import socket
import threading
import time


class DelayProxy:
    def __init__(self, target_port: int):
        self.target = ("127.0.0.1", target_port)
        self.delay = 0.0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.closed = False
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            self.sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()
            threading.Thread(target=self._pump_delayed, args=(server, client), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _pump_delayed(self, src: socket.socket, dst: socket.socket) -> None:
        held: collections.deque[tuple[float, bytes]] = collections.deque()
        lock = threading.Condition()
        done = []

        def release():
            while True:
                with lock:
                    while not held and not done:
                        lock.wait()
                    if not held:
                        return
                    due, chunk = held[0]
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                    continue
                with lock:
                    held.popleft()
                try:
                    dst.sendall(chunk)
                except OSError:
                    return

        sender = threading.Thread(target=release, daemon=True)
        sender.start()
        try:
            while chunk := src.recv(65536):
                with lock:
                    held.append((time.monotonic() + self.delay, chunk))
                    lock.notify()
        except OSError:
            pass
        with lock:
            done.append(True)
            lock.notify()
        sender.join(timeout=30)
        try:
            dst.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        self.closed = True
        self.listener.close()
        for s in self.sockets:
            try:
                s.close()
            except OSError:
                pass
