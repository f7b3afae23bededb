"""A real Kubernetes API server for the operator tests: kube-apiserver (built
from the k8s.io/kubernetes module) on its own etcd, with a static admin token,
plus a tiny REST client. No kubelet or controller-manager runs, so pods never
start and garbage collection never happens."""

from __future__ import annotations

import json
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from harness import CACHE, Etcd, Proc, free_port, wait_for_port

TOKEN = "kafscale-test-admin-token"


class KubeApiServer:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.etcd = Etcd(workdir / "kube-etcd")
        (workdir / "kube-etcd").mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        pki = workdir / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        subprocess.run(["openssl", "genrsa", "-out", str(pki / "sa.key"), "2048"], check=True, capture_output=True)
        subprocess.run(["openssl", "rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub")],
                       check=True, capture_output=True)
        (pki / "tokens.csv").write_text(f'{TOKEN},admin,admin,"system:masters"\n')
        self.proc = Proc("kube-apiserver", [
            str(CACHE / "bin" / "kube-apiserver"),
            "--etcd-servers", self.etcd.endpoint,
            "--bind-address", "127.0.0.1", "--secure-port", str(self.port),
            "--cert-dir", str(pki / "serving"),
            "--token-auth-file", str(pki / "tokens.csv"),
            "--authorization-mode", "RBAC",
            "--service-account-issuer", "https://kubernetes.default.svc",
            "--service-account-key-file", str(pki / "sa.pub"),
            "--service-account-signing-key-file", str(pki / "sa.key"),
            "--service-cluster-ip-range", "10.96.0.0/16",
            "--disable-admission-plugins", "ServiceAccount",
            "--allow-privileged=true",
        ], workdir / "kube-apiserver.log")
        self.kubeconfig = workdir / "kubeconfig"
        self.kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": self.url, "insecure-skip-tls-verify": True}}],
            "users": [{"name": "admin", "user": {"token": TOKEN}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin", "namespace": "default"}}],
        }))

    def start(self) -> "KubeApiServer":
        self.etcd.start()
        self.proc.start()
        wait_for_port(self.port, self.proc, timeout=60)
        deadline = time.time() + 90
        while time.time() < deadline:
            status, _ = self.request("GET", "/readyz")
            if status == 200:
                # The default namespace appears shortly after readiness.
                if self.request("GET", "/api/v1/namespaces/default")[0] == 200:
                    return self
            time.sleep(0.5)
        raise TimeoutError(f"kube-apiserver not ready:\n{self.proc.tail()}")

    def stop(self) -> None:
        self.proc.stop()
        self.etcd.discard()

    def request(self, method: str, path: str, body: str | bytes | None = None,
                content_type: str = "application/json") -> tuple[int, dict | str]:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        data = body.encode() if isinstance(body, str) else body
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": content_type})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
                raw = r.read().decode()
                status = r.status
        except urllib.error.HTTPError as e:
            raw, status = e.read().decode(), e.code
        except OSError as e:
            return 0, str(e)
        try:
            return status, json.loads(raw)
        except json.JSONDecodeError:
            return status, raw

    def apply(self, path: str, document: str | dict) -> tuple[int, dict | str]:
        """Server-side apply of one object at its full path (…/{name})."""
        body = document if isinstance(document, str) else json.dumps(document)
        return self.request("PATCH", f"{path}?fieldManager=e2e&force=true", body, "application/apply-patch+yaml")

    def get(self, path: str) -> dict | None:
        status, body = self.request("GET", path)
        return body if status == 200 else None

    def wait_for(self, predicate, timeout: float = 60, what: str = "condition"):
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}")


def condition(obj: dict, type_: str) -> dict | None:
    for c in (obj or {}).get("status", {}).get("conditions", []):
        if c["type"] == type_:
            return c
    return None
