"""An S3-compatible server that ignores conditional-write headers
(`If-None-Match`, `If-Match`), as some S3-compatible stores do: every PUT
succeeds and overwrites. Just enough of the S3 API for the flusher to start
against it; it checks no signature."""

from __future__ import annotations

import hashlib
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    objects: dict[str, bytes]

    def log_message(self, *args):  # quiet
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _key(self) -> tuple[str, str, dict]:
        url = urllib.parse.urlsplit(self.path)
        parts = url.path.lstrip("/").split("/", 1)
        return parts[0], (parts[1] if len(parts) > 1 else ""), urllib.parse.parse_qs(url.query, keep_blank_values=True)

    def do_HEAD(self):
        self._reply(200)

    def do_PUT(self):
        _, key, _ = self._key()
        body = self._body()
        if key:
            self.objects[key] = body  # whatever If-None-Match / If-Match say
        self._reply(200, headers={"ETag": '"%s"' % hashlib.md5(body).hexdigest()})

    def do_GET(self):
        _, key, query = self._key()
        if not key:
            prefix = query.get("prefix", [""])[0]
            items = "".join(f"<Contents><Key>{k}</Key><Size>{len(v)}</Size></Contents>"
                            for k, v in sorted(self.objects.items()) if k.startswith(prefix))
            xml = f'<?xml version="1.0"?><ListBucketResult><IsTruncated>false</IsTruncated>{items}</ListBucketResult>'
            return self._reply(200, xml.encode(), {"Content-Type": "application/xml"})
        if key not in self.objects:
            return self._reply(404, b"<Error><Code>NoSuchKey</Code></Error>", {"Content-Type": "application/xml"})
        self._reply(200, self.objects[key])

    def do_DELETE(self):
        _, key, _ = self._key()
        self.objects.pop(key, None)
        self._reply(204)

    def do_POST(self):  # multi-object delete
        body = self._body().decode(errors="replace")
        for chunk in body.split("<Key>")[1:]:
            self.objects.pop(chunk.split("</Key>")[0], None)
        self._reply(200, b'<?xml version="1.0"?><DeleteResult></DeleteResult>', {"Content-Type": "application/xml"})


class CarelessS3:
    def __init__(self):
        handler = type("Handler", (_Handler,), {"objects": {}})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "CarelessS3":
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
