"""The two data paths in one run, on the coordination benchmark's input (four 160x96 videos of
4,800 frames, the synthetic engine: no model), and a simulated GPU.

    python docs/bench/data_path.py --model ../shared/models/yolo11n-coco-int8dq.pt [--batch-size 32]

1. ``--data-path coordinator`` against ``--data-path workers``, as fast as the synthetic engine
   goes: frames/s, and the coordinator's CPU per batch and per video (its process's CPU time,
   all its threads, idle ones included, over ``run.json``'s batches and videos).
2. ``--data-path workers`` with the synthetic engine held ``a + b·n`` ms a pass (default
   2 + 0.35·n, about an A100's yolov8n TensorRT FP16), on 1 and on 2 workers: each worker's
   busy share (time in the engine over the run's wall time).
3. ``--clips N`` (default 1,000) generated clips of 4 frames on both paths: the coordinator's
   CPU per video, where a backlog of short clips puts its cost.

The model file is only named (the synthetic engine loads nothing). Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

import ray

import pipeline
from pipeline.runtime.bench_contenders import write_coordination_videos


def one_run(videos: list[str], work: str, name: str, **settings) -> dict:
    config = pipeline.RunConfig(engine="synthetic", imgsz=160, **settings)
    started = time.perf_counter()
    record = pipeline.run(videos, output=os.path.join(work, name), config=config, progress=False)
    wall = time.perf_counter() - started
    totals, coordinator = record["totals"], record["coordinator"]
    return {
        "frames": totals["frames"],
        "frames_per_s": totals["frames"] / record["throughput"]["processing_s"],
        "command_s": wall,
        "batches": coordinator["batches"],
        "coordinator_cpu_s": coordinator["cpu_s"],
        "coordinator_cpu_ms_per_batch": coordinator["cpu_ms_per_batch"],
        "coordinator_cpu_ms_per_video": coordinator.get("cpu_ms_per_video"),
        "mixed_batches": totals.get("mixed_batches"),
        "batches_decoded_elsewhere": totals.get("batches_decoded_elsewhere"),
        "workers": len(record["actors"]),
        "busy_share": [a.get("busy_share") for a in record["actors"]],
        "actor_batches": [a.get("batches") for a in record["actors"]],
        "coordinator_peak_bytes": record["memory"]["coordinator"]["peak_bytes"],
    }


def write_clips(work: str, count: int, frames: int = 4) -> list[str]:
    import numpy as np

    from pipeline.media.samples import write_video

    folder = os.path.join(work, "clips")
    os.makedirs(folder)
    paths = []
    for v in range(count):
        path = os.path.join(folder, f"clip{v:05d}.mp4")
        shade = [np.full((96, 160, 3), (7 * v + t) % 256, np.uint8) for t in range(frames)]
        write_video(path, shade, options={"preset": "ultrafast"})
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--clips", type=int, default=1000)
    parser.add_argument(
        "--latency-ms", type=float, nargs=2, default=(2.0, 0.35), metavar=("A", "B")
    )
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="bench-data-path-")
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR")
    try:
        videos = write_coordination_videos(work)
        common = dict(model=args.model, batch_size=args.batch_size)
        result = {
            "cpus": os.cpu_count(),
            "batch_size": args.batch_size,
            "coordinator_path": one_run(
                videos, work, "coordinator", data_path="coordinator", **common
            ),
            "workers_path": one_run(videos, work, "workers", data_path="workers", **common),
        }
        result["speedup"] = (
            result["workers_path"]["frames_per_s"] / result["coordinator_path"]["frames_per_s"]
        )
        latency = tuple(args.latency_ms)
        for workers in (1, 2):
            result[f"simulated_gpu_{workers}_workers"] = one_run(
                videos,
                work,
                f"simulated{workers}",
                data_path="workers",
                num_actors=workers,
                synthetic_latency_ms=latency,
                **common,
            )
        result["latency_ms"] = latency
        clips = write_clips(work, args.clips)
        for path in ("coordinator", "workers"):
            result[f"clips_{path}_path"] = one_run(
                clips, work, f"clips-{path}", data_path=path, **common
            )
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
