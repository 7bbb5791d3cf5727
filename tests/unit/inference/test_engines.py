"""Engines: the choice, the per-node cache (one build under concurrency, no half engines), the numpy
NMS against ultralytics', and the lean OpenVINO detector against ``YOLO.predict`` on people.mp4."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import ConfigError, RunConfig
from pipeline.inference.engine_cache import EngineKey, ExportError, ensure_engine
from pipeline.inference.engines import choose_engine, resolve
from pipeline.inference.nms import non_max_suppression

# ---- the choice ------------------------------------------------------------------------------


def _available(*modules):
    return lambda m: m in modules


@pytest.mark.parametrize(
    "requested, model, device, modules, engine, export, half",
    [
        ("auto", "m.pt", "cpu", ("openvino",), "openvino", True, False),
        ("auto", "m.pt", "cpu", (), "torch", False, False),
        ("auto", "m.pt", "cuda", ("tensorrt", "openvino"), "tensorrt", True, True),
        ("auto", "m.pt", "cuda", ("openvino",), "torch", False, True),
        ("torch", "m.pt", "cpu", ("openvino",), "torch", False, False),
        ("onnx", "m.pt", "cpu", (), "onnx", True, False),
        ("auto", "m_openvino_model", "cpu", (), "openvino", False, False),
        ("openvino", "dir/m_openvino_model/", "cuda", (), "openvino", False, True),
        ("auto", "m.onnx", "cpu", (), "onnx", False, False),
        ("auto", "m.engine", "cuda", (), "tensorrt", False, True),
    ],
)
def test_choose_engine(requested, model, device, modules, engine, export, half):
    choice = choose_engine(requested, model, device, available=_available(*modules))
    assert (choice.engine, choice.export, choice.half) == (engine, export, half)


@pytest.mark.parametrize(
    "requested, model, device, message",
    [
        ("torch", "m_openvino_model", "cpu", "already a openvino export"),
        ("onnx", "m.engine", "cuda", "already a tensorrt export"),
        ("tensorrt", "m.pt", "cpu", "needs a GPU"),
        ("fast", "m.pt", "cpu", "--engine must be one of"),
    ],
)
def test_choose_engine_refuses_what_cannot_work(requested, model, device, message):
    with pytest.raises(ConfigError, match=message):
        choose_engine(requested, model, device, available=_available("openvino", "tensorrt"))


def test_auto_keeps_a_name_to_download_on_torch():
    assert (
        choose_engine(
            "auto", "yolo11n.pt", "cpu", available=_available("openvino"), local_weights=False
        ).engine
        == "torch"
    )
    assert (
        choose_engine(
            "openvino", "yolo11n.pt", "cpu", available=_available("openvino"), local_weights=False
        ).engine
        == "openvino"
    )


def test_the_settings_hash_follows_the_engine_used(tmp_path):
    weights = tmp_path / "m.pt"
    weights.write_bytes(b"")
    config = RunConfig(model=str(weights))
    on_openvino = resolve(config, "cpu", available=_available("openvino"))
    on_torch = resolve(config, "cpu", available=_available())
    assert on_openvino.result_settings()["engine"] == "openvino"
    assert on_torch.result_settings()["engine"] == "torch"
    assert on_openvino.settings_hash() != on_torch.settings_hash()
    assert (
        on_openvino.settings_hash()
        == resolve(config.replace(engine="openvino"), "cpu").settings_hash()
    )
    assert resolve(config, "cuda", available=_available()).result_settings()["half"] is True
    assert on_openvino.result_settings()["half"] is False
    with pytest.raises(ConfigError, match="--engine"):
        RunConfig(engine="fastest")


# ---- NMS ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("classes", [None, [0, 2]])
def test_numpy_nms_equals_ultralytics(seed, classes):
    import torch
    from ultralytics.utils.nms import non_max_suppression as reference

    rng = np.random.default_rng(seed)
    batch, nc, anchors = 3, 5, 600
    xy = rng.uniform(0, 640, (batch, 2, anchors))
    wh = rng.uniform(4, 120, (batch, 2, anchors))
    scores = rng.uniform(0, 1, (batch, nc, anchors)) ** 4  # mostly low, some confident
    scores[1] = 0.01  # an image with no candidate
    preds = np.concatenate([xy, wh, scores], axis=1).astype(np.float32)
    ours = non_max_suppression(preds, 0.25, 0.5, classes, max_det=50)
    theirs = reference(torch.from_numpy(preds.copy()), 0.25, 0.5, classes, False, max_det=50)
    assert sum(len(o) for o in ours) > 20
    for mine, ref in zip(ours, theirs):
        np.testing.assert_array_equal(mine, ref.numpy())


# ---- the cache ---------------------------------------------------------------------------------


def _fake_export(seconds: float, record: Path | None = None):
    def export(model: Path, key: EngineKey, into: Path) -> None:
        if record is not None:
            with open(record, "a") as f:
                f.write(f"{os.getpid()}\n")
        time.sleep(seconds)
        into.mkdir()
        (into / "model.xml").write_text(key.name)

    return export


def _ensure_in_process(weights, cache, record, barrier, results):
    barrier.wait()
    built = ensure_engine(
        weights, "openvino", (384, 640), cache_dir=cache, exporter=_fake_export(1.0, record)
    )
    results.put((str(built.path), built.export_s is not None))


def test_actors_starting_together_build_the_engine_once(tmp_path):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"weights")
    record = tmp_path / "exports.txt"
    ctx = mp.get_context("fork")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    workers = [
        ctx.Process(
            target=_ensure_in_process, args=(weights, tmp_path / "cache", record, barrier, results)
        )
        for _ in range(4)
    ]
    for w in workers:
        w.start()
    answers = [results.get(timeout=60) for _ in workers]
    for w in workers:
        w.join()
    assert len(record.read_text().split()) == 1  # one export
    assert len({path for path, _ in answers}) == 1
    assert sum(built for _, built in answers) == 1  # the others found it
    assert Path(answers[0][0], "model.xml").exists()


def test_the_cache_key_changes_with_content_shape_and_precision(tmp_path):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"one")
    a = EngineKey.for_model(weights, "openvino", (384, 640), False)
    assert EngineKey.for_model(weights, "openvino", (480, 640), False).name != a.name
    assert EngineKey.for_model(weights, "openvino", (384, 640), True).name != a.name
    assert EngineKey.for_model(weights, "onnx", (384, 640), False).name != a.name
    weights.write_bytes(b"two")  # same name, other content
    assert EngineKey.for_model(weights, "openvino", (384, 640), False).name != a.name
    assert "ultralytics" in a.name and a.engine_version != "none"


def test_an_export_that_dies_leaves_no_engine_and_the_next_one_builds(tmp_path):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"weights")
    cache = tmp_path / "cache"

    def dies_halfway(model, key, into):
        into.mkdir()
        (into / "model.xml").write_text("half")
        raise ExportError("killed")

    with pytest.raises(ExportError, match="killed"):
        ensure_engine(weights, "openvino", (384, 640), cache_dir=cache, exporter=dies_halfway)
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []
    built = ensure_engine(
        weights, "openvino", (384, 640), cache_dir=cache, exporter=_fake_export(0)
    )
    assert built.export_s is not None and (built.path / "model.xml").read_text() != "half"


def test_a_build_killed_from_outside_is_cleaned_up_by_the_next(tmp_path):
    """SIGKILL at a random moment of the export: no entry appears; the next build succeeds."""
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"weights")
    cache = tmp_path / "cache"
    script = (
        "import sys, time; from pathlib import Path; from pipeline.inference.engine_cache import ensure_engine\n"
        "def slow(model, key, into):\n"
        "    into.mkdir(); (into / 'model.xml').write_text('partial'); time.sleep(60)\n"
        f"ensure_engine(Path({str(weights)!r}), 'openvino', (384, 640), "
        f"cache_dir=Path({str(cache)!r}), exporter=slow)\n"
    )
    rng = np.random.default_rng(7)
    for _ in range(3):
        child = subprocess.Popen([sys.executable, "-c", script])
        deadline = time.monotonic() + 30
        while not any(cache.glob(".building-*/engine/model.xml")) if cache.exists() else True:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(float(rng.uniform(0, 0.5)))
        child.kill()
        child.wait()
        assert not [
            p
            for p in cache.iterdir()
            if not p.name.startswith(".") and not p.name.endswith(".lock")
        ]
    built = ensure_engine(
        weights, "openvino", (384, 640), cache_dir=cache, exporter=_fake_export(0)
    )
    assert built.export_s is not None
    assert [p.name for p in cache.iterdir() if p.name.startswith(".building-")] == []


def test_weights_that_are_not_a_local_file_are_an_export_error(tmp_path):
    with pytest.raises(ExportError, match="not a local weights file"):
        ensure_engine("yolo11n.pt", "openvino", (384, 640), cache_dir=tmp_path)


# ---- falling back ------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size, error", [(16, "no tensorrt here"), (128, "above the 64")])
def test_an_engine_that_cannot_be_built_falls_back_to_torch(
    monkeypatch, model_path, batch_size, error
):
    """TensorRT's branch, without TensorRT: the build fails (or the batch is too large for the
    engine) and the detector is torch's, with the reason kept for the driver's one warning."""
    from pipeline.inference import open as opening

    def no_tensorrt(*args, **kwargs):
        raise ExportError("no tensorrt here")

    monkeypatch.setattr(opening, "ensure_engine", no_tensorrt)
    config = RunConfig(model=model_path, batch_size=batch_size, resolved_engine="tensorrt")
    opened = opening.open_detector(config, "cpu", warm_shapes=((384, 640),))
    assert opened.engine == "torch" and opened.detector.engine == "torch"
    assert error in opened.fallback and opened.fallback.endswith("using torch")


def test_the_synthetic_engine_gives_the_same_boxes_on_every_frame_in_source_pixels():
    import numpy as np

    from pipeline.inference.synthetic import SyntheticDetector

    detector = SyntheticDetector(imgsz=160)
    geometry = detector.geometry(96, 160)
    counts, boxes = detector.detect(np.zeros((3, *geometry.out_shape, 3), np.uint8), geometry)
    assert counts.tolist() == [5, 5, 5] and len(boxes) == 15
    assert (
        np.array_equal(boxes.xyxy[:5], boxes.xyxy[10:])
        and (boxes.confidence == np.float32(0.9)).all()
    )
    wide = detector.geometry(1080, 1920)  # boxes come back in the source frame's pixels
    _, scaled = detector.detect(np.zeros((1, *wide.out_shape, 3), np.uint8), wide)
    assert (wide.left, wide.top, wide.new_w / 1920) == (0, 3, 1 / 12)  # 160x90 padded to 160x96
    expected = (boxes.xyxy[:5] - [0, 3, 0, 3]) * 12
    assert np.allclose(scaled.xyxy, expected, atol=1e-3)


def test_the_synthetic_engine_holds_each_batch_a_plus_b_per_frame_with_the_gil_released():
    """A simulated GPU: 20 + 2·n ms a batch; four threads' batches are held at once, as a GPU's
    waits are (holding the GIL, they would take four times as long)."""
    import threading

    from pipeline.inference.open import open_detector

    config = RunConfig(model="none", engine="synthetic", imgsz=160, synthetic_latency_ms=(20, 2))
    detector = open_detector(config, "cpu").detector
    geometry = detector.geometry(96, 160)
    frames = np.zeros((10, *geometry.out_shape, 3), np.uint8)
    started = time.perf_counter()
    counts, _ = detector.detect(frames, geometry)
    assert time.perf_counter() - started >= 0.040  # 20 + 2 * 10 ms
    assert counts.tolist() == [5] * 10
    threads = [threading.Thread(target=detector.detect, args=(frames, geometry)) for _ in range(4)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert time.perf_counter() - started < 0.120  # not 4 x 40 ms
    with pytest.raises(ConfigError, match="synthetic_latency_ms"):
        RunConfig(model="none", engine="synthetic", synthetic_latency_ms=(-1, 0))
