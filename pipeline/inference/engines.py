"""Which inference engine a run uses: a pure decision, made once by the driver.

``auto`` picks the fastest engine that gives ``YOLO.predict``'s boxes (FP32 on a CPU, FP16 on a
GPU; never a quantization): OpenVINO on CPU-only nodes, TensorRT on GPU nodes when ``tensorrt``
is importable, otherwise torch. An exported model (an OpenVINO folder, ``.onnx``, ``.engine``) is
its own engine.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import (
    ENGINES,
    SYNTHETIC_ENGINE,
    ConfigError,
    RunConfig,
    engine_for_model,
    engine_traits,
)


def importable(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (cheap enough for the driver)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing_modules(engine: str) -> list[str]:
    """What ``engine`` needs importable on this node and is not."""
    return [m for m in engine_traits(engine).modules if not importable(m)]


@dataclass(frozen=True)
class EngineChoice:
    engine: str  # torch, openvino, onnx, tensorrt (or another format of a given export)
    export: bool  # build it from the .pt weights (else the model is used as it is)
    half: bool  # FP16 (GPU only)


def choose_engine(
    requested: str, model: str, device: str, *, available=importable, local_weights: bool = True
) -> EngineChoice:
    """The engine for ``model`` on a ``device`` ("cpu" or "cuda") node.

    ``available(module)`` says whether a module is importable (a parameter for the tests);
    ``local_weights`` whether ``model`` is a file here (``auto`` exports only from a file: a name
    that ultralytics would download stays on torch).
    Raises ``ConfigError`` for combinations that cannot work (an export asked to be another engine).
    """
    if requested == SYNTHETIC_ENGINE:
        return EngineChoice(SYNTHETIC_ENGINE, export=False, half=False)
    if requested not in ENGINES:
        raise ConfigError(f"--engine must be one of {', '.join(ENGINES)}; got {requested!r}")
    half = device == "cuda"
    given = engine_for_model(model)
    if given != "torch":  # an export: it is its own engine
        if requested not in ("auto", given):
            raise ConfigError(
                f"--engine {requested}: the model {model} is already a {given} export; "
                f"pass the .pt weights to build a {requested} engine, or --engine auto"
            )
        return EngineChoice(given, export=False, half=half)
    if requested == "torch":
        return EngineChoice("torch", export=False, half=half)
    if requested == "auto":
        if not local_weights:
            return EngineChoice("torch", export=False, half=half)
        if device == "cuda":
            requested = "tensorrt" if available("tensorrt") else "torch"
        else:
            requested = "openvino" if available("openvino") else "torch"
        if requested == "torch":
            return EngineChoice("torch", export=False, half=half)
    if requested == "tensorrt" and device != "cuda":
        raise ConfigError(
            "--engine tensorrt needs a GPU node (--device cuda, or auto on a cluster with GPUs)"
        )
    return EngineChoice(requested, export=True, half=half and requested == "tensorrt")


def resolve(config: RunConfig, device: str, *, available=importable) -> RunConfig:
    """``config`` with the device and the engine it will use on ``device`` ("cpu" or "cuda")."""
    choice = choose_engine(
        config.engine,
        config.model,
        device,
        available=available,
        local_weights=Path(config.model).is_file(),
    )
    return config.replace(resolved_device=device, resolved_engine=choice.engine)
