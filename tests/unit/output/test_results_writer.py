import os

import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from pipeline.inference.detections import BatchResult, Detections
from pipeline.output.schema import DETECTIONS_SCHEMA
from pipeline.output.writer import VideoResultWriter, batch_to_table, remove_stale_temp_files

NAMES = {0: "person", 1: "bicycle", 2: "car"}


def batch(seq, size=4, boxes_per_frame=(2, 0, 1, 3)):
    indices = np.arange(seq * size, seq * size + size, dtype=np.int64)
    counts = np.array(boxes_per_frame[:size], np.int32)
    n = int(counts.sum())
    det = Detections(
        np.tile([[1, 2, 30, 40]], (n, 1)) + seq, np.linspace(0.3, 0.9, n), np.arange(n) % 3
    )
    return BatchResult("vid", seq, indices, indices / 30.0, counts, det)


def test_table_has_the_contract_schema_and_one_row_per_frame():
    table = batch_to_table(batch(0), NAMES)
    assert table.schema.equals(DETECTIONS_SCHEMA)
    rows = table.to_pylist()
    assert [r["num_detections"] for r in rows] == [2, 0, 1, 3]
    assert rows[1]["detections"] == []  # frames without boxes keep their row
    first = rows[0]["detections"][0]
    assert first["class_name"] == "person" and first["x2"] == 30.0


def test_unknown_class_ids_get_their_number_as_name():
    det = Detections([[0, 0, 1, 1]], [0.5], [77])
    result = BatchResult("v", 0, np.array([0]), np.array([0.0]), np.array([1]), det)
    assert batch_to_table(result, NAMES).to_pylist()[0]["detections"][0]["class_name"] == "77"


def test_out_of_order_batches_are_written_in_frame_order_once(tmp_path):
    writer = VideoResultWriter(tmp_path, "vid", NAMES)
    assert writer.add(batch(2)) and writer.add(batch(0))
    assert not writer.add(batch(0))  # a retried batch that raced its original
    assert writer.pending == 1
    assert writer.add(batch(1)) and not writer.add(batch(2))
    path = writer.commit()
    frames = pq.read_table(path)["frame_index"].to_pylist()
    assert frames == list(range(12))


def test_nothing_is_visible_before_commit(tmp_path):
    """Row groups reach the disk as batches come (2-row groups here), under a hidden name that
    no reader lists; the commit makes them all visible at once."""
    from pipeline.output.readers import read_detections

    writer = VideoResultWriter(tmp_path, "vid", NAMES, row_group_frames=2)
    writer.add(batch(0))
    writer.add(batch(1))
    assert writer.row_groups_written >= 2 and writer.temp_path.stat().st_size > 0  # on disk already
    assert ds.dataset(tmp_path / "detections", format="parquet").count_rows() == 0
    assert len(read_detections(tmp_path, flat=False)) == 0
    writer.commit()
    assert ds.dataset(tmp_path / "detections", format="parquet").count_rows() == 8
    assert [p.name for p in (tmp_path / "detections").iterdir()] == ["vid.parquet"]


def test_commit_with_a_gap_refuses(tmp_path):
    writer = VideoResultWriter(tmp_path, "vid", NAMES)
    writer.add(batch(1))
    with pytest.raises(RuntimeError, match="never did"):
        writer.commit()
    writer.abort()
    assert list((tmp_path / "detections").iterdir()) == []


def test_commit_replaces_an_older_version(tmp_path):
    for size in (4, 2):
        writer = VideoResultWriter(tmp_path, "vid", NAMES)
        writer.add(batch(0, size=size))
        writer.commit()
    assert pq.read_table(tmp_path / "detections" / "vid.parquet").num_rows == 2


def test_stale_temp_files_are_removed(tmp_path):
    writer = VideoResultWriter(tmp_path, "vid", NAMES, row_group_frames=4)
    writer.add(batch(0))  # a full row group reaches the temp file, then the process "dies"
    assert remove_stale_temp_files(tmp_path) == 1
    assert list((tmp_path / "detections").iterdir()) == []


