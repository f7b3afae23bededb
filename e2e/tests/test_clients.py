"""Every mainstream client produces with keys, headers and each compression
codec to a 3-partition topic and reads every record back, identical and at the
offset it was acknowledged at. Runs against etcd + MinIO + flusher + broker."""

import pytest

from clients import JAVA_VERSIONS, franz_roundtrip, java_roundtrip, librdkafka_roundtrip
from conftest import create_topic

CODECS = ["gzip", "snappy", "lz4", "zstd"]
RECORDS = 10_000


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("version", JAVA_VERSIONS)
def test_java_client_round_trip(cluster, version, codec):
    topic = f"rt-java-{version.replace('.', '_')}-{codec}"
    create_topic(cluster.bootstrap, topic, 3)
    assert java_roundtrip(version, cluster.bootstrap, topic, codec, RECORDS) == f"ok java codec={codec} records={RECORDS}"


@pytest.mark.parametrize("codec", CODECS)
def test_franz_go_round_trip(cluster, codec):
    topic = f"rt-franz-{codec}"
    create_topic(cluster.bootstrap, topic, 3)
    assert franz_roundtrip(cluster.bootstrap, topic, codec, RECORDS) == f"ok franz-go codec={codec} records={RECORDS}"


@pytest.mark.parametrize("codec", CODECS)
def test_librdkafka_round_trip(cluster, codec):
    topic = f"rt-librdkafka-{codec}"
    create_topic(cluster.bootstrap, topic, 3)
    assert librdkafka_roundtrip(cluster.bootstrap, topic, codec, RECORDS) == f"ok librdkafka codec={codec} records={RECORDS}"


def test_data_lands_in_object_storage(cluster):
    if cluster.write_path == "intake":
        # One object per flush holds every partition; segments come with
        # compaction (test_intake.py).
        assert cluster.intake_objects(), "no intake objects were written"
        return
    # After the round trips, MinIO holds .kfs and .index objects for each partition.
    objects = cluster.objects("rt-franz-zstd")
    kfs = [p for p in objects if p.name.endswith(".kfs")]
    assert kfs and any(p.name.endswith(".index") for p in objects)
    assert {p.parent.name for p in kfs} == {"0", "1", "2"}
