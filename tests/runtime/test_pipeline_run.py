"""End to end on a real local Ray: the foundation's acceptance criteria."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import predict_matches, read_rows, read_status

from pipeline.cli.main import main
from pipeline.config import RunConfig
from pipeline.runtime.faults import FaultPlan

pytestmark = pytest.mark.slow


def cli(*args) -> int:
    return main(["run", *map(str, args), "--no-progress"])


def test_people_mp4_has_every_frame_and_yolo_predicts_boxes(
    ray_local, tmp_path, people_mp4, model_path
):
    import cv2
    from ultralytics import YOLO

    out = tmp_path / "out"
    assert cli(people_mp4, "--output", out, "--model", model_path, "--device", "cpu") == 0
    rows = read_rows(out).sort_values("frame_index")
    assert len(rows) == 302
    assert rows["frame_index"].tolist() == list(range(302))

    reference = YOLO(model_path)
    cap = cv2.VideoCapture(str(people_mp4))
    matched = total_ref = total_ours = 0
    for row in rows.itertuples():
        ok, frame = cap.read()
        assert ok
        if row.frame_index % 3:  # every third frame (101): the reference's 88 ms a frame is
            continue  # most of this test's time; a frame out of step would fail on any of them
        hits, boxes = predict_matches(reference, frame, row.detections)
        matched, total_ref, total_ours = (
            matched + hits,
            total_ref + boxes,
            total_ours + len(row.detections),
        )
    assert not cap.read()[0]  # and the reference has no frame we lack
    print(f"parity: {matched}/{total_ref} reference boxes matched, {total_ours} ours")
    assert matched >= 0.99 * total_ref
    assert abs(total_ours - total_ref) <= 0.01 * total_ref

    record = json.loads((out / "run.json").read_text())
    assert record["totals"]["frames"] == 302 and record["exit_code"] == 0
    status = read_status(out)[str(people_mp4)]
    assert (
        status["status"] == "ok" and status["frames_processed"] == 302 and status["error"] is None
    )
    assert (status["width"], status["height"], status["fps"]) == (1920, 1080, 30.0)


def test_stride_keeps_every_nth_frame_with_exact_timestamps(
    ray_local, tmp_path, people_mp4, model_path
):
    out = tmp_path / "out"
    assert (
        cli(
            people_mp4, "--output", out, "--model", model_path, "--stride", "5", "--batch-size", "8"
        )
        == 0
    )
    rows = read_rows(out).sort_values("frame_index")
    assert rows["frame_index"].tolist() == list(range(0, 302, 5))
    np.testing.assert_allclose(rows["timestamp_s"], rows["frame_index"] / 30, atol=1e-3)


@pytest.fixture(scope="module")
def five_video_run(ray_local, tmp_path_factory, clips, model_path):
    """Five videos (re-encoded, shortened, other codecs and containers) in one run."""
    out = tmp_path_factory.mktemp("five") / "out"
    videos = [
        clips[k] for k in ("short_1080p", "small_h264", "small_mjpeg", "small_vp9", "tiny_17")
    ]
    code = cli(*videos, "--output", out, "--model", model_path, "--batch-size", "8")
    return code, out, videos


def test_five_videos_are_each_complete_and_correct(five_video_run, model_path):
    from pipeline.inference.torch_detector import BatchDetector
    from pipeline.media.decode import VideoDecoder, iter_batches

    code, out, videos = five_video_run
    assert code == 0
    rows = read_rows(out)
    statuses = read_status(out)
    detector = BatchDetector(model_path, max_batch=8)
    expected_frames = {
        "short_1080p": 24,
        "small_h264": 40,
        "small_mjpeg": 20,
        "small_vp9": 20,
        "tiny_17": 17,
    }
    for video in videos:
        status = statuses[str(video)]
        assert status["status"] == "ok", status
        mine = rows[rows["video_id"] == status["video_id"]].sort_values("frame_index")
        assert mine["frame_index"].tolist() == list(range(expected_frames[video.stem]))
        # Correct, not just complete: the same boxes as the detector run directly on the decoded frames.
        decoder = VideoDecoder(str(video))
        geometry = detector.geometry(decoder.info.height, decoder.info.width)
        want = []
        for batch in iter_batches(decoder, geometry, 8):
            counts, _ = detector.detect(batch.frames, geometry)
            want.extend(counts.tolist())
        assert mine["num_detections"].tolist() == want
        assert sum(want) > 0
    assert len(statuses) == 5


def test_second_run_skips_complete_videos_and_writes_nothing_twice(five_video_run, model_path):
    code, out, videos = five_video_run
    before = read_rows(out)
    first_record = (out / "run.json").read_text()
    assert cli(*videos, "--output", out, "--model", model_path, "--batch-size", "8") == 0
    assert (out / "run.json").read_text() == first_record  # still the run that did the work
    record = json.loads(sorted((out / "runs").iterdir())[-1].read_text())  # this run's own record
    assert record["totals"]["videos_skipped"] == 5 and record["did_work"] is False
    assert record["totals"]["frames"] == 0
    after = read_rows(out)
    assert len(after) == len(before)
    assert not after.duplicated(["video_id", "frame_index"]).any()


def test_changed_settings_reprocess_and_replace_old_rows(ray_local, tmp_path, clips, model_path):
    video = clips["tiny_17"]
    out = tmp_path / "out"
    assert cli(video, "--output", out, "--model", model_path) == 0
    assert len(read_rows(out)) == 17
    assert cli(video, "--output", out, "--model", model_path, "--stride", "4") == 0
    rows = read_rows(out)
    assert sorted(rows["frame_index"]) == [
        0,
        4,
        8,
        12,
        16,
    ]  # the stride-1 rows are gone, not mixed in


def test_backpressure_bounds_batches_alive(ray_local, tmp_path, clips, model_path):
    """A slowed actor: decoders must wait instead of filling the object store."""
    import pipeline

    plan = FaultPlan(marker_dir=str(tmp_path), actor_delay_s=0.25, trace=True)
    config = RunConfig(
        model=model_path,
        batch_size=2,
        window_per_actor=2,
        decoder_buffer=1,
        max_open_videos=1,
        num_actors=1,
    )
    record = pipeline.run(
        [str(clips["small_h264"])],
        output=str(tmp_path / "out"),
        config=config,
        faults=plan,
        progress=False,
    )
    assert record["totals"]["frames"] == 40
    alive = peak = 0
    produced = 0
    for _, event in plan.read_trace():
        alive += 1 if event == "produced" else -1
        produced += event == "produced"
        peak = max(peak, alive)
    assert produced == 20  # every batch was traced
    # the worker's window (2, and 1 for its open video) + the batch taken from the stream that
    # waits for a slot (1) + the stream's unread items (2 a buffered batch) + the batch a paused
    # decoder holds while it waits (1)
    window = config.window_per_actor + 1
    bound = window + 1 + 2 * config.decoder_buffer + 1
    print(
        f"peak batches alive: {peak} (bound {bound}); coordinator's in-flight peak {record['backpressure']}"
    )
    assert peak <= bound
    assert record["backpressure"]["peak_batches_in_flight"] <= window
