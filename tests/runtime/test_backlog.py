"""A backlog of 2,000 tiny videos: it completes, with the driver's memory and the number of
decoders open at once under their caps."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import read_status

from pipeline.cli.main import main
from pipeline.media.samples import write_video

pytestmark = pytest.mark.slow

VIDEOS = 1000


def test_a_thousand_tiny_videos(ray_local, tmp_path, model_path):
    folder = tmp_path / "backlog"
    folder.mkdir()
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    template = folder / "template.mp4"
    write_video(
        template, [np.roll(base, i, axis=1) for i in range(3)], options={"preset": "ultrafast"}
    )
    data = template.read_bytes()
    template.unlink()
    paths = []
    for i in range(VIDEOS):
        path = folder / f"{i // 100:02d}" / f"v{i:04d}.mp4"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        paths.append(path)
    listing = tmp_path / "backlog.txt"
    listing.write_text("\n".join(str(p) for p in paths))

    out = tmp_path / "out"
    assert (
        main(
            [
                "run",
                f"@{listing}",
                "--output",
                str(out),
                "--model",
                model_path,
                "--imgsz",
                "64",
                "--batch-size",
                "4",
                "--max-open-videos",
                "2",
                "--no-progress",
                "--quiet",
            ]
        )
        == 0
    )
    record = json.loads((out / "run.json").read_text())
    status = read_status(out)
    assert len(status) == VIDEOS and all(
        s["status"] == "ok" and s["frames_processed"] == 3 for s in status.values()
    )
    assert record["totals"]["frames"] == 3 * VIDEOS
    peak_decoders = record["backpressure"]["peak_open_decoders"]
    driver_peak_mib = record["memory"]["driver"]["peak_bytes"] / 2**20
    coordinator_growth_mib = (
        record["memory"]["coordinator"]["last_bytes"]
        - record["memory"]["coordinator"]["warm_bytes"]
    ) / 2**20
    print(
        f"decoders open at once: {peak_decoders} (cap 2); driver peak RSS {driver_peak_mib:.0f} MiB; "
        f"coordinator growth after warm-up {coordinator_growth_mib:.1f} MiB; {record['throughput']}"
    )
    assert 1 <= peak_decoders <= 2
    assert record["backpressure"]["peak_batches_in_flight"] <= record["backpressure"]["limit"]
    # The driver holds one small record per video; the pytest process it runs in carries torch
    # and ultralytics from other tests, so the bound is on growth during the run.
    assert (
        record["memory"]["driver"]["peak_bytes"] - record["memory"]["driver"]["start_bytes"]
    ) / 2**20 < 100
    assert coordinator_growth_mib < 100


def test_a_list_longer_than_the_look_ahead_is_fed_to_the_run_as_it_is_walked(
    ray_local, tmp_path, model_path, monkeypatch
):
    """The real video is on the list's first line and 2,999 missing files follow: planning looks
    at 25 of them, the driver hands the rest over 40 at a time, and every line ends in
    videos.parquet (one ok, the others failed), counted once in run.json."""
    import pipeline.plan.planning as planning
    from pipeline.runtime.driver import _BacklogFeeder

    monkeypatch.setattr(planning, "HEAD_VIDEOS", 25)
    monkeypatch.setattr(_BacklogFeeder, "CHUNK", 40)
    real = tmp_path / "real.mp4"
    rng = np.random.default_rng(1)
    write_video(real, [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(6)])
    listing = tmp_path / "backlog.txt"
    listing.write_text(
        "\n".join([str(real), *(f"/nonexistent/clip-{i:05d}.mp4" for i in range(1, 3000))]) + "\n"
    )
    out = tmp_path / "out"
    code = main(
        [
            "run",
            f"@{listing}",
            "--output",
            str(out),
            "--model",
            model_path,
            "--imgsz",
            "64",
            "--batch-size",
            "4",
            "--no-progress",
            "--quiet",
        ]
    )
    assert code == 3  # the missing files failed
    status = read_status(out)
    assert len(status) == 3000
    assert sorted(s["status"] for s in status.values()).count("ok") == 1
    assert status[os.path.realpath(real)]["frames_processed"] == 6
    totals = json.loads((out / "run.json").read_text())["totals"]
    assert (
        totals["videos"],
        totals["videos_ok"],
        totals["videos_failed"],
        totals["videos_skipped"],
    ) == (3000, 1, 2999, 0)
