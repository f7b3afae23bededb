"""Offset commits never fill etcd: each one adds a revision, etcd keeps
every old version until its history is compacted, and at its quota it
refuses every write in the cluster. The controller compacts the history
(here every second instead of every five minutes), so the database stays
bounded however many commits arrive."""

import time

import pytest
from confluent_kafka import Consumer, TopicPartition

from conftest import create_topic, running
from harness import Cluster, scrape

PARTITIONS = 16
COMMITS = 2500


@pytest.fixture(scope="module", params=[1000, 0], ids=["compacting", "not-compacting"])
def history_cluster(tmp_path_factory, request):
    with running(Cluster(tmp_path_factory.mktemp("history"), name="history",
                         broker_args=["--metadata-compaction-interval-ms", str(request.param)])) as c:
        yield c, request.param


def test_many_offset_commits_keep_etcd_bounded(history_cluster):
    cluster, interval = history_cluster
    create_topic(cluster.bootstrap, "committed", PARTITIONS)
    c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "busy-committer", "enable.auto.commit": False})
    try:
        for i in range(COMMITS):
            c.commit(offsets=[TopicPartition("committed", p, i) for p in range(PARTITIONS)], asynchronous=False)
    finally:
        c.close()
    time.sleep(3)  # at least two compaction intervals
    m = scrape(cluster.etcd.port)
    in_use = m["etcd_mvcc_db_total_size_in_use_in_bytes"]
    keys = m.get("etcd_debugging_mvcc_keys_total", 0)
    print(f"interval={interval}: {COMMITS} commits of {PARTITIONS} offsets, db in use {in_use / 1e6:.1f} MB, keys {keys}")
    versions_written = COMMITS * PARTITIONS
    if interval:
        # Only the live keys and a second of history remain.
        assert in_use < 4e6, f"etcd holds {in_use / 1e6:.1f} MB after {versions_written} offset versions"
    else:
        # Without compaction every version stays: the size the test guards against.
        assert in_use > 4e6, f"expected uncompacted growth, found {in_use / 1e6:.1f} MB"
