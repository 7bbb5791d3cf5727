"""Reading the output back: a Ray Dataset over the detections, or flat pandas tables."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from pipeline.manifest import Manifest
from pipeline.results_writer import DETECTIONS_SCHEMA
from pipeline.storage import RemoteLocation, is_uri

BOX_COLUMNS = ["class_id", "class_name", "confidence", "x1", "y1", "x2", "y2"]


def _child(output: str | Path, name: str) -> str:
    output = str(output)
    return RemoteLocation(output).join(name) if is_uri(output) else str(Path(output) / name)


def _dataset(output: str | Path) -> ds.Dataset:
    # Hidden files (temporary writes) are skipped by pyarrow's default ignore_prefixes.
    return ds.dataset(_child(output, "detections"), format="parquet", schema=DETECTIONS_SCHEMA)


def read_frames(output: str | Path, *, video_id: str | None = None) -> pd.DataFrame:
    """One row per processed frame, the ``detections`` column as lists of dicts."""
    filt = pc.field("video_id") == video_id if video_id else None
    return _dataset(output).to_table(filter=filt).to_pandas()


def read_detections(output: str | Path, *, flat: bool = True, video_id: str | None = None) -> pd.DataFrame:
    """Detections as pandas. ``flat=True``: one row per box with ``video_id``, ``frame_index``,
    ``timestamp_s`` and the box fields; frames with no boxes have no row. ``flat=False``: one row
    per frame."""
    if not flat:
        return read_frames(output, video_id=video_id)
    filt = pc.field("video_id") == video_id if video_id else None
    table = _dataset(output).to_table(filter=filt)
    parents = pc.list_parent_indices(table["detections"])
    boxes = pc.list_flatten(table["detections"])
    columns = {
        "video_id": pc.take(table["video_id"], parents),
        "frame_index": pc.take(table["frame_index"], parents),
        "timestamp_s": pc.take(table["timestamp_s"], parents),
    }
    for name in BOX_COLUMNS:
        columns[name] = pc.struct_field(boxes, name)
    return pa.table(columns).to_pandas()


def read_videos(output: str | Path) -> pd.DataFrame:
    return pq.read_table(_child(output, Manifest.FILE_NAME)).to_pandas()


def as_ray_dataset(output: str | Path):
    """The detections as a ``ray.data.Dataset`` (one row per frame), ready for a next Ray step."""
    import ray.data

    output = str(output)
    return ray.data.read_parquet(_child(output, "detections") if is_uri(output) else str(Path(output).absolute() / "detections"))
