"""The bookkeeping's cost per finished video at 1 to 100 million videos: N records driven through
the manifest one by one, exactly as the coordinator drives it (``VideoCommitter``: a
``committing`` line at the commit's grant, the record once the rows are in place, through
``Bookkeeping``, which folds and merges in threads when due), on an asyncio loop, Ray-free.

    python docs/bench/bookkeeping.py --videos 250000,1000000,2000000 [--json out.json]

Each N runs in a fresh process (its own peak RSS), in a temporary output folder. The records are
those of short packed clips (the backlogs of this size are): ids as the pipeline makes them (16 hex
digits of a SHA-256, so in no order), a part file and row group each, one class count. Per N:
seconds per 100,000 videos (overall, and for the first and the last tenth of the run), the
longest pause of the recording loop (the longest one video's bookkeeping held it, and how late a
10 ms timer on the loop fired at worst), the folds and merges, and the process's peak RSS. Code
from before ``Bookkeeping`` (one synchronous fold in ``record``) is measured the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline.output.manifest import Manifest, VideoRecord

# The coordinator's process inherits this from `python -m pipeline` (or cluster.yaml's `ray start`)
CHILD_ENV = {**os.environ, "ARROW_DEFAULT_MEMORY_POOL": "system"}


def record_of(i: int) -> VideoRecord:
    video_id = hashlib.sha256(f"/videos/clip{i:09d}.mp4".encode()).hexdigest()[:16]
    return VideoRecord(
        video_id=video_id,
        path=f"/videos/clip{i:09d}.mp4",
        status="ok",
        frames_processed=120,
        width=1280,
        height=720,
        fps=30.0,
        frames_decoded=120,
        num_detections=600,
        codec="h264",
        size_bytes=2_000_000,
        mtime_ns=1_700_000_000_000_000_000 + i,
        settings_hash="0123456789abcdef",
        processing_s=0.8,
        decode_attempts=1,
        class_counts=[{"class_id": 0, "class_name": "person", "count": 600}],
        detections_file=f"detections/part-{i // 64:08d}.parquet",
        row_groups=[i % 64],
    )


def measure(videos: int) -> dict:
    return asyncio.run(_measure(videos))


async def _measure(videos: int) -> dict:
    try:
        from pipeline.output.bookkeeping import Bookkeeping, return_freed_memory
        from pipeline.runtime.pauses import PauseWatch

        return_freed_memory()  # as the coordinator's process does
        try:
            from pipeline.output.bookkeeping import tune_garbage_collection
        except ImportError:  # (older code: only frozen start-up objects, or nothing)
            from pipeline.output import bookkeeping

            tune_garbage_collection = getattr(bookkeeping, "freeze_start_up_objects", lambda: None)
        tune_garbage_collection()  # as the coordinator's process does (since it does)
    except ImportError:  # the code before (a worktree of an older commit): folds in record
        Bookkeeping = PauseWatch = None  # noqa: N806
    with tempfile.TemporaryDirectory(prefix="bookkeeping-") as folder:
        manifest = Manifest(Path(folder))
        manifest.class_names = {0: "person"}
        bookkeeping = Bookkeeping(manifest) if Bookkeeping else None
        pauses = PauseWatch(interval_s=0.01) if PauseWatch else None
        timer = asyncio.create_task(pauses.run()) if pauses else None
        tenth = max(1, videos // 10)
        window_started = started = time.perf_counter()
        windows, folds, longest = [], 0, 0.0
        for i in range(videos):
            record = record_of(i)
            before = time.perf_counter()
            manifest.committing(record.video_id, record.detections_file)
            if bookkeeping is not None:
                await bookkeeping.record(record)
            else:
                manifest.record(record)
                if manifest.compaction_due():
                    manifest.save()
                    folds += 1
            longest = max(longest, time.perf_counter() - before)
            await asyncio.sleep(0)  # the coordinator's loop serves other calls between records
            if (i + 1) % tenth == 0:
                now = time.perf_counter()
                windows.append(now - window_started)
                window_started = now
        if bookkeeping is not None:
            await bookkeeping.finish()  # the end of the run
            folds = bookkeeping.folds
        else:
            manifest.save()
        total = time.perf_counter() - started
        if timer is not None:
            timer.cancel()
        stored = pq_rows(manifest)
    per_100k = 100_000 / tenth
    return {
        "videos": videos,
        "seconds": round(total, 2),
        "s_per_100k": round(total * 100_000 / videos, 3),
        "s_per_100k_first_tenth": round(windows[0] * per_100k, 3),
        "s_per_100k_last_tenth": round(windows[-1] * per_100k, 3),
        "longest_record_ms": round(1000 * longest, 1),
        "longest_loop_pause_ms": round(1000 * pauses.longest_s, 1) if pauses else None,
        "folds": folds,
        "merges": bookkeeping.merges if bookkeeping is not None else None,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "records_stored": stored,
    }


def pq_rows(manifest: Manifest) -> int:
    """Rows stored (a folder of parts, or one file before parts)."""
    import pyarrow.parquet as pq

    path = manifest.path
    files = sorted(path.glob("part-*.parquet")) if path.is_dir() else [path]
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", default="250000,1000000", help="Ns, comma-separated")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child process's N
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(measure(args.one)))
        return
    results = []
    for n in (int(v) for v in args.videos.split(",")):
        done = subprocess.run(
            [sys.executable, __file__, "--one", str(n)],
            capture_output=True,
            text=True,
            env=CHILD_ENV,
        )
        if done.returncode != 0:
            sys.exit(done.stderr)
        results.append(json.loads(done.stdout))
        print(json.dumps(results[-1]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
