"""Short clips against one long video: 1,000 clips of 4 frames cut from a 1080p video, and the
same 4,000 frames as one video, through the same command.

    python docs/bench/short_clips.py --model ../shared/models/yolo11n-coco-int8dq.pt \
        --video ../shared/data/people.mp4 [--clips 1000] [--frames-per-clip 4] [-- extra run options]

The clips are the source's frames in order (it is read again from the start when it ends), each
clip encoded on its own (libx264, 30 fps); the long video is the clips' packets remuxed one after
another, so both hold the same encoded frames. Each is run as a user would:
``python -m pipeline run INPUT --output OUT --model M --no-progress [extra]``; frames/s is
``run.json``'s (frames over the coordinator's processing time), and the wall time of the command is
reported too. The rows of the two runs are compared frame for frame (boxes rounded to 0.01 px).
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
from pathlib import Path

import pyarrow.dataset as ds

from pipeline.media.samples import concat_videos, read_frames, write_video


def source_frames(video: str):
    while True:
        yield from read_frames(video)


def run(inputs: list[str], out: Path, model: str, extra: list[str]) -> dict:
    env = {**os.environ, "YOLO_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "run",
            *inputs,
            "--output",
            str(out),
            "--model",
            model,
            "--no-progress",
            *extra,
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"run failed ({done.returncode}): {done.stderr[-2000:]}")
    record = json.loads((out / "run.json").read_text())
    return {
        "frames": record["totals"]["frames"],
        "frames_per_s": record["throughput"]["frames_per_s"],
        "processing_s": record["throughput"]["processing_s"],
        "wall_s": wall,
        "coordinator": record.get("coordinator"),
        "batches": record.get("coordinator", {}).get("batches"),
    }


def boxes_by_frame(out: Path, order: dict[str, int], frames_per_clip: int) -> list:
    """(position in the long video, boxes) for every frame, whichever run wrote it."""
    table = ds.dataset(out / "detections", format="parquet").to_table().to_pylist()
    rows = []
    for r in table:
        position = (
            order[r["video_id"]] * frames_per_clip + r["frame_index"] if order else r["frame_index"]
        )
        boxes = sorted(
            (
                d["class_id"],
                round(d["x1"], 2),
                round(d["y1"], 2),
                round(d["x2"], 2),
                round(d["y2"], 2),
            )
            for d in r["detections"]
        )
        rows.append((position, r["timestamp_s"] if not order else None, boxes))
    return sorted((p, b) for p, _, b in rows)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True)
    parser.add_argument("--video", required=True)
    parser.add_argument("--clips", type=int, default=1000)
    parser.add_argument("--frames-per-clip", type=int, default=4)
    parser.add_argument("extra", nargs="*", help="options for both runs (after --)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="short-clips-"))
    try:
        clips_dir = work / "clips"
        clips_dir.mkdir()
        frames = source_frames(args.video)
        started = time.perf_counter()
        clips = []
        for i in range(args.clips):
            path = clips_dir / f"clip{i:05d}.mp4"
            write_video(
                path,
                (next(frames) for _ in range(args.frames_per_clip)),
                options={"preset": "veryfast"},
            )
            clips.append(path)
        long_video = work / "long.mp4"
        concat_videos(clips, long_video)
        made_s = time.perf_counter() - started
        from pipeline.media.source import video_id_for

        order = {video_id_for(str(p)): i for i, p in enumerate(clips)}
        one = run([str(long_video)], work / "out-one", args.model, args.extra)
        many = run([str(clips_dir)], work / "out-clips", args.model, args.extra)
        same = boxes_by_frame(work / "out-clips", order, args.frames_per_clip) == boxes_by_frame(
            work / "out-one", {}, args.frames_per_clip
        )
        print(
            json.dumps(
                {
                    "clips": args.clips,
                    "frames_per_clip": args.frames_per_clip,
                    "inputs_made_s": made_s,
                    "extra_options": args.extra,
                    "one_video": one,
                    "clips_run": many,
                    "clips_fps_over_one_video_fps": many["frames_per_s"] / one["frames_per_s"],
                    "clips_wall_over_one_video_wall": one["wall_s"] / many["wall_s"],
                    "same_boxes_frame_for_frame": same,
                },
                indent=2,
            )
        )
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
