"""Results as Ray Datasets, for a next Ray step."""

from __future__ import annotations

from pathlib import Path

import ray.data

from pipeline.locations import RemoteLocation, is_uri
from pipeline.output.layout import OutputLayout


def as_ray_dataset(output: str | Path) -> ray.data.Dataset:
    """The detections as a ``ray.data.Dataset`` (one row per frame), ready for a next Ray step."""
    output = str(output)
    folder = (
        RemoteLocation(output).join(OutputLayout.DETECTIONS)
        if is_uri(output)
        else str(Path(output).absolute() / OutputLayout.DETECTIONS)
    )
    return ray.data.read_parquet(folder)
