"""Exported engines, cached on each node.

An entry is a folder named by everything that changes the engine: the weights' content hash, the
input shape, the engine and precision, and the versions of the engine and of ultralytics (whose
exporter wrote it). It is built once per node even when several actors start together (an
``flock`` per entry, which the kernel frees however its holder ends), into a temporary folder
renamed into place when complete, so a crash mid-export leaves no half engine, only a temporary
folder that the next build removes.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CACHE_ENV = "PIPELINE_ENGINE_CACHE"
TEMP_PREFIX = ".building-"
EXPORT_TIMEOUT_S = 900.0  # a TensorRT build of a large model takes minutes


class ExportError(Exception):
    """The engine could not be built; the message is one line (the exporter's last words)."""


def default_cache_dir() -> Path:
    """``$PIPELINE_ENGINE_CACHE``, else ``$XDG_CACHE_HOME/yolo-ray-pipeline/engines`` (``~/.cache`` by default)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "yolo-ray-pipeline" / "engines"


def _version(*distributions: str) -> str:
    for name in distributions:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "none"


def engine_version(engine: str) -> str:
    if engine == "openvino":
        return _version("openvino")
    if engine == "onnx":
        return _version("onnxruntime", "onnxruntime-gpu") + "+onnx" + _version("onnx")
    if engine == "tensorrt":
        return _version("tensorrt", "tensorrt-cu12", "tensorrt-cu13")
    return "none"


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class EngineKey:
    model_sha256: str
    engine: str
    height: int
    width: int
    half: bool
    engine_version: str
    ultralytics_version: str

    @classmethod
    def for_model(cls, model: Path, engine: str, shape: tuple[int, int], half: bool) -> EngineKey:
        return cls(
            file_digest(model),
            engine,
            shape[0],
            shape[1],
            half,
            engine_version(engine),
            _version("ultralytics"),
        )

    @property
    def name(self) -> str:
        precision = "fp16" if self.half else "fp32"
        return (
            f"{self.model_sha256[:16]}-{self.engine}-{self.height}x{self.width}-{precision}"
            f"-{self.engine}{self.engine_version}-ultralytics{self.ultralytics_version}"
        )


@dataclass(frozen=True)
class CachedEngine:
    path: Path  # the engine folder (OpenVINO) or file (.onnx, .engine) inside the cache entry
    export_s: float | None  # seconds this call spent building it; None when it was in the cache


Exporter = Callable[[Path, EngineKey, Path], None]  # (weights, key, empty folder to export into)


def export_in_child(model: Path, key: EngineKey, into: Path) -> None:
    """Run ``pipeline.inference.export`` in a child process: torch and ultralytics are loaded there,
    never in the actor that asked (whose memory stays lean)."""
    command = [
        sys.executable,
        "-m",
        "pipeline.inference.export",
        str(model),
        "--engine",
        key.engine,
        "--height",
        str(key.height),
        "--width",
        str(key.width),
        "--output",
        str(into),
    ]
    if key.half:
        command.append("--half")
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=EXPORT_TIMEOUT_S,
            env=dict(os.environ, YOLO_VERBOSE="False"),
        )
    except subprocess.TimeoutExpired:
        raise ExportError(
            f"the {key.engine} export did not finish within {EXPORT_TIMEOUT_S:.0f} s"
        ) from None
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).strip().splitlines() if line.strip()]
        raise ExportError(
            lines[-1].strip() if lines else f"the exporter exited with status {done.returncode}"
        )


def _engine_in(entry: Path) -> Path:
    target = entry / "engine"
    if not target.exists():
        raise ExportError(f"cache entry {entry} holds no engine")
    return target


def ensure_engine(
    model: str | Path,
    engine: str,
    shape: tuple[int, int],
    *,
    half: bool = False,
    cache_dir: Path | None = None,
    exporter: Exporter = export_in_child,
) -> CachedEngine:
    """The cached ``engine`` for ``model`` at input ``shape`` (height, width), built if missing.

    Concurrent callers on one node (processes or threads) build it once: the others wait on the
    entry's lock and then find it. Raises ``ExportError`` when it cannot be built.
    """
    model = Path(model)
    if not model.is_file():
        raise ExportError(f"{model} is not a local weights file")
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    key = EngineKey.for_model(model, engine, shape, half)
    entry = cache_dir / key.name
    if entry.exists():  # the common case: no lock needed, entries appear by an atomic rename
        return CachedEngine(_engine_in(entry), None)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / f"{key.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # blocks while another process builds this entry
        if entry.exists():
            return CachedEngine(_engine_in(entry), None)
        for stale in cache_dir.glob(f"{TEMP_PREFIX}{key.name}-*"):  # left by a build that died
            shutil.rmtree(stale, ignore_errors=True)
        temp = cache_dir / f"{TEMP_PREFIX}{key.name}-{os.getpid()}"
        temp.mkdir()
        started = time.perf_counter()
        try:
            exporter(model, key, temp / "engine")
            if not (temp / "engine").exists():
                raise ExportError(f"the {engine} exporter wrote nothing")
            os.rename(temp, entry)  # atomic: the entry is complete or absent
        finally:
            shutil.rmtree(temp, ignore_errors=True)
        seconds = time.perf_counter() - started
        log.info("built the %s engine %s in %.1f s", engine, entry, seconds)
        return CachedEngine(_engine_in(entry), seconds)
