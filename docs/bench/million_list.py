"""A backlog of a million names: ``@list.txt`` whose first line is a real video and whose other
999,999 lines name files that do not exist.

    python docs/bench/million_list.py --model ../shared/models/yolo11n-coco-int8dq.pt \
        --video ../shared/data/people.mp4 [--lines 1000000] \
        [--checkout DIR]   # DIR: a `git worktree` of an older commit

Runs ``python -m pipeline run @list.txt --output OUT --model M --no-progress`` as a user would, samples
the driver's RSS (that process alone: the local Ray it starts is its children) every 0.2 s, and
reports: when the real video's first batch was done (``run.json``'s start-up figures, from the
command's start), the driver's and the coordinator's peak RSS, the run's duration, and the count of
``ok`` and ``failed`` rows in ``videos.parquet``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from pipeline.output.readers import read_videos


def _every(samples: list[tuple[float, int]], seconds: float) -> list[tuple[float, int]]:
    picked, due = [], 0.0
    for t, rss in samples:
        if t >= due:
            picked.append((t, rss))
            due = t - t % seconds + seconds
    return picked


def _commit(checkout: str) -> str:
    done = subprocess.run(
        ["git", "-C", checkout, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return done.stdout.strip() or "unknown"


def _by_videos_done(points: list[dict], step: int = 100_000) -> dict[int, int]:
    picked, due = {}, 0
    for point in points:
        if point.get("coordinator_rss") and point["videos_done"] >= due:
            picked[point["videos_done"]] = round(point["coordinator_rss"] / 2**20)
            due = point["videos_done"] - point["videos_done"] % step + step
    return picked


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True)
    parser.add_argument("--video", required=True, help="the real video on the list's first line")
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument(
        "--data-path",
        choices=["coordinator", "workers"],
        default=None,
        help="passed on to a --checkout older than the one data path (which had the option)",
    )
    parser.add_argument(
        "--checkout", help="run the pipeline of this checkout (a `git worktree` of an older commit)"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="million-list-"))
    try:
        listing = work / "list.txt"
        with open(listing, "w") as f:
            f.write(os.path.abspath(args.video) + "\n")
            for i in range(1, args.lines):
                f.write(f"/nonexistent/backlog/camera-{i % 1000:03d}/clip-{i:07d}.mp4\n")
        out = work / "out"
        env = {**os.environ, "YOLO_OFFLINE": "1"}
        env.pop("RAY_ADDRESS", None)
        if args.checkout:  # its code first, in the driver and in Ray's workers
            env["PYTHONPATH"] = os.path.abspath(args.checkout)
        started = time.time()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipeline",
                "run",
                f"@{listing}",
                "--output",
                str(out),
                "--model",
                os.path.abspath(args.model) if os.path.exists(args.model) else args.model,
                *(["--data-path", args.data_path] if args.data_path else []),
                "--no-progress",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            # Ray puts the driver's working directory first on its workers' path
            cwd=os.path.abspath(args.checkout) if args.checkout else None,
        )
        peak, samples = 0, []
        stop = threading.Event()

        def sample():
            nonlocal peak
            process = psutil.Process(proc.pid)
            while not stop.is_set():
                try:
                    rss = process.memory_info().rss
                except psutil.Error:
                    break
                peak = max(peak, rss)
                samples.append((round(time.time() - started, 1), rss))
                stop.wait(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        stdout, stderr = proc.communicate()
        elapsed = time.time() - started
        stop.set()
        sampler.join()
        record = json.loads((out / "run.json").read_text())
        statuses = read_videos(out)["status"].tolist()  # each video's latest record
        result = {
            "lines": args.lines,
            "data_path": args.data_path,
            # the older checkout's commit (its path is this machine's)
            "checkout": _commit(args.checkout) if args.checkout else None,
            "exit_code": proc.returncode,
            "elapsed_s": elapsed,
            "first_batch_done_s": record["startup"]["first_batch_done_s"],
            "driver_peak_rss_mib": peak / 2**20,
            "driver_peak_at_s": next(t for t, r in samples if r == peak),
            "driver_rss_mib_every_10s": {int(t): round(r / 2**20) for t, r in _every(samples, 10)},
            "coordinator_peak_rss_mib": record["memory"]["coordinator"]["peak_bytes"] / 2**20,
            "coordinator_memory_mib": {
                k: v and round(v / 2**20) for k, v in record["memory"]["coordinator"].items()
            },
            "coordinator_cpu_s": record["coordinator"].get("cpu_s"),
            # flat or growing: its RSS as the videos went by (the run's timeline, ~1 sample/s)
            "coordinator_rss_mib_by_videos_done": _by_videos_done(record["timeline"]["points"]),
            "videos_parquet_rows": len(statuses),
            "ok": statuses.count("ok"),
            "failed": statuses.count("failed"),
            "totals": record["totals"],
            "stderr_tail": stderr[-500:],
        }
        print(json.dumps(result, indent=2))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
