"""Background merging of small segments, against MinIO: under load, with the
flusher killed (-9) at random moments, merging folds the many small segments
of short flush windows into few large ones, and every acknowledged record is
read back exactly once at its offset, from memory and cold after a restart."""

import random
import time

import pytest

from conftest import create_topic, running
from harness import Cluster, scrape
from history import BackgroundProducer
from verify import check_history, read_all

# Merge anything older than a second, often; a short session so merging starts
# soon after leadership (a new leader waits one session timeout).
MERGE_ARGS = ["--merge-min-age-ms", "1000", "--merge-interval-ms", "300", "--session-timeout-ms", "2000"]
FLUSHER_KILLS = 5


@pytest.fixture(scope="module")
def merging(tmp_path_factory):
    with running(Cluster(tmp_path_factory.mktemp("merge"), name="merge", broker_args=MERGE_ARGS)) as c:
        yield c


def segment_count(cluster: Cluster, topic: str) -> int:
    return sum(1 for p in cluster.objects(topic) if p.name.endswith(".kfs"))


def uploads(cluster: Cluster) -> int:
    """Segments the broker has uploaded (its flush histogram's count)."""
    return int(scrape(cluster.broker.http_port).get("kafscale_broker_flush_size_bytes_count", 0))


def test_merging_under_load_and_flusher_kills_keeps_every_record_once(merging):
    topic = "merged"
    create_topic(merging.bootstrap, topic, 3, {"segment.bytes": str(1024 * 1024)})
    producer = BackgroundProducer(merging.bootstrap, topic)
    producer.start()
    rng = random.Random(23)
    peak = 0
    try:
        for _ in range(FLUSHER_KILLS):
            time.sleep(rng.uniform(1.5, 3.0))
            peak = max(peak, segment_count(merging, topic))
            # Mid-merge, most likely: merges run every 300 ms on segments older than 1 s.
            merging.flusher.proc.kill()
            merging.flusher.start()
        time.sleep(1.0)
    finally:
        producer.stopping.set()
        producer.join(60)
    assert producer.fatal is None, producer.fatal
    assert len(producer.acked) > 1000, f"too little acknowledged to prove anything ({len(producer.acked)})"

    # Let merging catch up: the count settles once everything is older than a second.
    counts = []
    deadline = time.time() + 60
    while time.time() < deadline:
        counts.append(segment_count(merging, topic))
        if len(counts) > 8 and len(set(counts[-8:])) == 1:
            break
        time.sleep(0.5)
    final, written = counts[-1], uploads(merging)
    print(f"segments uploaded {written}, peak listed {peak}, after merging {final}; "
          f"acked {len(producer.acked)}, failed sends {producer.failed}")
    assert written >= 100, f"the load made too few segments to show merging ({written})"
    assert final * 10 <= written, f"{written} uploaded segments merged only down to {final}"

    check_history(producer.acked, read_all(merging.bootstrap, topic))
    # Cold: a fresh broker and flusher read everything from the merged segments.
    merging.restart_broker_and_flusher()
    check_history(producer.acked, read_all(merging.bootstrap, topic))
    removed = merging.flusher.proc.log.read_text(errors="replace").count("left over from an interrupted merge")
    print(f"leftovers of interrupted merges removed in {removed} steps")
