"""YOLO object detection over video backlogs, on Ray, into Parquet.

    import pipeline
    summary = pipeline.run(["videos/"], output="out", config=pipeline.RunConfig(model="yolo11n.pt"))
    boxes = pipeline.read_detections("out")          # pandas, one row per box
    people = pipeline.read_detections("out", video_id=vid, classes=["person"], start_s=60, end_s=120)
    tracks = pipeline.read_tracks("out")             # runs with --track: one row per track
    dataset = pipeline.as_ray_dataset("out")         # ray.data.Dataset, one row per frame
    counts = pipeline.analyze("out", "lines.yaml")   # with --track: crossings, zones, dwell
    for frame_index, detections in pipeline.to_supervision("out", vid): ...  # sv.Detections

The packages, in the order of the data path (each ``__init__`` says what it owns and imports):
``plan`` (before Ray) → ``media`` (decoding) → ``inference`` (detectors) → ``output`` (the
output contract) → ``analysis`` (tracking, lines and zones) → ``runtime`` (the only Ray code) → ``views``,
``service``, ``bench``, ``cli``.
"""

from pipeline.config import RunConfig
from pipeline.output.readers import (
    plan_scan,
    read_detections,
    read_frames,
    read_tracks,
    read_videos,
)


def run(inputs, *, output, config=None, **kwargs) -> dict:
    """Run the pipeline; see ``pipeline.runtime.launch.run``. Ray is imported only when there is work."""
    from pipeline.runtime.launch import run as _run

    return _run(inputs, output=output, config=config, **kwargs)


def as_ray_dataset(output):
    """The detections as a ``ray.data.Dataset``; see ``pipeline.runtime.datasets``. Imports Ray."""
    from pipeline.runtime.datasets import as_ray_dataset as _as_ray_dataset

    return _as_ray_dataset(output)


def analyze(output, spec, **kwargs):
    """Lines and zones over a tracked run's stored boxes, as pandas tables (``Analysis``), also
    written to ``OUT/analysis/<name>/``; see ``pipeline.analysis.analyze.analyze``."""
    from pipeline.analysis.analyze import analyze as _analyze

    return _analyze(output, spec, **kwargs)


def read_analysis(output, name="default"):
    """An analysis ``analyze`` stored; see ``pipeline.analysis.analyze.read_analysis``."""
    from pipeline.analysis.analyze import read_analysis as _read_analysis

    return _read_analysis(output, name)


def to_supervision(output, video, **filters):
    """``(frame_index, sv.Detections)`` per processed frame; see ``pipeline.views.export``."""
    from pipeline.views.export import to_supervision as _to_supervision

    return _to_supervision(output, video, **filters)


__all__ = [
    "RunConfig",
    "run",
    "read_detections",
    "read_tracks",
    "read_videos",
    "read_frames",
    "plan_scan",
    "as_ray_dataset",
    "analyze",
    "read_analysis",
    "to_supervision",
]
