#!/usr/bin/env python3
"""Builds a container image without a registry, a daemon or Nix: one layer
holding the given files (dynamically linked programs with the shared
libraries `ldd` names), written as a `docker save` archive that both
`docker load` and containerd's `ctr images import` accept.

    scripts/image-archive.py --tag kafscale-broker:latest -o broker.tar \\
        --program target/release/kafscale-broker:/usr/local/bin/kafscale-broker \\
        --entrypoint /usr/local/bin/kafscale-broker --user 65532:65532 --port 9092/tcp \\
        [--file SRC:DEST] [--dir SRC:DEST] [--env K=V] [--label K=V] [--cmd ARG]

The layer is reproducible: sorted entries, owner 0, modification time 0.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import platform
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path


def shared_libraries(program: Path) -> list[Path]:
    """The libraries the dynamic loader maps for `program` (and the loader
    itself); none for a static program."""
    out = subprocess.run(["ldd", str(program)], capture_output=True, text=True)
    if out.returncode != 0 or "not a dynamic executable" in out.stdout + out.stderr:
        return []
    libs = []
    for line in out.stdout.splitlines():
        m = re.search(r"(/\S+) \(0x", line)
        if m:
            libs.append(Path(m.group(1)))
        elif "not found" in line:
            sys.exit(f"{program}: {line.strip()}; install the library or build the program statically")
    return libs


def split(spec: str) -> tuple[Path, str]:
    src, sep, dest = spec.rpartition(":")
    if not sep or not dest.startswith("/"):
        sys.exit(f"{spec!r}: expected SRC:/absolute/destination")
    return Path(src), dest


class Layer:
    """A tar layer whose entries are added by their path in the image."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[tarfile.TarInfo, bytes | None]] = {}

    def _parents(self, dest: str) -> None:
        parts = dest.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            path = "/".join(parts[:i])
            if path not in self.entries:
                info = tarfile.TarInfo(path)
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                self.entries[path] = (info, None)

    def add_file(self, src: Path, dest: str, mode: int | None = None) -> None:
        data = src.read_bytes()
        info = tarfile.TarInfo(dest.strip("/"))
        info.size, info.mode = len(data), mode if mode is not None else (src.stat().st_mode & 0o777)
        self._parents(dest)
        self.entries[info.name] = (info, data)

    def add_symlink(self, dest: str, target: str) -> None:
        info = tarfile.TarInfo(dest.strip("/"))
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
        self._parents(dest)
        self.entries[info.name] = (info, None)

    def add_dir(self, dest: str, mode: int = 0o755) -> None:
        info = tarfile.TarInfo(dest.strip("/"))
        info.type, info.mode = tarfile.DIRTYPE, mode
        self._parents(dest)
        self.entries[info.name] = (info, None)

    def add_tree(self, src: Path, dest: str) -> None:
        for path in sorted(src.rglob("*")):
            target = dest.rstrip("/") + "/" + str(path.relative_to(src))
            if path.is_symlink():
                self.add_symlink(target, str(path.readlink()))
            elif path.is_dir():
                self.add_dir(target, path.stat().st_mode & 0o777)
            elif path.is_file():
                self.add_file(path, target)
            # Device nodes, sockets and fifos are the runtime's to create.

    def add_program(self, src: Path, dest: str) -> None:
        # Debug information stays out of images, as Nix's builds strip it.
        with tempfile.TemporaryDirectory() as tmp:
            stripped = Path(tmp) / src.name
            subprocess.run(["strip", "--strip-debug", "-o", str(stripped), str(src)], check=True)
            self.add_file(stripped, dest, 0o755)
        for lib in shared_libraries(src):
            # The loader is looked up by the absolute path compiled into
            # the program, libraries by their resolved name.
            self.add_file(lib.resolve(), str(lib), 0o755)

    def tar(self) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name in sorted(self.entries):
                info, data = self.entries[name]
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = 0
                tar.addfile(info, io.BytesIO(data) if data is not None else None)
        return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tag", required=True, action="append", help="NAME:TAG (repeatable)")
    ap.add_argument("-o", "--output", required=True, type=Path)
    ap.add_argument("--program", action="append", default=[], help="SRC:DEST, with its shared libraries")
    ap.add_argument("--file", action="append", default=[], help="SRC:DEST")
    ap.add_argument("--dir", action="append", default=[], help="SRC:DEST, a directory tree")
    ap.add_argument("--empty-dir", action="append", default=[], help="DEST, e.g. /tmp (mode 1777)")
    ap.add_argument("--entrypoint", action="append", default=[])
    ap.add_argument("--cmd", action="append", default=[])
    ap.add_argument("--user")
    ap.add_argument("--workdir")
    ap.add_argument("--port", action="append", default=[], help="e.g. 9092/tcp")
    ap.add_argument("--env", action="append", default=[], help="K=V")
    ap.add_argument("--label", action="append", default=[], help="K=V")
    args = ap.parse_args()

    layer = Layer()
    for spec in args.program:
        layer.add_program(*split(spec))
    for spec in args.file:
        layer.add_file(*split(spec))
    for spec in args.dir:
        layer.add_tree(*split(spec))
    for dest in args.empty_dir:
        layer.add_dir(dest, 0o1777)
    blob = layer.tar()
    diff_id = "sha256:" + hashlib.sha256(blob).hexdigest()

    config: dict = {}
    if args.entrypoint:
        config["Entrypoint"] = args.entrypoint
    if args.cmd:
        config["Cmd"] = args.cmd
    if args.user:
        config["User"] = args.user
    if args.workdir:
        config["WorkingDir"] = args.workdir
    if args.port:
        config["ExposedPorts"] = {p: {} for p in args.port}
    if args.env:
        config["Env"] = args.env
    if args.label:
        config["Labels"] = dict(label.split("=", 1) for label in args.label)
    image = json.dumps({
        "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), "amd64"),
        "os": "linux",
        "created": "1970-01-01T00:00:01Z",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:01Z", "created_by": "scripts/image-archive.py"}],
    }, sort_keys=True).encode()
    image_id = hashlib.sha256(image).hexdigest()
    layer_dir = diff_id.split(":")[1]
    manifest = json.dumps([{"Config": f"{image_id}.json", "RepoTags": args.tag,
                            "Layers": [f"{layer_dir}/layer.tar"]}]).encode()

    args.output.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(args.output, "w") as out:
        for name, data in ((f"{layer_dir}/layer.tar", blob), (f"{image_id}.json", image),
                           ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            out.addfile(info, io.BytesIO(data))
    print(f"{args.output}: {', '.join(args.tag)} ({len(blob) / 2**20:.1f} MiB, image sha256:{image_id[:12]})")


if __name__ == "__main__":
    main()
