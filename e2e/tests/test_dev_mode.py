"""The README's first command: `kafscale-broker` with no flags runs in dev mode
(in-process flusher, local-directory object store, embedded metadata). kcat can
produce to and consume from it, and its data survives a restart."""

import subprocess

from harness import TARGET, Proc, free_port, wait_for_port


def kcat(*args, stdin=None):
    out = subprocess.run(["kcat", *args], input=stdin, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_dev_mode_serves_kcat_and_keeps_data(tmp_path):
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    broker = Proc("dev-broker", [str(TARGET / "kafscale-broker"), "--listen", bootstrap, "--data-dir", str(tmp_path / "data")],
                  tmp_path / "dev.log")
    try:
        broker.start()
        wait_for_port(port, broker)
        assert "dev mode" in broker.tail() and str(tmp_path / "data") in broker.tail()
        kcat("-b", bootstrap, "-t", "hello", "-P", "-K:", stdin="k1:one\nk2:two\n")
        assert kcat("-b", bootstrap, "-t", "hello", "-C", "-e", "-q", "-f", "%o %k %s\n") == "0 k1 one\n1 k2 two\n"

        broker.kill()
        broker.start()
        wait_for_port(port, broker)
        kcat("-b", bootstrap, "-t", "hello", "-P", stdin="three\n")
        assert kcat("-b", bootstrap, "-t", "hello", "-C", "-e", "-q", "-f", "%o %s\n") == "0 one\n1 two\n2 three\n"
    finally:
        broker.stop()
