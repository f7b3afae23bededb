"""Listeners, TLS and SASL with real clients (librdkafka, Kafka's Java
clients 3.9 and 4.x, franz-go and Kafka's CLI) against a broker with four
listeners, one per security protocol, backed by real etcd and MinIO."""

from __future__ import annotations

import re
import socket
import struct
import subprocess
import time

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient

import rawkafka
from clients import JAVA_VERSIONS, franz_roundtrip, java_roundtrip, librdkafka_roundtrip
from conftest import create_topic, running
from harness import CACHE, Cluster, free_port
from pki import CA, IdentityProvider, write_jwks

ISSUER = "https://idp.test"
ADMIN = ("admin", "admin-secret")
KAFKA = "4.1.1"


class Secure:
    """The cluster, its listeners' addresses and the files clients need."""

    def __init__(self, tmp):
        pki = tmp / "pki"
        pki.mkdir()
        self.pki = pki
        self.ca = CA(pki, "ca")
        self.server_cert, self.server_key = self.ca.issue("server", "/CN=broker", server=True)
        self.client_cert, self.client_key = self.ca.issue("client", "/O=Example/CN=orders-client")
        self.stranger_ca = CA(pki, "stranger")
        self.stranger_cert, self.stranger_key = self.stranger_ca.issue("stranger-client", "/CN=stranger")
        self.idp = IdentityProvider(pki, "idp", "k1")
        self.other_idp = IdentityProvider(pki, "other-idp", "k1")
        self.jwks = pki / "jwks.json"
        write_jwks(self.jwks, self.idp)

        self.plain_port, sasl_port, ssl_port, sasl_ssl_port = (free_port() for _ in range(4))
        self.plaintext = f"127.0.0.1:{self.plain_port}"
        self.sasl_plaintext = f"127.0.0.1:{sasl_port}"
        self.ssl = f"127.0.0.1:{ssl_port}"
        # Advertised under another name than it binds: Metadata must say so.
        self.sasl_ssl = f"localhost:{sasl_ssl_port}"
        self.cluster = Cluster(tmp, "secure", broker_port=self.plain_port, broker_args=[
            "--listeners", f"PLAINTEXT://{self.plaintext},SASL_PLAINTEXT://{self.sasl_plaintext},"
                           f"SSL://{self.ssl},SASL_SSL://127.0.0.1:{sasl_ssl_port}",
            "--advertised-listeners", f"SASL_SSL://{self.sasl_ssl}",
            "--tls-cert-file", str(self.server_cert), "--tls-key-file", str(self.server_key),
            "--tls-client-ca-file", str(self.ca.cert), "--tls-client-auth", "requested",
            "--tls-reload-interval-ms", "300",
            "--sasl-enabled-mechanisms", "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512,OAUTHBEARER",
            "--sasl-oauthbearer-jwks-file", str(self.jwks), "--sasl-oauthbearer-expected-issuer", ISSUER,
            "--connections-max-reauth-ms", "4000",
        ], broker_env={
            "KAFSCALE_SASL_BOOTSTRAP_USERS": f"{ADMIN[0]}:{ADMIN[1]}",
            "RUST_LOG": "info,kafscale_broker::security=debug,kafscale_broker::kafka::server=debug",
        })

    def tls(self, client_cert: bool = False) -> dict:
        config = {"ssl.ca.location": str(self.ca.cert)}
        if client_cert:
            config.update({"ssl.certificate.location": str(self.client_cert),
                           "ssl.key.location": str(self.client_key)})
        return config

    def scram(self, protocol: str, mechanism: str = "SCRAM-SHA-512", user=ADMIN) -> dict:
        config = {"security.protocol": protocol, "sasl.mechanisms": mechanism,
                  "sasl.username": user[0], "sasl.password": user[1]}
        if protocol == "SASL_SSL":
            config.update(self.tls())
        return config

    def broker_log(self) -> str:
        # Without the terminal colours tracing adds around field names.
        return re.sub(r"\x1b\[[0-9;]*m", "", self.cluster.broker.proc.log.read_text(errors="replace"))


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    s = Secure(tmp_path_factory.mktemp("secure"))
    with running(s.cluster):
        yield s


def refused(bootstrap: str, config: dict, timeout: float = 6) -> str:
    """The error a client gets when it cannot get in (metadata never comes)."""
    errors: list[str] = []
    admin = AdminClient({"bootstrap.servers": bootstrap, "error_cb": lambda e: errors.append(str(e)), **config})
    if "oauth_cb" in config:
        admin.poll(0.5)  # serves the token callback
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=timeout)
    admin.poll(0.5)
    return " ".join(errors)


