"""Consumer-group members as child processes, and checks over what they did."""

from __future__ import annotations

import subprocess
import threading
import time

from harness import CACHE, REPO


class JavaMember:
    """One GroupConsumer.java process; its event lines are collected as they come."""

    def __init__(self, bootstrap: str, topic: str, group: str, assignor: str, version: str = "4.1.1"):
        self.name = f"{assignor}-{id(self) % 10000}"
        self.events: list[tuple[str, ...]] = []
        self.proc = subprocess.Popen(
            ["java", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp", str(CACHE / "jars" / f"kafka-{version}" / "*"),
             str(REPO / "e2e" / "clients" / "java" / "GroupConsumer.java"), bootstrap, topic, group, assignor],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.stderr: list[str] = []
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.events.append(tuple(line.split()))

    def records(self) -> list[tuple[int, int, str]]:
        return [(int(e[1]), int(e[2]), e[3]) for e in list(self.events) if e[0] == "REC"]

    def wait_for(self, predicate, timeout: float = 60.0, what: str = "condition") -> None:
        deadline = time.time() + timeout
        while not predicate():
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited: {''.join(self.stderr)[-3000:]}")
            if time.time() > deadline:
                raise AssertionError(f"{self.name}: timed out waiting for {what}; events {list(self.events)[-10:]}")
            time.sleep(0.1)

    def assigned(self) -> bool:
        return any(e[0] == "ASSIGN" and len(e) > 2 for e in list(self.events))

    def stop(self, timeout: float = 60.0) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} had exited: {''.join(self.stderr)[-3000:]}")
        self.proc.stdin.write("stop\n")
        self.proc.stdin.flush()
        self.proc.wait(timeout)
        self.reader.join(10)
        assert self.events and self.events[-1] == ("CLOSED",), f"{self.name} did not close cleanly: {''.join(self.stderr)[-3000:]}"

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


def ownership_intervals(members: list[JavaMember]) -> dict[int, list[tuple[int, int, str]]]:
    """partition -> [(from_ms, to_ms, member)] from ASSIGN/REVOKE/LOST events.
    With the eager protocol every rebalance revokes everything and re-assigns;
    with the cooperative one only what moves."""
    out: dict[int, list[tuple[int, int, str]]] = {}
    for m in members:
        held: dict[int, int] = {}
        for e in m.events:
            if e[0] in ("ASSIGN", "REVOKE", "LOST") and len(e) >= 2:
                t = int(e[1])
                ps = [int(p) for p in e[2].split(",")] if len(e) > 2 else []
                for p in ps:
                    if e[0] == "ASSIGN":
                        held[p] = t
                    elif p in held:
                        out.setdefault(p, []).append((held.pop(p), t, m.name))
        for p, t in held.items():
            out.setdefault(p, []).append((t, 2**62, m.name))
    return out


def check_no_double_ownership(members: list[JavaMember]) -> None:
    for p, intervals in ownership_intervals(members).items():
        intervals.sort()
        for (a0, a1, am), (b0, b1, bm) in zip(intervals, intervals[1:]):
            assert a1 <= b0, f"partition {p} owned by {am} [{a0},{a1}] and {bm} [{b0},{b1}] at once"
