"""YOLO object detection over video backlogs, on Ray, into Parquet.

    import pipeline
    summary = pipeline.run(["videos/"], output="out", config=pipeline.RunConfig(model="yolo11n.pt"))
    boxes = pipeline.read_detections("out")          # pandas, one row per box
    people = pipeline.read_detections("out", video_id=vid, classes=["person"], start_s=60, end_s=120)
    tracks = pipeline.read_tracks("out")             # runs with --track: one row per track
    dataset = pipeline.as_ray_dataset("out")         # ray.data.Dataset, one row per frame
"""

from pipeline.config import RunConfig

__all__ = ["RunConfig", "run", "read_detections", "read_tracks", "read_videos", "as_ray_dataset"]


def run(inputs, *, output, config=None, **kwargs):
    """Run the pipeline; see ``pipeline.runtime.launch.run``. Ray is imported only when there is work."""
    from pipeline.runtime.launch import run as _run

    return _run(inputs, output=output, config=config, **kwargs)


def __getattr__(name):
    if name in ("read_detections", "read_tracks", "read_videos", "as_ray_dataset", "read_frames", "plan_scan"):
        from pipeline import results

        return getattr(results, name)
    raise AttributeError(name)