def test_each_listener_answers_with_its_own_addresses(secure):
    def advertised(bootstrap, config):
        md = AdminClient({"bootstrap.servers": bootstrap, **config}).list_topics(timeout=15)
        return {f"{b.host}:{b.port}" for b in md.brokers.values()}

    assert advertised(secure.plaintext, {}) == {secure.plaintext}
    assert advertised(secure.ssl, {"security.protocol": "SSL", **secure.tls()}) == {secure.ssl}
    assert advertised(secure.sasl_plaintext, secure.scram("SASL_PLAINTEXT")) == {secure.sasl_plaintext}
    assert advertised(secure.sasl_ssl, secure.scram("SASL_SSL")) == {secure.sasl_ssl}


def test_tls_round_trips_with_every_client(secure):
    for topic in ("tls-librdkafka", "tls-franz", *(f"tls-java-{v}" for v in JAVA_VERSIONS)):
        create_topic(secure.plaintext, topic)
    ssl = {"security.protocol": "SSL", **secure.tls()}
    assert librdkafka_roundtrip(secure.ssl, "tls-librdkafka", "lz4", 300, ssl).startswith("ok")
    props = secure.pki / "java-ssl.properties"
    props.write_text(f"security.protocol=SSL\nssl.truststore.type=PEM\nssl.truststore.location={secure.ca.cert}\n")
    for version in JAVA_VERSIONS:
        assert java_roundtrip(version, secure.ssl, f"tls-java-{version}", "zstd", 300, str(props)).startswith("ok")
    assert franz_roundtrip(secure.ssl, "tls-franz", "snappy", 300, "-tls-ca", str(secure.ca.cert)).startswith("ok")


def test_a_client_certificate_names_the_principal(secure):
    """--tls-client-auth requested: a verified certificate names the
    principal; a client without one is ANONYMOUS."""
    mtls = {"security.protocol": "SSL", **secure.tls(client_cert=True)}
    create_topic(secure.plaintext, "mtls-rt")
    assert librdkafka_roundtrip(secure.ssl, "mtls-rt", "none", 100, mtls).startswith("ok")
    assert "principal=User:CN=orders-client,O=Example" in secure.broker_log()


def test_required_client_certificates_refuse_clients_without_a_trusted_one(secure, tmp_path):
    plain, ssl = free_port(), free_port()
    cluster = Cluster(tmp_path, "mtls", broker_port=plain, broker_args=[
        "--listeners", f"PLAINTEXT://127.0.0.1:{plain},SSL://127.0.0.1:{ssl}",
        "--tls-cert-file", str(secure.server_cert), "--tls-key-file", str(secure.server_key),
        "--tls-client-ca-file", str(secure.ca.cert), "--tls-client-auth", "required",
    ], broker_env={"RUST_LOG": "info,kafscale_broker::kafka::server=debug"})
    with running(cluster):
        bootstrap = f"127.0.0.1:{ssl}"
        create_topic(cluster.bootstrap, "mtls-required")
        mtls = {"security.protocol": "SSL", **secure.tls(client_cert=True)}
        assert librdkafka_roundtrip(bootstrap, "mtls-required", "none", 50, mtls).startswith("ok")
        untrusted = {"security.protocol": "SSL", **secure.tls(),
                     "ssl.certificate.location": str(secure.stranger_cert),
                     "ssl.key.location": str(secure.stranger_key)}
        refused(bootstrap, untrusted)
        refused(bootstrap, {"security.protocol": "SSL", **secure.tls()})
        assert "TLS handshake failed" in cluster.broker.proc.log.read_text()
        # A client that does not trust the broker's CA does not get in either.
        refused(bootstrap, {"security.protocol": "SSL", "ssl.ca.location": str(secure.stranger_ca.cert),
                            "ssl.certificate.location": str(secure.client_cert),
                            "ssl.key.location": str(secure.client_key)})


def handshake_offers(bootstrap: str, mechanism: str) -> tuple[int, bytes]:
    """SaslHandshake v1 for `mechanism` on a plaintext socket: the error code
    and the response (which lists the listener's mechanisms)."""
    host, port = bootstrap.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(rawkafka.frame(17, 1, 3, rawkafka._string(mechanism)))
        frame = rawkafka.read_frame(sock)
        return struct.unpack(">h", frame[4:6])[0], frame


