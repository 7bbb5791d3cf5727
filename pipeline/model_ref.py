"""Where the model comes from, checked without importing torch (the driver stays light)."""

from __future__ import annotations

import os
from pathlib import Path

ULTRALYTICS_NAMES_HINT = ("yolo", "rtdetr")


class ModelLoadError(Exception):
    """The model cannot be loaded; the message says what to pass instead."""


def model_fingerprint(model: str) -> str:
    """Size and mtime of a local model file or directory, so that a changed model reprocesses videos."""
    path = Path(model)
    if not path.exists():
        return ""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)


def check_model_available(model: str) -> None:
    """Fail early, with one clear line, when the weights are neither on disk nor downloadable."""
    if Path(model).exists():
        return
    looks_like_path = os.sep in model or model.startswith(".")
    is_known_name = Path(model).name.startswith(ULTRALYTICS_NAMES_HINT) and Path(model).suffix == ".pt"
    if looks_like_path or not is_known_name:
        raise ModelLoadError(f"model not found: {model}. Pass --model PATH to a .pt file or an exported model directory")
    if os.environ.get("YOLO_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise ModelLoadError(
            f"model {model} is not on disk and YOLO_OFFLINE is set, so it cannot be downloaded. "
            "Pass --model PATH to local weights"
        )


