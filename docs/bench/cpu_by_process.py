"""Where a run's CPU goes, by process: the control-plane benchmark's long videos (four 160x96 videos
4,800 frames, the synthetic engine), and every process's CPU time (user +
system) over the run, summed by Ray's process title.

    python docs/bench/cpu_by_process.py --model ../shared/models/yolo11n-coco-int8dq.pt \
        [--batch-size 32]

Decoder tasks show as ``ray::IDLE`` once their task has ended (Ray renames the process), so
that line is the decoders' CPU. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import tempfile
import time

import psutil
import ray

import pipeline
from pipeline.media.samples import gradient_clips
from pipeline.runtime.bench_contenders import COORDINATION_FRAMES, COORDINATION_VIDEOS


def cpu_by_pid() -> dict[int, tuple[str, float]]:
    out = {}
    for proc in psutil.process_iter(["cmdline"]):
        try:
            times = proc.cpu_times()
            out[proc.pid] = (" ".join(proc.info["cmdline"] or []), times.user + times.system)
        except psutil.Error:
            pass
    return out


def role(title: str) -> str:
    if title.startswith("ray::"):
        return title.split(" ")[0].split(".")[0]
    for name in ("raylet", "gcs_server", "dashboard", "log_monitor", "default_worker"):
        if name in title:
            return name
    return "other (driver, shell)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="bench-cpu-")
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR")
    try:
        videos = gradient_clips(work, COORDINATION_VIDEOS, COORDINATION_FRAMES)
        config = pipeline.RunConfig(
            model=args.model,
            engine="synthetic",
            imgsz=160,
            batch_size=args.batch_size,
        )
        before = cpu_by_pid()
        started = time.perf_counter()
        record = pipeline.run(
            videos, output=os.path.join(work, "out"), config=config, progress=False
        )
        wall = time.perf_counter() - started
        after = cpu_by_pid()
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    by_role: collections.Counter = collections.Counter()
    for pid, (title, cpu) in after.items():
        by_role[role(title)] += cpu - before.get(pid, (title, 0.0))[1]
    frames = record["totals"]["frames"]
    print(
        json.dumps(
            {
                "cpus": os.cpu_count(),
                "frames": frames,
                "frames_per_s": record["throughput"]["frames_per_s"],
                "command_s": wall,
                "cpu_s_by_process": {k: round(v, 2) for k, v in by_role.most_common()},
                "cpu_ms_per_frame_by_process": {
                    k: round(1000 * v / frames, 3) for k, v in by_role.most_common()
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
