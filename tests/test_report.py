"""``python -m pipeline report DIR``: one HTML file, plots embedded, that a browser opens offline."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from corpus import make_bad_corpus
from pipeline.cli import main
from pipeline.report import bin_size_for, build_report, class_counts_over_time, throughput_series

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture(scope="module")
def run_with_a_failure(ray_local, tmp_path_factory, clips, model_path):
    root = tmp_path_factory.mktemp("report")
    expected = make_bad_corpus(root / "bad")
    inputs = [clips["small_h264"], root / "bad" / "no_index.mp4", root / "bad" / "faststart_cut_in_half.mp4"]
    out = root / "out"
    code = main(["run", *map(str, inputs), "--output", str(out), "--model", model_path, "--device", "cpu",
                 "--no-progress", "--batch-size", "4"])
    assert code == 3
    return out, expected


def images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_report_is_one_self_contained_html_file(run_with_a_failure, tmp_path):
    out, _ = run_with_a_failure
    target = tmp_path / "report.html"
    assert main(["report", str(out), "--output", str(target)]) == 0
    page = target.read_text(encoding="utf-8")
    pngs = images(page)
    # class totals, classes over time, throughput, stages, memory
    assert len(pngs) >= 5 and all(p.startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)
    assert page.count("<img") == len(pngs)  # every image is embedded
    assert not re.search(r'(src|href)="(?!data:|#)', page)  # no file or network references
    assert "<script" not in page and "<link" not in page


def test_report_shows_every_section_and_the_failed_video(run_with_a_failure):
    out, expected = run_with_a_failure
    page = build_report(out)
    for heading in ("Summary", "Videos", "Classes over time", "Throughput, stages, memory, GPU", "Time per stage",
                    "Memory per role", "GPU", "Failures"):
        assert f">{heading}</h" in page, heading
    assert "No GPU in this run" in page
    failures = page[page.index('id="failures"'):]
    for name in ("no_index.mp4", "faststart_cut_in_half.mp4"):
        assert name in failures
    assert expected["no_index.mp4"][1] in failures and expected["faststart_cut_in_half.mp4"][1] in failures
    assert "small_h264.mp4" in page[page.index('id="videos"'):page.index('id="classes"')]
    run = json.loads((out / "run.json").read_text())
    assert len(run["timeline"]["points"]) >= 2  # the throughput plot's data


def test_report_opens_in_headless_chromium(run_with_a_failure, tmp_path):
    if CHROMIUM is None:
        if os.environ.get("PIPELINE_REQUIRE_CHROMIUM") == "1":
            pytest.fail("PIPELINE_REQUIRE_CHROMIUM=1 but no chromium is installed")
        pytest.skip("no chromium on this machine (CI installs it)")
    out, _ = run_with_a_failure
    report = tmp_path / "report.html"
    main(["report", str(out), "--output", str(report)])
    shot = tmp_path / "report.png"
    # No network at all: the page must render from the file alone.
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars", "--window-size=1280,2400",
         f"--screenshot={shot}", report.as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    import cv2

    image = cv2.imread(str(shot))
    assert image is not None and image.shape[:2] == (2400, 1280)
    # The class-totals bars (#3b7dd8) were drawn by the browser from the embedded PNG.
    bar_blue = np.all(np.abs(image.astype(int) - [216, 125, 59]) < 12, axis=2)
    assert bar_blue.sum() > 2000
    shutil.copy(shot, out / "report-screenshot.png")  # kept beside the output for a look


# ---- the pure parts --------------------------------------------------------------------------


def test_class_counts_are_means_per_processed_frame():
    import pandas as pd

    frame_times = pd.Series([0.0, 0.5, 1.0, 1.5, 2.0])  # one frame in bin 2 has no boxes
    boxes = pd.DataFrame({"timestamp_s": [0.0, 0.0, 0.5, 1.0, 1.5, 1.5, 1.5],
                          "class_name": ["car", "car", "car", "person", "car", "person", "person"]})
    table = class_counts_over_time(boxes, frame_times, ["car", "person"], bin_s=1.0)
    assert table.index.tolist() == [0.0, 1.0, 2.0]
    assert table["car"].tolist() == [1.5, 0.5, 0.0]
    assert table["person"].tolist() == [0.0, 1.5, 0.0]


@pytest.mark.parametrize("duration, expected", [(1.0, 0.1), (10.0, 0.2), (60.0, 1), (3600.0, 60), (1e6, 3600)])
def test_bin_size_keeps_plots_readable(duration, expected):
    assert bin_size_for(duration) == expected


def test_throughput_is_smoothed_over_a_window():
    points = [{"t_s": float(t), "frames_done": 16 * (t // 2)} for t in range(20)]  # a batch every 2 s
    t, rates = throughput_series(points, window_s=4.0)
    assert len(t) == 19 and np.allclose(rates[4:], 8.0)


def test_gpu_section_plots_nvml_samples(run_with_a_failure, tmp_path):
    out, _ = run_with_a_failure
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    run = json.loads((copy / "run.json").read_text())
    for k, point in enumerate(run["timeline"]["points"]):
        point["gpu_utilization_percent"] = [80.0 + k]
    run["gpu"] = [{"mean_utilization_percent": 85.0, "peak_memory_used_bytes": 2 * 2**30}]
    (copy / "run.json").write_text(json.dumps(run))
    page = build_report(copy)
    assert 'alt="GPU utilization"' in page and "85%" in page and "No GPU" not in page


def test_names_and_errors_are_escaped_and_a_missing_run_json_is_said(tmp_path):
    from pipeline.inputs import VideoSource
    from pipeline.manifest import Manifest, VideoRecord

    manifest = Manifest(tmp_path)
    manifest.update(VideoRecord.failed(VideoSource("/v/<img src=x onerror=alert(1)>.mp4", "aaaa"),
                                       "bad <script>alert(1)</script> header", "h"))
    manifest.save()
    page = build_report(tmp_path)
    assert "<script>" not in page and "<img src=x" not in page
    assert "&lt;script&gt;" in page and "&lt;img src=x onerror=alert(1)&gt;.mp4" in page
    assert "No run.json" in page and "No detections." in page