def test_a_folder_with_a_temporary_name_is_left_alone(tmp_path):
    (tmp_path / "detections" / ".tmp-someone-elses").mkdir(parents=True)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / ".tmp-20261127T000000.000Z.json").write_text("{")
    assert remove_stale_temp_files(tmp_path) == 1  # the record's temp file; not the folder
    assert [p.name for p in (tmp_path / "detections").iterdir()] == [".tmp-someone-elses"]


def test_rows_are_grouped_into_row_groups_of_the_set_size(tmp_path):
    writer = VideoResultWriter(tmp_path, "vid", NAMES, row_group_frames=8)
    for seq in range(5):  # 20 frames: groups of 8, 8 and the last 4
        writer.add(batch(seq))
    meta = pq.ParquetFile(writer.commit()).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [8, 8, 4]


def test_class_totals_count_every_box_busiest_first(tmp_path):
    writer = VideoResultWriter(tmp_path, "vid", NAMES)
    writer.add(batch(0))  # 6 boxes with class ids 0,1,2,0,1,2
    writer.add(batch(1, boxes_per_frame=(1, 0, 0, 0)))  # one more class 0
    assert writer.class_totals() == [
        {"class_id": 0, "class_name": "person", "count": 3},
        {"class_id": 1, "class_name": "bicycle", "count": 2},
        {"class_id": 2, "class_name": "car", "count": 2},
    ]


def test_finish_closes_the_file_under_its_hidden_name(tmp_path):
    writer = VideoResultWriter(tmp_path, "vid", NAMES)
    writer.add(batch(0))
    hidden = writer.finish()
    assert hidden.name.startswith(".tmp-") and pq.read_table(hidden).num_rows == 4
    assert not writer.final_path.exists()  # readers see nothing until it is renamed


def test_untracked_commit_removes_an_older_tracks_file(tmp_path):
    (tmp_path / "tracks").mkdir()
    (tmp_path / "tracks" / "vid.parquet").write_bytes(b"from a run with --track")
    writer = VideoResultWriter(tmp_path, "vid", NAMES)
    writer.add(batch(0))
    writer.commit()
    assert not (tmp_path / "tracks" / "vid.parquet").exists()
    assert pq.read_schema(tmp_path / "detections" / "vid.parquet").equals(DETECTIONS_SCHEMA)


def test_a_committed_file_and_its_folder_entry_reach_the_disk_before_it_counts(
    tmp_path, monkeypatch
):
    """After a power loss an 'ok' row must never point at an empty file: the rows are synced
    before the rename, and the folder after it, for the detections and for videos.parquet."""
    from pipeline.output.manifest import Manifest, VideoRecord

    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(
        os,
        "fsync",
        lambda fd: (calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))), real_fsync(fd))[1],
    )
    monkeypatch.setattr(
        os, "replace", lambda a, b: (calls.append(("replace", str(b))), real_replace(a, b))[1]
    )
    writer = VideoResultWriter(tmp_path, "vid", NAMES)
    writer.add(batch(0))
    final = writer.commit()
    temp = str(writer.temp_path)
    assert calls == [("fsync", temp), ("replace", str(final)), ("fsync", str(final.parent))]
    calls.clear()
    manifest = Manifest(tmp_path)
    manifest.update(VideoRecord("vid", "/v.mp4", "ok", frames_processed=4))
    manifest.save()
    # its new folder's entry, then the part: synced, renamed, its folder synced
    (part,) = (tmp_path / "videos.parquet").iterdir()
    assert [c[0] for c in calls] == ["fsync", "fsync", "replace", "fsync"]
    assert calls[0][1] == str(tmp_path)
    assert calls[2][1] == str(part) and calls[3][1] == str(tmp_path / "videos.parquet")
