"""ACLs with `--authorizer acl`, managed with Kafka's own `kafka-acls`
(AclCommand) and checked with librdkafka clients authenticated by SCRAM:
allow and deny for produce, consume, group join, offset commit, topic
create and delete, each answered with Kafka's error code."""

from __future__ import annotations

import re
import subprocess
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import running
from harness import CACHE, Cluster, free_port

KAFKA = "4.1.1"
USERS = {"admin": "admin-pw", "alice": "alice-pw", "bob": "bob-pw"}


class Secured:
    def __init__(self, tmp):
        self.tmp = tmp
        plain, sasl = free_port(), free_port()
        self.plaintext = f"127.0.0.1:{plain}"
        self.sasl = f"127.0.0.1:{sasl}"
        self.cluster = Cluster(tmp, "acls", broker_port=plain, broker_args=[
            "--listeners", f"PLAINTEXT://{self.plaintext},SASL_PLAINTEXT://{self.sasl}",
            "--authorizer", "acl", "--super-users", "User:admin",
        ], broker_env={"KAFSCALE_SASL_BOOTSTRAP_USERS": ",".join(f"{u}:{p}" for u, p in USERS.items())})
        self.admin_properties = tmp / "admin.properties"
        self.admin_properties.write_text(self.properties("admin"))
        self.alice_properties = tmp / "alice.properties"
        self.alice_properties.write_text(self.properties("alice"))

    def properties(self, user: str) -> str:
        return ("security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-256\n"
                "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="{user}" password="{USERS[user]}";\n')

    def config(self, user: str) -> dict:
        return {"bootstrap.servers": self.sasl, "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanisms": "SCRAM-SHA-256", "sasl.username": user, "sasl.password": USERS[user]}

    def acls(self, *args: str, as_user: str = "admin", ok: bool = True) -> str:
        properties = self.admin_properties if as_user == "admin" else self.alice_properties
        out = subprocess.run(
            ["java", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp", str(CACHE / "jars" / f"kafka-{KAFKA}" / "*"),
             "org.apache.kafka.tools.AclCommand", "--bootstrap-server", self.sasl, "--command-config", str(properties), *args],
            capture_output=True, text=True, timeout=120)
        text = out.stdout + out.stderr
        if ok:
            assert out.returncode == 0 and "Error" not in text, f"kafka-acls {args}:\n{text[-2000:]}"
        return text


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    s = Secured(tmp_path_factory.mktemp("acls"))
    with running(s.cluster):
        admin = AdminClient(s.config("admin"))
        for f in admin.create_topics([NewTopic(t, 2, 1) for t in ("orders", "secret", "doomed")]).values():
            f.result(timeout=30)
        yield s


def produce(config: dict, topic: str, n: int = 5) -> int | None:
    """None when all `n` records are acknowledged, else the first error code."""
    errors: list[int] = []
    producer = Producer({**config, "acks": "all", "message.timeout.ms": 10000})
    for i in range(n):
        producer.produce(topic, f"{topic}-{i}".encode(),
                         on_delivery=lambda err, _m: err is not None and errors.append(err.code()))
    producer.flush(20)
    return errors[0] if errors else None


def consume(config: dict, topic: str, group: str, want: int, commit: bool = True) -> tuple[int, int | None]:
    """Reads from the start in `group`; the records read and the first error code."""
    consumer = Consumer({**config, "group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, "session.timeout.ms": 6000})
    consumer.subscribe([topic])
    read, error = 0, None
    deadline = time.time() + 20
    try:
        while read < want and time.time() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                error = msg.error().code()
                break
            read += 1
        if commit and read:
            try:
                consumer.commit(asynchronous=False)
            except KafkaException as e:
                error = e.args[0].code()
    finally:
        consumer.close()
    return read, error


def test_kafka_acls_adds_lists_and_removes_bindings(secured):
    out = secured.acls("--add", "--allow-principal", "User:bob", "--operation", "Read", "--operation", "Describe",
                       "--topic", "bob-", "--resource-pattern-type", "prefixed")
    assert "bob-" in out
    listed = secured.acls("--list", "--topic", "bob-", "--resource-pattern-type", "prefixed")
    assert re.search(r"User:bob.*operation=READ.*permissionType=ALLOW", listed), listed
    assert re.search(r"User:bob.*operation=DESCRIBE", listed), listed
    secured.acls("--remove", "--force", "--allow-principal", "User:bob", "--operation", "Read",
                 "--topic", "bob-", "--resource-pattern-type", "prefixed")
    listed = secured.acls("--list", "--topic", "bob-", "--resource-pattern-type", "prefixed")
    assert "operation=READ" not in listed and "operation=DESCRIBE" in listed, listed
    # Only who may alter the cluster manages ACLs.
    denied = secured.acls("--list", as_user="alice", ok=False)
    assert "ClusterAuthorizationException" in denied or "not authorized" in denied.lower(), denied


def test_produce_needs_write_and_a_deny_wins(secured):
    alice = secured.config("alice")
    assert produce(alice, "orders") == KafkaError.TOPIC_AUTHORIZATION_FAILED
    secured.acls("--add", "--allow-principal", "User:alice", "--operation", "Write", "--topic", "orders")
    assert produce(alice, "orders") is None
    assert produce(alice, "secret") == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # Metadata shows alice only what she may describe (WRITE implies DESCRIBE).
    topics = set(AdminClient(alice).list_topics(timeout=10).topics)
    assert "orders" in topics and "secret" not in topics and "doomed" not in topics
    secured.acls("--add", "--deny-principal", "User:alice", "--operation", "Write", "--topic", "orders")
    assert produce(alice, "orders") == KafkaError.TOPIC_AUTHORIZATION_FAILED
    secured.acls("--remove", "--force", "--deny-principal", "User:alice", "--operation", "Write", "--topic", "orders")
    assert produce(alice, "orders") is None


def test_consume_needs_read_on_the_topic_and_the_group(secured):
    assert produce(secured.config("admin"), "orders", 10) is None
    alice = secured.config("alice")
    secured.acls("--add", "--allow-principal", "User:alice", "--operation", "Describe", "--topic", "orders")
    # No READ on the group: the join is refused.
    read, error = consume(alice, "orders", "team-a", 1)
    assert (read, error) == (0, KafkaError.GROUP_AUTHORIZATION_FAILED)
    secured.acls("--add", "--allow-principal", "User:alice", "--operation", "Read", "--group", "team-",
                 "--resource-pattern-type", "prefixed")
    # The group, but no READ on the topic: the fetch is refused.
    read, error = consume(alice, "orders", "team-a", 1)
    assert (read, error) == (0, KafkaError.TOPIC_AUTHORIZATION_FAILED)
    secured.acls("--add", "--allow-principal", "User:alice", "--operation", "Read", "--topic", "orders")
    read, error = consume(alice, "orders", "team-a", 10)
    assert (read, error) == (10, None), "reads and commits once both are granted"
    committed = Consumer({**alice, "group.id": "team-a"}).committed([TopicPartition("orders", 0), TopicPartition("orders", 1)], timeout=10)
    assert sum(max(tp.offset, 0) for tp in committed) >= 10


def test_offset_commit_for_a_topic_without_read_is_refused(secured):
    """Alice may READ the group (team-*) and 'orders' but not 'secret'."""
    alice = secured.config("alice")
    secured.acls("--add", "--allow-principal", "User:alice", "--operation", "Read", "--group", "team-",
                 "--resource-pattern-type", "prefixed", "--topic", "orders")
    consumer = Consumer({**alice, "group.id": "team-commit", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest"})
    try:
        consumer.subscribe(["orders"])
        deadline = time.time() + 20
        while not consumer.assignment() and time.time() < deadline:
            consumer.poll(0.5)
        assert consumer.assignment(), "alice joins team-commit"
        try:
            results = consumer.commit(offsets=[TopicPartition("secret", 0, 1)], asynchronous=False)
            code = results[0].error.code() if results[0].error else None
        except KafkaException as e:
            code = e.args[0].code()
        assert code == KafkaError.TOPIC_AUTHORIZATION_FAILED
    finally:
        consumer.close()


def test_topic_create_and_delete_need_their_operations(secured):
    alice = AdminClient(secured.config("alice"))

    def create(name):
        try:
            alice.create_topics([NewTopic(name, 1, 1)])[name].result(timeout=30)
            return None
        except KafkaException as e:
            return e.args[0].code()

    def delete(name):
        try:
            alice.delete_topics([name])[name].result(timeout=60)
            return None
        except KafkaException as e:
            return e.args[0].code()

    assert create("alice-new") == KafkaError.TOPIC_AUTHORIZATION_FAILED
    secured.acls("--add", "--allow-principal", "User:alice", "--operation", "Create", "--operation", "Describe",
                 "--topic", "alice-", "--resource-pattern-type", "prefixed")
    assert create("alice-new") is None
    assert delete("doomed") == KafkaError.TOPIC_AUTHORIZATION_FAILED
    secured.acls("--add", "--allow-principal", "User:alice", "--operation", "Delete", "--topic", "doomed")
    assert delete("doomed") is None


def test_unauthenticated_clients_get_nothing(secured):
    anonymous = {"bootstrap.servers": secured.plaintext}
    assert produce(anonymous, "orders") == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert set(AdminClient(anonymous).list_topics(timeout=10).topics) == set()
