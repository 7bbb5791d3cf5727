"""The control plane's cost and a simulated GPU's busy share, for before/after comparisons: the
``control-plane`` contender of ``python -m pipeline bench``, self-contained so that it runs
against an older checkout too (one without that contender).

    python docs/bench/control_plane.py --model ../shared/models/yolo11n-coco-int8dq.pt \
        [--clips 1000] [--checkout DIR]   # DIR: a `git worktree` of an older commit

Two runs of the synthetic engine (no model, fixed boxes) through ``pipeline.run``: ``--clips``
generated 4-frame 160x96 clips, as fast as they go (the coordinator's CPU per video, from its
process CPU time in ``run.json``); then four 4,800-frame 160x96 videos with a simulated GPU
holding each batch of n frames 2 + 0.35·n ms (how busy the decoders keep it: each worker's
``busy_share``). With ``--checkout`` it runs itself again in a child process whose ``pipeline``
is that checkout's, and prints both. One JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

SIMULATED_GPU_MS = (2.0, 0.35)


def write_videos(folder: str, count: int, frames: int, name: str) -> list[str]:
    """``pipeline.media.samples.gradient_clips``, written here: an older checkout has no such
    function, and this script must run against one."""
    import numpy as np

    from pipeline.media.samples import write_video

    ramp = np.add.outer(np.arange(96), np.arange(160))
    paths = []
    for v in range(count):
        path = os.path.join(folder, name.format(v))
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


def measure(model: str, clips: int, batch_size: int) -> dict:
    import ray

    import pipeline

    work = tempfile.mkdtemp(prefix="bench-control-plane-")
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR")
    try:
        runs = {
            "clips": (write_videos(work, clips, 4, "clip-{:05d}.mp4"), None),
            "simulated_gpu": (write_videos(work, 4, 4800, "long-{}.mp4"), SIMULATED_GPU_MS),
        }
        figures = {}
        for name, (videos, latency) in runs.items():
            config = pipeline.RunConfig(
                model=model,
                engine="synthetic",
                imgsz=160,
                batch_size=batch_size,
                synthetic_latency_ms=latency,
            )
            started = time.perf_counter()
            record = pipeline.run(
                videos, output=os.path.join(work, f"out-{name}"), config=config, progress=False
            )
            coordinator = record["coordinator"]
            figures[name] = {
                "seconds": time.perf_counter() - started,
                "videos_ok": record["totals"]["videos_ok"],
                "frames": record["totals"]["frames"],
                "frames_per_s": record["throughput"]["frames_per_s"],
                "coordinator_cpu_s": coordinator["cpu_s"],
                "coordinator_cpu_ms_per_video": coordinator.get("cpu_ms_per_video"),
                "handouts": coordinator.get("handouts"),
                "coordinator_cpu_ms_per_handout": coordinator.get("cpu_ms_per_handout"),
                "busy_share": [a.get("busy_share") for a in record["actors"]],
                "coordinator_peak_bytes": record["memory"]["coordinator"]["peak_bytes"],
            }
        return figures
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--clips", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--checkout", default=None, help="an older checkout to measure too")
    args = parser.parse_args()
    model = os.path.abspath(args.model) if os.path.exists(args.model) else args.model
    result = {"cpus": os.cpu_count(), "clips": args.clips, "batch_size": args.batch_size}
    if args.checkout:
        env = dict(os.environ, PYTHONPATH=os.path.abspath(args.checkout))
        child = [sys.executable, os.path.abspath(__file__), "--model", model]
        child += ["--clips", str(args.clips), "--batch-size", str(args.batch_size)]
        # run from the checkout: Ray puts the driver's folder first on its workers' path
        done = subprocess.run(
            child, env=env, cwd=args.checkout, capture_output=True, text=True, check=True
        )
        commit = subprocess.run(
            ["git", "-C", args.checkout, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        result["before"] = {"commit": commit, **json.loads(done.stdout)["this"]}
    result["this"] = measure(model, args.clips, args.batch_size)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
