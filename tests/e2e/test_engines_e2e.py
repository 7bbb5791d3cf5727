"""The engines built from .pt weights, end to end: box parity with ``YOLO.predict``, lean actors
without torch, the cache reused by a second run, and the fallback to torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pipeline.bench.harness import match_boxes

pytestmark = pytest.mark.slow

FRAMES = 48


@pytest.fixture(scope="module")
def predict_boxes(people_mp4, model_path):
    """``YOLO.predict`` on the first frames of people.mp4, with the .pt weights: the reference."""
    from ultralytics import YOLO

    from pipeline.media.samples import read_frames

    model = YOLO(model_path)
    out = []
    for frame in read_frames(people_mp4, limit=FRAMES):
        b = model.predict(frame, imgsz=640, conf=0.25, iou=0.7, verbose=False)[0].boxes
        out.append((b.xyxy.numpy(), b.conf.numpy(), b.cls.numpy().astype(int)))
    return out


@pytest.mark.parametrize("engine", ["openvino", "onnx"])
def test_an_exported_engine_gives_predicts_boxes(
    engine, people_mp4, model_path, predict_boxes, tmp_path
):
    from pipeline.config import RunConfig
    from pipeline.inference.open import open_detector
    from pipeline.media.decode import VideoDecoder, iter_batches

    config = RunConfig(model=model_path, engine=engine, batch_size=16)
    opened = open_detector(config, "cpu", warm_shapes=((384, 640),), cache_dir=tmp_path)
    assert opened.engine == engine and opened.fallback is None
    assert list(opened.export_s) == ["384x640"]
    detector = opened.detector
    geometry = detector.geometry(1080, 1920)
    assert geometry.out_shape == (384, 640)  # the rectangle, not the 640x640 square
    ours = []
    for batch in iter_batches(VideoDecoder(str(people_mp4)), geometry, 16):
        counts, d = detector.detect(batch.frames, geometry)
        start = 0
        for c in counts:
            ours.append(
                (
                    d.xyxy[start : start + c],
                    d.confidence[start : start + c],
                    d.class_id[start : start + c],
                )
            )
            start += c
        if len(ours) >= FRAMES:
            break
    matched, total, worst = match_boxes(predict_boxes, ours[:FRAMES], 0.9)
    fraction = matched / total
    assert total > 500
    assert fraction >= 0.99, f"{engine}: {fraction:.4f} of {total} boxes matched at IoU >= 0.9"
    assert worst <= 0.02, f"{engine}: |Δconf| up to {worst}"


def test_a_lean_detector_never_imports_torch_or_ultralytics(model_path, tmp_path):
    """The actor's code path for OpenVINO, with the engine built in a child process: after
    building, loading and detecting, neither module is in the process."""
    script = f"""
import sys, numpy as np
from pathlib import Path
from pipeline.config import RunConfig
from pipeline.inference.open import open_detector
import pipeline.runtime.video_worker  # what a video worker's process imports
opened = open_detector(RunConfig(model={model_path!r}, engine="openvino"), "cpu", warm_shapes=((384, 640),),
                       cache_dir=Path({str(tmp_path)!r}))
g = opened.detector.geometry(1080, 1920)
opened.detector.detect(np.full((2, 384, 640, 3), 114, np.uint8), g)
print(opened.engine, "torch" in sys.modules, "ultralytics" in sys.modules)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["openvino", "False", "False"]


def _run(videos, output, model, env, *extra):
    videos = [videos] if not isinstance(videos, list) else videos
    command = [
        sys.executable,
        "-m",
        "pipeline",
        "run",
        *map(str, videos),
        "--output",
        str(output),
        "--model",
        model,
        "--device",
        "cpu",
        *extra,
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done, json.loads((output / "run.json").read_text())


def test_a_second_run_reuses_the_cached_engine(clips, model_path, tmp_path):
    """Run 1 builds the 384x640 engine; run 2, on the same output with one more video of another
    size but the same letterbox shape, loads it."""
    env = dict(os.environ, PIPELINE_ENGINE_CACHE=str(tmp_path / "engines"))
    _, first = _run(clips["short_1080p"], tmp_path / "out", model_path, env)
    _, second = _run([clips["short_1080p"], clips["tiny_17"]], tmp_path / "out", model_path, env)
    assert (
        first["totals"]["frames"],
        second["totals"]["frames"],
        second["totals"]["videos_skipped"],
    ) == (24, 17, 1)
    assert first["model"]["engine"] == second["model"]["engine"] == "openvino"
    assert list(first["model"]["engine_export_s"]) == ["384x640"]
    assert second["model"]["engine_export_s"] == {}
    assert len([p for p in (tmp_path / "engines").iterdir() if p.is_dir()]) == 1
    assert first["settings"]["resolved_engine"] == "openvino"
    assert first["settings_hash"] == second["settings_hash"]
    for record in (first, second):
        start = record["startup"]
        assert 0 < start["actors_ready_s"] < start["first_batch_done_s"]
        assert start["actors_ready_to_first_batch_s"] > 0


def test_an_engine_that_cannot_be_built_falls_back_to_torch_with_one_warning(
    clips, model_path, tmp_path
):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    env = dict(os.environ, PIPELINE_ENGINE_CACHE=str(blocker / "engines"))  # cannot be created
    done, record = _run(clips["tiny_17"], tmp_path / "out", model_path, env)
    warnings = [line for line in done.stderr.splitlines() if "engine is not available" in line]
    assert len(warnings) == 1, done.stderr
    assert "using torch" in warnings[0]
    assert record["model"]["engine"] == "torch"
    assert record["settings"]["resolved_engine"] == "torch"
    assert record["totals"]["frames"] == 17 and record["exit_code"] == 0
