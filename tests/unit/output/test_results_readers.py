"""Reading an output directory back: the helpers, and the README's pandas and DuckDB recipes."""

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from conftest import doc_block, run_in

from pipeline.inference.detections import BatchResult, Detections
from pipeline.media.source import VideoSource
from pipeline.output.manifest import Manifest, VideoRecord
from pipeline.output.readers import (
    FileScan,
    NotARunOutput,
    NoTracks,
    UnknownClass,
    plan_scan,
    read_detections,
    read_tracks,
    read_videos,
)
from pipeline.output.schema import TRACKS_SCHEMA, detections_schema
from pipeline.output.writer import VideoResultWriter

NAMES = {0: "person", 2: "car"}


@pytest.fixture
def output(tmp_path):
    """Two videos and a bad one; the two were tried before (failed), so videos.parquet has two
    parts and a superseded record of each: every reader must keep the latest only."""
    manifest = Manifest(tmp_path)
    for vid in ("aaaa", "bbbb"):
        manifest.update(
            VideoRecord.failed(VideoSource(f"/videos/{vid}.mp4", vid), "a first try failed", "h")
        )
    manifest.save()
    for vid, boxes_per_frame in (("aaaa", [2, 0, 1]), ("bbbb", [0, 3])):
        writer = VideoResultWriter(tmp_path, vid, NAMES)
        n = sum(boxes_per_frame)
        det = Detections(
            np.tile([[10, 20, 30, 40]], (n, 1)), np.full(n, 0.5), [0, 2] * (n // 2) + [0] * (n % 2)
        )
        idx = np.arange(len(boxes_per_frame))
        writer.add(BatchResult(vid, 0, idx, idx / 30, boxes_per_frame, det))
        writer.commit()
        manifest.update(
            VideoRecord(
                vid,
                f"/videos/{vid}.mp4",
                "ok",
                frames_processed=len(boxes_per_frame),
                num_detections=n,
                class_counts=writer.class_totals(),
            )
        )
    manifest.update(
        VideoRecord.failed(VideoSource("/videos/bad.mp4", "cccc"), "no video stream", "h")
    )
    manifest.save()
    return tmp_path


def test_flat_has_one_row_per_box(output):
    flat = read_detections(output)
    assert len(flat) == 6
    assert list(flat.columns) == [
        "video_id",
        "frame_index",
        "timestamp_s",
        "class_id",
        "class_name",
        "confidence",
        "x1",
        "y1",
        "x2",
        "y2",
        "track_id",
    ]
    assert flat["track_id"].isna().all()  # a run without --track: the column is there, empty
    assert sorted(flat.groupby("video_id").size().to_dict().items()) == [("aaaa", 3), ("bbbb", 3)]
    only_b = read_detections(output, video_id="bbbb")
    assert set(only_b["video_id"]) == {"bbbb"} and len(only_b) == 3


def test_per_frame_keeps_empty_frames(output):
    frames = read_detections(output, flat=False)
    assert len(frames) == 5 and (frames["num_detections"] == 0).sum() == 2


def test_videos_table(output):
    videos = read_videos(output)
    assert sorted(videos["video_id"]) == ["aaaa", "bbbb", "cccc"]  # the latest record of each
    videos = videos.set_index("video_id")
    assert (
        videos.loc["cccc", "status"] == "failed"
        and videos.loc["cccc", "error"] == "no video stream"
    )


@pytest.fixture
def out_beside(output, tmp_path_factory):
    """The output as ``out/`` in a folder of its own, as the docs' examples name it."""
    import shutil

    folder = tmp_path_factory.mktemp("user")
    shutil.copytree(output, folder / "out")
    return folder


def test_the_docs_pandas_recipe_as_typed(out_beside, monkeypatch):
    scope = run_in(out_beside, doc_block("docs/output.md", "pandas:", "python"), monkeypatch)
    boxes = scope["boxes"]
    assert len(boxes) == 6 and set(boxes["class_name"]) == {"person", "car"}


def test_the_readme_first_read_as_typed(out_beside, monkeypatch):
    scope = run_in(out_beside, doc_block("README.md", "## A first run", "python"), monkeypatch)
    assert len(scope["rows"]) == 5  # every processed frame, with boxes or without
    videos = scope["videos"]  # each video once, its latest record
    assert sorted(zip(videos["video_id"], videos["status"])) == [
        ("aaaa", "ok"),
        ("bbbb", "ok"),
        ("cccc", "failed"),
    ]


def test_the_docs_duckdb_recipe_as_typed(out_beside, monkeypatch):
    duckdb = pytest.importorskip("duckdb")
    query = doc_block("docs/output.md", "DuckDB:", "sql")
    monkeypatch.chdir(out_beside)
    rows = duckdb.connect().sql(query.strip().rstrip(";")).fetchall()
    assert sum(r[2] for r in rows) == 6
    assert ("/videos/aaaa.mp4", "person", 2) in rows


# ---- filters and pushdown -------------------------------------------------------------------


def _name(path: str) -> str:
    """A file's name, with its folder for the parts of videos.parquet."""
    path = Path(path)
    return f"{path.parent.name}/{path.name}" if path.parent.name == "videos.parquet" else path.name


class CountingFileSystem(pafs.FileSystemHandler):
    """The local filesystem, recording every file opened for reading."""

    def __init__(self):
        self.local = pafs.LocalFileSystem()
        self.opened = []

    def open_input_file(self, path):
        self.opened.append(_name(path))
        return self.local.open_input_file(path)

    def open_input_stream(self, path):
        self.opened.append(_name(path))
        return self.local.open_input_stream(path)

    def get_type_name(self):
        return "counting"

    def get_file_info(self, paths):
        return self.local.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.local.get_file_info(selector)

    def normalize_path(self, path):
        return path

    def __eq__(self, other):
        return self is other

    def __ne__(self, other):
        return self is not other

    # Readers never write; these are required by the interface.
    def create_dir(self, *a):
        raise NotImplementedError

    def delete_dir(self, *a):
        raise NotImplementedError

    def delete_dir_contents(self, *a):
        raise NotImplementedError

    def delete_root_dir_contents(self, *a):
        raise NotImplementedError

    def delete_file(self, *a):
        raise NotImplementedError

    def move(self, *a):
        raise NotImplementedError

    def copy_file(self, *a):
        raise NotImplementedError

    def open_output_stream(self, *a):
        raise NotImplementedError

    def open_append_stream(self, *a):
        raise NotImplementedError


def write_long_videos(root, count=6, frames=300, row_group_frames=50):
    """``count`` videos of ``frames`` frames at 30 fps, in row groups of ``row_group_frames``;
    video k has one box per frame, class 0 (person), and video 0 alone also has cars (class 2)."""
    manifest = Manifest(root)
    ids = [f"video{k}" for k in range(count)]
    for k, vid in enumerate(ids):
        writer = VideoResultWriter(root, vid, NAMES, row_group_frames=row_group_frames)
        for seq, start in enumerate(range(0, frames, 25)):
            idx = np.arange(start, start + 25)
            classes = np.where(idx % 2 == 0, 2, 0) if k == 0 else np.zeros(25)
            det = Detections(np.tile([[10, 20, 30, 40]], (25, 1)), np.full(25, 0.6), classes)
            writer.add(BatchResult(vid, seq, idx, idx / 30.0, np.ones(25), det))
        writer.commit()
        manifest.update(
            VideoRecord(
                vid,
                f"/v/{vid}.mp4",
                "ok",
                frames_processed=frames,
                num_detections=frames,
                class_counts=writer.class_totals(),
            )
        )
    manifest.class_names = NAMES  # as a run records its model's classes
    manifest.save()
    return ids


def test_one_video_reads_only_that_videos_file(tmp_path):
    ids = write_long_videos(tmp_path)
    counting = CountingFileSystem()
    rows = read_detections(
        tmp_path.absolute(), video_id="video3", filesystem=pafs.PyFileSystem(counting)
    )
    assert counting.opened == ["video3.parquet"]  # 1 of 6 files
    assert len(rows) == 300 and set(rows["video_id"]) == {"video3"}
    assert "video3" in ids
    assert plan_scan(tmp_path, video_id="video3") == [
        FileScan(str((tmp_path / "detections" / "video3.parquet").absolute()))
    ]


def test_time_range_reads_only_overlapping_row_groups(tmp_path, monkeypatch):
    write_long_videos(tmp_path)  # row groups of 50 frames = 1.67 s each, 6 per video
    groups_read = []
    original = pq.ParquetFile.read_row_groups

    def spy(self, row_groups, *args, **kwargs):
        groups_read.extend(row_groups)
        return original(self, row_groups, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_groups", spy)
    rows = read_detections(tmp_path, video_id="video1", start_s=2.0, end_s=3.0)
    # frames 60..90 lie in row groups 1 (50..99): one of six is read
    assert groups_read == [1]
    assert rows["frame_index"].tolist() == list(range(60, 91))


def test_class_filter_skips_videos_without_the_class(tmp_path):
    write_long_videos(tmp_path)
    counting = CountingFileSystem()
    cars = read_detections(
        tmp_path.absolute(), classes=["car"], filesystem=pafs.PyFileSystem(counting)
    )
    assert [n for n in counting.opened if not n.startswith("videos.parquet")] == ["video0.parquet"]
    assert len(cars) == 150 and set(cars["class_name"]) == {"car"}
    by_id = read_detections(tmp_path, classes=2)
    assert len(by_id) == 150


@pytest.mark.parametrize(
    "filters, expected_rows",
    [
        ({}, 1800),
        ({"video_id": ["video1", "video2"]}, 600),
        ({"video_id": "missing"}, 0),
        ({"start_s": 9.0}, 6 * 30),  # frames 270..299
        ({"end_s": 0.0}, 6),  # frame 0 of each video
        ({"classes": "person", "video_id": "video0"}, 150),
        ({"classes": ["2"], "video_id": "video0"}, 150),  # an id as text, as --classes gives it
        ({"classes": " CAR ", "video_id": "video0"}, 150),
        ({"min_confidence": 0.7}, 0),
    ],
)
def test_filters_table(tmp_path, filters, expected_rows):
    write_long_videos(tmp_path)
    assert len(read_detections(tmp_path, **filters)) == expected_rows


def test_per_frame_rows_keep_frames_and_filter_their_boxes(tmp_path):
    write_long_videos(tmp_path, count=1)
    frames = read_detections(tmp_path, flat=False, classes="car", start_s=0, end_s=0.1)
    assert frames["frame_index"].tolist() == [0, 1, 2, 3]
    assert frames["num_detections"].tolist() == [1, 0, 1, 0]


def test_per_frame_columns_are_read_alone(tmp_path):
    write_long_videos(tmp_path, count=2)
    frames = read_detections(
        tmp_path, flat=False, columns=["timestamp_s"], video_id="video1", end_s=1.0
    )
    assert list(frames.columns) == ["timestamp_s"] and len(frames) == 31
    with pytest.raises(ValueError, match="flat=False"):
        read_detections(tmp_path, columns=["timestamp_s"])


def test_box_filters_keep_the_box_type_and_count_what_is_left(tmp_path):
    write_long_videos(tmp_path, count=1)
    frames = read_detections(tmp_path, flat=False, classes=[2], min_confidence=0.5, end_s=0.2)
    assert (
        frames["num_detections"].tolist()
        == [len(d) for d in frames["detections"]]
        == [1, 0, 1, 0, 1, 0, 1]
    )
    assert all(b["class_name"] == "car" for boxes in frames["detections"] for b in boxes)
    # every frame keeps its row
    assert len(read_detections(tmp_path, flat=False, min_confidence=0.9)) == 300


# ---- mistakes get an error, not an empty result ---------------------------------------------


def test_a_folder_that_is_not_a_run_output_is_an_error(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    for reader in (read_detections, read_tracks, read_videos):
        with pytest.raises(NotARunOutput, match="does not exist"):
            reader(tmp_path / "no" / "such" / "dir")
        with pytest.raises(NotARunOutput, match="not the output of a run"):
            reader(tmp_path / "elsewhere")


def test_unknown_class_names_and_ids_are_errors(tmp_path):
    write_long_videos(tmp_path)
    with pytest.raises(
        UnknownClass,
        match="the run's model has no class named 'persn' \\(did you mean 'person'\\?\\)",
    ):
        read_detections(tmp_path, classes="persn")
    with pytest.raises(UnknownClass, match="class id 7"):
        read_detections(tmp_path, classes=[7])
    with pytest.raises(UnknownClass):
        read_tracks(tmp_path, classes="persn")
    # names ignore case
    assert len(read_detections(tmp_path, classes="Person", video_id="video1")) == 300


def test_tracks_of_a_run_without_tracking_say_so(tmp_path):
    write_long_videos(tmp_path, count=1)
    with pytest.raises(NoTracks, match="without --track"):
        read_tracks(tmp_path)


def write_tracked_video(root, vid="tracked"):
    """One video as --track writes it: frame 0 has a confirmed and an unconfirmed box, frame 1 none."""
    boxes = [
        [
            {
                "class_id": 0,
                "class_name": "person",
                "confidence": 0.9,
                "x1": 1,
                "y1": 2,
                "x2": 3,
                "y2": 4,
                "track_id": 1,
            },
            {
                "class_id": 2,
                "class_name": "car",
                "confidence": 0.4,
                "x1": 5,
                "y1": 6,
                "x2": 7,
                "y2": 8,
                "track_id": None,
            },
        ],
        [],
    ]
    table = pa.table(
        {
            "video_id": [vid, vid],
            "frame_index": [0, 1],
            "timestamp_s": [0.0, 1 / 30],
            "num_detections": [2, 0],
            "detections": boxes,
        },
        schema=detections_schema(tracked=True),
    )
    (root / "detections").mkdir(parents=True, exist_ok=True)
    (root / "tracks").mkdir(exist_ok=True)
    pq.write_table(table, root / "detections" / f"{vid}.parquet")
    tracks = pa.table(
        {
            "video_id": [vid],
            "track_id": [1],
            "class_id": [0],
            "class_name": ["person"],
            "first_frame": [0],
            "last_frame": [0],
            "num_frames": [1],
            "first_timestamp_s": [0.0],
            "last_timestamp_s": [0.0],
            "mean_confidence": [0.9],
        },
        schema=TRACKS_SCHEMA,
    )
    pq.write_table(tracks, root / "tracks" / f"{vid}.parquet")
    manifest = Manifest(root)
    manifest.class_names = NAMES
    manifest.update(
        VideoRecord(
            vid,
            f"/v/{vid}.mp4",
            "ok",
            frames_processed=2,
            num_detections=2,
            num_tracks=1,
            width=64,
            height=48,
        )
    )
    manifest.update(VideoRecord.failed(VideoSource("/v/bad.mp4", "bad"), "no video stream", "h"))
    manifest.save()


def test_dtypes_are_nullable_integers_and_columns_do_not_depend_on_the_result(tmp_path):
    write_tracked_video(tmp_path)
    flat = read_detections(tmp_path)
    assert str(flat["track_id"].dtype) == "Int32"
    assert flat["track_id"].tolist()[0] == 1 and flat["track_id"].isna().tolist() == [False, True]
    empty = read_detections(tmp_path, start_s=100)
    assert empty.empty and list(empty.columns) == list(flat.columns)
    assert dict(empty.dtypes) == dict(flat.dtypes)
    frames = read_detections(tmp_path, flat=False)
    first = frames["detections"].iloc[0]
    assert (
        first[0]["track_id"] == 1
        and isinstance(first[0]["track_id"], int)
        and first[1]["track_id"] is None
    )
    assert list(read_detections(tmp_path, flat=False, start_s=100).columns) == list(frames.columns)
    videos = read_videos(tmp_path).set_index("video_id")
    assert str(videos["num_tracks"].dtype) == "Int32" and str(videos["width"].dtype) == "Int32"
    assert videos.loc["tracked", "num_tracks"] == 1 and pd.isna(videos.loc["bad", "num_tracks"])
    tracks = read_tracks(tmp_path)
    assert str(tracks["track_id"].dtype) == "Int32"
    no_tracks = read_tracks(tmp_path, video_id="other")
    assert no_tracks.empty and dict(no_tracks.dtypes) == dict(tracks.dtypes)
