"""The benchmark's Ray contenders: Ray Data's video path, and this pipeline (see pipeline.bench.harness)."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from typing import Any

from pipeline.options import BENCH_FIELDS, config_from_options


class _RayDataPredictor:
    """What a Ray Data user writes: a callable class holding the model, predict on the batch."""

    def __init__(self, model: str, imgsz: int, conf: float, iou: float):
        from ultralytics import YOLO

        self.model = YOLO(model, task="detect")
        self.kwargs: dict[str, Any] = {"imgsz": imgsz, "conf": conf, "iou": iou, "verbose": False}

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        frames = [
            np.ascontiguousarray(f[..., ::-1]) for f in batch["frame"]
        ]  # read_videos gives RGB
        results: Any = self.model.predict(frames, **self.kwargs)
        return {
            "frame_index": batch["frame_index"],
            "num_detections": np.array([len(r.boxes) for r in results]),
        }


def run_raydata(args) -> dict:
    import pyarrow.dataset as ds
    import ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.ERROR)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        out = tempfile.mkdtemp(prefix="bench-raydata-")
        started = time.perf_counter()
        dataset = ray.data.read_videos(args.video)
        if args.stride > 1:
            dataset = dataset.filter(lambda row: row["frame_index"] % args.stride == 0)
        dataset.map_batches(
            _RayDataPredictor,
            fn_constructor_args=(args.model, args.imgsz, args.conf, args.iou),
            batch_size=args.batch_size,
            concurrency=1,
            num_cpus=1,
        ).write_parquet(out)
        seconds = time.perf_counter() - started
        table = ds.dataset(out, format="parquet").to_table()
        return {
            "frames": table.num_rows,
            "boxes": int(sum(table["num_detections"].to_pylist())),
            "seconds": seconds,
        }
    finally:
        ray.shutdown()


def run_pipeline_torch(args) -> dict:
    args.engine = "torch"
    return run_pipeline(args)


def run_pipeline(args) -> dict:
    import ray

    import pipeline

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.ERROR)
    try:
        out = args.keep_output or tempfile.mkdtemp(prefix="bench-pipeline-")
        config = config_from_options(vars(args), BENCH_FIELDS)
        started = time.perf_counter()
        record = pipeline.run([args.video], output=out, config=config, progress=False)
        seconds = time.perf_counter() - started
        return {
            "frames": record["totals"]["frames"],
            "boxes": record["totals"]["detections"],
            "seconds": seconds,
            "memory_by_role": {
                "driver": record["memory"]["driver"]["peak_bytes"],
                "coordinator": record["memory"]["coordinator"]["peak_bytes"],
                "actor": record["memory"]["actor_peak_bytes"],
            },
            "placement": record["placement"],
            "stage_s": record["stage_s"],
            "engine": record["model"]["engine"],
            "engine_export_s": record["model"]["engine_export_s"],
            "startup": record["startup"],
        }
    finally:
        ray.shutdown()


COORDINATION_VIDEOS, COORDINATION_FRAMES = 4, 4800
CONTROL_PLANE_CLIPS, CLIP_FRAMES = 1000, 4
# The simulated GPU of the second run: a + b·n ms a batch of n (about yolov8n in TensorRT FP16 on
# an A100: pipeline.inference.synthetic).
SIMULATED_GPU_MS = (2.0, 0.35)


def _control_plane_figures(record: dict, seconds: float) -> dict:
    coordinator = record["coordinator"]
    return {
        "frames": record["totals"]["frames"],
        "boxes": record["totals"]["detections"],
        "seconds": seconds,
        "videos": record["totals"]["videos_ok"],
        "handouts": coordinator["handouts"],
        "coordinator_cpu_s": coordinator["cpu_s"],
        "coordinator_cpu_ms_per_video": coordinator["cpu_ms_per_video"],
        "coordinator_cpu_ms_per_handout": coordinator["cpu_ms_per_handout"],
        "frames_per_s": record["totals"]["frames"] / record["throughput"]["processing_s"],
        "busy_share": [a["busy_share"] for a in record["actors"]],
        "coordinator_peak_bytes": record["memory"]["coordinator"]["peak_bytes"],
    }


def run_control_plane(args) -> dict:
    """The pipeline on the synthetic engine (no model, fixed boxes), twice. ``clips``: 1,000
    generated clips of 4 frames, as fast as it goes: the coordinator's CPU per video and per
    hand-out (its process CPU time). ``simulated_gpu``: four long 160x96 videos with a simulated
    GPU (``SIMULATED_GPU_MS``): how busy the decoders keep it (its busy share)."""
    import shutil

    import ray

    import pipeline
    from pipeline.media.samples import gradient_clips

    work = tempfile.mkdtemp(prefix="bench-control-plane-")
    clips_count = getattr(args, "clips", None) or CONTROL_PLANE_CLIPS
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.ERROR)
    try:
        clips = gradient_clips(
            work, videos=clips_count, frames=CLIP_FRAMES, names="clip-{:05d}.mp4"
        )
        long_frames = getattr(args, "long_frames", None) or COORDINATION_FRAMES
        long_videos = gradient_clips(work, videos=COORDINATION_VIDEOS, frames=long_frames)
        figures = {}
        for name, videos, latency in (
            ("clips", clips, None),
            ("simulated_gpu", long_videos, SIMULATED_GPU_MS),
        ):
            config = pipeline.RunConfig(
                model=args.model,
                engine="synthetic",
                imgsz=160,
                batch_size=args.batch_size,
                synthetic_latency_ms=latency,
            )
            started = time.perf_counter()
            record = pipeline.run(
                videos, output=os.path.join(work, f"out-{name}"), config=config, progress=False
            )
            figures[name] = _control_plane_figures(record, time.perf_counter() - started)
        clip_figures = figures["clips"]
        return {
            "frames": clip_figures["frames"],
            "boxes": clip_figures["boxes"],
            "seconds": clip_figures["seconds"],
            "batch_size": args.batch_size,
            **figures,
        }
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
