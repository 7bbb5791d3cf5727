"""``ray job submit`` against a real ``ray start --head`` cluster, then the project's metrics
scraped from Ray's Prometheus endpoint."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, read_rows, read_status

pytestmark = pytest.mark.slow

METRICS_PORT = int(os.environ.get("PIPELINE_TEST_METRICS_PORT", "8080"))  # outside Ray's worker ports


@pytest.fixture(scope="module")
def head_node():
    ray_bin = str(Path(sys.executable).with_name("ray"))
    # As with an activated virtualenv: the job's `python` is this interpreter.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "RAY_AUTH_MODE": "token", "PATH": path}
    env.pop("RAY_ADDRESS", None)
    subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True)
    subprocess.run(
        [ray_bin, "start", "--head", "--num-cpus", "2", "--metrics-export-port", str(METRICS_PORT),
         "--disable-usage-stats"],
        env=env, check=True, capture_output=True,
    )
    try:
        yield env
    finally:
        subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True)


def scrape(name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=10).read().decode()
    values = [float(m.group(1)) for m in re.finditer(rf"^{name}\{{[^}}]*\}} (\S+)$", text, re.M)]
    return sum(values) if values else -1.0


def test_job_submit_runs_the_pipeline_and_exports_metrics(head_node, tmp_path, clips, model_path):
    """The README's command, as a user types it (the CLI finds the cluster's token itself)."""
    work = tmp_path / "src"
    shutil.copytree(REPO, work, ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.egg-info", "demo-out"))
    out = tmp_path / "out"
    ray_bin = str(Path(sys.executable).with_name("ray"))
    job = subprocess.run(
        [ray_bin, "job", "submit", "--address", "http://127.0.0.1:8265", "--working-dir", ".",
         "--runtime-env-json", '{"env_vars": {"YOLO_OFFLINE": "1"}}', "--",
         "python", "jobs/detect.py", str(clips["small_h264"]), str(clips["tiny_17"]),
         "--output", str(out), "--model", model_path, "--batch-size", "8"],
        cwd=work, env=head_node, capture_output=True, text=True, timeout=600,
    )
    logs = job.stdout + job.stderr
    assert job.returncode == 0, logs[-3000:]
    assert "succeeded" in logs and "Videos: 2 (2 ok" in logs

    rows = read_rows(out)
    assert len(rows) == 40 + 17
    assert all(s["status"] == "ok" for s in read_status(out).values())

    # Ray exports custom metrics about every 10 s: wait for the final values.
    expected = {"ray_pipeline_frames_inferred_total": 57.0, "ray_pipeline_frames_decoded_total": 57.0}
    deadline = time.time() + 60
    while time.time() < deadline:
        got = {name: scrape(name) for name in expected}
        if got == expected:
            break
        time.sleep(3)
    assert got == expected
    assert scrape("ray_pipeline_batch_latency_s_count") == 8.0  # 40/8 + ceil(17/8) batches
    assert scrape("ray_pipeline_process_rss_bytes") > 0
