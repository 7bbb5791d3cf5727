"""Crossings, visits, occupancy and overcrowding on boxes with known paths (no video, no model)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import supervision as sv

from pipeline.analysis.counting import VideoBoxes, line_crossings, zone_counts
from pipeline.analysis.spec import Line, Zone

FPS = 10.0
BOX_W, BOX_H = 20.0, 40.0


def boxes_on_paths(paths: dict[int, dict[int, float]], y: float = 100.0, class_id: int = 0):
    """One box per (track, frame): ``paths[track][frame]`` is the bottom centre's x."""
    rows = [
        {
            "frame_index": f,
            "timestamp_s": f / FPS,
            "x1": x - BOX_W / 2,
            "y1": y - BOX_H,
            "x2": x + BOX_W / 2,
            "y2": y,
            "confidence": 0.9,
            "class_id": class_id,
            "class_name": "person" if class_id == 0 else "car",
            "track_id": track,
        }
        for track, frames in paths.items()
        for f, x in frames.items()
    ]
    columns = ["frame_index", "timestamp_s", "x1", "y1", "x2", "y2", "confidence", "class_id"]
    return pd.DataFrame(rows, columns=[*columns, "class_name", "track_id"])


def video_of(boxes: pd.DataFrame, frames: int) -> VideoBoxes:
    boxes = boxes.sort_values("frame_index", kind="stable").reset_index(drop=True)
    index = np.arange(frames)
    return VideoBoxes("v", 640, 480, index, index / FPS, boxes)


VERTICAL = Line("door", (300.0, 0.0), (300.0, 480.0))  # walking down it, east is on your left


def test_crossings_by_direction_at_the_first_frame_on_the_new_side():
    east = {f: 200.0 + 10 * f for f in range(30)}
    west = {f: 500.0 - 10 * f for f in range(30)}
    video = video_of(boxes_on_paths({1: east, 2: west}), 30)
    crossings = line_crossings(video, VERTICAL, "bottom_center", None)
    assert list(zip(crossings["track_id"], crossings["direction"], crossings["frame_index"])) == [
        # an anchor on the line counts as its right side (as in sv.LineZone): x = 300 at frame 10
        (1, "in", 11),  # x = 310 at frame 11: first on the left
        (2, "out", 20),  # x = 300 at frame 20: first on the right
    ]


def test_direction_matches_supervisions_line_zone():
    for path, expected in (({0: 250.0, 1: 350.0}, "in"), ({0: 350.0, 1: 250.0}, "out")):
        video = video_of(boxes_on_paths({1: path}), 2)
        ours = line_crossings(video, VERTICAL, "bottom_center", None)["direction"].tolist()
        zone = sv.LineZone(
            sv.Point(300, 0), sv.Point(300, 480), triggering_anchors=[sv.Position.BOTTOM_CENTER]
        )
        for f in range(2):
            rows = video.boxes[video.boxes["frame_index"] == f]
            zone.trigger(_detections(rows))
        theirs = ["in"] * zone.in_count + ["out"] * zone.out_count
        assert ours == theirs == [expected]


def _detections(rows: pd.DataFrame) -> sv.Detections:
    return sv.Detections(
        xyxy=rows[["x1", "y1", "x2", "y2"]].to_numpy(float).reshape(-1, 4),
        class_id=rows["class_id"].to_numpy(int),
        tracker_id=rows["track_id"].to_numpy(int),
    )


@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_line_zone_on_tracks_without_gaps(seed):
    """Random walks across a slanted line, some leaving its extent: the same crossings."""
    rng = np.random.default_rng(seed)
    frames = 200
    paths = {}
    for track in range(1, 21):
        start, length = int(rng.integers(0, 50)), int(rng.integers(50, 150))
        near_the_line = np.array([100.0, 80.0]) + rng.uniform(0.1, 0.9) * np.array([460.0, 340.0])
        steps = rng.normal(0, 15, (length, 2)).cumsum(0) + near_the_line
        paths[track] = {start + i: steps[i] for i in range(length) if start + i < frames}
    rows = []
    for track, path in paths.items():
        for f, (x, y) in path.items():
            rows.append(boxes_on_paths({track: {f: x}}, y=y))
    video = video_of(pd.concat(rows), frames)
    line = Line("slant", (100.0, 80.0), (560.0, 420.0))
    ours = line_crossings(video, line, "bottom_center", None)
    zone = sv.LineZone(
        sv.Point(*line.start), sv.Point(*line.end), triggering_anchors=[sv.Position.BOTTOM_CENTER]
    )
    theirs = []
    for f in range(frames):
        rows = video.boxes[video.boxes["frame_index"] == f]
        crossed_in, crossed_out = zone.trigger(_detections(rows))
        theirs += [(int(t), f, "in") for t in rows["track_id"][crossed_in]]
        theirs += [(int(t), f, "out") for t in rows["track_id"][crossed_out]]
    assert len(theirs) > 20  # the walks do cross, both ways
    assert sorted(zip(ours["track_id"], ours["frame_index"], ours["direction"])) == sorted(theirs)


