"""A rerun over an output whose every video is complete: how long deciding "all done" takes, and
the planning process's peak memory, at N videos (issue 30's resume criterion).

    python docs/bench/resume.py --model ../shared/models/yolo11n-coco-int8dq.pt --videos 1000000

1. N hard links to a few tiny videos (1,000 a folder; a file takes at most 65,000 links on ext4)
   and a list of them (``@list.txt``), in a temporary folder.
2. N complete records with the CLI's settings hash, written as a run leaves them: parts of
   ``videos.parquet`` of a million records each, sorted by video id within (the records' content
   and settings are what the walk finds).
3. ``python -m pipeline run @list.txt --output OUT --model M --no-progress`` timed, with the peak
   RSS of its process (no video needs work: Ray does not start).
4. 1 % of the records changed (another size: the file was replaced since), then planning in this
   process: the videos it hands out are exactly those, and the rest are skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pyarrow as pa

from pipeline.output.manifest import Manifest, VideoRecord, table_schema
from pipeline.output.unfolded import as_table
from pipeline.output.videos_table import VideosTable

PART_ROWS = 1_000_000


def make_links(work: Path, count: int) -> Path:
    import numpy as np

    from pipeline.media.samples import write_video

    tiny = work / "tiny.mp4"
    write_video(tiny, [np.full((64, 64, 3), 114, np.uint8)] * 2)
    listing = work / "list.txt"
    with open(listing, "w") as lines:
        for i in range(count):
            if i % 60_000 == 0:
                source = work / f"tiny{i}.mp4"
                shutil.copyfile(tiny, source)
            if i % 1000 == 0:
                folder = work / "videos" / f"{i // 1000:05d}"
                folder.mkdir(parents=True)
            path = folder / f"v{i:09d}.mp4"
            os.link(source, path)
            lines.write(f"{path}\n")
    return listing


def write_records(out: Path, listing: Path, settings_hash: str, changed: set[int]) -> None:
    """Every listed video complete (those in ``changed`` with another size), as parts of a
    million records each, sorted by video id within (as folds and merges leave them)."""
    from pipeline.media.source import describe

    table = VideosTable(out / Manifest.FILE_NAME)
    schema = table_schema({0: "person"}, Manifest.CLASS_NAMES_KEY)
    records: list[VideoRecord] = []
    seq = 0

    def write() -> None:
        records.sort(key=lambda r: r.video_id)
        seqs = list(range(seq - len(records) + 1, seq + 1))
        rows: pa.Table = as_table(records, seqs, schema)
        table.write_part(rows, seqs[0], seqs[-1], schema)
        records.clear()

    with open(listing) as lines:
        for i, line in enumerate(lines):
            s = describe(line.rstrip("\n"))
            seq += 1
            records.append(
                VideoRecord(
                    video_id=s.video_id,
                    path=s.path,
                    status="ok",
                    frames_processed=2,
                    size_bytes=s.size_bytes + (1 if i in changed else 0),
                    mtime_ns=s.mtime_ns,
                    settings_hash=settings_hash,
                    class_counts=[{"class_id": 0, "class_name": "person", "count": 3}],
                )
            )
            if len(records) == PART_ROWS:
                write()
    if records:
        write()


def timed_run(command: list[str]) -> dict:
    peak = 0
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stop = threading.Event()

    def sample() -> None:
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
    return {
        "exit_code": proc.returncode,
        "seconds": round(seconds, 1),
        "peak_rss_mib": round(peak / 2**20, 1),
        "last_line": (stdout.strip().splitlines() or stderr.strip().splitlines() or [""])[-1],
    }


def measure(model: str, count: int) -> dict:
    from pipeline.config import RunConfig
    from pipeline.plan.planning import plan_run

    work = Path(tempfile.mkdtemp(prefix="resume-bench-"))
    out = work / "out"
    try:
        started = time.perf_counter()
        listing = make_links(work, count)
        links_s = time.perf_counter() - started
        plan = plan_run([f"@{listing}"], str(out), RunConfig(model=model))  # the CLI's hash
        settings_hash = plan.config.settings_hash()
        plan.release()
        started = time.perf_counter()
        write_records(out, listing, settings_hash, set())
        records_s = time.perf_counter() - started
        command = [sys.executable, "-m", "pipeline", "run", f"@{listing}"]
        command += ["--output", str(out), "--model", model, "--no-progress"]
        all_done = timed_run(command)
        all_done["last_line"] = all_done["last_line"].replace(str(out), "OUT")  # (a temporary path)
        # 1 % changed since: exactly those are handed out
        changed = set(random.Random(0).sample(range(count), max(1, count // 100)))
        shutil.rmtree(out / Manifest.FILE_NAME)
        write_records(out, listing, settings_hash, changed)
        started = time.perf_counter()
        plan = plan_run([f"@{listing}"], str(out), RunConfig(model=model))
        handed = [t.source for t in plan.videos_to_process()]
        plan.release()
        plan_s = time.perf_counter() - started
        wanted = {f"v{i:09d}.mp4" for i in changed}
        return {
            "videos": count,
            "links_s": round(links_s, 1),
            "records_s": round(records_s, 1),
            "all_done": all_done,
            "one_percent_changed": {
                "seconds": round(plan_s, 1),
                "handed_out": len(handed),
                "exactly_the_changed": {Path(s.path).name for s in handed} == wanted,
                "skipped": plan.skipped,
            },
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True)
    parser.add_argument("--videos", default="1000000", help="comma-separated counts")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    results = []
    for count in [int(n) for n in args.videos.split(",")]:
        results.append(measure(args.model, count))
        print(json.dumps(results[-1]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
