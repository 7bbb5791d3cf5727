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
from service_helpers import doc_block, fresh_shell_env

pytestmark = pytest.mark.slow

# outside Ray's worker ports
METRICS_PORT = int(os.environ.get("PIPELINE_TEST_METRICS_PORT", "8080"))


def scrape(name: str) -> float:
    text = (
        urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=10)
        .read()
        .decode()
    )
    values = [float(m.group(1)) for m in re.finditer(rf"^{name}\{{[^}}]*\}} (\S+)$", text, re.M)]
    return sum(values) if values else -1.0


def test_readme_job_submission_block_runs_as_typed(tmp_path, clips, model_path):
    """docs/cluster.md's block, copied into a fresh shell: only the example paths are replaced."""
    block = doc_block("docs/cluster.md", "## Running on a Ray cluster")
    assert "export RAY_AUTH_MODE=token" in block and "ray job submit" in block
    work = tmp_path / "src"
    shutil.copytree(
        REPO,
        work,
        ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.egg-info", "demo-out"),
    )
    out = tmp_path / "out"
    inputs = tmp_path / "videos"
    inputs.mkdir()
    for name in ("small_h264", "tiny_17"):
        shutil.copy(clips[name], inputs / clips[name].name)
    script = (
        block.replace("/data/videos", str(inputs))
        .replace("/data/out", str(out))
        .replace("/models/yolo11n.pt", model_path)
    )
    assert f"--metrics-export-port {METRICS_PORT}" in script
    ray_bin = str(Path(sys.executable).with_name("ray"))
    subprocess.run([ray_bin, "stop", "--force"], capture_output=True)
    # The block ends with `ray stop`: the metrics are read while the head still runs, then it stops.
    before_stop, stop = script.rsplit("ray stop", 1)
    try:
        job = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", before_stop],
            cwd=work,
            env=fresh_shell_env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
        logs = job.stdout + job.stderr
        assert job.returncode == 0, logs[-3000:]
        assert "succeeded" in logs and "Videos: 2 (2 ok" in logs
        assert len(read_rows(out)) == 40 + 17
        assert all(st["status"] == "ok" for st in read_status(out).values())
        check_metrics()
        stopped = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", "ray stop" + stop],
            cwd=work,
            env=fresh_shell_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert stopped.returncode == 0, stopped.stderr
    finally:
        subprocess.run([ray_bin, "stop", "--force"], capture_output=True)


def check_metrics() -> None:
    """Ray exports custom metrics about every 10 s: wait for the final values."""
    expected = {
        "ray_pipeline_frames_inferred_total": 57.0,
        "ray_pipeline_frames_decoded_total": 57.0,
    }
    deadline = time.time() + 60
    while time.time() < deadline:
        got = {name: scrape(name) for name in expected}
        if got == expected:
            break
        time.sleep(3)
    assert got == expected
    # ceil(40/16) + ceil(17/16) batches of 16
    assert scrape("ray_pipeline_batch_latency_s_count") == 5.0
    assert scrape("ray_pipeline_process_rss_bytes") > 0
