"""Certificates and tokens for the security tests, made with the openssl
command line: certificate authorities, server and client certificates, an
identity provider's RSA key with its JWKS document, and signed JWTs."""

from __future__ import annotations

import base64
import json
import subprocess
import time
from pathlib import Path


def _openssl(*args: str, cwd: Path, data: bytes | None = None) -> bytes:
    out = subprocess.run(["openssl", *args], cwd=cwd, input=data, capture_output=True, timeout=60)
    assert out.returncode == 0, f"openssl {' '.join(args)} failed:\n{out.stderr.decode()}"
    return out.stdout


class CA:
    """A certificate authority in `dir/name.*`."""

    def __init__(self, dir: Path, name: str):
        self.dir = dir
        self.name = name
        self.key = dir / f"{name}.key"
        self.cert = dir / f"{name}.pem"
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", str(self.key), "-out", str(self.cert), "-days", "2", "-subj", f"/CN={name}",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=dir)

    def issue(self, name: str, subject: str, server: bool = False,
              dns_names: list[str] | None = None) -> tuple[Path, Path]:
        """A leaf certificate and its key; `server` adds the loopback names,
        `dns_names` further DNS names (wildcards allowed)."""
        key, csr, cert = (self.dir / f"{name}.{ext}" for ext in ("key", "csr", "pem"))
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", str(key), "-out", str(csr), "-subj", subject, cwd=self.dir)
        ext = self.dir / f"{name}.ext"
        lines = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature",
                 "extendedKeyUsage=serverAuth,clientAuth"]
        names = (["IP:127.0.0.1", "DNS:localhost"] if server else []) + [f"DNS:{d}" for d in dns_names or []]
        if names:
            lines.append("subjectAltName=" + ",".join(names))
        ext.write_text("\n".join(lines) + "\n")
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
                 "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext), cwd=self.dir)
        return cert, key


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class IdentityProvider:
    """An RSA signing key, its JWKS document, and tokens it signs (RS256)."""

    def __init__(self, dir: Path, name: str, kid: str):
        self.dir = dir
        self.kid = kid
        self.key = dir / f"{name}.key"
        _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(self.key), cwd=dir)
        modulus = _openssl("rsa", "-in", str(self.key), "-noout", "-modulus", cwd=dir).decode().strip()
        self.n = bytes.fromhex(modulus.split("=", 1)[1])

    def jwk(self) -> dict:
        return {"kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256",
                "n": b64url(self.n), "e": b64url((65537).to_bytes(3, "big"))}

    def token(self, sub: str, issuer: str | None, lifetime_s: int = 600, **claims) -> str:
        """A signed token; without an issuer it has no `iss` claim."""
        now = int(time.time())
        header = {"alg": "RS256", "typ": "JWT", "kid": self.kid}
        payload = {"sub": sub, "iat": now, "exp": now + lifetime_s, **claims}
        if issuer is not None:
            payload["iss"] = issuer
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
        signature = _openssl("dgst", "-sha256", "-sign", str(self.key), cwd=self.dir, data=signing_input.encode())
        return f"{signing_input}.{b64url(signature)}"


def write_jwks(path: Path, *providers: IdentityProvider) -> None:
    path.write_text(json.dumps({"keys": [p.jwk() for p in providers]}))