def test_a_track_unseen_while_it_crosses_still_counts():
    """Occluded for 6 frames while stepping over the line: the stored track has the whole
    history. supervision's streaming LineZone has forgotten it by the time it reappears."""
    path = {f: 200.0 + 10 * f for f in range(30) if not 8 <= f < 14}
    video = video_of(boxes_on_paths({1: path}), 30)
    crossings = line_crossings(video, VERTICAL, "bottom_center", None)
    assert crossings[["frame_index", "direction"]].values.tolist() == [[14, "in"]]
    zone = sv.LineZone(
        sv.Point(300, 0), sv.Point(300, 480), triggering_anchors=[sv.Position.BOTTOM_CENTER]
    )
    for f in range(30):
        zone.trigger(_detections(video.boxes[video.boxes["frame_index"] == f]))
    assert zone.in_count == 0


def test_unconfirmed_boxes_and_other_classes_do_not_cross():
    east = {f: 250.0 + 10 * f for f in range(12)}
    boxes = pd.concat(
        [
            boxes_on_paths({-1: east}),  # no track confirmed
            boxes_on_paths({7: east}, class_id=2),
            boxes_on_paths({8: east}),
        ]
    )
    video = video_of(boxes, 12)
    assert line_crossings(video, VERTICAL, "bottom_center", frozenset({0}))[
        "track_id"
    ].tolist() == [8]
    assert sorted(line_crossings(video, VERTICAL, "bottom_center", None)["track_id"]) == [7, 8]


def test_a_crossing_outside_the_segments_extent_is_not_counted():
    short = Line("short", (300.0, 0.0), (300.0, 50.0))  # boxes' bottoms are at y=100
    video = video_of(boxes_on_paths({1: {f: 250.0 + 10 * f for f in range(12)}}), 12)
    assert line_crossings(video, short, "bottom_center", None).empty


ZONE = Zone("middle", ((200.0, 0.0), (400.0, 0.0), (400.0, 480.0), (200.0, 480.0)), max_objects=1)


def test_visits_entry_exit_and_dwell():
    # track 1 walks through: inside (200 <= x <= 400) for frames 10..30 -> 21 frames, 2.1 s
    through = {f: 100.0 + 10 * f for f in range(50)}
    # track 2 goes in, out, in again and is still inside when the video ends
    back = {f: x for f, x in enumerate([150, 250, 250, 450, 450, 300, 300, 300])}
    video = video_of(boxes_on_paths({1: through, 2: back}), 50)
    visits = zone_counts(video, ZONE, "bottom_center", None, (1.0,)).visits
    one = visits[visits["track_id"] == 1].iloc[0]
    assert (one["entry_frame"], one["exit_frame"], one["frames_inside"]) == (10, 30, 21)
    assert one["dwell_s"] == pytest.approx(2.1) and not one["open"]
    two = visits[visits["track_id"] == 2]
    assert two[["entry_frame", "exit_frame", "open"]].values.tolist() == [
        [1, 2, False],
        [5, 7, True],
    ]


def test_occupancy_per_bucket_counts_every_frame_of_the_bucket():
    # two objects inside during frames 0..4, one during 5..9, none in 10..19 (2 s at 10 fps)
    inside_a = {f: 300.0 for f in range(10)}
    inside_b = {f: 310.0 for f in range(5)}
    video = video_of(boxes_on_paths({1: inside_a, 2: inside_b}), 20)
    result = zone_counts(video, ZONE, "bottom_center", None, (1.0,))
    every = result.occupancy[result.occupancy["class_name"] == "all"]
    assert every["start_s"].tolist() == [0.0, 1.0]  # the empty second has a row too
    assert every["mean_inside"].tolist() == pytest.approx([1.5, 0.0])
    assert every["max_inside"].tolist() == [2, 0] and every["tracks"].tolist() == [2, 0]
    assert every["frames"].tolist() == [10, 10]
    over = result.overcrowded
    assert over[["start_frame", "end_frame", "peak"]].values.tolist() == [[0, 4, 2]]
    assert over["end_s"].iloc[0] - over["start_s"].iloc[0] == pytest.approx(0.5)
    assert result.frames["inside"].sum() == 15


def test_a_video_without_boxes_gives_empty_tables():
    video = video_of(boxes_on_paths({}), 10)
    result = zone_counts(video, ZONE, "bottom_center", None, (1.0,))
    assert result.visits.empty and result.frames.empty and result.overcrowded.empty
    assert result.occupancy["mean_inside"].tolist() == [0.0]
    assert line_crossings(video, VERTICAL, "bottom_center", None).empty
