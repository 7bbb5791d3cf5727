"""Segment decoding end to end on a real local Ray: a run that splits every video in two writes
exactly the rows of a run that does not (indices, timestamps, boxes), each video once, also when
a segment's decoder dies."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import canonical_rows, read_status
from corpus import scene_frames, write_vfr

from pipeline.config import RunConfig
from pipeline.media.samples import read_frames, write_video
from pipeline.runtime.faults import FaultPlan

pytestmark = pytest.mark.slow

FRAMES = 44  # 11 batches of 4


@pytest.fixture(scope="module")
def awkward(tmp_path_factory, people_mp4):
    """B-frames with keyframes on and off the segment boundary, rotation, VFR, and a length that
    is not a multiple of the batch."""
    folder = tmp_path_factory.mktemp("segments-run")
    frames = scene_frames(list(read_frames(people_mp4, limit=FRAMES)), FRAMES, size=(320, 192))
    bframes = "bframes=3:b-adapt=0:scenecut=0:keyint={k}:min-keyint={k}"
    write_video(
        folder / "keyframe_on_boundary.mp4", frames, options={"x264-params": bframes.format(k=8)}
    )
    write_video(
        folder / "keyframe_off_boundary.mp4", frames, options={"x264-params": bframes.format(k=30)}
    )
    write_video(
        folder / "rotated.mp4", frames, rotation=90, options={"x264-params": bframes.format(k=10)}
    )
    write_video(
        folder / "odd_length.mkv", frames[:41], options={"x264-params": bframes.format(k=7)}
    )
    times = np.cumsum(np.random.default_rng(3).uniform(0.01, 0.2, FRAMES)).tolist()
    write_vfr(folder / "vfr.mp4", frames, times)
    return folder


def run(folder, out, model, faults=None, **settings):
    import pipeline

    config = RunConfig(model=model, batch_size=4, **settings)
    return pipeline.run(
        [str(folder)], output=str(out), config=config, faults=faults, progress=False
    )


def rows(out) -> pd.DataFrame:
    """Every row, exact: video, frame index, timestamp and the boxes as written."""
    return canonical_rows(out, exact=True)


@pytest.fixture(scope="module")
def one_decoder(ray_local, tmp_path_factory, awkward, model_path):
    out = tmp_path_factory.mktemp("one") / "out"
    record = run(awkward, out, model_path, segments=1)
    assert record["exit_code"] == 0 and record["totals"]["frames"] == 4 * FRAMES + 41
    return rows(out)


def test_two_segments_give_the_rows_of_one_decoder(one_decoder, tmp_path, awkward, model_path):
    out = tmp_path / "out"
    record = run(awkward, out, model_path, segments=2, segment_min_frames=8, stride=1)
    assert record["exit_code"] == 0
    assert record["totals"]["videos_split"] == 5 and record["totals"]["segments"] == 10
    got = rows(out)
    assert not got.duplicated(["video", "frame_index"]).any()
    pd.testing.assert_frame_equal(got, one_decoder)
    # one stream per segment
    assert all(s["decode_attempts"] == 2 for s in read_status(out).values())


def test_a_segment_decoder_that_dies_is_retried_and_the_rows_stay_the_same(
    one_decoder, tmp_path, awkward, model_path
):
    out = tmp_path / "out"
    plan = FaultPlan(
        marker_dir=str(tmp_path), decoder_exit_video="keyframe_off", decoder_exit_after_batches=7
    )
    record = run(awkward, out, model_path, faults=plan, segments=3, segment_min_frames=8)
    assert len(list(tmp_path.glob("decoder-*"))) == 1, "the fault hook never fired"
    assert record["exit_code"] == 0 and record["totals"]["decoder_retries"] == 1
    assert record["totals"]["segments"] == 15
    pd.testing.assert_frame_equal(rows(out), one_decoder)
    assert json.loads((out / "run.json").read_text())["totals"]["frames"] == 4 * FRAMES + 41
