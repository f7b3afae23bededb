"""Kafka's own command-line tools, run from the Maven jars by their main
classes, against broker + flusher + etcd + MinIO. Each command's exit status
and the output a user reads are checked."""

import json
import subprocess

import pytest
from confluent_kafka import Producer

from harness import CACHE

KAFKA = "4.1.1"


def tool(main_class: str, *args: str, ok: bool = True) -> str:
    out = subprocess.run(
        ["java", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp", str(CACHE / "jars" / f"kafka-{KAFKA}" / "*"),
         main_class, *args],
        capture_output=True, text=True, timeout=120,
    )
    if ok:
        assert out.returncode == 0, f"{main_class} {' '.join(args)} exited {out.returncode}:\n{out.stdout}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.fixture(scope="module")
def bs(cluster):
    return ["--bootstrap-server", cluster.bootstrap]


def topics(bs, *args, **kw):
    return tool("org.apache.kafka.tools.TopicCommand", *bs, *args, **kw)


def configs(bs, *args):
    return tool("kafka.admin.ConfigCommand", *bs, "--entity-type", "topics", "--entity-name", "cli", *args)


def test_topic_command_lifecycle(bs):
    assert "Created topic cli." in topics(bs, "--create", "--topic", "cli", "--partitions", "3", "--replication-factor", "1")
    assert "cli" in topics(bs, "--list").split()
    described = topics(bs, "--describe", "--topic", "cli")
    assert "PartitionCount: 3" in described and "Topic: cli\tPartition: 2\tLeader: 0" in described
    topics(bs, "--alter", "--topic", "cli", "--partitions", "5")
    assert "PartitionCount: 5" in topics(bs, "--describe", "--topic", "cli")


def test_config_command_alter_describe_delete(bs):
    assert "Completed updating config for topic cli." in configs(bs, "--alter", "--add-config", "retention.ms=123456")
    assert "retention.ms=123456" in configs(bs, "--describe")
    assert "retention.ms=123456" in topics(bs, "--describe", "--topic", "cli")
    configs(bs, "--alter", "--delete-config", "retention.ms")
    assert "retention.ms" not in configs(bs, "--describe")
    # An invalid value is refused with Kafscale's explanation.
    out = subprocess.run(
        ["java", "-cp", str(CACHE / "jars" / f"kafka-{KAFKA}" / "*"), "kafka.admin.ConfigCommand", *bs,
         "--entity-type", "topics", "--entity-name", "cli", "--alter", "--add-config", "cleanup.policy=compacted"],
        capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "use delete, compact or compact,delete" in out.stdout + out.stderr


def test_offsets_api_versions_and_delete_records(cluster, bs, tmp_path):
    p = Producer({"bootstrap.servers": cluster.bootstrap, "log_level": 2})
    for i in range(10):
        p.produce("cli", value=str(i).encode(), partition=0)
    assert p.flush(30) == 0
    assert "cli:0:10" in tool("org.apache.kafka.tools.GetOffsetShell", *bs, "--topic", "cli").split()

    versions = tool("org.apache.kafka.tools.BrokerApiVersionsCommand", *bs)
    assert "Produce(0): 3 to 11 [usable: 11]" in versions
    assert "Fetch(1): 4 to 16" in versions

    spec = tmp_path / "delete.json"
    spec.write_text(json.dumps({"version": 1, "partitions": [{"topic": "cli", "partition": 0, "offset": 4}]}))
    out = tool("org.apache.kafka.tools.DeleteRecordsCommand", *bs, "--offset-json-file", str(spec))
    assert "partition: cli-0\tlow_watermark: 4" in out
    assert "cli:0:4" in tool("org.apache.kafka.tools.GetOffsetShell", *bs, "--topic", "cli", "--time", "-2").split()


def test_topic_delete(bs):
    topics(bs, "--delete", "--topic", "cli")
    assert "cli" not in topics(bs, "--list").split()


def test_deleting_a_topic_removes_its_committed_offsets(bs, cluster):
    """Kafka removes a deleted topic's offsets from every group: describing
    the group afterwards works and shows nothing of the old topic, and a
    topic re-created under the name shows no (negative) lag."""
    from confluent_kafka import Consumer, TopicPartition

    topics(bs, "--create", "--topic", "offsets-doomed", "--partitions", "2")
    p = Producer({"bootstrap.servers": cluster.bootstrap})
    for i in range(20):
        p.produce("offsets-doomed", value=b"v%d" % i, partition=i % 2)
    assert p.flush(30) == 0
    c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "doomed-readers", "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition("offsets-doomed", i, 10) for i in range(2)], asynchronous=False)
    c.close()
    group = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"
    assert "offsets-doomed" in tool(group, *bs, "--describe", "--group", "doomed-readers")

    topics(bs, "--delete", "--topic", "offsets-doomed")
    after = tool(group, *bs, "--describe", "--group", "doomed-readers")
    assert "offsets-doomed" not in after, after
    topics(bs, "--create", "--topic", "offsets-doomed", "--partitions", "2")
    recreated = tool(group, *bs, "--describe", "--group", "doomed-readers")
    assert "offsets-doomed" not in recreated and "-10" not in recreated, recreated
