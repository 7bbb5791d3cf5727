"""A packed output (short videos in shared part files) reads back as the same rows as one file
per video, through every reader, and a one-video read opens only that video's row group."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.inference.detections import BatchResult, Detections
from pipeline.output.layout import OutputLayout
from pipeline.output.manifest import Manifest, VideoRecord
from pipeline.output.parts import PartBuilder, new_part_key
from pipeline.output.readers import iter_detections, plan_scan, read_detections
from pipeline.output.schema import DETECTIONS_SCHEMA
from pipeline.output.writer import VideoResultWriter

NAMES = {0: "person", 2: "car", 5: "bus"}


def videos(seed: int, count: int = 24) -> dict[str, BatchResult]:
    rng = np.random.default_rng(seed)
    found = {}
    for i in range(count):
        video_id = f"{rng.integers(2**62):016x}"
        frames = int(rng.integers(1, 60))
        counts = rng.integers(0, 4, frames)
        n = int(counts.sum())
        classes = rng.choice([0, 2] if i % 3 else [0, 2, 5], n)
        boxes = Detections(rng.uniform(0, 500, (n, 4)), rng.uniform(0.2, 1, n), classes)
        idx = np.arange(frames)
        found[video_id] = BatchResult(video_id, 0, idx, idx / 30, counts, boxes)
    return found


def record(video_id: str, result: BatchResult, writer: VideoResultWriter, **where) -> VideoRecord:
    return VideoRecord(
        video_id,
        f"/videos/{video_id}.mp4",
        "ok",
        frames_processed=result.num_frames,
        num_detections=len(result.detections),
        class_counts=writer.class_totals(),
        **where,
    )


def write_outputs(tmp_path, seed: int):
    """The same videos as one file each, and packed into 3 parts."""
    own, packed = tmp_path / "own", tmp_path / "packed"
    results = videos(seed)
    own_manifest, packed_manifest = Manifest(own), Manifest(packed)
    ids = sorted(results)
    (packed / "detections").mkdir(parents=True)
    for part_ids in (ids[0::3], ids[1::3], ids[2::3]):
        part, key = (
            PartBuilder(DETECTIONS_SCHEMA, row_group_rows=64),
            new_part_key("detections", "w0"),
        )
        writers = {}
        for video_id in part_ids:
            writer = VideoResultWriter(own, video_id, NAMES)
            writer.add(results[video_id])
            writer.commit()
            writers[video_id] = writer
            own_manifest.update(record(video_id, results[video_id], writer))
            part.add(video_id, pq.read_table(writer.final_path))
        where = part.write(OutputLayout(packed).path(key))
        for video_id in part_ids:
            packed_manifest.update(
                record(
                    video_id,
                    results[video_id],
                    writers[video_id],
                    detections_file=key,
                    row_groups=where[video_id],
                )
            )
    own_manifest.save()
    packed_manifest.save()
    return own, packed, ids


def same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    order = [c for c in ("video_id", "frame_index", "confidence") if c in a.columns]
    pd.testing.assert_frame_equal(
        a.sort_values(order).reset_index(drop=True), b.sort_values(order).reset_index(drop=True)
    )


@pytest.mark.parametrize("seed", range(2))
def test_every_reader_sees_the_same_rows_packed_or_not(tmp_path, seed):
    own, packed, ids = write_outputs(tmp_path, seed)
    assert len(list((packed / "detections").glob("*.parquet"))) == 3
    for filters in (
        {},
        {"video_id": ids[5]},
        {"video_id": ids[2:9]},
        {"classes": "bus"},
        {"start_s": 0.5, "end_s": 1.2},
        {"classes": ["bus"], "start_s": 1.0, "video_id": ids[:12]},
        {"min_confidence": 0.7},
    ):
        same(read_detections(own, **filters), read_detections(packed, **filters))
        same(
            read_detections(own, flat=False, **filters).drop(columns="detections"),
            read_detections(packed, flat=False, **filters).drop(columns="detections"),
        )
        own_videos = [(v, f, t.to_pandas()) for v, f, t in iter_detections(own, **filters)]
        packed_videos = [(v, f, t.to_pandas()) for v, f, t in iter_detections(packed, **filters)]
        assert [v for v, _, _ in own_videos] == [v for v, _, _ in packed_videos]
        for (_, _, a), (_, _, b) in zip(own_videos, packed_videos):
            pd.testing.assert_frame_equal(a, b)
    # readers that know nothing of the pipeline: the folder as one Parquet dataset
    direct = [
        pq.read_table(out / "detections").to_pandas().drop(columns="detections")
        for out in (own, packed)
    ]
    same(*direct)


def test_a_one_video_read_opens_only_its_part_and_row_group(tmp_path):
    own, packed, ids = write_outputs(tmp_path, 0)
    video = ids[7]
    (scan,) = plan_scan(packed, video_id=video)
    assert scan.videos == (video,) and scan.row_groups is not None and len(scan.row_groups) == 1
    group = pq.ParquetFile(scan.path).read_row_group(scan.row_groups[0])
    assert video in set(group["video_id"].to_pylist())
    assert set(read_detections(packed, video_id=video)["video_id"]) == {video}
