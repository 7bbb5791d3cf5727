"""Reading the output back: pandas tables of detections and tracks, or a Ray Dataset.

The readers read only what a filter needs. A video has its own file
(``detections/<video_id>.parquet``), or its rows are in a part file shared with other short
videos (``videos.parquet`` says which, and which row groups): a video filter opens only those
files and row groups; a class filter first consults ``videos.parquet`` (boxes per class per
video) and skips videos without the class; a time filter reads only the row groups whose
``timestamp_s`` statistics overlap the range. ``plan_scan`` shows the files and row groups a filter will read.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.config import class_keys
from pipeline.errors import UsageError
from pipeline.inference.model_ref import ClassesError, resolve_classes
from pipeline.locations import RemoteLocation, is_uri
from pipeline.media.source import video_id_for
from pipeline.output.manifest import Manifest
from pipeline.output.parts import is_part
from pipeline.output.schema import DETECTIONS_SCHEMA, TRACKS_SCHEMA
from pipeline.output.videos_table import VideosTable

BOX_COLUMNS = ["class_id", "class_name", "confidence", "x1", "y1", "x2", "y2"]
Table = Literal["detections", "tracks"]
if TYPE_CHECKING:
    import pandas as pd


def NULLABLE_INTS(arrow_type: pa.DataType):  # noqa: N802 - used as pyarrow's types_mapper
    """Integer columns that may hold nulls come back as pandas' nullable integers (1, <NA>), not
    floats. pandas is imported here, on the first read, not with ``import pipeline``."""
    import pandas as pd

    return {pa.int32(): pd.Int32Dtype(), pa.int64(): pd.Int64Dtype()}.get(arrow_type)


class NotARunOutput(UsageError, FileNotFoundError):
    """The folder given to a reader is not the ``--output`` of a run."""


class UnknownClass(UsageError, ValueError):
    """A class filter names a class the run's model does not have."""


class NoTracks(UsageError, LookupError):
    """``read_tracks`` on an output made without ``--track``."""


@dataclass(frozen=True)
class FileScan:
    """One file a read will open, the row groups it will read from it (None: all), and whose
    rows it keeps (None: all; a part file holds many videos' rows)."""

    path: str
    row_groups: tuple[int, ...] | None = None
    videos: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Packed:
    """Where a packed video's rows are (``videos.parquet``): its part file and row groups."""

    path: str
    row_groups: tuple[int, ...] | None


def _packed_videos(
    fs: pafs.FileSystem, root: str, table: Table, videos: set | None
) -> dict[str, Packed]:
    """The packed videos among ``videos`` (None: all) and where their rows are."""
    file_column = "detections_file" if table == "detections" else "tracks_file"
    manifest = _videos_table(fs, root)
    try:
        schema = manifest.schema()
    except (FileNotFoundError, pa.ArrowInvalid):
        return {}
    if schema is None or file_column not in schema.names:
        return {}  # written before videos were packed
    columns = ["video_id", "status", file_column, "row_groups"]
    found: dict[str, Packed] = {}
    for batch in manifest.latest(columns, video_ids=videos):
        keep = pc.and_(
            pc.is_valid(batch.column(file_column)), pc.not_equal(batch.column("status"), "failed")
        )
        for row in batch.filter(keep).to_pylist():
            groups = row["row_groups"] if table == "detections" else None
            found[row["video_id"]] = Packed(
                f"{root}/{row[file_column]}", tuple(groups) if groups is not None else None
            )
    return found


def _part_scans(packed: dict[str, Packed], videos: Iterable[str]) -> list[FileScan]:
    """One scan per part file, of the row groups that hold ``videos``, keeping only their rows."""
    by_part: dict[str, tuple[set, set | None]] = {}
    for video in videos:
        where = packed[video]
        wanted, groups = by_part.setdefault(where.path, (set(), set()))
        wanted.add(video)
        if groups is not None:
            if where.row_groups is None:
                by_part[where.path] = (wanted, None)
            else:
                groups.update(where.row_groups)
    return [
        FileScan(path, None if groups is None else tuple(sorted(groups)), tuple(sorted(wanted)))
        for path, (wanted, groups) in sorted(by_part.items())
    ]


