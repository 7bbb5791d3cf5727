"""The Ray-free benchmark scripts of ``docs/bench`` still run, at a size that takes seconds, and
what they report adds up (their full-size figures are in ``docs/BENCHMARKS.md``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "docs" / "bench"


def run_script(name: str, *args: str) -> list[dict]:
    done = subprocess.run(
        [sys.executable, str(BENCH / name), *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_the_cluster_simulation_records_every_clip_once_through_the_real_control_plane():
    (result,) = run_script("cluster_sim.py", "--clips", "3000", "--workers", "40")
    assert result["clips"] == 3000 and result["workers"] == 40
    messages = result["messages"]
    assert messages["start_run"] == 40  # each simulated worker got the run's settings
    # clips go out in chunks, each answered once; parts hold several clips each
    assert 3000 / 8 <= messages["process_many"] == messages["passes_ended"] < 3000
    assert 0 < messages["place_part"] < messages["process_many"]
    assert result["clips_per_s"] > 0 and result["handouts_per_s"] > 0
    assert 0 < result["simulated_gpu_busy_share"] <= 1
    assert len(result["clips_per_s_by_tenth"]) == 10


def test_the_bookkeeping_benchmark_stores_every_record():
    (result,) = run_script("bookkeeping.py", "--videos", "20000")
    assert result["videos"] == result["records_stored"] == 20000
    assert result["folds"] >= 1 and result["peak_rss_mib"] > 0


def test_the_merge_footer_benchmark_merges_the_row_groups_it_names():
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH / "merge_footers.py"),
            "--row-group",
            "256",
            "--records",
            "2048",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # 8 parts of 2,048 records in groups of 256: 64 groups in, and the merged 16,384 records too
    assert "row groups of 256: 64 in, 64 out" in done.stdout
