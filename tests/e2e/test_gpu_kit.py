"""The GPU kit runs where there is neither Ray nor ultralytics: a virtualenv holding only what a bare
GPU machine has (jobs/stripped_env.py), plus the kit's carried wheels, on this machine's CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.ray_free]


def test_the_gpu_kit_runs_in_a_stripped_virtualenv_with_only_its_wheels(tmp_path, people_mp4):
    venv, wheels = tmp_path / "venv", tmp_path / "wheels"
    subprocess.run([sys.executable, "jobs/stripped_env.py", str(venv)], cwd=REPO, check=True)
    python = venv / "bin" / "python"
    for module in ("ray", "ultralytics", "av"):  # what the bare machine lacks
        probe = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True)
        assert probe.returncode != 0, f"{module} is importable in the stripped environment"
    subprocess.run(
        ["bash", "jobs/gpu_kit.sh", "wheels", str(wheels)],
        cwd=REPO,
        check=True,
        env=dict(os.environ, PYTHON=sys.executable),
    )
    carried = sum(p.stat().st_size for p in wheels.iterdir())
    assert carried < 64 * 2**20
    report = tmp_path / "gpu_bench.json"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        [
            "bash",
            str(REPO / "jobs" / "gpu_kit.sh"),
            "run",
            str(wheels),
            "--device",
            "cpu",
            "--batches",
            "1,2",
            "--frames",
            "8",
            "--models",
            "yolo11n.yaml",
            "--seconds",
            "1",
            "--video",
            str(people_mp4),
            "--json",
            str(report),
        ],
        cwd=tmp_path,
        env=dict(env, PYTHON=str(python)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(report.read_text())
    assert result["ray_installed"] is False
    assert (
        result["decode"]["frames"] == 302 and result["decode"]["pyav_threads_letterboxed_fps"] > 0
    )
    entry = result["models"]["yolo11n.yaml"]
    assert entry["per_frame_loop"]["images_per_s"] > 0
    assert [r["batch"] for r in entry["engine"]] == [1, 2]
    assert all(r["images_per_s"] > 0 for r in entry["engine"])
