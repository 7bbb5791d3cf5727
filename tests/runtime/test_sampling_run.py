"""``--fps`` and ``--keyframes`` end to end on a real local Ray, with the real model: the rows hold
the frames the written rule names and ``YOLO.predict``'s boxes on them; a resume with the same rate
skips, with another rate reprocesses."""

from __future__ import annotations

import json
from fractions import Fraction

import av
import numpy as np
import pytest
from conftest import predict_matches, read_rows, read_status
from corpus import scene_frames, write_vfr

from pipeline.cli.main import main
from pipeline.media.samples import read_frames, write_video

pytestmark = pytest.mark.slow


def cli(*args) -> int:
    return main(["run", *map(str, args), "--no-progress"])


@pytest.fixture(scope="module")
def rate_clips(tmp_path_factory, people_mp4):
    """About 2 s of people.mp4 at 25, 30 and 60 fps (B-frames), and at a variable rate."""
    folder = tmp_path_factory.mktemp("rate-clips")
    source = list(read_frames(people_mp4, limit=40))
    b_frames = "bframes=3:b-adapt=0:scenecut=0:keyint={k}:min-keyint={k}"
    for fps in (25, 30, 60):
        frames = scene_frames(source, 2 * fps, size=(320, 192))
        write_video(
            folder / f"{fps}fps.mp4",
            frames,
            fps=fps,
            options={"x264-params": b_frames.format(k=fps)},
        )
    gaps = np.random.default_rng(11).uniform(0.01, 0.2, 30)
    write_vfr(
        folder / "vfr.mp4", scene_frames(source, 30, size=(320, 192)), np.cumsum(gaps).tolist()
    )
    return folder


def kept_by_the_rule(path, fps: Fraction) -> list[int]:
    """For each k, the first frame whose time from the stream's start is at least k/fps, read from
    the container's packets (not through the pipeline's decoder)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        start = stream.start_time or 0
        pts = sorted(p.pts for p in container.demux(stream) if p.size and not p.is_discard)
        times = [(p - start) * stream.time_base for p in pts]  # while the stream is open
    kept: list[int] = []
    k = 0
    while k / fps <= times[-1]:
        first = next(i for i, t in enumerate(times) if t >= k / fps)
        kept += [] if first in kept else [first]
        k += 1
    return kept


def test_fps_keeps_the_rules_frames_with_predicts_boxes_and_resumes_by_rate(
    ray_local, tmp_path, rate_clips, model_path
):
    import cv2
    from ultralytics import YOLO

    out = tmp_path / "out"
    videos = sorted(rate_clips.iterdir())
    common = ("--output", out, "--model", model_path, "--batch-size", "4", "--device", "cpu")
    assert cli(*videos, *common, "--fps", "2") == 0
    rows, statuses = read_rows(out), read_status(out)
    reference = YOLO(model_path)
    matched = total = 0
    for video in videos:
        status = statuses[str(video)]
        assert status["status"] == "ok", status
        mine = rows[rows["video_id"] == status["video_id"]].sort_values("frame_index")
        expected = kept_by_the_rule(video, Fraction(2))
        assert mine["frame_index"].tolist() == expected, video.name
        cap, index = cv2.VideoCapture(str(video)), 0
        for row in mine.itertuples():
            while index <= row.frame_index:  # the source's frame of that index
                ok, frame = cap.read()
                assert ok
                index += 1
            hits, boxes = predict_matches(reference, frame, row.detections)
            matched, total = matched + hits, total + boxes
    assert total > 50 and matched >= 0.99 * total
    settings = json.loads((out / "run.json").read_text())["settings"]
    assert settings["fps"] == 2.0 and settings["stride"] == 1

    # the same rate: every video complete already
    assert cli(*videos, *common, "--fps", "2") == 0
    last = json.loads(sorted((out / "runs").iterdir())[-1].read_text())
    assert last["totals"]["videos_skipped"] == len(videos) and last["did_work"] is False

    # another rate: every video again, its old rows replaced
    assert cli(*videos, *common, "--fps", "3") == 0
    rows, statuses = read_rows(out), read_status(out)
    for video in videos:
        mine = rows[rows["video_id"] == statuses[str(video)]["video_id"]]
        assert sorted(mine["frame_index"]) == kept_by_the_rule(video, Fraction(3))


def test_keyframes_run_keeps_only_keyframes(ray_local, tmp_path, rate_clips, model_path):
    out = tmp_path / "out"
    video = rate_clips / "30fps.mp4"  # a keyframe each second
    assert cli(video, "--output", out, "--model", model_path, "--keyframes") == 0
    assert sorted(read_rows(out)["frame_index"]) == [0, 30]
    assert read_status(out)[str(video)]["status"] == "ok"