def _child(output: str | Path, name: str) -> str:
    output = str(output)
    return RemoteLocation(output).join(name) if is_uri(output) else str(Path(output) / name)


def filesystem_for(
    output: str | Path, filesystem: pafs.FileSystem | None = None
) -> tuple[pafs.FileSystem, str]:
    """The filesystem an output directory (local path or URI) lives on, and its path there."""
    if filesystem is not None:
        return filesystem, str(output).rstrip("/")
    if is_uri(str(output)):
        return RemoteLocation(str(output)).filesystem_and_path
    return pafs.LocalFileSystem(), str(Path(output).absolute())


def _as_set(value: str | Iterable | None) -> set | None:
    if value is None:
        return None
    return {value} if isinstance(value, (str, int, np.integer)) else set(value)


def _as_classes(classes) -> set[int | str] | None:
    """A class filter the way ``--classes`` reads it: ``"person"``, ``2``, ``["car", "2"]``."""
    return None if classes is None else set(class_keys(classes))


def _videos_with_classes(fs: pafs.FileSystem, root: str, classes: set) -> set[str] | None:
    """Videos whose boxes include one of ``classes`` (names or ids), from ``videos.parquet``;
    None when the manifest cannot tell (then no video is skipped)."""
    try:
        table = _videos_table(fs, root).read(["video_id", "class_counts"])
    except (FileNotFoundError, KeyError, pa.ArrowInvalid):
        return None
    if table is None or "class_counts" not in table.column_names:
        return None
    names = {c.lower() for c in classes if isinstance(c, str)}
    keep = set()
    for row in table.to_pylist():
        counts = row["class_counts"]
        if counts is None:
            return None  # written before per-class counts were recorded
        if any(c["class_name"].lower() in names or c["class_id"] in classes for c in counts):
            keep.add(row["video_id"])
    return keep


def _overlapping_row_groups(
    meta: pq.FileMetaData, start_s: float | None, end_s: float | None
) -> tuple[int, ...]:
    column = meta.schema.names.index("timestamp_s")
    keep = []
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        stats = group.column(column).statistics
        if group.num_rows == 0:
            continue
        if stats is None or not stats.has_min_max:
            keep.append(i)
        elif (start_s is None or stats.max >= start_s) and (end_s is None or stats.min <= end_s):
            keep.append(i)
    return tuple(keep)


def check_output(
    output: str | Path, filesystem: pafs.FileSystem | None = None
) -> tuple[pafs.FileSystem, str]:
    """The filesystem and root of a run's output; ``NotARunOutput`` when the folder is not one
    (a typo in the path would otherwise read as a run with no detections)."""
    fs, root = filesystem_for(output, filesystem)
    manifest, detections = fs.get_file_info([f"{root}/{Manifest.FILE_NAME}", f"{root}/detections"])
    if manifest.type != pafs.FileType.NotFound or detections.type == pafs.FileType.Directory:
        return fs, root
    if fs.get_file_info(root).type == pafs.FileType.NotFound:
        raise NotARunOutput(f"{output} does not exist: give the --output folder of a run")
    raise NotARunOutput(
        f"{output} is not the output of a run (it has no videos.parquet and no detections/ folder)"
    )


def known_classes(fs: pafs.FileSystem, root: str) -> dict[int, str] | None:
    """The run's model classes, recorded in ``videos.parquet`` (None for outputs written before that)."""
    try:
        schema = _videos_table(fs, root).schema()
    except (FileNotFoundError, OSError, pa.ArrowInvalid):
        return None
    return Manifest.class_names_in(schema) if schema is not None else None


def _videos_table(fs: pafs.FileSystem, root: str) -> VideosTable:
    return VideosTable(f"{root}/{Manifest.FILE_NAME}", fs)


def check_classes(classes: set | None, names: dict[int, str] | None) -> None:
    """``UnknownClass`` for a class name or id that the run's model does not have."""
    if classes is None or names is None:
        return
    try:
        resolve_classes(classes, names, context="the run's model")
    except ClassesError as exc:
        raise UnknownClass(str(exc)) from None


