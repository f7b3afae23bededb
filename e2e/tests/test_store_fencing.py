"""Fencing rests on the store refusing a second create-once write of a key.
On a store that ignores conditional writes the flusher refuses to run: it
never opens its socket (so no broker can write through it) and /readyz says
why."""

import time

from careless_s3 import CarelessS3
from harness import TARGET, Proc, free_port, http_get


def test_flusher_refuses_a_store_that_ignores_conditional_writes(tmp_path):
    with CarelessS3() as s3:
        socket = tmp_path / "run" / "flusher.sock"
        port = free_port()
        flusher = Proc(
            "flusher-careless",
            [str(TARGET / "kafscale-flusher"), "--socket", str(socket), "--bucket", "kafscale",
             "--endpoint", s3.endpoint, "--path-style", "--prefix", "test/careless",
             "--s3-attempt-timeout-ms", "2000", "--s3-max-attempts", "1",
             "--http-listen", f"127.0.0.1:{port}"],
            tmp_path / "flusher.log",
            env={"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y", "AWS_EC2_METADATA_DISABLED": "true"},
        )
        flusher.start()
        try:
            deadline = time.time() + 30
            status, body = 0, ""
            while time.time() < deadline and "If-None-Match" not in body:
                status, body = http_get(port, "/readyz")
                time.sleep(0.2)
            assert status == 503, (status, body)
            assert "conditional_writes" in body and "If-None-Match" in body, body
            assert flusher.alive(), "the flusher exited instead of saying why on /readyz"
            assert not socket.exists(), "the flusher opened its socket on a store that does not fence"
            assert "refusing to run" in flusher.tail()
        finally:
            flusher.stop()
