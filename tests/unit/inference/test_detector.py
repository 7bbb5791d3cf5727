"""The batch detector against ultralytics' own predict, on real frames of people.mp4."""

import numpy as np
import pytest
import torch

from pipeline.config import ConfigError, RunConfig
from pipeline.inference.detections import Detections
from pipeline.inference.model_ref import ModelLoadError, check_model_available
from pipeline.inference.torch_detector import BatchDetector
from pipeline.media.samples import read_frames


@pytest.fixture(scope="module")
def frames(people_mp4):
    return list(read_frames(people_mp4, limit=5))


@pytest.fixture(scope="module")
def detector(model_path):
    return BatchDetector(model_path, device="cpu", max_batch=4)


def run_batch(detector, images):
    geometry = detector.geometry(*images[0].shape[:2])
    batch = np.stack([geometry.apply(im) for im in images])
    counts, dets = detector.detect(batch, geometry)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    return [dets[offsets[i] : offsets[i + 1]] for i in range(len(images))]


def test_matches_yolo_predict_box_for_box(detector, frames, model_path):
    from ultralytics import YOLO

    reference = YOLO(model_path)
    for image, got in zip(frames[:4], run_batch(detector, frames[:4])):
        want = Detections.from_ultralytics(
            reference.predict(image, conf=0.25, iou=0.7, imgsz=640, verbose=False)[0]
        )
        assert len(got) == len(want) > 5
        order_got = np.lexsort(got.xyxy.T[::-1])
        order_want = np.lexsort(want.xyxy.T[::-1])
        np.testing.assert_allclose(got.xyxy[order_got], want.xyxy[order_want], atol=0.05)
        np.testing.assert_allclose(
            got.confidence[order_got], want.confidence[order_want], atol=1e-3
        )
        np.testing.assert_array_equal(got.class_id[order_got], want.class_id[order_want])


def test_batched_nms_equals_per_image(detector, frames):
    batched = run_batch(detector, frames[:4])
    for image, got in zip(frames[:4], batched):
        (alone,) = run_batch(detector, [image])
        np.testing.assert_allclose(got.xyxy, alone.xyxy, atol=1e-3)
        np.testing.assert_array_equal(got.class_id, alone.class_id)


def test_smaller_batch_after_a_full_one_sees_no_stale_frames(detector, frames):
    """The input buffer is reused: a 1-frame batch after a 4-frame batch must only see its frame."""
    run_batch(detector, frames[:4])
    blank = np.full_like(frames[0], 114)
    (after_full,) = run_batch(detector, [blank])
    assert len(after_full) == 0  # a plain grey frame has nothing in it; stale people would show up
    (again,) = run_batch(detector, [frames[4]])
    assert len(again) > 5


def test_preprocessing_equals_ultralytics(detector, frames):
    from ultralytics.data.augment import LetterBox

    geometry = detector.geometry(*frames[0].shape[:2])
    batch = np.stack([geometry.apply(im) for im in frames[:2]])
    x = detector._to_input(batch).clone()
    expected = [LetterBox((640, 640), auto=True, stride=32)(image=im) for im in frames[:2]]
    expected = torch.from_numpy(np.stack(expected)).permute(0, 3, 1, 2).flip(1).float().div(255)
    torch.testing.assert_close(x, expected)


def test_wrong_input_is_refused(detector):
    g = detector.geometry(480, 640)
    with pytest.raises(ValueError, match="uint8"):
        detector.detect(np.zeros((1, g.out_h, g.out_w, 3), np.float32), g)
    with pytest.raises(ValueError, match="exceeds the preallocated"):
        detector.detect(np.zeros((5, g.out_h, g.out_w, 3), np.uint8), g)


@pytest.mark.parametrize(
    "model, message",
    [
        ("yolo11n.pt", "YOLO_OFFLINE is set"),
        ("weights/missing.pt", "Pass --model PATH"),
        ("nonsense-model", "Pass --model PATH"),
    ],
)
def test_unavailable_model_is_one_clear_line(monkeypatch, tmp_path, model, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match=message) as info:
        check_model_available(model)
    assert "\n" not in str(info.value)


@pytest.mark.needs_cuda
def test_cuda_fp16_path_matches_cpu(model_path, frames):
    cpu = BatchDetector(model_path, device="cpu", max_batch=2)
    gpu = BatchDetector(model_path, device="cuda", max_batch=2)
    assert gpu.half
    for a, b in zip(run_batch(cpu, frames[:2]), run_batch(gpu, frames[:2])):
        assert abs(len(a) - len(b)) <= 1
    before = torch.cuda.memory_allocated()
    for _ in range(5):
        run_batch(gpu, frames[:2])
    assert torch.cuda.memory_allocated() == before


def test_openvino_export_matches_its_own_ultralytics_predict(frames, monkeypatch):
    ov = pytest.importorskip("openvino")
    # Both in f32: OpenVINO's default on CPUs with bf16 units (this VM's) is bf16, which moves
    # confidences by up to 0.03; the pipeline asks for f32.
    compile_model = ov.Core.compile_model

    def in_f32(self, model, device_name=None, config=None):
        return compile_model(
            self, model, device_name or "CPU", {**(config or {}), "INFERENCE_PRECISION_HINT": "f32"}
        )

    monkeypatch.setattr(ov.Core, "compile_model", in_f32)
    from conftest import OPENVINO_MODEL
    from ultralytics import YOLO

    if not OPENVINO_MODEL.exists():
        pytest.skip(f"{OPENVINO_MODEL} not found")
    from pipeline.config import RunConfig
    from pipeline.inference.open import open_detector

    opened = open_detector(RunConfig(model=str(OPENVINO_MODEL), batch_size=4), "cpu")
    detector = opened.detector
    assert opened.engine == "openvino" and "torch" not in type(detector).__module__
    # static square input
    assert not detector.rect and detector.geometry(1080, 1920).out_shape == (
        640,
        640,
    )
    reference = YOLO(str(OPENVINO_MODEL), task="detect")
    for image, got in zip(frames[:3], run_batch(detector, frames[:3])):
        want = Detections.from_ultralytics(reference.predict(image, verbose=False)[0])
        assert len(got) == len(want) > 5
        np.testing.assert_allclose(np.sort(got.confidence), np.sort(want.confidence), atol=1e-3)


@pytest.mark.parametrize(
    "device, engine, granted, expected",
    [
        ("auto", "torch", 0, "cpu"),
        ("auto", "torch", 1, "cpu"),  # a fake GPU (a test's, a mis-set cluster's): not touched
        ("cpu", "torch", 1, "cpu"),
        ("auto", "openvino", 1, "cpu"),  # a lean engine: the CPU, without importing torch
        ("cuda", "torch", 1, ConfigError),  # asked for, and torch sees none here
    ],
)
def test_a_worker_runs_on_cuda_only_when_asked_or_granted_and_torch_sees_one(
    device, engine, granted, expected
):
    import torch

    from pipeline.inference.open import worker_device

    if torch.cuda.is_available():
        pytest.skip("this table is for a machine without CUDA")
    config = RunConfig(model="m.pt", device=device, engine=engine, cpu_threads=1)
    threads = torch.get_num_threads()  # a CPU worker sets torch's: this process's, restored
    try:
        if expected is ConfigError:
            with pytest.raises(ConfigError, match="--device cuda was asked for"):
                worker_device(config, granted)
        else:
            assert worker_device(config, granted) == expected
    finally:
        torch.set_num_threads(threads)