def plan_scan(
    output: str | Path,
    table: Table = "detections",
    *,
    video_id: str | Iterable[str] | None = None,
    classes: str | int | Iterable | None = None,
    start_s: float | None = None,
    end_s: float | None = None,
    filesystem: pafs.FileSystem | None = None,
) -> list[FileScan]:
    """The files (and row groups) a read with these filters opens; nothing else is read.
    Raises ``NotARunOutput``, ``UnknownClass`` (a class the run's model does not have) or
    ``NoTracks`` (tracks of a run made without ``--track``)."""
    return _plan(output, table, video_id, classes, start_s, end_s, filesystem)[0]


def _plan(
    output: str | Path,
    table: Table,
    video_id: str | Iterable[str] | None,
    classes: str | int | Iterable | None,
    start_s: float | None,
    end_s: float | None,
    filesystem: pafs.FileSystem | None,
) -> tuple[list[FileScan], dict[str, Packed]]:
    fs, root = check_output(output, filesystem)
    wanted_classes = _as_classes(classes)
    if wanted_classes is not None:
        check_classes(wanted_classes, known_classes(fs, root))
    folder = f"{root}/{table}"
    if table == "tracks" and fs.get_file_info(folder).type != pafs.FileType.Directory:
        raise NoTracks(
            f"{output} has no tracks: the run was made without --track (run it again with --track)"
        )
    videos = _as_set(video_id)
    having = None
    if wanted_classes is not None:
        having = _videos_with_classes(fs, root, wanted_classes)
    if videos is not None and having is not None:
        videos = videos & having
    if videos is not None:
        # A video's own file first (a stat, no open); the others are looked up as packed.
        found = fs.get_file_info([f"{folder}/{v}.parquet" for v in sorted(videos)])
        paths = [info.path for info in found if info.type == pafs.FileType.File]
        elsewhere = videos - {Path(p).stem for p in paths}
        packed = _packed_videos(fs, root, table, elsewhere) if elsewhere else {}
        parts = _part_scans(packed, packed.keys())
    else:
        packed = _packed_videos(fs, root, table, having)
        paths = [p for p in _listed_files(fs, folder) if not is_part(p)]
        if having is not None:
            paths = [p for p in paths if Path(p).stem in having]
        # a part's rows of recorded videos only (a commit cut short may have left others)
        parts = _part_scans(packed, packed.keys())
    scans = [FileScan(p) for p in paths] + parts
    if table == "tracks" or (start_s is None and end_s is None):
        return scans, packed
    return _in_time(fs, scans, start_s, end_s), packed


def _listed_files(fs: pafs.FileSystem, folder: str) -> list[str]:
    """The Parquet files of a folder. Hidden names are files being written (or left by a killed
    run): never part of the output."""
    try:
        listing = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    except FileNotFoundError:
        listing = []
    return sorted(
        i.path
        for i in listing
        if i.type == pafs.FileType.File
        and i.base_name.endswith(".parquet")
        and not i.base_name.startswith((".", "_"))
    )


def _in_time(
    fs: pafs.FileSystem, scans: list[FileScan], start_s: float | None, end_s: float | None
) -> list[FileScan]:
    """The scans narrowed to the row groups whose timestamps overlap the range."""
    timed = []
    for scan in scans:
        with fs.open_input_file(scan.path) as f:
            groups = _overlapping_row_groups(pq.ParquetFile(f).metadata, start_s, end_s)
        if scan.row_groups is not None:
            groups = tuple(g for g in groups if g in scan.row_groups)
        if groups:
            timed.append(FileScan(scan.path, groups, scan.videos))
    return timed


def _by_video(scans: list[FileScan], packed: dict[str, Packed]) -> list[tuple[str, FileScan]]:
    """The scans as one per video, in video id order: a part's videos each read their own row
    groups of it."""
    units = []
    for scan in scans:
        if scan.videos is None:
            units.append((Path(scan.path).stem, scan))
            continue
        for video in scan.videos:
            groups = packed[video].row_groups
            if groups is not None and scan.row_groups is not None:
                groups = tuple(g for g in groups if g in scan.row_groups)
            units.append((video, FileScan(scan.path, groups or scan.row_groups, (video,))))
    return sorted(units, key=lambda unit: unit[0])


