"""Video workers on real Ray: they decode, infer and write their own videos; short clips share
forward passes; every batch is decoded on its worker's node (``test_video_workers_cluster``: on
three nodes); a rerun skips what is done."""

from __future__ import annotations

import pytest
from conftest import rows_by_name, synthetic_rows, synthetic_run, tiny_videos

pytestmark = pytest.mark.slow

LENGTHS = [3] * 12 + [40, 25]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return tiny_videos(tmp_path_factory.mktemp("clips"), LENGTHS)


def test_workers_write_every_frame_once_and_share_passes_across_clips(
    ray_local, tmp_path, clips, model_path
):
    # a simulated GPU slow enough that clips' batches wait for it: then they share passes
    record = synthetic_run(
        clips, tmp_path / "out", model_path, batch_size=8, synthetic_latency_ms=(20, 1)
    )
    assert record["exit_code"] == 0
    assert rows_by_name(tmp_path / "out") == synthetic_rows(clips, LENGTHS)
    totals = record["totals"]
    assert totals["frames"] == sum(LENGTHS) and totals["videos_ok"] == len(LENGTHS)
    assert totals["batches_decoded_elsewhere"] == 0
    assert totals["batches_decoded_on_worker_node"] == record["coordinator"]["batches"] > 0
    assert totals["mixed_batches"] > 0  # 3-frame clips shared forward passes
    # fewer forward passes than decoder batches
    assert sum(a["batches"] for a in record["actors"]) < record["coordinator"]["batches"]
    assert record["coordinator"]["cpu_ms_per_video"] > 0
    # (the first worker ready starts alone: a backlog this small may all go to it)
    assert any(0 < a["busy_share"] <= 1 for a in record["actors"])
    again = synthetic_run(clips, tmp_path / "out", model_path, batch_size=8)
    assert again["totals"]["videos_skipped"] == len(LENGTHS)  # resume: nothing done twice


def test_a_run_whose_workers_fit_no_node_names_what_it_waits_for_and_fails_only_after_the_timeout(
    ray_local, tmp_path, clips, model_path, monkeypatch, caplog
):
    """One GPU worker asked for on a cluster without GPUs: it can never be placed. The run
    says so in one line (after 20 s by default; 1 s here) and fails once the start-up timeout
    (15 minutes by default; 4 s here) has passed with no worker ready, with the same line."""
    import logging
    import re

    import pipeline.runtime.startup as startup
    from pipeline.errors import StartupError

    monkeypatch.setattr(startup, "PENDING_NOTICE_S", 1.0)
    monkeypatch.setattr(startup, "ACTOR_START_TIMEOUT_S", 4.0)
    caplog.set_level(logging.WARNING, logger="pipeline.runtime.startup")
    line = "waiting for 1 of 1 video workers: {GPU: 1, CPU: 1} each fits no node now"
    with pytest.raises(
        StartupError, match=re.escape("no video worker started within 4.0 s: " + line)
    ):
        synthetic_run(clips, tmp_path / "out", model_path, device="cuda", num_actors=1)
    assert any(line in r.getMessage() for r in caplog.records)
