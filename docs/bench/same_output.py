"""Before and after a refactor: the same command on the same video, with two checkouts, must
give byte-identical ``detections/`` files and the same ``videos.parquet`` rows (less the time
each video took).

    python docs/bench/same_output.py OLD_CHECKOUT NEW_CHECKOUT VIDEO MODEL [run options...]

Each checkout runs ``python -m pipeline run VIDEO --output <tmp> --model MODEL [options]`` with
its own code first on ``PYTHONPATH``; the script prints what differs and exits 1 if anything does.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

# Columns of videos.parquet that measure the run, not its result.
TIMING = {"processing_s"}


def run(checkout: str, video: str, model: str, options: list[str], output: Path) -> None:
    env = dict(os.environ, PYTHONPATH=checkout, YOLO_OFFLINE="1")
    command = [
        sys.executable,
        "-m",
        "pipeline",
        "run",
        video,
        "--output",
        str(output),
        "--model",
        model,
        "--quiet",
        *options,
    ]
    subprocess.run(command, env=env, cwd=checkout, check=True)


def digests(output: Path) -> dict[str, str]:
    """Every Parquet file of ``detections/`` and ``tracks/`` (with --track), by name."""
    return {
        p.relative_to(output).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for folder in ("detections", "tracks")
        for p in sorted((output / folder).glob("*.parquet"))
    }


def video_rows(output: Path) -> list[dict]:
    rows = pq.read_table(output / "videos.parquet").to_pylist()
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def main(old: str, new: str, video: str, model: str, *options: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        outputs = {name: Path(tmp) / name for name in ("old", "new")}
        for name, checkout in (("old", old), ("new", new)):
            run(checkout, video, model, list(options), outputs[name])
        same_files = digests(outputs["old"]) == digests(outputs["new"])
        same_rows = video_rows(outputs["old"]) == video_rows(outputs["new"])
        frames = sum(r["frames_processed"] for r in video_rows(outputs["new"]))
        print(
            f"detections/, tracks/: {len(digests(outputs['new']))} files, byte-identical: {same_files}"
        )
        print(f"videos.parquet: {frames} frames processed, same rows: {same_rows}")
        return 0 if same_files and same_rows else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