def _read(
    fs: pafs.FileSystem, scans: list[FileScan], schema: pa.Schema, columns: list[str] | None = None
) -> pa.Table:
    tables = []
    for scan in scans:
        with fs.open_input_file(scan.path) as f:
            parquet = pq.ParquetFile(f)
            groups = (
                list(scan.row_groups)
                if scan.row_groups is not None
                else list(range(parquet.num_row_groups))
            )
            table = parquet.read_row_groups(groups, columns=columns)
            if scan.videos is not None:  # a part: its other videos' rows go
                ids = table["video_id"] if "video_id" in table.column_names else None
                if ids is None:
                    ids = parquet.read_row_groups(groups, columns=["video_id"])["video_id"]
                table = table.filter(pc.is_in(ids, pa.array(scan.videos, pa.string())))
            tables.append(table)
    if not tables:
        empty = schema.empty_table()
        return empty.select(columns) if columns else empty
    # Files from runs with and without --track differ by the box's track_id: unify them.
    return pa.concat_tables(tables, promote_options="permissive")


def _all_of(conditions: list) -> pa.Array | None:
    mask = None
    for cond in conditions:
        mask = cond if mask is None else pc.and_(mask, cond)
    return mask


def _filter_rows(
    table: pa.Table, videos: set | None, start_s: float | None, end_s: float | None
) -> pa.Table:
    conditions = []
    if videos is not None:
        conditions.append(pc.is_in(table["video_id"], pa.array(sorted(videos), pa.string())))
    if start_s is not None:
        conditions.append(pc.greater_equal(table["timestamp_s"], start_s))
    if end_s is not None:
        conditions.append(pc.less_equal(table["timestamp_s"], end_s))
    mask = _all_of(conditions)
    return table if mask is None else table.filter(mask)


def _flatten(table: pa.Table) -> pa.Table:
    parents = pc.list_parent_indices(table["detections"])
    boxes = pc.list_flatten(table["detections"])
    columns = {
        "video_id": pc.take(table["video_id"], parents),
        "frame_index": pc.take(table["frame_index"], parents),
        "timestamp_s": pc.take(table["timestamp_s"], parents),
    }
    for name in BOX_COLUMNS:
        columns[name] = pc.struct_field(boxes, name)
    # track_id is always there (null for runs without --track), so every result has the same columns.
    has_tracks = boxes.type.get_field_index("track_id") >= 0
    columns["track_id"] = (
        pc.struct_field(boxes, "track_id") if has_tracks else pa.nulls(len(boxes), pa.int32())
    )
    return pa.table(columns)


def _class_mask(class_id: pa.Array, class_name: pa.Array, classes: set) -> pa.Array:
    ids = pa.array(sorted(c for c in classes if not isinstance(c, str)), pa.int32())
    names = pa.array(sorted(c.lower() for c in classes if isinstance(c, str)), pa.string())
    return pc.or_(pc.is_in(class_id, ids), pc.is_in(pc.utf8_lower(class_name), names))


def _keep_boxes(table: pa.Table, classes: set | None, min_confidence: float | None) -> pa.Table:
    """Per-frame rows with only the boxes of ``classes`` at ``min_confidence`` or more; every
    frame keeps its row (vectorized: no Python per box)."""
    lists = table["detections"].combine_chunks()
    boxes = lists.flatten()
    conditions = []
    if classes is not None:
        conditions.append(
            _class_mask(
                pc.struct_field(boxes, "class_id"), pc.struct_field(boxes, "class_name"), classes
            )
        )
    if min_confidence is not None:
        conditions.append(pc.greater_equal(pc.struct_field(boxes, "confidence"), min_confidence))
    mask = _all_of(conditions)
    if mask is None:
        return table
    parents = pc.list_parent_indices(lists).filter(mask).to_numpy()
    counts = np.bincount(parents, minlength=table.num_rows).astype(np.int32)
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]), pa.int32())
    kept = pa.ListArray.from_arrays(offsets, boxes.filter(mask), type=lists.type)
    table = table.set_column(table.schema.get_field_index("detections"), "detections", kept)
    return table.set_column(
        table.schema.get_field_index("num_detections"),
        "num_detections",
        pa.array(counts, pa.int32()),
    )


