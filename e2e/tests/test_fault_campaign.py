"""A short run of the fault campaign (e2e/faults/campaign.py, described in
docs/fault-campaign.md): three nodes, etcd and MinIO under an idempotent
producer workload and a committing consumer group, 16 faults in four
minutes covering every fault kind. Zero acknowledged records lost, moved or
duplicated, no committed offset going backwards, progress after healing.

KAFSCALE_FAULT_SEED picks another schedule; a failure prints the seed and
keeps the logs in the test's temp directory."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "faults"))

from campaign import KINDS, run_campaign  # noqa: E402

SEED = int(os.environ.get("KAFSCALE_FAULT_SEED", "20260601"))


def test_short_fault_campaign(tmp_path):
    report = run_campaign(tmp_path, minutes=4, faults=16, seed=SEED)
    print(report.text())
    assert {f["kind"] for f in report.faults} == set(KINDS), "a fault kind was not exercised"
    assert report.acknowledged > 10_000, f"too little acknowledged to prove anything ({report.acknowledged})"
    assert report.commit_offsets_checked > 100, "the committed offsets were hardly sampled"
    assert report.ok, report.text()
