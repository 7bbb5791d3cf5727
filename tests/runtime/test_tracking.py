"""--track on people.mp4: stable ids, a plausible number of tracks, the same ids whatever order
the batches arrived in (one decoder, or two segments' decoders at once), and a tracks summary
that agrees with the detections."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import iou_matrix

from pipeline.cli.main import main
from pipeline.output.readers import read_detections, read_tracks, read_videos

pytestmark = pytest.mark.slow


def tracked_run(out, people_mp4, model_path, segments: int = 1) -> pd.DataFrame:
    # Segments start on batch boundaries, so the batches (and the boxes themselves) are
    # bit-identical and any difference in ids could only come from the order the tracker saw
    # them in. (A video is one worker's: the number of workers does not split it.)
    if segments > 1:
        import pipeline
        from pipeline.config import RunConfig

        config = RunConfig(
            model=str(model_path),
            device="cpu",
            track=True,
            num_actors=1,
            cpu_threads=1,
            batch_size=8,
            segments=segments,
            segment_min_frames=64,
        )
        record = pipeline.run([str(people_mp4)], output=str(out), config=config, progress=False)
        assert record["exit_code"] == 0
        assert record["totals"]["videos_split"] == 1 and record["totals"]["segments"] == segments
        return read_detections(out).sort_values(["frame_index", "x1", "y1"]).reset_index(drop=True)
    code = main(
        [
            "run",
            str(people_mp4),
            "--output",
            str(out),
            "--model",
            str(model_path),
            "--device",
            "cpu",
            "--track",
            "--num-actors",
            "1",
            "--cpu-threads",
            "1",
            "--batch-size",
            "8",
            "--no-progress",
        ]
    )
    assert code == 0
    return read_detections(out).sort_values(["frame_index", "x1", "y1"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def runs(ray_local, tmp_path_factory, people_mp4, model_path):
    root = tmp_path_factory.mktemp("tracking")
    one = tracked_run(root / "one", people_mp4, model_path)
    two = tracked_run(root / "two", people_mp4, model_path, segments=2)
    return root, one, two


def test_each_person_keeps_one_id_across_consecutive_frames(runs):
    _, boxes, _ = runs
    all_people = boxes[boxes["class_name"] == "person"]
    # A box gets an id once its track is confirmed (from its second frame on), so nearly all do.
    assert all_people["track_id"].notna().mean() > 0.95
    people = all_people.dropna(subset=["track_id"])
    by_frame = {f: g for f, g in people.groupby("frame_index")}
    same = changed = 0
    for f in range(301):
        if f not in by_frame or f + 1 not in by_frame:
            continue
        a, b = by_frame[f], by_frame[f + 1]
        # No two boxes of a frame share an id.
        assert a["track_id"].is_unique
        overlap = iou_matrix(
            a[["x1", "y1", "x2", "y2"]].to_numpy(), b[["x1", "y1", "x2", "y2"]].to_numpy()
        )
        for i, j in zip(*np.nonzero(overlap > 0.7)):  # the same person one frame later
            if a["track_id"].iloc[i] == b["track_id"].iloc[j]:
                same += 1
            else:
                changed += 1
    assert same > 3000  # ~15 people over 300 frame pairs
    assert changed <= same * 0.002, f"{changed} id changes for {same} continuations"


def test_number_of_tracks_is_plausible(runs):
    root, boxes, _ = runs
    tracks = read_tracks(root / "one")
    people = tracks[tracks["class_name"] == "person"]
    per_frame = boxes[boxes["class_name"] == "person"].groupby("frame_index").size()
    # About 15 people per frame over 10 s, some walking in and out: tens of tracks, not one per box.
    assert per_frame.max() <= len(people) <= 4 * per_frame.max()
    assert len(tracks) < 0.02 * len(boxes)
    assert (
        people["num_frames"] >= 100
    ).sum() >= per_frame.median() / 2  # many followed for seconds
    videos = read_videos(root / "one")
    assert videos["num_tracks"].tolist() == [len(tracks)]


def test_tracks_summary_agrees_with_the_detections(runs):
    root, boxes, _ = runs
    tracks = read_tracks(root / "one").set_index("track_id")
    seen = (
        boxes.dropna(subset=["track_id"])
        .groupby("track_id")["frame_index"]
        .agg(["min", "max", "count"])
    )
    seen.index = seen.index.astype(tracks.index.dtype)  # both nullable Int32
    assert sorted(seen.index) == sorted(tracks.index) == list(range(1, len(tracks) + 1))
    assert (seen["min"] == tracks.loc[seen.index, "first_frame"]).all()
    assert (seen["max"] == tracks.loc[seen.index, "last_frame"]).all()
    assert (seen["count"] == tracks.loc[seen.index, "num_frames"]).all()


def test_ids_are_the_same_with_one_decoder_or_two_segments(runs):
    root, one, two = runs
    assert len(one) == len(two) > 4000
    pd.testing.assert_frame_equal(one, two)  # boxes, confidences and track ids, row for row


# YOLO.track runs the PyTorch model at about 88 ms a frame here: the first half of the video
COMPARED_FRAMES = 151


def test_ids_agree_with_ultralytics_own_tracking(runs, people_mp4, model_path):
    """``YOLO.track`` (ByteTrack, same model and thresholds) over the same video's first
    ``COMPARED_FRAMES`` frames, frame by frame: every id it gives maps to exactly one of ours and
    back (ids may be numbered differently)."""
    from ultralytics import YOLO

    _, boxes, _ = runs
    ours_to_ref, ref_to_ours = {}, {}
    compared = unmatched = 0
    stream = YOLO(model_path).track(
        source=str(people_mp4),
        conf=0.25,
        iou=0.7,
        imgsz=640,
        persist=True,
        tracker="bytetrack.yaml",
        stream=True,
        verbose=False,
    )
    for frame_index, result in enumerate(stream):
        if frame_index == COMPARED_FRAMES:  # (the tracker's state at a frame depends only on
            break  # the frames before it: a prefix is compared exactly)
        if result.boxes.id is None:
            continue
        ours = boxes[boxes["frame_index"] == frame_index].dropna(subset=["track_id"])
        # YOLO.track reports the track's (Kalman-smoothed) box, we store the detector's: match by IoU.
        overlap = iou_matrix(result.boxes.xyxy.numpy(), ours[["x1", "y1", "x2", "y2"]].to_numpy())
        for k, ref_id in enumerate(result.boxes.id.numpy().astype(int)):
            compared += 1
            if not len(ours) or overlap[k].max() < 0.5:
                unmatched += 1
                continue
            our_id = int(ours["track_id"].iloc[int(overlap[k].argmax())])
            assert ref_to_ours.setdefault(ref_id, our_id) == our_id
            assert ours_to_ref.setdefault(our_id, ref_id) == ref_id
    assert compared > 2000 and unmatched <= 0.01 * compared
    prefix = boxes[boxes["frame_index"] < COMPARED_FRAMES]
    assert len(ref_to_ours) == prefix["track_id"].nunique()


def test_a_tracking_task_that_dies_is_retried_and_one_that_always_dies_fails_only_its_video(
    ray_local, tmp_path, people_mp4, model_path
):
    from conftest import read_status, write_people_clips  # noqa: I001

    import pipeline
    from pipeline.config import RunConfig
    from pipeline.media.source import describe
    from pipeline.runtime.faults import FaultPlan

    clips = write_people_clips(tmp_path, people_mp4, count=2, length=24, step=30)
    victim = describe(str(clips[0])).video_id
    config = RunConfig(model=model_path, device="cpu", track=True, batch_size=8)
    for times, expected in ((1, "ok"), (100, "failed")):
        markers = tmp_path / f"markers-{times}"
        markers.mkdir()
        out = tmp_path / f"out-{times}"
        plan = FaultPlan(
            marker_dir=str(markers), tracker_exit_video_id=victim, tracker_exit_times=times
        )
        record = pipeline.run(clips, output=str(out), config=config, progress=False, faults=plan)
        status = {Path(p).name: s for p, s in read_status(out).items()}
        assert status["v1.mp4"]["status"] == "ok" and status["v1.mp4"]["num_tracks"] > 0
        assert status["v0.mp4"]["status"] == expected
        if expected == "ok":  # Ray re-ran the task after its process died
            assert len(list(markers.iterdir())) == 1 and record["exit_code"] == 0
            assert len(read_tracks(out, video_id=victim)) == status["v0.mp4"]["num_tracks"] > 0
        else:  # the first run and Ray's 2 retries all died
            assert len(list(markers.iterdir())) == 3 and record["exit_code"] == 3
            assert "tracking failed" in status["v0.mp4"]["error"]
            assert (
                read_detections(out, video_id=victim).empty
                and read_tracks(out, video_id=victim).empty
            )
        leftovers = [p.name for p in out.rglob(".tmp-*")]
        assert leftovers == []
