"""Open the detector a run's engine calls for, Ray-free (the ``YoloActor`` and the service call it).

Exported engines load without torch (``pipeline.inference.lean_detector``); TensorRT and torch go through
ultralytics' ``AutoBackend`` (``pipeline.inference.torch_detector``). An engine that cannot be built or loaded from
``.pt`` weights falls back to torch: the run goes on, and ``fallback`` says why, for one warning.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import (
    SYNTHETIC_ENGINE,
    ConfigError,
    RunConfig,
    engine_for_model,
    engine_traits,
)
from pipeline.inference.detector import Detector
from pipeline.inference.engine_cache import ExportError, ensure_engine
from pipeline.inference.engines import choose_engine
from pipeline.inference.export import TENSORRT_MAX_BATCH
from pipeline.inference.model_ref import ModelLoadError

Shape = tuple[int, int]


@dataclass
class OpenedDetector:
    detector: Detector
    engine: str  # the engine actually used
    # shape -> seconds, engines built by this call
    export_s: dict[str, float] = field(default_factory=dict)
    fallback: str | None = None  # why the engine asked for was not used


def worker_device(config: RunConfig, granted_gpus: int) -> str:
    """``cuda`` or ``cpu``: where a video worker's detector runs. CUDA only when it was asked
    for (``--device cuda``, or ``auto`` with a GPU granted by the scheduler) and torch really
    sees one: fake GPUs in tests, and a mis-set cluster, must not make a worker touch CUDA.
    OpenVINO and ONNX workers never import torch (their memory stays lean): the CPU, without
    asking. On the CPU, torch gets the worker's threads (``--cpu-threads``)."""
    if not engine_traits(config.effective_engine).needs_torch:
        return "cpu"
    import torch

    use_cuda = config.device == "cuda" or (config.device == "auto" and granted_gpus > 0)
    if use_cuda and not torch.cuda.is_available():
        if config.device == "cuda":
            raise ConfigError(
                "--device cuda was asked for, but CUDA is not available on this node "
                "(use --device auto or cpu)"
            )
        use_cuda = False
    if not use_cuda:
        torch.set_num_threads(config.cpu_threads or os.cpu_count() or 1)
    return "cuda" if use_cuda else "cpu"


def open_detector(
    config: RunConfig,
    device: str,
    *,
    warm_shapes: tuple[Shape, ...] = (),
    cache_dir: Path | None = None,
) -> OpenedDetector:
    """The warmed detector for ``config`` on ``device`` ("cpu" or "cuda")."""
    engine = config.resolved_engine or choose_engine(config.engine, config.model, device).engine
    common: dict[str, Any] = dict(
        imgsz=config.imgsz,
        conf=config.conf,
        iou=config.iou,
        classes=config.classes,
        max_det=config.max_det,
        max_batch=config.batch_size,
    )
    given = engine_for_model(config.model)
    if engine == SYNTHETIC_ENGINE:
        from pipeline.inference.synthetic import SyntheticDetector

        detector = SyntheticDetector(imgsz=config.imgsz, latency_ms=config.synthetic_latency_ms)
        return OpenedDetector(detector, engine)
    try:
        if engine_traits(engine).lean:
            return _open_lean(config, engine, given == engine, warm_shapes, cache_dir, common)
        if engine == "tensorrt" and given != "tensorrt":
            return _build_tensorrt(config, device, warm_shapes, cache_dir, common)
    except (ExportError, ModelLoadError, ImportError, OSError) as exc:
        if given != "torch":  # a given export that does not load: nothing to fall back to
            raise ModelLoadError(str(exc)) from exc
        reason = f"the {engine} engine is not available ({exc}); using torch"
        # Not logged here: an actor's log lines reach the user's terminal once per actor; the
        # driver prints the reason once.
        return OpenedDetector(
            _torch_detector(config.model, device, common), "torch", fallback=reason
        )
    detector = _torch_detector(config.model, device, common)
    return OpenedDetector(detector, detector.engine)


def _open_lean(config: RunConfig, engine: str, given: bool, warm_shapes, cache_dir, common: dict):
    """OpenVINO or ONNX Runtime, without torch: the export given as ``--model``, or one built
    from the weights (cached per node)."""
    from pipeline.inference.lean_detector import ExportedOnDemand, GivenExport, LeanDetector

    source: GivenExport | ExportedOnDemand
    if given:
        source = GivenExport(Path(config.model))
    else:
        source = ExportedOnDemand(Path(config.model), engine, cache_dir=cache_dir)
    detector = LeanDetector(
        source, engine, warm_shapes=warm_shapes, precision=config.cpu_precision, **common
    )
    return OpenedDetector(detector, engine, detector.export_s)


def _build_tensorrt(config: RunConfig, device: str, warm_shapes, cache_dir, common: dict):
    """A TensorRT engine built from the weights for the first videos' shape (cached per node)."""
    if config.batch_size > TENSORRT_MAX_BATCH:
        raise ExportError(
            f"--batch-size {config.batch_size} is above the {TENSORRT_MAX_BATCH} "
            "the TensorRT engine is built for"
        )
    if not warm_shapes:
        raise ExportError("a TensorRT engine is built for the videos' shape, and none is known yet")
    # the engine's batch and shape are dynamic: this one is what it is tuned for
    (h, w) = warm_shapes[0]
    built = ensure_engine(config.model, "tensorrt", (h, w), half=True, cache_dir=cache_dir)
    export_s = {f"{h}x{w}": built.export_s} if built.export_s is not None else {}
    detector = _torch_detector(str(built.path / "model.engine"), device, common)
    return OpenedDetector(detector, "tensorrt", export_s)


def _torch_detector(model: str, device: str, common: dict):
    from pipeline.inference.torch_detector import BatchDetector

    return BatchDetector(model, device=device, **common)
