"""The GPU kit: the engine, the decoder and the per-frame loop measured without Ray, on a bare GPU
machine (torch, pyarrow, psutil, opencv-headless and nvidia-ml-py; ultralytics and PyAV come as
carried wheels, see jobs/gpu_kit.sh).

- the batch detector (torch, fp16 on CUDA; TensorRT too when ``tensorrt`` is importable) at each
  batch size, for yolo11n and yolo11l: images/s, NVML utilization while it runs, and the drift of
  ``torch.cuda.memory_allocated`` over the measurement;
- decoding 1080p H.264 into letterboxed batches with PyAV's threads (the pipeline's decoder), and
  with NVDEC when PyAV's FFmpeg offers CUDA decoding;
- the per-frame ``YOLO.predict`` loop on the same device.

    bash jobs/gpu_kit.sh run .whl --video people.mp4 --json gpu_bench.json
    python jobs/gpu_bench.py --device cpu --batches 1,2 --frames 8 --models yolo11n.yaml   # smoke test

``yolo11l.yaml`` builds the large model with random weights: the same cost as trained ones, and
nothing to download. A checkpoint path works as well.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pipeline.inference.torch_detector import BatchDetector  # noqa: E402
from pipeline.media.samples import read_frames  # noqa: E402
from pipeline.runtime.monitoring import GpuSampler  # noqa: E402


def _model_path(spec: str, workdir: Path) -> str:
    """A .yaml becomes a random-weight checkpoint the detector can load like any .pt."""
    if not spec.endswith(".yaml"):
        return spec
    from ultralytics import YOLO

    path = workdir / (Path(spec).stem + "-random.pt")
    if not path.exists():
        model = YOLO(spec)
        model.model.names = {i: str(i) for i in range(80)}
        model.save(str(path))
    return str(path)


class UtilizationProbe:
    def __init__(self):
        self.sampler = GpuSampler()
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.1):
            for s in self.sampler.sample():
                self.samples.append(s.utilization_percent)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def mean(self) -> float | None:
        return statistics.mean(self.samples) if self.samples else None


def bench_engine(
    model: str, frames: list[np.ndarray], batch: int, device: str, seconds: float
) -> dict:
    detector = BatchDetector(model, device=device, max_batch=batch)
    return _time_detector(detector, frames, batch, device, seconds)


def _time_detector(
    detector, frames: list[np.ndarray], batch: int, device: str, seconds: float
) -> dict:
    geometry = detector.geometry(*frames[0].shape[:2])
    batches = [
        np.stack([geometry.apply(f) for f in frames[i : i + batch]])
        for i in range(0, len(frames) - batch + 1, batch)
    ]
    batches = batches or [np.stack([geometry.apply(frames[i % len(frames)]) for i in range(batch)])]
    for b in batches[:2]:
        detector.detect(b, geometry)
    if device == "cuda":
        torch.cuda.synchronize()
        allocated_before = torch.cuda.memory_allocated()
    images = 0
    with UtilizationProbe() as probe:
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            for b in batches:
                detector.detect(b, geometry)
                images += len(b)
        elapsed = time.perf_counter() - started
    result = {
        "batch": batch,
        "images_per_s": images / elapsed,
        "gpu_util_mean_percent": probe.mean,
        "half": detector.half,
        "engine": detector.engine,
    }
    if device == "cuda":
        result["memory_allocated_growth_bytes"] = torch.cuda.memory_allocated() - allocated_before
    return result


def bench_loop(model: str, frames: list[np.ndarray], device: str, seconds: float) -> dict:
    from ultralytics import YOLO

    yolo = YOLO(model, task="detect")
    fp16 = {"quantize": 16} if device == "cuda" else {}  # ultralytics' fp16 switch
    yolo.predict(frames[0], device=device, verbose=False, **fp16)
    images = 0
    with UtilizationProbe() as probe:
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            for f in frames:
                yolo.predict(f, device=device, verbose=False, **fp16)
                images += 1
        elapsed = time.perf_counter() - started
    return {"images_per_s": images / elapsed, "gpu_util_mean_percent": probe.mean}


def bench_tensorrt(
    model: str, frames: list[np.ndarray], batches: list[int], seconds: float
) -> list[dict]:
    """The TensorRT engine the pipeline's ``--engine auto`` builds on a GPU node, when it can."""
    from pipeline.inference.engine_cache import ensure_engine
    from pipeline.media.letterbox import LetterboxGeometry

    shape = LetterboxGeometry.for_source(*frames[0].shape[:2], 640, stride=32).out_shape
    try:
        built = ensure_engine(model, "tensorrt", shape, half=True)
    except Exception as exc:
        return [{"error": f"{type(exc).__name__}: {exc}"}]
    results = []
    for batch in batches:
        detector = BatchDetector(str(built.path / "model.engine"), device="cuda", max_batch=batch)
        results.append(
            dict(_time_detector(detector, frames, batch, "cuda", seconds), export_s=built.export_s)
        )
    return results


