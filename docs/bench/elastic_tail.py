"""What letting idle workers go saves at a backlog's tail: GPU-seconds held against GPU-seconds
busy, with ``--release-idle-after`` and without (0: every worker held to the end), on the same
backlog of short clips whose last video is long.

    python docs/bench/elastic_tail.py --model ../shared/models/yolo11n-coco-int8dq.pt \
        [--clips 24] [--long-frames 600] [--idle 5] [--json out.json]

A ``ray.cluster_utils.Cluster`` of one node with 4 fake GPUs (a scheduler count: the synthetic
engine stands in for the model, each forward pass taking ``--pass-ms``), 4 video workers, one
video open per worker. Each setting runs once on the same videos; the figures are ``run.json``'s
``workers`` (``pipeline.runtime.fleet``) and its processing time.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np

import pipeline
from pipeline.config import RunConfig
from pipeline.media.samples import write_video


def videos(folder: Path, lengths: list[int]) -> list[str]:
    paths = []
    for v, length in enumerate(lengths):
        frames = [
            np.full((96, 160, 3), (7 * v + 3 * t) % 256, np.uint8)
            + np.arange(160, dtype=np.uint8)[None, :, None]
            for t in range(length)
        ]
        path = folder / f"clip{v:03d}.mp4"
        write_video(path, frames)
        paths.append(str(path))
    return paths


def run_once(inputs: list[str], out: Path, model: str, idle_s: float, pass_ms: float) -> dict:
    config = RunConfig(
        model=model, engine="synthetic", imgsz=160, batch_size=4, num_actors=4,
        max_open_videos=4, idle_release_s=idle_s, synthetic_latency_ms=(pass_ms, 0.0),
    )  # fmt: skip
    record = pipeline.run(inputs, output=str(out), config=config, progress=False)
    workers = record["workers"]
    return {
        "release_idle_after_s": idle_s,
        "exit_code": record["exit_code"],
        "processing_s": round(record["throughput"]["processing_s"], 2),
        "released": workers["released"],
        "gpu_s_held": workers["gpu_s_held"],
        "gpu_s_busy": workers["gpu_s_busy"],
        "busy_share_of_held": round(workers["gpu_s_busy"] / workers["gpu_s_held"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", required=True, help="a model file (its classes; the synthetic engine infers)"
    )
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--clip-frames", type=int, default=20)
    parser.add_argument("--long-frames", type=int, default=600)
    parser.add_argument("--pass-ms", type=float, default=100.0)
    parser.add_argument("--idle", type=float, default=5.0, help="--release-idle-after, seconds")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    import ray
    from ray.cluster_utils import Cluster

    os.environ.pop("RAY_ADDRESS", None)
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"include_dashboard": False, "num_cpus": 6, "num_gpus": 4},
    )
    ray.init(address=cluster.address, logging_level="ERROR")
    try:
        with tempfile.TemporaryDirectory(prefix="elastic-tail-") as folder:
            inputs = videos(Path(folder), [args.clip_frames] * args.clips + [args.long_frames])
            results = [
                run_once(inputs, Path(folder) / f"out-{idle}", args.model, idle, args.pass_ms)
                for idle in (0.0, args.idle)
            ]
    finally:
        ray.shutdown()
        cluster.shutdown()
    for result in results:
        print(json.dumps(result), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    main()
