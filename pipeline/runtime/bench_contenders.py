"""The benchmark's Ray contenders: Ray Data's video path, and this pipeline (see pipeline.bench.harness)."""

from __future__ import annotations

import os
import tempfile
import time

from pipeline.options import BENCH_FIELDS, config_from_options


class _RayDataPredictor:
    """What a Ray Data user writes: a callable class holding the model, predict on the batch."""

    def __init__(self, model: str, imgsz: int, conf: float, iou: float):
        from ultralytics import YOLO

        self.model = YOLO(model, task="detect")
        self.kwargs = {"imgsz": imgsz, "conf": conf, "iou": iou, "verbose": False}

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        frames = [
            np.ascontiguousarray(f[..., ::-1]) for f in batch["frame"]
        ]  # read_videos gives RGB
        results = self.model.predict(frames, **self.kwargs)
        return {
            "frame_index": batch["frame_index"],
            "num_detections": np.array([len(r.boxes) for r in results]),
        }


def run_raydata(args) -> dict:
    import pyarrow.dataset as ds
    import ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR")
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


def run_pipeline_coordinator(args) -> dict:
    return run_pipeline(args, data_path="coordinator")


def run_pipeline(args, data_path: str | None = None) -> dict:
    """``data_path``: None for the run command's default."""
    import ray

    import pipeline

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR")
    try:
        out = args.keep_output or tempfile.mkdtemp(prefix="bench-pipeline-")
        config = config_from_options(vars(args), BENCH_FIELDS)
        if data_path is not None:
            config = config.replace(data_path=data_path)
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


# A GPU node's pace for the node count a coordinator could feed: one H100 runs yolo11n at about
# 2,000 frames/s (the figure; docs/BENCHMARKS.md has this project's own GPU figures).
NODE_FRAMES_PER_S = 2000
COORDINATION_VIDEOS, COORDINATION_FRAMES, COORDINATION_SIZE = 4, 4800, (96, 160)


def write_coordination_videos(
    folder: str,
    videos: int = COORDINATION_VIDEOS,
    frames: int = COORDINATION_FRAMES,
    size: tuple[int, int] = COORDINATION_SIZE,
) -> list[str]:
    """Small synthetic videos (160x96, a moving gradient): cheap to decode, so that the decoders
    feed the coordinator as fast as they can."""
    import numpy as np

    from pipeline.media.samples import write_video

    h, w = size
    ramp = np.add.outer(np.arange(h), np.arange(w))
    paths = []
    for v in range(videos):
        path = os.path.join(folder, f"synthetic{v}.mp4")
        write_video(
            path,
            (
                (np.dstack([ramp + i, ramp + 2 * i, ramp + 40 * v]) % 256).astype(np.uint8)
                for i in range(frames)
            ),
            options={"preset": "ultrafast"},
        )
        paths.append(path)
    return paths


def run_coordination(args) -> dict:
    """The real decoder → coordinator → actor → writer path with the synthetic engine (no model,
    fixed boxes, small frames): what one batch costs the coordinator, in its process's CPU time."""
    import shutil

    import ray

    import pipeline

    work = tempfile.mkdtemp(prefix="bench-coordination-")
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR")
    try:
        videos = write_coordination_videos(work)
        config = pipeline.RunConfig(
            model=args.model, engine="synthetic", imgsz=160, batch_size=args.batch_size
        )
        started = time.perf_counter()
        record = pipeline.run(
            videos, output=os.path.join(work, "out"), config=config, progress=False
        )
        seconds = time.perf_counter() - started
        coordinator = record["coordinator"]
        processing = record["throughput"]["processing_s"]
        per_batch_ms = coordinator["cpu_ms_per_batch"]
        batches_per_s_ceiling = 1000 / per_batch_ms
        return {
            "frames": record["totals"]["frames"],
            "boxes": record["totals"]["detections"],
            "seconds": seconds,
            "batch_size": args.batch_size,
            "batches": coordinator["batches"],
            "coordinator_cpu_s": coordinator["cpu_s"],
            "coordinator_cpu_ms_per_batch": per_batch_ms,
            "batches_per_s": coordinator["batches"] / processing,
            "frames_per_s": record["totals"]["frames"] / processing,
            "coordinator_batches_per_s_ceiling": batches_per_s_ceiling,
            "gpu_nodes_fed": batches_per_s_ceiling * args.batch_size / NODE_FRAMES_PER_S,
            "memory_by_role": {
                "driver": record["memory"]["driver"]["peak_bytes"],
                "coordinator": record["memory"]["coordinator"]["peak_bytes"],
                "actor": record["memory"]["actor_peak_bytes"],
            },
        }
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
