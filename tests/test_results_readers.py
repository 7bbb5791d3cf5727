"""Reading an output directory back: the helpers, and the README's pandas and DuckDB recipes."""

import numpy as np
import pandas as pd
import pytest

from pipeline.detections import BatchResult, Detections
from pipeline.inputs import VideoSource
from pipeline.manifest import Manifest, VideoRecord
from pipeline.results import read_detections, read_videos
from pipeline.results_writer import VideoResultWriter

NAMES = {0: "person", 2: "car"}


@pytest.fixture
def output(tmp_path):
    manifest = Manifest(tmp_path)
    for vid, boxes_per_frame in (("aaaa", [2, 0, 1]), ("bbbb", [0, 3])):
        writer = VideoResultWriter(tmp_path, vid, NAMES)
        n = sum(boxes_per_frame)
        det = Detections(np.tile([[10, 20, 30, 40]], (n, 1)), np.full(n, 0.5), [0, 2] * (n // 2) + [0] * (n % 2))
        idx = np.arange(len(boxes_per_frame))
        writer.add(BatchResult(vid, 0, idx, idx / 30, boxes_per_frame, det))
        writer.commit()
        manifest.update(VideoRecord(vid, f"/videos/{vid}.mp4", "ok", frames_processed=len(boxes_per_frame),
                                    num_detections=n))
    manifest.update(VideoRecord.failed(VideoSource("/videos/bad.mp4", "cccc"), "no video stream", "h"))
    manifest.save()
    return tmp_path


def test_flat_has_one_row_per_box(output):
    flat = read_detections(output)
    assert len(flat) == 6
    assert list(flat.columns) == ["video_id", "frame_index", "timestamp_s", "class_id", "class_name", "confidence",
                                  "x1", "y1", "x2", "y2"]
    assert sorted(flat.groupby("video_id").size().to_dict().items()) == [("aaaa", 3), ("bbbb", 3)]
    only_b = read_detections(output, video_id="bbbb")
    assert set(only_b["video_id"]) == {"bbbb"} and len(only_b) == 3


def test_per_frame_keeps_empty_frames(output):
    frames = read_detections(output, flat=False)
    assert len(frames) == 5 and (frames["num_detections"] == 0).sum() == 2


def test_videos_table(output):
    videos = read_videos(output).set_index("video_id")
    assert videos.loc["cccc", "status"] == "failed" and videos.loc["cccc", "error"] == "no video stream"


def test_readme_pandas_recipe(output):
    frames = pd.read_parquet(output / "detections")
    boxes = frames.explode("detections").dropna(subset=["detections"])
    boxes = pd.concat([boxes.drop(columns="detections").reset_index(drop=True),
                       pd.json_normalize(boxes["detections"].tolist())], axis=1)
    assert len(boxes) == 6 and set(boxes["class_name"]) == {"person", "car"}


def test_readme_duckdb_recipe(output):
    duckdb = pytest.importorskip("duckdb")
    rows = duckdb.sql(f"""
        WITH boxes AS (
    SELECT video_id, frame_index, unnest(detections) AS d FROM read_parquet('{output}/detections/*.parquet'))
SELECT v.path, b.d.class_name, count(*) AS boxes
FROM boxes AS b JOIN read_parquet('{output}/videos.parquet') AS v USING (video_id)
GROUP BY ALL ORDER BY boxes DESC, v.path, d.class_name
    """).fetchall()
    assert sum(r[2] for r in rows) == 6
    assert ("/videos/aaaa.mp4", "person", 2) in rows
