"""Packed output (``--layout auto``/``packed``) as readers that know nothing of the pipeline see
it: DuckDB, pandas, pyarrow and Ray Data read a packed run as the same rows as a per-video run;
after a rerun in which a tenth of the clips changed (new content, or unreadable) every reader
sees each recorded frame once and no stale row. The synthetic engine: no model, cheap frames.
(The driver SIGKILLed during a packed run: ``tests/e2e/test_interrupts.py``.)"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import frames_by_reader, part_files, tiny_videos, videos_by_reader
from conftest import synthetic_run as run

pytestmark = pytest.mark.slow

LENGTHS = [3 + (7 * i) % 40 for i in range(30)]  # 3 to 42 frames
SETTINGS = dict(batch_size=8, part_rows=64)  # a part every few clips: several parts


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return tiny_videos(tmp_path_factory.mktemp("clips"), LENGTHS)


def test_every_reader_sees_a_packed_run_as_a_per_video_run(ray_local, tmp_path, clips, model_path):
    packed, own = tmp_path / "packed", tmp_path / "own"
    assert run(clips, packed, model_path, layout="packed", **SETTINGS)["exit_code"] == 0
    assert run(clips, own, model_path, layout="per-video", **SETTINGS)["exit_code"] == 0
    assert 2 <= len(part_files(packed)) < len(clips) and not part_files(own)
    assert len(list((own / "detections").glob("*.parquet"))) == len(clips)
    expected = frames_by_reader(own)
    assert len(expected["pyarrow"]) == sum(LENGTHS)
    for name, frame in frames_by_reader(packed).items():
        pd.testing.assert_frame_equal(frame, expected[name], obj=name)


def test_a_rerun_over_changed_clips_leaves_each_frame_once(ray_local, tmp_path, model_path):
    """3 of 30 clips change: two get new content (other lengths), one becomes unreadable."""
    folder = tmp_path / "clips"
    folder.mkdir()
    paths = tiny_videos(folder, LENGTHS)
    out = tmp_path / "out"
    assert run(paths, out, model_path, **SETTINGS)["exit_code"] == 0
    before = set(part_files(out))
    changed = {0: 50, 11: 2}  # clip -> its new length
    for clip, length in changed.items():
        time.sleep(0.01)  # a new mtime
        (tmp_path / f"new{clip}").mkdir()
        fresh = tiny_videos(tmp_path / f"new{clip}", [length])[0]
        os.replace(fresh, paths[clip])
    Path(paths[22]).write_bytes(b"not a video any more")
    record = run(paths, out, model_path, **SETTINGS)
    assert record["exit_code"] == 3  # the unreadable one
    assert record["totals"]["videos_skipped"] == 27 and record["totals"]["videos_failed"] == 1
    lengths = {Path(p).name: n for p, n in zip(paths, LENGTHS)}
    lengths |= {Path(paths[c]).name: n for c, n in changed.items()}
    del lengths[Path(paths[22]).name]
    ids = pd.read_parquet(out / "videos.parquet", columns=["video_id", "path"])
    names = {v: Path(p).name for v, p in zip(ids.video_id, ids.path)}
    for name, frame in frames_by_reader(out).items():
        assert not frame.duplicated(["video_id", "frame_index"]).any(), name
        per_clip = frame.groupby("video_id").size().rename(index=names).to_dict()
        assert per_clip == lengths, name  # no stale row of the old versions or the bad one
    assert set(part_files(out)) != before  # the old parts were written again without them
    # videos.parquet: the three videos recorded again have a newer record in a newer part, and
    # every reader sees each video once, its latest record
    assert len(list((out / "videos.parquet").glob("part-*.parquet"))) >= 2
    statuses = {}
    for name, videos in videos_by_reader(out, ray_data=True).items():
        assert not videos["video_id"].duplicated().any() and len(videos) == 30, name
        statuses[name] = dict(zip(videos["video_id"], videos["status"]))
    assert sorted(statuses["read_videos"].values()).count("failed") == 1
    assert all(found == statuses["read_videos"] for found in statuses.values()), statuses
