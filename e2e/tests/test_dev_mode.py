"""The README's first command: `kafscale-broker` with no flags runs in dev mode
(in-process flusher, local-directory object store, embedded metadata). kcat can
produce to and consume from it, and its data survives a restart."""

import subprocess
import time

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


def test_dev_sasl_prints_an_admin_password_that_scram_accepts(tmp_path):
    import re

    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    broker = Proc("dev-broker", [str(TARGET / "kafscale-broker"), "--dev-sasl", "--listen", bootstrap,
                                 "--data-dir", str(tmp_path / "data")], tmp_path / "dev.log")

    def passwords(count: int) -> list[str]:
        """The passwords printed so far, once there are `count`: the port is
        bound before the credential is derived (PBKDF2, slow in debug
        builds), so the line follows shortly after."""
        deadline = time.monotonic() + 30
        while len(found := re.findall(r"user 'admin', password '([^']+)'", broker.log.read_text())) < count:
            assert time.monotonic() < deadline, broker.tail()
            time.sleep(0.2)
        return found

    try:
        broker.start()
        wait_for_port(port, broker)
        first = passwords(1)[0]
        scram = ["-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanisms=SCRAM-SHA-512",
                 "-X", "sasl.username=admin"]
        kcat("-b", bootstrap, *scram, "-X", f"sasl.password={first}", "-t", "s", "-P", stdin="secret\n")
        assert kcat("-b", bootstrap, *scram, "-X", f"sasl.password={first}", "-t", "s", "-C", "-e", "-q") == "secret\n"
        # Without credentials nothing gets through.
        out = subprocess.run(["kcat", "-b", bootstrap, "-L", "-m", "3"], capture_output=True, text=True, timeout=60)
        assert out.returncode != 0

        broker.kill()
        broker.start()
        wait_for_port(port, broker)
        assert passwords(2) == [first, first], "a restarted dev broker keeps the admin password"
    finally:
        broker.stop()


def _syncs_after(trace: list[str], is_publish) -> list[tuple[str, bool]]:
    """For each line of one thread's trace that publishes a name, the name and
    whether the thread then opened the name's directory and fsynced it before
    publishing anything else."""
    import re

    out = []
    for i, line in enumerate(trace):
        name = is_publish(line)
        if not name:
            continue
        directory = name.rsplit("/", 1)[0]
        fds, synced = set(), False
        for later in trace[i + 1:]:
            if is_publish(later):
                break
            opened = re.search(r'openat\(AT_FDCWD, "([^"]+)", [^)]*\) = (\d+)', later)
            if opened and opened.group(1).rstrip("/") == directory:
                fds.add(opened.group(2))
            fsynced = re.search(r"fsync\((\d+)\)\s*= 0", later)
            if fsynced and fsynced.group(1) in fds:
                synced = True
                break
        out.append((name, synced))
    return out


def test_dev_mode_makes_new_names_durable_before_acknowledging(tmp_path):
    """A synced file is not enough to survive power loss: the directory entry
    that names it (a segment's link, the metadata file's rename) must be
    synced too, before the write is acknowledged."""
    import re

    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    trace_prefix = tmp_path / "trace"
    broker = Proc("dev-broker-traced",
                  # One file per thread (-ff): no call is split by another thread's.
                  ["strace", "-ff", "-qq", "-e", "trace=openat,link,linkat,rename,renameat,renameat2,fsync",
                   "-o", str(trace_prefix),
                   str(TARGET / "kafscale-broker"), "--listen", bootstrap, "--data-dir", str(tmp_path / "data")],
                  tmp_path / "dev-traced.log")
    try:
        broker.start()
        wait_for_port(port, broker, timeout=60)
        kcat("-b", bootstrap, "-t", "durable", "-P", "-X", "acks=all", stdin="one\n")
    finally:
        # The whole process group: strace and the broker it traces.
        import os
        import signal

        if broker.alive():
            os.killpg(broker.popen.pid, signal.SIGTERM)
            try:
                broker.popen.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(broker.popen.pid, signal.SIGKILL)
                broker.popen.wait()
    threads = [f.read_text().splitlines() for f in tmp_path.glob("trace.*")]

    def segment_link(line):
        # A segment, or an intake object on the default write path.
        m = re.search(r'linkat\([^,]+, "[^"]+", [^,]+, "([^"]+\.kf[si])"', line)
        return m and m.group(1)

    def metadata_rename(line):
        m = re.search(r'rename(?:at2?)?\(.*"([^"]+metadata\.json)"', line)
        return m and m.group(1)

    links = [r for t in threads for r in _syncs_after(t, segment_link)]
    renames = [r for t in threads for r in _syncs_after(t, metadata_rename)]
    assert links, "no segment or intake object was linked into place (is the trace complete?)"
    assert renames, "the metadata file was never replaced"
    assert all(synced for _, synced in links), f"object names not made durable: {links}"
    assert all(synced for _, synced in renames), f"metadata renames not made durable: {renames}"
