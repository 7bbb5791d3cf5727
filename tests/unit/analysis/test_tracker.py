"""VideoTracker on synthetic boxes: ids stable while objects move, new ids for new objects."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.analysis.tracking import NO_TRACK, VideoTracker, track_detections_file
from pipeline.inference.detections import BatchResult, Detections
from pipeline.output.schema import TRACKS_SCHEMA, detections_schema
from pipeline.output.writer import VideoResultWriter

NAMES = {0: "person", 2: "car"}


def boxes(*rows) -> Detections:
    rows = np.array(rows, np.float32).reshape(-1, 6)
    return Detections(rows[:, :4], rows[:, 4], rows[:, 5].astype(int))


def test_moving_objects_keep_their_ids_and_new_ones_get_the_next():
    tracker = VideoTracker()
    seen = []
    for f in range(40):
        frame = [
            (100 + 3 * f, 100, 160 + 3 * f, 220, 0.9, 0),
            (600 - 2 * f, 300, 700 - 2 * f, 360, 0.8, 2),
        ]
        if f >= 20:  # a third object walks in
            frame.append((900, 50 + f, 950, 150 + f, 0.85, 0))
        seen.append(tracker.update(f, f / 30, boxes(*frame)))
    assert all(ids[:2].tolist() == [1, 2] for ids in seen)
    assert seen[20][2] == NO_TRACK  # not confirmed on its first frame (as in YOLO.track)
    assert all(ids[2] == 3 for ids in seen[21:])
    summary = tracker.summary_table("v", NAMES).to_pandas().set_index("track_id")
    assert summary.loc[1, ["class_name", "first_frame", "last_frame", "num_frames"]].tolist() == [
        "person",
        0,
        39,
        40,
    ]
    assert summary.loc[2, "class_name"] == "car"
    assert summary.loc[3, ["first_frame", "num_frames"]].tolist() == [21, 19]
    assert tracker.num_tracks == 3


def test_empty_frames_and_no_boxes_are_fine():
    tracker = VideoTracker()
    assert tracker.update(0, 0.0, Detections.empty()).tolist() == []
    # After the first frame, a new object is confirmed on its second frame.
    assert tracker.update(1, 0.03, boxes((10, 10, 50, 50, 0.9, 0))).tolist() == [NO_TRACK]
    assert tracker.update(2, 0.07, boxes((11, 10, 51, 50, 0.9, 0))).tolist() == [1]
    assert tracker.summary_table("v", NAMES).to_pylist()[0]["first_frame"] == 2


def test_frames_out_of_order_are_refused():
    tracker = VideoTracker()
    tracker.update(5, 0.2, Detections.empty())
    with pytest.raises(ValueError, match="in order"):
        tracker.update(3, 0.1, Detections.empty())


def test_ids_do_not_depend_on_other_videos_tracked_alongside():
    a, b = VideoTracker(), VideoTracker()
    interleaved_a = []
    for f in range(10):
        b.update(f, f / 30, boxes((300, 300, 340, 380, 0.9, 0), (10, 10, 40, 40, 0.7, 2)))
        interleaved_a.append(a.update(f, f / 30, boxes((50 + f, 50, 90 + f, 130, 0.9, 0))).tolist())
    alone = VideoTracker()
    assert interleaved_a == [
        alone.update(f, f / 30, boxes((50 + f, 50, 90 + f, 130, 0.9, 0))).tolist()
        for f in range(10)
    ]


def test_tracking_a_detections_file_equals_tracking_frame_by_frame(tmp_path):
    """The file tracker reads a video's rows in order, a row group at a time, and writes the
    same rows with the ids a tracker fed frame by frame gives."""
    rng = np.random.default_rng(0)
    frames = []
    for f in range(50):  # 3 objects drifting, one vanishing for a while, a random false box
        rows = [(100 + 2 * f, 100, 150 + 2 * f, 200, 0.9, 0), (400, 50 + f, 460, 150 + f, 0.8, 2)]
        if not 20 <= f < 26:
            rows.append((250, 300 - f, 290, 380 - f, 0.7, 0))
        if f % 7 == 3:
            rows.append(tuple(rng.uniform(0, 500, 2)) + (600, 600, 0.3, 0))
        frames.append(boxes(*rows))
    writer = VideoResultWriter(tmp_path, "vid", NAMES, row_group_frames=16)
    for seq in range(0, 50, 10):
        chunk = frames[seq : seq + 10]
        idx = np.arange(seq, seq + len(chunk))
        merged = Detections(
            np.concatenate([d.xyxy for d in chunk]),
            np.concatenate([d.confidence for d in chunk]),
            np.concatenate([d.class_id for d in chunk]),
        )
        writer.add(BatchResult("vid", seq // 10, idx, idx / 30, [len(d) for d in chunk], merged))
    untracked = writer.finish()

    tracked, tracks = tmp_path / "tracked.parquet", tmp_path / "tracks.parquet"
    count = track_detections_file(untracked, tracked, tracks, video_id="vid", names=NAMES)

    direct = VideoTracker()
    expected = [direct.update(f, f / 30, d).tolist() for f, d in enumerate(frames)]
    file = pq.ParquetFile(tracked)
    assert file.schema_arrow.equals(detections_schema(tracked=True))
    assert file.metadata.num_row_groups == pq.ParquetFile(untracked).metadata.num_row_groups
    rows = file.read().to_pylist()
    got = [
        [NO_TRACK if b["track_id"] is None else b["track_id"] for b in r["detections"]]
        for r in rows
    ]
    assert got == expected
    before = pq.read_table(untracked).to_pylist()
    strip = lambda r: [{k: v for k, v in b.items() if k != "track_id"} for b in r["detections"]]  # noqa: E731
    assert [strip(r) for r in rows] == [
        r["detections"] for r in before
    ]  # the boxes themselves untouched
    summary = pq.read_table(tracks)
    assert (
        summary.schema.equals(TRACKS_SCHEMA) and summary.num_rows == count == direct.num_tracks >= 3
    )