def test_each_listener_has_its_own_mechanisms_and_client_authentication(secure, tmp_path):
    """Kafka's listener.name.NAME.sasl.enabled.mechanisms and
    listener.name.NAME.ssl.client.auth as --listener-* flags."""
    plain, scram, oauth_port, mtls, tls = (free_port() for _ in range(5))
    cluster = Cluster(tmp_path, "per-listener", broker_port=plain, broker_args=[
        "--listeners", f"PLAINTEXT://127.0.0.1:{plain},SCRAM://127.0.0.1:{scram},OAUTH://127.0.0.1:{oauth_port},"
                       f"MTLS://127.0.0.1:{mtls},TLS://127.0.0.1:{tls}",
        "--listener-security-protocol-map",
        "PLAINTEXT:PLAINTEXT,SCRAM:SASL_PLAINTEXT,OAUTH:SASL_PLAINTEXT,MTLS:SSL,TLS:SSL",
        "--listener-sasl-enabled-mechanisms", "SCRAM:SCRAM-SHA-512;OAUTH:OAUTHBEARER",
        "--tls-cert-file", str(secure.server_cert), "--tls-key-file", str(secure.server_key),
        "--tls-client-ca-file", str(secure.ca.cert), "--listener-tls-client-auth", "MTLS:required;TLS:none",
        "--sasl-oauthbearer-jwks-file", str(secure.jwks), "--sasl-oauthbearer-expected-issuer", ISSUER,
    ], broker_env={"KAFSCALE_SASL_BOOTSTRAP_USERS": f"{ADMIN[0]}:{ADMIN[1]}"})
    with running(cluster):
        scram_at, oauth_at = f"127.0.0.1:{scram}", f"127.0.0.1:{oauth_port}"
        for topic in ("pl-scram", "pl-oauth", "pl-mtls", "pl-tls"):
            create_topic(cluster.bootstrap, topic)
        assert librdkafka_roundtrip(scram_at, "pl-scram", "none", 50,
                                    secure.scram("SASL_PLAINTEXT")).startswith("ok")
        token = secure.idp.token("svc-per-listener", ISSUER)
        assert librdkafka_roundtrip(oauth_at, "pl-oauth", "none", 50, oauth(lambda: token)).startswith("ok")
        # Each SASL listener offers only its own mechanisms.
        error, frame = handshake_offers(scram_at, "OAUTHBEARER")
        assert error == 33 and b"SCRAM-SHA-512" in frame and b"OAUTHBEARER" not in frame
        error, frame = handshake_offers(oauth_at, "SCRAM-SHA-512")
        assert error == 33 and b"OAUTHBEARER" in frame and b"SCRAM" not in frame
        # Client certificates: required on MTLS, not asked for on TLS.
        anonymous_tls = {"security.protocol": "SSL", **secure.tls()}
        refused(f"127.0.0.1:{mtls}", anonymous_tls)
        mtls_client = {"security.protocol": "SSL", **secure.tls(client_cert=True)}
        assert librdkafka_roundtrip(f"127.0.0.1:{mtls}", "pl-mtls", "none", 50, mtls_client).startswith("ok")
        assert librdkafka_roundtrip(f"127.0.0.1:{tls}", "pl-tls", "none", 50, anonymous_tls).startswith("ok")


@pytest.mark.parametrize("protocol,mechanism", [
    ("SASL_PLAINTEXT", "SCRAM-SHA-256"), ("SASL_PLAINTEXT", "SCRAM-SHA-512"),
    ("SASL_SSL", "SCRAM-SHA-256"), ("SASL_SSL", "SCRAM-SHA-512"), ("SASL_SSL", "PLAIN"),
])
def test_sasl_round_trips_with_librdkafka(secure, protocol, mechanism):
    topic = f"sasl-{protocol}-{mechanism}".lower()
    create_topic(secure.plaintext, topic)
    bootstrap = secure.sasl_ssl if protocol == "SASL_SSL" else secure.sasl_plaintext
    assert librdkafka_roundtrip(bootstrap, topic, "gzip", 200, secure.scram(protocol, mechanism)).startswith("ok")


