"""Part files: whole videos per row group, one video's rows taken out without moving the others."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.inference.detections import BatchResult, Detections
from pipeline.output.parts import PartBuilder, goes_in_a_part, remove_videos, videos_in
from pipeline.output.schema import DETECTIONS_SCHEMA
from pipeline.output.writer import ROW_GROUP_FRAMES, batch_to_table


def clip(video_id: str, frames: int, boxes_per_frame: int = 2) -> pa.Table:
    n = frames * boxes_per_frame
    result = BatchResult(
        video_id=video_id,
        seq=0,
        frame_indices=list(range(frames)),
        timestamps=[i / 30 for i in range(frames)],
        counts=np.full(frames, boxes_per_frame),
        detections=Detections(np.ones((n, 4)), np.full(n, 0.5), np.zeros(n, int)),
    )
    return batch_to_table(result, {0: "person"})


def test_a_part_holds_whole_videos_per_row_group_sorted_by_video(tmp_path):
    part = PartBuilder(DETECTIONS_SCHEMA, row_group_rows=100)
    lengths = {f"{i:016x}": 30 + i for i in range(10)}
    for video_id, frames in reversed(lengths.items()):  # finished in any order
        part.add(video_id, clip(video_id, frames))
    where = part.write(tmp_path / "part.parquet")
    assert where == videos_in(tmp_path / "part.parquet")
    file = pq.ParquetFile(tmp_path / "part.parquet")
    for video_id, frames in lengths.items():
        (group,) = where[video_id]
        rows = file.read_row_group(group).to_pylist()
        mine = [r["frame_index"] for r in rows if r["video_id"] == video_id]
        assert mine == list(range(frames))  # all of it, in frame order, in its one group
    table = pq.read_table(tmp_path / "part.parquet")
    assert table["video_id"].to_pylist() == sorted(table["video_id"].to_pylist())
    assert table.num_rows == sum(lengths.values())
    assert all(file.metadata.row_group(i).num_rows <= 100 + 39 for i in range(file.num_row_groups))
    assert file.num_row_groups < len(lengths)  # several videos share a row group


@pytest.mark.parametrize("seed", range(3))
def test_removing_videos_keeps_every_other_video_in_its_row_group(tmp_path, seed):
    rng = np.random.default_rng(seed)
    part = PartBuilder(DETECTIONS_SCHEMA, row_group_rows=64)
    for i in range(20):
        part.add(f"v{i:02d}", clip(f"v{i:02d}", int(rng.integers(1, 40))))
    path = tmp_path / "part.parquet"
    where = part.write(path)
    before = pq.read_table(path)
    gone = {f"v{i:02d}" for i in rng.choice(20, 7, replace=False)}
    assert remove_videos(path, gone)
    after = pq.read_table(path)
    expected = before.filter(
        pa.compute.invert(pa.compute.is_in(before["video_id"], pa.array(sorted(gone))))
    )
    assert after.equals(expected)
    assert videos_in(path) == {v: g for v, g in where.items() if v not in gone}
    assert not remove_videos(path, gone)  # nothing of them is left: the part stays as it is
    assert [p.name for p in tmp_path.iterdir()] == ["part.parquet"]  # no temp file left


def test_a_part_left_without_rows_is_removed(tmp_path):
    part = PartBuilder(DETECTIONS_SCHEMA)
    part.add("a", clip("a", 3))
    path = tmp_path / "part.parquet"
    part.write(path)
    assert remove_videos(path, {"a"}) and not path.exists()
    assert not remove_videos(path, {"a"})  # gone already: nothing to do


def test_which_videos_are_packed():
    short, long = ROW_GROUP_FRAMES - 1, ROW_GROUP_FRAMES
    assert goes_in_a_part("auto", short) and not goes_in_a_part("auto", long)
    assert goes_in_a_part("packed", long) and not goes_in_a_part("per-video", 1)
    with pytest.raises(ValueError, match="auto, per-video, packed"):
        goes_in_a_part("tight", 1)


def test_a_long_video_in_a_part_has_row_groups_of_its_own(tmp_path):
    part = PartBuilder(DETECTIONS_SCHEMA, row_group_rows=50)
    for video_id, frames in (("a", 20), ("b", 120), ("c", 20), ("d", 20)):
        part.add(video_id, clip(video_id, frames))
    where = part.write(tmp_path / "part.parquet")
    assert where == {"a": [0], "b": [1, 2, 3], "c": [4], "d": [4]}
    assert where == videos_in(tmp_path / "part.parquet")
    file = pq.ParquetFile(tmp_path / "part.parquet")
    assert [file.metadata.row_group(i).num_rows for i in range(5)] == [20, 50, 50, 20, 40]


def test_the_store_takes_a_video_out_of_a_part_and_of_its_tracks_part(tmp_path):
    from pipeline.output.schema import TRACKS_SCHEMA
    from pipeline.output.store import OutputStore

    store = OutputStore(tmp_path)
    key = "detections/part-w0-1.parquet"
    (tmp_path / "detections").mkdir()
    (tmp_path / "tracks").mkdir()
    part = PartBuilder(DETECTIONS_SCHEMA)
    for video_id in ("a", "b"):
        part.add(video_id, clip(video_id, 4))
    part.write(tmp_path / key)
    tracks = pa.Table.from_pylist(
        [{"video_id": v, "track_id": 1, "num_frames": 4} for v in ("a", "b")], TRACKS_SCHEMA
    )
    pq.write_table(tracks, tmp_path / "tracks/part-w0-1.parquet")
    store.remove_rows("a", {key, None})
    assert set(pq.read_table(tmp_path / key)["video_id"].to_pylist()) == {"b"}
    assert pq.read_table(tmp_path / "tracks/part-w0-1.parquet")["video_id"].to_pylist() == ["b"]
    store.remove_from_part(key, {"b"})
    assert not (tmp_path / key).exists() and not (tmp_path / "tracks/part-w0-1.parquet").exists()
