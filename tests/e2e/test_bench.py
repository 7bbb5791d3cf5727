"""`python -m pipeline bench` end to end on a short clip: every kind of contender runs, the
summary has the ratios and ceilings, the pipeline's boxes are matched against the naive loop's,
and the temporary files are gone."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CLIPS, LONG_FRAMES = 24, 160  # the control-plane contender's inputs, small


def test_the_bench_runs_every_kind_of_contender_and_checks_the_boxes(clips, model_path, tmp_path):
    before = set(Path(tempfile.gettempdir()).glob("bench-*"))
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "bench",
            "--video",
            str(clips["short_1080p"]),
            "--model",
            model_path,
            "--concat",
            "2",
            "--repeats",
            "1",
            "--contenders",
            "naive,pipeline,decode,infer,decode-parts,control-plane",
            "--clips",
            str(CLIPS),
            "--long-frames",
            str(LONG_FRAMES),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(out.read_text())["summary"]
    assert summary["naive"]["frames"] == summary["pipeline"]["frames"] == 48
    assert summary["pipeline"]["engine"] == "openvino"
    assert summary["pipeline"]["startup"][0]["actors_ready_to_first_batch_s"] > 0
    assert summary["infer"]["median_fps"] > 0 and summary["decode"]["median_fps"] > 0
    assert summary["bound_fps"] < min(
        summary["infer"]["median_fps"], summary["decode"]["median_fps"]
    )
    parity = summary["parity"]
    assert parity["reference_boxes"] == summary["naive"]["boxes"] > 100
    assert parity["matched_fraction"] >= 0.99 and parity["max_abs_conf_diff"] <= 0.02
    parts = summary["decode-parts"]["parts_ms"]
    assert all(parts[k] > 0 for k in ("decode_ms", "bgr_conversion_ms", "letterbox_resize_ms"))
    # the synthetic engine: 5 fixed boxes on every frame
    clips, gpu = summary["control-plane"]["clips"], summary["control-plane"]["simulated_gpu"]
    assert clips["videos"] == CLIPS and clips["frames"] == CLIPS * 4
    assert clips["boxes"] == 5 * clips["frames"]
    assert 1 <= clips["handouts"] < CLIPS  # clips go out in chunks
    assert 0 < clips["coordinator_cpu_ms_per_video"] < 1000 * clips["seconds"] / CLIPS
    assert gpu["frames"] == 4 * LONG_FRAMES and gpu["boxes"] == 5 * gpu["frames"]
    assert all(0 < share <= 1 for share in gpu["busy_share"])
    assert "ms of coordinator CPU per video" in done.stdout
    assert (
        "box parity, pipeline vs naive" in done.stdout
        and "one decoder, ms per frame" in done.stdout
    )
    assert set(Path(tempfile.gettempdir()).glob("bench-*")) <= before  # no temporary folder left