def test_sasl_round_trips_with_java_and_franz(secure):
    topics = [f"sasl-java-{v}" for v in JAVA_VERSIONS] + ["sasl-franz-256", "sasl-franz-512", "sasl-franz-plain"]
    for topic in topics:
        create_topic(secure.plaintext, topic)
    props = secure.pki / "java-scram.properties"
    props.write_text(
        "security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\n"
        f"ssl.truststore.type=PEM\nssl.truststore.location={secure.ca.cert}\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{ADMIN[0]}" password="{ADMIN[1]}";\n')
    for version in JAVA_VERSIONS:
        assert java_roundtrip(version, secure.sasl_ssl, f"sasl-java-{version}", "lz4", 300, str(props)).startswith("ok")
    user = ["-user", ADMIN[0], "-password", ADMIN[1]]
    for mechanism, topic in (("scram-sha-256", "sasl-franz-256"), ("scram-sha-512", "sasl-franz-512")):
        assert franz_roundtrip(secure.sasl_plaintext, topic, "none", 200, "-sasl", mechanism, *user).startswith("ok")
    assert franz_roundtrip(secure.sasl_ssl, "sasl-franz-plain", "none", 200, "-tls-ca", str(secure.ca.cert),
                           "-sasl", "plain", *user).startswith("ok")


def test_bad_credentials_and_mechanisms_are_refused_with_a_reason(secure):
    for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
        wrong = refused(secure.sasl_plaintext, secure.scram("SASL_PLAINTEXT", mechanism, (ADMIN[0], "wrong")))
        assert "invalid credentials" in wrong, wrong
        unknown = refused(secure.sasl_plaintext, secure.scram("SASL_PLAINTEXT", mechanism, ("nobody", "x")))
        assert "invalid credentials" in unknown, unknown
    plain = refused(secure.sasl_ssl, secure.scram("SASL_SSL", "PLAIN", (ADMIN[0], "wrong")))
    assert "invalid credentials" in plain, plain

    host, port = secure.sasl_plaintext.split(":")
    # A mechanism the broker does not enable: UNSUPPORTED_SASL_MECHANISM, the
    # enabled ones listed, then the connection closes.
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(rawkafka.frame(17, 1, 7, rawkafka._string("GSSAPI")))
        frame = rawkafka.read_frame(sock)
        correlation, error = struct.unpack(">ih", frame[:6])
        assert (correlation, error) == (7, 33)
        assert b"SCRAM-SHA-512" in frame
        assert rawkafka.closed_by_peer(sock)
    # Anything but authentication before authenticating closes the connection.
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(rawkafka.frame(3, 1, 8, struct.pack(">i", 0)))
        assert rawkafka.closed_by_peer(sock)
    assert "before SASL authentication completed" in secure.broker_log()


def tool(main_class: str, *args: str) -> str:
    out = subprocess.run(
        ["java", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp", str(CACHE / "jars" / f"kafka-{KAFKA}" / "*"),
         main_class, *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"{main_class} {args} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    return out.stdout


def test_kafka_configs_manages_scram_users_and_revocation_locks_them_out(secure):
    admin = secure.pki / "admin.properties"
    admin.write_text(
        "security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\n"
        f"ssl.truststore.type=PEM\nssl.truststore.location={secure.ca.cert}\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{ADMIN[0]}" password="{ADMIN[1]}";\n')
    configs = ["kafka.admin.ConfigCommand", "--bootstrap-server", secure.sasl_ssl, "--command-config", str(admin),
               "--entity-type", "users", "--entity-name", "alice"]
    out = tool(*configs, "--alter", "--add-config", "SCRAM-SHA-512=[iterations=8192,password=alice-pw],SCRAM-SHA-256=[password=alice-pw]")
    assert "Completed updating config for user alice" in out, out
    described = tool(*configs, "--describe")
    assert "SCRAM-SHA-512=iterations=8192" in described and "SCRAM-SHA-256=iterations=4096" in described, described

    alice = ("alice", "alice-pw")
    for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
        create_topic(secure.plaintext, f"alice-{mechanism}".lower())
        assert librdkafka_roundtrip(secure.sasl_plaintext, f"alice-{mechanism}".lower(), "none", 50,
                                    secure.scram("SASL_PLAINTEXT", mechanism, alice)).startswith("ok")

    tool(*configs, "--alter", "--delete-config", "SCRAM-SHA-512")
    revoked = refused(secure.sasl_plaintext, secure.scram("SASL_PLAINTEXT", "SCRAM-SHA-512", alice))
    assert "invalid credentials" in revoked, revoked
    # The other mechanism's credential stays until it is deleted too.
    create_topic(secure.plaintext, "alice-after")
    assert librdkafka_roundtrip(secure.sasl_plaintext, "alice-after", "none", 10,
                                secure.scram("SASL_PLAINTEXT", "SCRAM-SHA-256", alice)).startswith("ok")


def oauth(token_source) -> dict:
    def callback(_config):
        return token_source(), time.time() + 600
    return {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "OAUTHBEARER", "oauth_cb": callback}


def test_oauthbearer_tokens_are_verified(secure):
    create_topic(secure.plaintext, "oauth-librdkafka")
    create_topic(secure.plaintext, "oauth-franz")
    good = secure.idp.token("svc-orders", ISSUER)
    assert librdkafka_roundtrip(secure.sasl_plaintext, "oauth-librdkafka", "none", 100, oauth(lambda: good)).startswith("ok")
    assert "principal=User:svc-orders" in secure.broker_log()
    assert franz_roundtrip(secure.sasl_plaintext, "oauth-franz", "none", 100, "-sasl", "oauthbearer",
                           "-token", good).startswith("ok")

    expired = secure.idp.token("svc-orders", ISSUER, lifetime_s=-300)
    assert "expired" in refused(secure.sasl_plaintext, oauth(lambda: expired))
    forged = secure.other_idp.token("svc-orders", ISSUER)
    assert "no configured key verifies" in refused(secure.sasl_plaintext, oauth(lambda: forged))
    elsewhere = secure.idp.token("svc-orders", "https://elsewhere")
    assert "issuer" in refused(secure.sasl_plaintext, oauth(lambda: elsewhere))
    # With an issuer expected, a token of the same provider without one
    # (minted for another application) does not pass.
    unnamed = secure.idp.token("svc-orders", None)
    assert "'iss' claim" in refused(secure.sasl_plaintext, oauth(lambda: unnamed))


def test_sessions_re_authenticate_within_their_lifetime(secure):
    """--connections-max-reauth-ms 4000: clients re-authenticate on their
    connections (KIP-368) while producing, without errors."""
    create_topic(secure.plaintext, "reauth")
    errors: list[str] = []
    delivered = 0

    def on_delivery(err, _msg):
        nonlocal delivered
        if err is not None:
            errors.append(str(err))
        else:
            delivered += 1

    before = secure.broker_log().count("re-authenticated")
    producer = Producer({"bootstrap.servers": secure.sasl_ssl, "acks": "all", "linger.ms": 5,
                         **secure.scram("SASL_SSL")})
    sent = 0
    deadline = time.time() + 11
    while time.time() < deadline:
        producer.produce("reauth", value=f"r{sent}".encode(), on_delivery=on_delivery)
        sent += 1
        producer.poll(0.01)
    assert producer.flush(30) == 0
    assert not errors, errors[:5]
    assert delivered == sent
    assert secure.broker_log().count("re-authenticated") - before >= 2


def test_certificates_are_reloaded_without_a_restart(secure):
    """cert-manager renews the files in place; new connections get the new
    certificate, and nothing restarts."""
    renewed_ca = CA(secure.pki, "renewed-ca")
    cert, key = renewed_ca.issue("renewed", "/CN=broker", server=True)
    trusts_renewed = {"security.protocol": "SSL", "ssl.ca.location": str(renewed_ca.cert)}
    refused(secure.ssl, trusts_renewed)
    original = (secure.server_cert.read_bytes(), secure.server_key.read_bytes())
    pid = secure.cluster.broker.proc.popen.pid
    try:
        secure.server_cert.write_bytes(cert.read_bytes())
        secure.server_key.write_bytes(key.read_bytes())
        deadline = time.time() + 10
        while True:
            try:
                AdminClient({"bootstrap.servers": secure.ssl, **trusts_renewed}).list_topics(timeout=3)
                break
            except KafkaException:
                assert time.time() < deadline, "the renewed certificate was not picked up"
        assert secure.cluster.broker.proc.popen.pid == pid and secure.cluster.broker.proc.alive()
    finally:
        secure.server_cert.write_bytes(original[0])
        secure.server_key.write_bytes(original[1])
    assert re.search(r"reloaded.*TLS certificate", secure.broker_log())


class TokenEndpoint:
    """An OAuth token endpoint (client credentials) on a free port: what
    Kafka's Java OAUTHBEARER login handler fetches its token from."""

    def __init__(self, token: str):
        import http.server
        import json as _json
        import threading

        body = _json.dumps({"access_token": token, "token_type": "bearer", "expires_in": 600}).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_java_clients_authenticate_with_oauthbearer(secure, monkeypatch):
    endpoint = TokenEndpoint(secure.idp.token("svc-java", ISSUER))
    try:
        props = secure.pki / "java-oauth.properties"
        props.write_text(
            "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=OAUTHBEARER\n"
            "sasl.login.callback.handler.class=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginCallbackHandler\n"
            f"sasl.oauthbearer.token.endpoint.url={endpoint.url}\n"
            "sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required "
            'clientId="kafscale-test" clientSecret="unused";\n')
        # Kafka's clients fetch tokens only from URLs they are told to trust.
        monkeypatch.setenv("JAVA_TOOL_OPTIONS", f"-Dorg.apache.kafka.sasl.oauthbearer.allowed.urls={endpoint.url}")
        for version in JAVA_VERSIONS:
            topic = f"oauth-java-{version}"
            create_topic(secure.plaintext, topic)
            assert java_roundtrip(version, secure.sasl_plaintext, topic, "none", 100, str(props)).startswith("ok")
        assert "principal=User:svc-java" in secure.broker_log()
    finally:
        endpoint.close()


def test_handshake_v0_is_followed_by_raw_sasl_tokens(secure):
    """SaslHandshake v0 (clients before Kafka 1.0): the SASL tokens then
    travel framed by their length only, and Kafka requests follow."""
    host, port = secure.sasl_plaintext.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(rawkafka.frame(17, 0, 1, rawkafka._string("PLAIN")))
        assert struct.unpack(">ih", rawkafka.read_frame(sock)[:6]) == (1, 0)
        token = f"\0{ADMIN[0]}\0{ADMIN[1]}".encode()
        sock.sendall(struct.pack(">i", len(token)) + token)
        assert rawkafka.read_frame(sock) == b"", "PLAIN's empty server message"
        sock.sendall(rawkafka.frame(18, 0, 2, b""))
        assert struct.unpack(">ih", rawkafka.read_frame(sock)[:6]) == (2, 0)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(rawkafka.frame(17, 0, 3, rawkafka._string("PLAIN")))
        rawkafka.read_frame(sock)
        token = f"\0{ADMIN[0]}\0wrong".encode()
        sock.sendall(struct.pack(">i", len(token)) + token)
        assert rawkafka.closed_by_peer(sock), "a failed raw exchange closes without an answer"


def test_unauthenticated_clients_cannot_hold_what_others_need(secure):
    """Before SASL completes, frames are small (Kafka's
    sasl.server.max.receive.size, 512 KiB), kept in a pool of their own and
    must arrive whole within 10 s: connections that claim large frames and
    trickle them stall nobody else."""
    host, port = secure.sasl_plaintext.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as huge:
        huge.sendall(struct.pack(">i", 100 * 1024 * 1024) + b"\0" * 16)
        assert rawkafka.closed_by_peer(huge, 5), "a 100 MiB frame before authentication"

    # Enough trickling 512 KiB frames to fill the unauthenticated pool.
    attackers = []
    try:
        for _ in range(40):
            s = socket.create_connection((host, int(port)), timeout=5)
            s.sendall(struct.pack(">i", 512 * 1024) + b"\0")
            attackers.append(s)
        started = time.time()
        create_topic(secure.plaintext, "while-trickled-sasl")
        create_topic(secure.plaintext, "while-trickled-plain")
        # A new SASL login and a PLAINTEXT client are served meanwhile.
        assert librdkafka_roundtrip(secure.sasl_plaintext, "while-trickled-sasl", "none", 50,
                                    secure.scram("SASL_PLAINTEXT")).startswith("ok")
        assert librdkafka_roundtrip(secure.plaintext, "while-trickled-plain", "none", 50).startswith("ok")
        assert time.time() - started < 10, "clients waited for the trickling connections to be closed"
        # A byte now and then does not keep a frame alive past its deadline.
        deadline = started + 20
        while time.time() < deadline and attackers:
            for s in list(attackers):
                try:
                    s.sendall(b"\0")
                except OSError:
                    attackers.remove(s)
                    s.close()
            time.sleep(1)
        assert not attackers, f"{len(attackers)} trickling connections still open after 20 s"
    finally:
        for s in attackers:
            s.close()
