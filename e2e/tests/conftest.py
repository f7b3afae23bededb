import contextlib

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from harness import Cluster


@contextlib.contextmanager
def running(cluster: Cluster):
    """The cluster for a fixture to yield: its logs are printed when a test
    fails, and its processes always stopped."""
    try:
        yield cluster
    except Exception:
        print(cluster.logs())
        raise
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with running(Cluster(tmp_path_factory.mktemp("cluster"))) as c:
        yield c


def create_topic(bootstrap: str, name: str, partitions: int = 3, config: dict | None = None,
                 exist_ok: bool = False) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, partitions, 1, config=config or {})], operation_timeout=10)
    for f in futures.values():
        try:
            f.result(timeout=30)
        except KafkaException as e:
            if not (exist_ok and e.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS):
                raise
