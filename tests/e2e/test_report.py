"""``python -m pipeline report DIR``: one HTML file, plots embedded, that a browser opens offline."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from corpus import make_bad_corpus

from pipeline.cli.main import main
from pipeline.views.report import build_report
from pipeline.views.report_plots import bin_size_for, class_counts_over_time, throughput_series

pytestmark = pytest.mark.slow
CHROMIUM = (
    shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
)


@pytest.fixture(scope="module")
def run_with_a_failure(ray_local, tmp_path_factory, clips, model_path):
    root = tmp_path_factory.mktemp("report")
    expected = make_bad_corpus(root / "bad")
    inputs = [
        clips["small_h264"],
        root / "bad" / "no_index.mp4",
        root / "bad" / "faststart_cut_in_half.mp4",
    ]
    out = root / "out"
    code = main(
        [
            "run",
            *map(str, inputs),
            "--output",
            str(out),
            "--model",
            model_path,
            "--device",
            "cpu",
            "--no-progress",
            "--batch-size",
            "4",
            "--track",
            "--conf",
            "0.3",
            "--classes",
            "person,car",
        ]
    )
    assert code == 3
    return out, expected


def images(page: str, kind: str = "png") -> list[bytes]:
    return [
        base64.b64decode(m)
        for m in re.findall(rf'<img src="data:image/{kind};base64,([A-Za-z0-9+/=]+)"', page)
    ]


def test_report_is_one_self_contained_html_file(run_with_a_failure, tmp_path):
    out, _ = run_with_a_failure
    target = tmp_path / "report.html"
    assert main(["report", str(out), "--output", str(target)]) == 0
    page = target.read_text(encoding="utf-8")
    pngs, jpegs = images(page), images(page, "jpeg")
    # class totals, confidence, classes over time, tracks per class, throughput, stages, memory
    assert len(pngs) >= 7 and all(p.startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)
    assert len(jpegs) == 1 and jpegs[0].startswith(b"\xff\xd8")  # the sample frame
    assert page.count("<img") == len(pngs) + len(jpegs)  # every image is embedded
    assert not re.search(r'(src|href)="(?!data:|#)', page)  # no file or network references
    assert "<script" not in page and "<link" not in page


def test_report_shows_every_section_and_the_failed_video(run_with_a_failure):
    out, expected = run_with_a_failure
    page = build_report(out)
    for heading in (
        "Summary",
        "Settings",
        "Videos",
        "Sample frames",
        "Classes",
        "Classes over time",
        "Tracks",
        "Throughput, stages, memory, GPU",
        "Time per stage",
        "Memory per role",
        "GPU",
        "Failures",
    ):
        assert f">{heading}</h" in page, heading
    settings = page[page.index('id="settings"') : page.index('id="videos"')]
    for value in (
        "<td>0.3</td>",
        "<td>0.7</td>",
        "person (0), car (2)",
        "<td>openvino</td>",
        "<td>cpu</td>",
    ):
        assert value in settings, value
    videos_part = page[page.index('id="videos"') : page.index('id="samples"')]
    from pipeline.output.readers import read_videos

    for row in read_videos(out).itertuples():
        assert f"<td>{row.path}</td>" in videos_part  # full paths
        if row.status != "failed":
            assert f"<td>{row.frames_decoded / row.fps:.1f}</td>" in videos_part  # durations
    assert "small_h264.mp4, frame " in page  # the sample frame's caption
    tracks_part = page[page.index('id="tracks"') : page.index('id="run"')]
    assert 'alt="tracks per class"' in tracks_part and "longest tracks" in tracks_part
    assert 'alt="confidence histogram"' in page
    assert "No GPU in this run" in page
    failures = page[page.index('id="failures"') :]
    for name in ("no_index.mp4", "faststart_cut_in_half.mp4"):
        assert name in failures
    assert (
        expected["no_index.mp4"][1] in failures
        and expected["faststart_cut_in_half.mp4"][1] in failures
    )
    assert "small_h264.mp4" in page[page.index('id="videos"') : page.index('id="classes"')]
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
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--hide-scrollbars",
            "--window-size=1280,2400",
            f"--screenshot={shot}",
            report.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
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
    boxes = pd.DataFrame(
        {
            "timestamp_s": [0.0, 0.0, 0.5, 1.0, 1.5, 1.5, 1.5],
            "class_name": ["car", "car", "car", "person", "car", "person", "person"],
        }
    )
    table = class_counts_over_time(boxes, frame_times, ["car", "person"], bin_s=1.0)
    assert table.index.tolist() == [0.0, 1.0, 2.0]
    assert table["car"].tolist() == [1.5, 0.5, 0.0]
    assert table["person"].tolist() == [0.0, 1.5, 0.0]


@pytest.mark.parametrize(
    "duration, expected", [(1.0, 0.1), (10.0, 0.2), (60.0, 1), (3600.0, 60), (1e6, 3600)]
)
def test_bin_size_keeps_plots_readable(duration, expected):
    assert bin_size_for(duration) == expected


def test_throughput_is_smoothed_over_a_window():
    points = [
        {"t_s": float(t), "frames_done": 16 * (t // 2)} for t in range(20)
    ]  # a batch every 2 s
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
    from pipeline.media.source import VideoSource
    from pipeline.output.manifest import Manifest, VideoRecord

    manifest = Manifest(tmp_path)
    manifest.update(
        VideoRecord.failed(
            VideoSource("/v/<img src=x onerror=alert(1)>.mp4", "aaaa"),
            "bad <script>alert(1)</script> header",
            "h",
        )
    )
    manifest.save()
    page = build_report(tmp_path)
    assert "<script>" not in page and "<img src=x" not in page
    assert "&lt;script&gt;" in page and "&lt;img src=x onerror=alert(1)&gt;.mp4" in page
    assert "No run.json" in page and "No detections." in page
    assert "<img" not in page  # no data, no plot: nothing is drawn empty
    (tmp_path / "run.json").write_text(
        json.dumps(
            {
                "settings": {
                    "model": "m.pt",
                    "conf": 0.25,
                    "iou": 0.7,
                    "imgsz": 640,
                    "stride": 1,
                    "batch_size": 16,
                },
                "throughput": {"frames_per_s": 0.0},
                "stage_s": {"decode": 0.0, "infer": 0.0},
                "memory": {},
                "timeline": {"points": []},
                "model": {"device": "cpu"},
            }
        )
    )
    page = build_report(tmp_path)
    assert "<img" not in page and ">Settings</h" in page and "<td>0.25</td>" in page


def test_a_sample_frame_needs_its_source_and_says_when_it_is_gone(run_with_a_failure, tmp_path):
    from pipeline.output.manifest import Manifest

    out, _ = run_with_a_failure
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    manifest = Manifest(copy)
    for record in manifest.records.values():
        record.path = str(tmp_path / "moved" / Path(record.path).name)
        manifest.update(record)
    manifest.save()
    page = build_report(copy)
    assert (
        not images(page, "jpeg")
        and "Source video not readable here" in page
        and "small_h264.mp4" in page
    )


def test_file_names_that_look_like_math_text_are_shown_as_they_are(tmp_path):
    """matplotlib reads $...$ in titles as TeX: a file named like that must not break the report."""
    from pipeline.inference.detections import BatchResult, Detections
    from pipeline.output.manifest import Manifest, VideoRecord
    from pipeline.output.writer import VideoResultWriter

    name = r"price$_$ cam\d 50%.mp4"  # "$_$" alone stops matplotlib's TeX parser
    writer = VideoResultWriter(tmp_path, "vid", {0: "person"})
    idx = np.arange(4)
    writer.add(
        BatchResult(
            "vid",
            0,
            idx,
            idx / 30,
            [1, 1, 1, 1],
            Detections(np.tile([[4.0, 4.0, 20.0, 20.0]], (4, 1)), np.full(4, 0.8), np.zeros(4)),
        )
    )
    writer.commit()
    manifest = Manifest(tmp_path)
    manifest.update(
        VideoRecord(
            "vid",
            f"/videos/{name}",
            "ok",
            frames_processed=4,
            num_detections=4,
            class_counts=writer.class_totals(),
        )
    )
    manifest.save()
    page = build_report(tmp_path)
    assert 'alt="classes over time"' in page and name in page