def read_detections(
    output: str | Path,
    *,
    flat: bool = True,
    video_id: str | Iterable[str] | None = None,
    classes: str | int | Iterable | None = None,
    start_s: float | None = None,
    end_s: float | None = None,
    min_confidence: float | None = None,
    columns: list[str] | None = None,
    filesystem: pafs.FileSystem | None = None,
) -> pd.DataFrame:
    """Detections as pandas, reading only the files and row groups the filters need.

    ``flat=True``: one row per box with ``video_id``, ``frame_index``, ``timestamp_s``, the box
    fields and ``track_id`` (runs with ``--track``). ``flat=False``: one row per processed frame,
    ``detections`` as lists of dicts. Filters: ``video_id`` (one or several), ``classes`` (names
    or ids), ``start_s``/``end_s`` (timestamp range, inclusive), ``min_confidence``.
    Per-frame rows keep every frame in range; their box lists are filtered by class and
    confidence. ``columns`` (per-frame rows only) reads just those columns, e.g.
    ``["video_id", "timestamp_s"]`` to list processed frames without their boxes.
    """
    if columns is not None:
        if flat:
            raise ValueError("columns= applies to per-frame rows: pass flat=False")
        needed = [
            c
            for c in ("video_id", "timestamp_s")
            if c not in columns
            and (video_id is not None or start_s is not None or end_s is not None)
        ]
        if classes is not None or min_confidence is not None:
            raise ValueError(
                "columns= cannot be combined with classes= or min_confidence= (they filter the boxes)"
            )
    fs, _ = filesystem_for(output, filesystem)
    scans = plan_scan(
        output,
        "detections",
        video_id=video_id,
        classes=classes,
        start_s=start_s,
        end_s=end_s,
        filesystem=filesystem,
    )
    read_columns = None if columns is None else list(dict.fromkeys([*columns, *needed]))
    table = _filter_rows(
        _read(fs, scans, DETECTIONS_SCHEMA, read_columns), _as_set(video_id), start_s, end_s
    )
    if columns is not None:
        return table.select(columns).to_pandas()
    table = _keep_boxes(table, _as_classes(classes), min_confidence)
    if flat:
        return _flatten(table).to_pandas(types_mapper=NULLABLE_INTS)
    frames = table.drop_columns(["detections"]).to_pandas()
    # Boxes as plain dicts: a null track_id stays None and the others stay ints (pandas would
    # turn a struct field with nulls into floats).
    frames["detections"] = table["detections"].to_pylist()
    return frames[table.column_names]


def iter_detections(
    output: str | Path,
    *,
    flat: bool = True,
    after: tuple[str, int] | None = None,
    video_id: str | Iterable[str] | None = None,
    classes: str | int | Iterable | None = None,
    start_s: float | None = None,
    end_s: float | None = None,
    min_confidence: float | None = None,
    filesystem: pafs.FileSystem | None = None,
) -> Iterator[tuple[str, int, pa.Table]]:
    """``read_detections`` one video at a time, in ``video_id`` order, as Arrow tables: yields
    ``(video_id, first_row, table)``. Memory holds one video's filtered rows, never the output.

    ``after=(video_id, row)`` starts at that row of that video (a page's cursor): earlier
    videos are not opened."""
    fs, _ = filesystem_for(output, filesystem)
    scans, packed = _plan(output, "detections", video_id, classes, start_s, end_s, filesystem)
    wanted_videos, wanted_classes = _as_set(video_id), _as_classes(classes)
    for vid, scan in _by_video(scans, packed):
        first = 0
        if after is not None:
            if vid < after[0]:
                continue
            if vid == after[0]:
                first = after[1]
        table = _filter_rows(_read(fs, [scan], DETECTIONS_SCHEMA), wanted_videos, start_s, end_s)
        table = _keep_boxes(table, wanted_classes, min_confidence)
        if flat:
            table = _flatten(table)
        if first < table.num_rows:
            yield vid, first, table.slice(first)


