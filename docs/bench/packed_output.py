"""Packed output against one file per clip, in one run: files written, the run's wall time, and
what readers pay afterwards.

    python docs/bench/packed_output.py --model ../shared/models/yolo11n-coco-int8dq.pt [--clips 10000]

1. ``--clips`` generated clips (160x96, 30 frames each; the synthetic engine, no model, five
   boxes a frame) run twice, ``--layout auto`` (they are packed) and ``--layout per-video``: the
   files in ``detections/`` and each run's wall time.
2. The same rows copied into 4 files (a reference that no per-file cost weighs on), then on each
   of the three: DuckDB's boxes-per-class query over ``detections/*.parquet`` and
   ``pandas.read_parquet`` of the folder (median of ``--repeats``).
3. ``pipeline.read_detections(OUT, video_id=X)`` on the packed output for 20 random clips: its
   time (median and worst) and what ``plan_scan`` says it opens.

The model file is only named (the synthetic engine loads nothing). Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import ray

import pipeline
from pipeline.media.samples import write_video

BOXES_PER_CLASS = """
    WITH boxes AS (SELECT unnest(detections) AS d FROM read_parquet('{folder}/*.parquet'))
    SELECT d.class_name, count(*) AS boxes FROM boxes GROUP BY ALL ORDER BY boxes DESC
"""


def write_clips(folder: Path, count: int, frames: int = 30) -> list[str]:
    folder.mkdir(parents=True)
    paths = []
    for v in range(count):
        path = folder / f"clip{v:05d}.mp4"
        shades = [np.full((96, 160, 3), (7 * v + t) % 256, np.uint8) for t in range(frames)]
        write_video(path, shades, options={"preset": "ultrafast"})
        paths.append(str(path))
    return paths


def run(clips: list[str], out: Path, model: str, layout: str) -> dict:
    config = pipeline.RunConfig(
        model=model, engine="synthetic", imgsz=160, batch_size=32, layout=layout
    )
    started = time.perf_counter()
    record = pipeline.run(clips, output=str(out), config=config, progress=False)
    files = [p for p in (out / "detections").iterdir() if not p.name.startswith(".")]
    return {
        "layout": layout,
        "wall_s": time.perf_counter() - started,
        "frames": record["totals"]["frames"],
        "videos_ok": record["totals"]["videos_ok"],
        "files": len(files),
        "part_files": sum(p.name.startswith("part-") for p in files),
    }


def median_s(action, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def reads(folder: Path, repeats: int) -> dict:
    import duckdb
    import pandas as pd

    query = BOXES_PER_CLASS.format(folder=folder)
    return {
        "rows": pq.read_table(folder).num_rows,
        "files": len(list(folder.glob("*.parquet"))),
        "duckdb_boxes_per_class_s": median_s(lambda: duckdb.sql(query).fetchall(), repeats),
        "pandas_read_parquet_s": median_s(lambda: pd.read_parquet(folder), repeats),
    }


def four_files(source: Path, target: Path) -> None:
    """The same rows in 4 files, sorted by video and frame, row groups of 512 frames."""
    table = (
        ds.dataset(source, format="parquet")
        .to_table()
        .sort_by([("video_id", "ascending"), ("frame_index", "ascending")])
    )
    target.mkdir(parents=True)
    step = -(-table.num_rows // 4)
    for i in range(4):
        pq.write_table(
            table.slice(i * step, step),
            target / f"part-{i}.parquet",
            row_group_size=512,
            compression="zstd",
        )


def one_video_reads(out: Path, samples: int = 20) -> dict:
    video_ids = pq.read_table(out / "videos.parquet", columns=["video_id"])["video_id"].to_pylist()
    chosen = random.Random(0).sample(video_ids, min(samples, len(video_ids)))
    times, plans = [], []
    for video_id in chosen:
        started = time.perf_counter()
        rows = pipeline.read_detections(out, video_id=video_id)
        times.append(time.perf_counter() - started)
        assert set(rows["video_id"]) == {video_id}
        plans.append(pipeline.plan_scan(out, video_id=video_id))
    return {
        "median_ms": 1000 * statistics.median(times),
        "max_ms": 1000 * max(times),
        "files_opened": sorted({len(plan) for plan in plans}),
        "row_groups_read": sorted({len(scan.row_groups or ()) for plan in plans for scan in plan}),
        "example_plan": [
            {"path": Path(s.path).name, "row_groups": s.row_groups, "videos": s.videos}
            for s in plans[0]
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--clips", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-packed-"))
    result: dict = {"cpus": os.cpu_count(), "clips": args.clips}
    try:
        started = time.perf_counter()
        clips = write_clips(work / "clips", args.clips)
        result["clips_written_s"] = time.perf_counter() - started
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR")
        try:  # per-video first, then packed, then per-video again: a warm cache for neither
            result["per_video"] = run(clips, work / "own", args.model, "per-video")
            result["packed"] = run(clips, work / "packed", args.model, "auto")
            result["per_video_again"] = run(clips, work / "own-again", args.model, "per-video")
        finally:
            ray.shutdown()
        four_files(work / "own" / "detections", work / "four")
        result["reads"] = {
            name: reads(folder, args.repeats)
            for name, folder in (
                ("per_video", work / "own" / "detections"),
                ("packed", work / "packed" / "detections"),
                ("four_files", work / "four"),
            )
        }
        four = result["reads"]["four_files"]
        for name in ("per_video", "packed"):
            r = result["reads"][name]
            r["duckdb_vs_four_files"] = (
                r["duckdb_boxes_per_class_s"] / four["duckdb_boxes_per_class_s"]
            )
            r["pandas_vs_four_files"] = r["pandas_read_parquet_s"] / four["pandas_read_parquet_s"]
        result["one_video_read"] = one_video_reads(work / "packed")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
