"""What recording a finished video costs with 1,000 and with 100,000 videos already in the
manifest, and how long a resume over 100,000 complete videos takes to plan and skip them.

    python docs/bench/manifest_scale.py --model ../shared/models/yolo11n-coco-int8dq.pt

1. Per finished video, two ways: ``Manifest.record`` (one line appended to videos.log, with the
   compactions into videos.parquet that fall due, amortized: N more videos are finished, which
   takes one compaction at either size), and the former way, rewriting videos.parquet whole per
   video (``save`` after ``update``; the median of 5).
2. Resume: 100,000 hard links to one tiny video, a manifest that has them all complete with the
   run's settings, then ``python -m pipeline run DIR --output OUT --model M``, timed with the peak
   RSS of its process.
3. The same folder with one new video added: the run now has work, so Ray, the actors and the
   coordinator start, and the coordinator loads the 100,000 records; ``run.json``'s peak RSS of the
   driver and of the coordinator.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from pipeline.output.manifest import Manifest, VideoRecord


def _record(i: int, prefix: str = "v") -> VideoRecord:
    return VideoRecord(
        video_id=f"{prefix}{i:08d}",
        path=f"/videos/{prefix}{i:08d}.mp4",
        status="ok",
        frames_processed=300,
        width=1920,
        height=1080,
        fps=30.0,
        num_detections=4500,
        size_bytes=10_000_000,
        mtime_ns=i,
        settings_hash="0123456789abcdef",
        processing_s=10.0,
        class_counts=[{"class_id": 0, "class_name": "person", "count": 4500}],
    )


def cost_per_video(existing: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        manifest = Manifest(out)
        for i in range(existing):
            manifest.update(_record(i))
        manifest.save()
        # the count rule compacts once the log holds half the records: at the last one
        finished = existing
        compactions = 0
        started = time.perf_counter()
        for i in range(finished):
            manifest.record(_record(i, "new"))
            if manifest.compaction_due():
                manifest.save()
                compactions += 1
        logged = (time.perf_counter() - started) / finished
        rewrites = []
        for i in range(5):
            started = time.perf_counter()
            manifest.update(_record(i, "again"))
            manifest.save()
            rewrites.append(time.perf_counter() - started)
    return {
        "existing": existing,
        "finished": finished,
        "compactions": compactions,
        "log_ms_per_video": 1000 * logged,
        "rewrite_ms_per_video": 1000 * statistics.median(rewrites),
    }


def resume(model: str, count: int) -> dict:
    import numpy as np

    from pipeline.config import RunConfig
    from pipeline.media.samples import write_video
    from pipeline.plan.inputs import expand_inputs
    from pipeline.plan.planning import plan_run

    work = Path(tempfile.mkdtemp(prefix="manifest-scale-"))
    videos, out = work / "videos", work / "out"
    videos.mkdir()
    tiny = work / "tiny.mp4"
    write_video(tiny, [np.full((64, 64, 3), 114, np.uint8)] * 2)
    started = time.perf_counter()
    for i in range(count):
        if i % 60_000 == 0:  # a file takes at most 65,000 hard links on ext4
            source = work / f"tiny{i}.mp4"
            shutil.copyfile(tiny, source)
        os.link(source, videos / f"v{i:06d}.mp4")
    links_s = time.perf_counter() - started
    # the same identity and settings hash as the CLI
    plan = plan_run([str(videos)], str(out), RunConfig(model=model))
    try:
        manifest = Manifest(out)
        for s in expand_inputs([str(videos)])[0]:
            manifest.update(
                VideoRecord(
                    video_id=s.video_id,
                    path=s.path,
                    status="ok",
                    frames_processed=2,
                    size_bytes=s.size_bytes,
                    mtime_ns=s.mtime_ns,
                    settings_hash=plan.config.settings_hash(),
                )
            )
        manifest.save()
    finally:
        plan.release()
    command = [
        sys.executable,
        "-m",
        "pipeline",
        "run",
        str(videos),
        "--output",
        str(out),
        "--model",
        model,
    ]
    peak = 0
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stop = threading.Event()

    def sample():
        nonlocal peak
        while not stop.is_set():
            try:
                peak = max(peak, psutil.Process(proc.pid).memory_info().rss)
            except psutil.Error:
                pass
            stop.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    seconds = time.perf_counter() - started
    stop.set()
    sampler.join()
    result = {
        "videos": count,
        "links_s": links_s,
        "exit_code": proc.returncode,
        "seconds": seconds,
        "peak_rss_mib": peak / 2**20,
        "last_line": (stdout.strip().splitlines() or stderr.strip().splitlines() or [""])[-1],
    }
    write_video(videos / "new.mp4", [np.full((64, 64, 3), 90, np.uint8)] * 2)
    started = time.perf_counter()
    done = subprocess.run(command + ["--no-progress"], capture_output=True, text=True)
    record = json.loads((out / "run.json").read_text())
    result["with_one_new_video"] = {
        "exit_code": done.returncode,
        "seconds": time.perf_counter() - started,
        "videos_skipped": record["totals"]["videos_skipped"],
        "videos_ok": record["totals"]["videos_ok"],
        "driver_peak_rss_mib": record["memory"]["driver"]["peak_bytes"] / 2**20,
        "coordinator_peak_rss_mib": record["memory"]["coordinator"]["peak_bytes"] / 2**20,
    }
    shutil.rmtree(work, ignore_errors=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True)
    parser.add_argument("--resume-videos", type=int, default=100_000)
    args = parser.parse_args()
    for existing in (1_000, 100_000):
        print(cost_per_video(existing), flush=True)
    print(resume(args.model, args.resume_videos), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