def read_frames(output: str | Path, *, video_id: str | None = None) -> pd.DataFrame:
    """One row per processed frame, the ``detections`` column as lists of dicts."""
    return read_detections(output, flat=False, video_id=video_id)


def read_tracks(
    output: str | Path,
    *,
    video_id: str | Iterable[str] | None = None,
    classes: str | int | Iterable | None = None,
    start_s: float | None = None,
    end_s: float | None = None,
    filesystem: pafs.FileSystem | None = None,
) -> pd.DataFrame:
    """The track summaries of runs with ``--track``: one row per track with its class, first and
    last frame (and timestamps), frames seen and mean confidence. ``start_s``/``end_s`` keep the
    tracks seen at some time in the range."""
    fs, _ = filesystem_for(output, filesystem)
    scans = plan_scan(output, "tracks", video_id=video_id, classes=classes, filesystem=filesystem)
    table = _read(fs, scans, TRACKS_SCHEMA)
    conditions = []
    if (videos := _as_set(video_id)) is not None:
        conditions.append(pc.is_in(table["video_id"], pa.array(sorted(videos), pa.string())))
    if (wanted := _as_classes(classes)) is not None:
        conditions.append(_class_mask(table["class_id"], table["class_name"], wanted))
    if start_s is not None:
        conditions.append(pc.greater_equal(table["last_timestamp_s"], start_s))
    if end_s is not None:
        conditions.append(pc.less_equal(table["first_timestamp_s"], end_s))
    mask = _all_of(conditions)
    return (table if mask is None else table.filter(mask)).to_pandas(types_mapper=NULLABLE_INTS)


def read_videos(output: str | Path) -> pd.DataFrame:
    """``videos.parquet``: one row per video, its latest record; integer columns are nullable
    (``width`` of a video that could not be opened, ``num_tracks`` without ``--track``)."""
    fs, root = check_output(output)
    table = _videos_table(fs, root).read()
    if table is None:
        raise NotARunOutput(f"{output} has no videos.parquet yet: no video of its run has finished")
    return table.to_pandas(types_mapper=NULLABLE_INTS)


def resolve_video_id(video: str, results: str | Path) -> str:
    """The id the run gave ``video`` (a path, or a video id as ``videos.parquet`` has it): by its
    absolute path, else by a unique file name (the video or the results folder may have moved
    since the run). ``UsageError`` when the run has no such video."""
    videos = read_videos(results)  # NotARunOutput (a UsageError) when it is not a run's output
    if video in set(videos["video_id"]):
        return video
    by_path = video_id_for(str(Path(video).absolute()))
    if by_path in set(videos["video_id"]):
        return by_path
    same_name = videos[videos["path"].map(lambda p: Path(p).name) == Path(video).name]
    if len(same_name) == 1:
        return same_name["video_id"].iloc[0]
    known = ", ".join(sorted(Path(p).name for p in videos["path"])[:10])
    reason = "several videos have that name" if len(same_name) > 1 else f"videos there: {known}"
    raise UsageError(f"no results for {video} in {results} ({reason})")


def videos_not_ok(output: str | Path, limit: int = 10) -> tuple[list[dict], int]:
    """The first ``limit`` videos that are not ``ok`` (status, path, error), in video id order,
    and how many there are; read a range of ids at a time, so a manifest of a million failures
    costs little memory."""
    fs, root = check_output(output)
    first: list[dict] = []
    count = 0
    for chunk in _videos_table(fs, root).latest(["status", "path", "error"]):
        rows = chunk.filter(pc.not_equal(chunk.column("status"), "ok"))
        count += rows.num_rows
        if len(first) < limit:
            first.extend(
                rows.select(["status", "path", "error"]).slice(0, limit - len(first)).to_pylist()
            )
    return first, count
