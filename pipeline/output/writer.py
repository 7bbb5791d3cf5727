"""The per-video writer.

Each video's rows go to one Parquet file, ``detections/<video_id>.parquet``, written under a
hidden temporary name and renamed into place when the video is complete: readers (pyarrow,
Ray Data, DuckDB, pandas) skip names starting with ``.``, so they never see a torn video.
With tracking on, each box also has a ``track_id`` (added by ``pipeline.analysis.tracking`` once the
video is complete) and the video's track summary goes to ``tracks/<video_id>.parquet``.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.inference.detections import BatchResult
from pipeline.output.layout import OutputLayout
from pipeline.output.schema import BOX_TYPE, DETECTIONS_SCHEMA

# Frames per Parquet row group: big enough for fast scans, small enough that a time filter
# skips most of a long video (512 frames is 17 s at 30 fps).
ROW_GROUP_FRAMES = 512


@functools.lru_cache(maxsize=8)
def _name_lookup(names: tuple[tuple[int, str], ...]) -> pa.Array:
    """Class names by id, as an Arrow array (an id without a name is its number)."""
    by_id = dict(names)
    return pa.array([by_id.get(i, str(i)) for i in range(max(by_id, default=-1) + 1)], pa.string())


def _class_names(class_id: np.ndarray, names: dict[int, str]) -> pa.Array:
    lookup = _name_lookup(tuple(sorted(names.items())))
    if not len(class_id) or (class_id.min() >= 0 and class_id.max() < len(lookup)):
        return pc.take(lookup, pa.array(class_id, pa.int32()))  # no Python per box
    return pa.array([names.get(int(i), str(int(i))) for i in class_id], pa.string())


def batch_to_table(result: BatchResult, names: dict[int, str]) -> pa.Table:
    """One row per frame of the batch, frames with no boxes included."""
    det = result.detections
    boxes = pa.StructArray.from_arrays(
        [
            pa.array(det.class_id, pa.int32()),
            _class_names(det.class_id, names),
            pa.array(det.confidence, pa.float32()),
            pa.array(det.xyxy[:, 0], pa.float32()),
            pa.array(det.xyxy[:, 1], pa.float32()),
            pa.array(det.xyxy[:, 2], pa.float32()),
            pa.array(det.xyxy[:, 3], pa.float32()),
        ],
        fields=list(BOX_TYPE),
    )
    offsets = np.concatenate([[0], np.cumsum(result.counts)]).astype(np.int32)
    n = result.num_frames
    return pa.Table.from_arrays(
        [
            pa.array([result.video_id] * n, pa.string()),
            pa.array(result.frame_indices, pa.int64()),
            pa.array(result.timestamps, pa.float64()),
            pa.array(result.counts, pa.int32()),
            pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), boxes, type=pa.list_(BOX_TYPE)),
        ],
        schema=DETECTIONS_SCHEMA,
    )


def durable_replace(temp: Path, final: Path) -> None:
    """Rename ``temp`` over ``final`` so that after a crash or power loss ``final`` is either the
    old file or the whole new one, never an empty name: the file's data reaches the disk before
    the rename, and the folder's entry before the caller goes on (and records the file as done)."""
    fd = os.open(temp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, final)
    folder = os.open(final.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


class VideoResultWriter:
    """Streams one video's batches into a temporary Parquet file, in frame order.

    Batches may finish out of order (several actors); they wait in a reorder buffer that the
    in-flight window bounds, so rows land sorted by frame and memory stays flat however long the
    video is. ``commit()`` renames the file into place; ``abort()`` removes it. With tracking,
    ``finish()`` closes the (still hidden) file for the tracker, which reads it in frame order.
    """

    def __init__(
        self,
        output: Path,
        video_id: str,
        names: dict[int, str],
        row_group_frames: int = ROW_GROUP_FRAMES,
    ):
        self.video_id = video_id
        self.names = names
        self.row_group_frames = row_group_frames
        layout = OutputLayout(output)
        self.final_path = layout.detections(video_id)
        self.final_path.parent.mkdir(parents=True, exist_ok=True)
        self.temp_path = layout.temp_beside(self.final_path)
        self.tracks_final_path = layout.tracks(video_id)
        self._writer: pq.ParquetWriter | None = None
        self._pending: dict[int, BatchResult] = {}
        self._row_group: list[pa.Table] = []
        self._row_group_rows = 0
        self.next_seq = 0
        self.rows_written = 0
        self.boxes_written = 0
        self.row_groups_written = 0
        self.class_counts: dict[int, int] = {}

    def add(self, result: BatchResult) -> bool:
        """Accept a batch; a batch seen before (a retry that raced its original) is ignored.

        Returns whether the batch was new.
        """
        if result.seq < self.next_seq or result.seq in self._pending:
            return False
        self._pending[result.seq] = result
        while self.next_seq in self._pending:
            self._write(self._pending.pop(self.next_seq))
            self.next_seq += 1
        return True

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _write(self, result: BatchResult) -> None:
        table = batch_to_table(result, self.names)
        self._row_group.append(table)
        self._row_group_rows += table.num_rows
        if self._row_group_rows >= self.row_group_frames:
            self._flush()
        self.rows_written += table.num_rows
        self.boxes_written += len(result.detections)
        for class_id, count in zip(*np.unique(result.detections.class_id, return_counts=True)):
            self.class_counts[int(class_id)] = self.class_counts.get(int(class_id), 0) + int(count)

    def _flush(self) -> None:
        # Rows wait here until a row group is full: one small write per batch would make row
        # groups of a batch's size, slow to scan and too fine for statistics to pay off.
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.temp_path, DETECTIONS_SCHEMA, compression="zstd")
        if self._row_group:
            self._writer.write_table(
                pa.concat_tables(self._row_group), row_group_size=max(self._row_group_rows, 1)
            )
            self.row_groups_written += 1
        self._row_group, self._row_group_rows = [], 0

    def in_memory_table(self) -> pa.Table | None:
        """All of the video's rows, when none has reached its file yet (a video shorter than a
        row group, all batches in): for a part file. None once rows went to the file."""
        if self._writer is not None or self._pending:
            return None
        if not self._row_group:
            return DETECTIONS_SCHEMA.empty_table()
        return pa.concat_tables(self._row_group)

    def class_totals(self) -> list[dict]:
        """Boxes per class in this video, busiest first (stored in ``videos.parquet``)."""
        ranked = sorted(self.class_counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return [
            {"class_id": c, "class_name": self.names.get(c, str(c)), "count": n} for c, n in ranked
        ]

    def finish(self) -> Path:
        """Close the file, still under its hidden name, and return that name."""
        if self._pending:
            raise RuntimeError(
                f"video {self.video_id}: batches {sorted(self._pending)} arrived but {self.next_seq} never did"
            )
        self._flush()  # a video with no frames still gets a (valid, empty) file
        assert self._writer is not None  # _flush opens it
        self._writer.close()
        return self.temp_path

    def commit(self) -> Path:
        """Make the video's rows visible at once (atomic rename over any older version)."""
        self.finish()
        self.tracks_final_path.unlink(missing_ok=True)  # tracks of an older run with --track
        durable_replace(self.temp_path, self.final_path)
        return self.final_path

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self.temp_path.unlink(missing_ok=True)


def remove_stale_temp_files(output: Path) -> int:
    """Temporary files left by a run that was killed; safe to delete before a new run starts."""
    stale = OutputLayout(output).stale_temp_files()
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)
