"""Packed output: the rows of many short videos in one shared Parquet file.

A backlog of short clips (dashcam events, retail and traffic clips of a few seconds) would
otherwise make one file per clip: a million files, each created, fsynced and renamed (one PUT
each on object storage), and a fixed cost per file for every later reader. A video is packed
when its rows fit in one row group (fewer processed frames than ``ROW_GROUP_FRAMES``): in a file
of its own it would be a single row group, so packing costs no time-filter pruning.

A part file, ``detections/part-<id>.parquet``, holds whole videos, rows sorted by video then
frame, in row groups of whole videos (about ``ROW_GROUP_FRAMES`` rows each): a short video never
spans two row groups (a long one, packed with ``--layout packed``, has row groups of its own),
so ``videos.parquet`` locates each packed video by its file and row groups and a one-video read
opens only those. A part is written under a hidden name and renamed (or
published with one PUT) into place whole, like a per-video file. A video's rows are taken out
of a part (``remove_videos``) by writing the part again without them, atomically.
Ray-free.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.config import LAYOUTS
from pipeline.output.layout import OutputLayout
from pipeline.output.writer import ROW_GROUP_FRAMES, durable_replace

PART_PREFIX = "part-"


def is_part(key: str | None) -> bool:
    return key is not None and Path(key).name.startswith(PART_PREFIX)


def goes_in_a_part(layout: str, frames: int) -> bool:
    """Whether a finished video goes into a part file: with ``auto``, when its rows fit one row
    group; always with ``packed``; never with ``per-video``."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
    return layout == "packed" or (layout == "auto" and frames < ROW_GROUP_FRAMES)


def new_part_key(table: str, owner: str) -> str:
    """A part's name, unique to its writer: ``detections/part-<owner>-<random>.parquet``."""
    return f"{table}/{PART_PREFIX}{owner}-{uuid.uuid4().hex[:12]}.parquet"


@dataclass(frozen=True)
class PackedVideo:
    """Where a packed video's rows are: its part (a key under the output) and row group."""

    video_id: str
    key: str
    row_group: int


@dataclass
class PartBuilder:
    """Videos' tables gathered for one part file, in the order they finished."""

    schema: pa.Schema
    row_group_rows: int = ROW_GROUP_FRAMES
    tables: dict[str, pa.Table] = field(default_factory=dict)
    rows: int = 0

    def add(self, video_id: str, table: pa.Table) -> None:
        if video_id in self.tables:
            raise ValueError(f"video {video_id} is in this part already")
        self.tables[video_id] = table
        self.rows += table.num_rows

    def drop(self, video_id: str) -> None:
        table = self.tables.pop(video_id, None)
        if table is not None:
            self.rows -= table.num_rows

    def __len__(self) -> int:
        return len(self.tables)

    def write(self, path: Path) -> dict[str, list[int]]:
        """Write the part at ``path`` (the caller renames it into place): each video's row
        groups, by video id."""
        return write_part(path, self.schema, sorted(self.tables.items()), self.row_group_rows)


def write_part(
    path: Path,
    schema: pa.Schema,
    videos: Iterable[tuple[str, pa.Table]],
    row_group_rows: int = ROW_GROUP_FRAMES,
) -> dict[str, list[int]]:
    """Videos' tables (in the order given) into one Parquet file, whole videos per row group
    (a row group is closed once the next video would take it past ``row_group_rows``); a video
    longer than that has row groups of its own, ``row_group_rows`` each. Returns each video's
    row groups."""
    where: dict[str, list[int]] = {}
    group: list[pa.Table] = []
    group_rows = 0
    groups = 0
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:

        def close_group() -> None:
            nonlocal group, group_rows, groups
            if group:
                writer.write_table(pa.concat_tables(group), row_group_size=max(group_rows, 1))
                groups += 1
            group, group_rows = [], 0

        for video_id, table in videos:
            table = table.cast(schema) if table.schema != schema else table
            if group and group_rows + table.num_rows > row_group_rows:
                close_group()
            if table.num_rows > row_group_rows:  # a long video: its own row groups
                where[video_id] = list(range(groups, groups + -(-table.num_rows // row_group_rows)))
                writer.write_table(table, row_group_size=row_group_rows)
                groups = where[video_id][-1] + 1
                continue
            group.append(table)
            group_rows += table.num_rows
            where[video_id] = [groups]
        close_group()
        if not where:
            writer.write_table(schema.empty_table())
    return where


def remove_videos(path: Path, video_ids: set[str]) -> bool:
    """Take ``video_ids``' rows out of the part at ``path``: the part is written again without
    them, row group by row group (a group left empty stays, so every other video keeps its row
    group number), and renamed over itself: readers see the old part or the new one. A part
    left with no rows is removed. Returns whether the part changed."""
    if not path.exists():
        return False
    file = pq.ParquetFile(path)
    gone = pa.array(sorted(video_ids), pa.string())
    groups = [file.read_row_group(i) for i in range(file.num_row_groups)]
    keeps = [pc.invert(pc.is_in(g["video_id"], value_set=gone)) for g in groups]
    if all(pc.all(keep).as_py() is not False for keep in keeps):
        return False
    left = [g.filter(keep) for g, keep in zip(groups, keeps)]
    if not any(g.num_rows for g in left):
        path.unlink()
        return True
    temp = OutputLayout.temp_beside(path)
    try:
        with pq.ParquetWriter(temp, file.schema_arrow, compression="zstd") as writer:
            for group in left:
                writer.write_table(group, row_group_size=max(group.num_rows, 1))
        durable_replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return True


def videos_in(path: Path) -> dict[str, list[int]]:
    """Each video of a part and its row groups, read from the file."""
    file = pq.ParquetFile(path)
    where: dict[str, list[int]] = {}
    for group in range(file.num_row_groups):
        ids = file.read_row_group(group, columns=["video_id"])["video_id"]
        for video_id in pc.unique(ids).to_pylist():
            where.setdefault(video_id, []).append(group)
    return where