def bench_decode(video: str, seconds_cap: float = 60.0) -> dict:
    """Frames/s of 1080p decoding: the pipeline's decoder (PyAV threads, BGR, letterbox into batches
    of 16), and NVDEC through PyAV's CUDA hwaccel when its FFmpeg has it."""
    import av

    from pipeline.media.decode import VideoDecoder, iter_batches
    from pipeline.media.letterbox import LetterboxGeometry

    out = {"pyav_version": av.__version__, "cpus": os.cpu_count()}
    decoder = VideoDecoder(video)
    geometry = LetterboxGeometry.for_source(decoder.info.height, decoder.info.width, 640, stride=32)
    started, frames = time.perf_counter(), 0
    for batch in iter_batches(decoder, geometry, 16):
        frames += len(batch.frame_indices)
    out["pyav_threads_letterboxed_fps"] = frames / (time.perf_counter() - started)
    out["frames"] = frames
    try:
        from av.codec.hwaccel import HWAccel, hwdevices_available

        out["hwdevices"] = list(hwdevices_available())
        if "cuda" not in out["hwdevices"]:
            raise RuntimeError("PyAV's FFmpeg has no CUDA device type")
        with av.open(
            video, hwaccel=HWAccel(device_type="cuda", allow_software_fallback=False)
        ) as container:
            stream = container.streams.video[0]
            started, n = time.perf_counter(), 0
            for frame in container.decode(stream):
                # downloaded and converted, as the pipeline needs it
                frame.to_ndarray(format="bgr24")
                n += 1
                if time.perf_counter() - started > seconds_cap:
                    break
            out["nvdec_bgr_fps"] = n / (time.perf_counter() - started)
    except Exception as exc:  # no NVDEC in this FFmpeg, no driver support...
        out["nvdec_error"] = f"{type(exc).__name__}: {exc}"
    return out


def targets(entry: dict) -> dict:
    """The kit's targets at batch >= 16: the engine at least 10x the per-frame loop, the GPU at
    least 80 % busy (None where NVML gave no reading, e.g. on the CPU)."""
    big = [r for r in entry["engine"] if r["batch"] >= 16]
    if not big:
        return {"measured": False}
    best = max(big, key=lambda r: r["images_per_s"])
    util = best["gpu_util_mean_percent"]
    return {
        "batch": best["batch"],
        "speedup_vs_loop": best["speedup_vs_loop"],
        "engine_10x_loop": best["speedup_vs_loop"] >= 10,
        "gpu_util_mean_percent": util,
        "gpu_80_percent_busy": None if util is None else util >= 80,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--video",
        default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "people.mp4"),
    )
    parser.add_argument("--models", default="yolo11n.yaml,yolo11l.yaml")
    parser.add_argument("--batches", default="1,8,16,32,64")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=8.0, help="time per measurement")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default="gpu_bench.json")
    args = parser.parse_args()
    os.environ.setdefault("YOLO_OFFLINE", "1")
    frames = list(read_frames(args.video, limit=args.frames))
    workdir = Path(args.json).resolve().parent
    card = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    report = {
        "device": card,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "ray_installed": importlib.util.find_spec("ray") is not None,
        "models": {},
    }
    report["decode"] = bench_decode(args.video)
    print(f"decode: {report['decode']}", flush=True)
    batches = [int(b) for b in args.batches.split(",")]
    for spec in args.models.split(","):
        model = _model_path(spec, workdir)
        entry = {
            "engine": [],
            "per_frame_loop": bench_loop(model, frames, args.device, args.seconds),
        }
        print(f"{spec} per-frame loop: {entry['per_frame_loop']}", flush=True)
        for batch in batches:
            r = bench_engine(model, frames, batch, args.device, args.seconds)
            r["speedup_vs_loop"] = r["images_per_s"] / entry["per_frame_loop"]["images_per_s"]
            entry["engine"].append(r)
            print(f"{spec} engine: {r}", flush=True)
        if args.device == "cuda":
            if importlib.util.find_spec("tensorrt"):
                entry["tensorrt"] = bench_tensorrt(model, frames, batches, args.seconds)
            else:
                entry["tensorrt"] = [{"error": "tensorrt is not installed"}]
            print(f"{spec} tensorrt: {entry['tensorrt']}", flush=True)
        report["models"][spec] = entry
        report.setdefault("targets", {})[spec] = targets(entry)
        print(f"{spec} targets: {report['targets'][spec]}", flush=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"written {args.json} ({card})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
