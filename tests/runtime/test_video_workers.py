"""``data_path="workers"`` on real Ray: video workers that decode, infer and write their own
videos: the same rows as the coordinator's data path, short clips packed into shared passes,
every batch decoded on its worker's node (``test_video_workers_cluster``: on three nodes)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import tiny_videos  # noqa: F401 - the other runtime tests import it from here

from pipeline.config import RunConfig
from pipeline.output.readers import read_detections, read_videos

pytestmark = pytest.mark.slow


def run(videos, out, model_path, *, faults=None, **settings) -> dict:
    import pipeline

    config = RunConfig(model=model_path, engine="synthetic", imgsz=160, **settings)
    return pipeline.run(videos, output=str(out), config=config, faults=faults, progress=False)


def rows(out) -> list[tuple]:
    boxes = read_detections(out, flat=False)
    paths = read_videos(out).set_index("video_id")["path"]
    return sorted(
        (Path(paths[v]).name, f, len(d))
        for v, f, d in zip(boxes.video_id, boxes.frame_index, boxes.detections)
    )


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return tiny_videos(tmp_path_factory.mktemp("clips"), [3] * 12 + [40, 25])


def test_workers_write_what_the_coordinator_path_writes(ray_local, tmp_path, clips, model_path):
    before = run(clips, tmp_path / "coordinator", model_path, batch_size=8, data_path="coordinator")
    # a simulated GPU slow enough that clips' batches wait for it: then they share passes
    slow = dict(data_path="workers", synthetic_latency_ms=(20, 1))
    after = run(clips, tmp_path / "workers", model_path, batch_size=8, **slow)
    assert before["exit_code"] == after["exit_code"] == 0
    assert rows(tmp_path / "workers") == rows(tmp_path / "coordinator")
    totals = after["totals"]
    assert totals["frames"] == 12 * 3 + 40 + 25 and totals["videos_ok"] == 14
    assert totals["batches_decoded_elsewhere"] == 0
    assert totals["batches_decoded_on_worker_node"] == after["coordinator"]["batches"] > 0
    assert totals["mixed_batches"] > 0  # 3-frame clips shared forward passes
    assert after["actors"][0]["batches"] < before["actors"][0]["batches"]
    assert after["coordinator"]["cpu_ms_per_video"] > 0
    assert 0 < after["actors"][0]["busy_share"] <= 1
    again = run(clips, tmp_path / "workers", model_path, batch_size=8, data_path="workers")
    assert again["totals"]["videos_skipped"] == 14  # resume: nothing done twice
