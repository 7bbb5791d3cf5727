"""Where the model comes from and what it detects, read without importing torch or ultralytics
(the driver stays light, and a mistake is reported before Ray or a model starts)."""

from __future__ import annotations

import difflib
import os
import pickle
import zipfile
from pathlib import Path

import yaml

from pipeline.config import ConfigError
from pipeline.errors import UsageError

ULTRALYTICS_NAMES_HINT = ("yolo", "rtdetr")


class ModelLoadError(UsageError):
    """The model cannot be loaded; the message says what to pass instead. Exit status 2."""


class ClassesError(ConfigError):
    """``--classes`` names a class the model does not have; the message lists what it has."""


def model_fingerprint(model: str) -> str:
    """Size and mtime of a local model file or directory, so that a changed model reprocesses videos."""
    path = Path(model)
    if not path.exists():
        return ""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)


# What a model file may end in: weights and the exports ultralytics loads as files. A folder
# holds an export when it has the metadata.yaml every ultralytics export writes.
MODEL_FILE_SUFFIXES = frozenset(
    ".pt .torchscript .onnx .engine .tflite .pb .mnn .xml .mlmodel .mlpackage".split()
)


def check_model_available(model: str) -> None:
    """Fail early, with one clear line, when the weights are neither on disk nor downloadable,
    or what is on disk is no model (an image, a text file, an empty file, a folder with no
    export in it): found in milliseconds, before anything starts."""
    path = Path(model)
    if path.exists():
        _check_model_on_disk(path)
        return
    looks_like_path = os.sep in model or model.startswith(".")
    is_known_name = (
        Path(model).name.startswith(ULTRALYTICS_NAMES_HINT) and Path(model).suffix == ".pt"
    )
    if looks_like_path or not is_known_name:
        raise ModelLoadError(
            f"model not found: {model}. Pass --model PATH to a .pt file or an exported model directory"
        )
    if os.environ.get("YOLO_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise ModelLoadError(
            f"model {model} is not on disk and YOLO_OFFLINE is set, so it cannot be downloaded. "
            "Pass --model PATH to local weights"
        )


def _check_model_on_disk(path: Path) -> None:
    hint = "Pass --model PATH to YOLO weights (.pt) or an exported model"
    if path.is_dir():
        if not (path / "metadata.yaml").is_file() and path.suffix != ".mlpackage":
            raise ModelLoadError(
                f"model {path} is a folder with no exported model in it (no metadata.yaml). {hint}"
            )
        return
    if path.suffix.lower() not in MODEL_FILE_SUFFIXES:
        raise ModelLoadError(
            f"model {path} is not a model file (a {path.suffix or 'suffix-less'} file). {hint}"
        )
    if path.stat().st_size == 0:
        raise ModelLoadError(f"model {path} is an empty file. {hint}")


# ---- class names without loading the model ----------------------------------------------------


class _Opaque:
    """Stands in for every class a checkpoint pickles (modules, tensors): it records the state
    it is given and runs no code, so reading a checkpoint this way is safe and needs no torch."""

    def __init__(self, *args, **kwargs):
        self.state = None

    def __setstate__(self, state):
        self.state = state

    def __call__(self, *args, **kwargs):  # reduce functions such as torch._utils._rebuild_tensor_v2
        return _Opaque()


_SAFE_BUILTINS = {
    ("collections", "OrderedDict"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "dict"),
    ("builtins", "list"),
    ("builtins", "tuple"),
    ("builtins", "slice"),
}


class _NamesUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _SAFE_BUILTINS:
            import builtins
            import collections

            return getattr(collections if module == "collections" else builtins, name)
        return type(name, (_Opaque,), {})

    def persistent_load(self, pid):  # tensor storages: not needed for the names
        return None


def _names_from_checkpoint(path: Path) -> dict[int, str] | None:
    try:
        with zipfile.ZipFile(path) as archive:
            pickled = [n for n in archive.namelist() if n.endswith("data.pkl")]
            if not pickled:
                return None
            with archive.open(pickled[0]) as f:
                checkpoint = _NamesUnpickler(f).load()
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise ModelLoadError(
            f"model {path} is not a readable PyTorch checkpoint ({type(exc).__name__}: {exc}). "
            "Pass --model PATH to YOLO weights (.pt) or an exported model"
        ) from None
    if not isinstance(checkpoint, dict):
        return None
    if checkpoint.get("model") is None and checkpoint.get("ema") is None:
        raise ModelLoadError(
            f"model {path} is a PyTorch file but not a YOLO checkpoint (it holds no model). "
            "Pass --model PATH to YOLO weights (.pt) or an exported model"
        )
    for key in ("model", "ema"):
        state = getattr(checkpoint.get(key), "state", None)
        if isinstance(state, tuple):  # (__dict__, slots) from some pickle protocols
            state = state[0]
        if isinstance(state, dict) and state.get("names") is not None:
            return _as_names(state["names"])
    return None


def _as_names(names) -> dict[int, str] | None:
    if isinstance(names, (list, tuple)):
        return {i: str(n) for i, n in enumerate(names)}
    if isinstance(names, dict):
        return {int(k): str(v) for k, v in names.items()}
    return None


def read_class_names(model: str) -> dict[int, str] | None:
    """The class names of a local model, without loading it: from a ``.pt`` checkpoint's pickle
    (no code runs) or an export's ``metadata.yaml``. None when they cannot be read this way (a
    model that ultralytics would download, an ONNX or TensorRT file): the actors tell later.
    Raises ``ModelLoadError`` for a ``.pt`` file that is not a checkpoint at all."""
    path = Path(model)
    if path.is_dir():
        metadata = path / "metadata.yaml"
        try:
            return (
                _as_names((yaml.safe_load(metadata.read_text()) or {}).get("names"))
                if metadata.exists()
                else None
            )
        except (OSError, yaml.YAMLError):
            return None
    if path.is_file() and path.suffix == ".pt":
        return _names_from_checkpoint(path)
    return None


def resolve_classes(
    classes, names: dict[int, str], *, context: str = "--classes: the model"
) -> tuple[int, ...] | None:
    """``--classes`` as sorted class ids: ids or names (case-insensitive), checked against the
    model's classes, so that a typo fails at once instead of writing a run with no boxes.
    ``context`` starts the error message (the readers say "the run's model")."""
    if classes is None:
        return None
    by_name = {name.lower(): i for i, name in names.items()}
    ids = set()
    for c in classes:
        if isinstance(c, str) and not c.strip().lstrip("-").isdigit():
            if c.strip().lower() not in by_name:
                close = difflib.get_close_matches(c.strip().lower(), list(by_name), n=1, cutoff=0.6)
                known = ", ".join(names[i] for i in sorted(names)[:12]) + (
                    ", ..." if len(names) > 12 else ""
                )
                hint = (
                    f"did you mean {names[by_name[close[0]]]!r}?"
                    if close
                    else f"it has {len(names)}: {known}"
                )
                raise ClassesError(f"{context} has no class named {c!r} ({hint})")
            ids.add(by_name[c.strip().lower()])
        else:
            i = int(c)
            if i not in names:
                raise ClassesError(
                    f"{context} has no class id {i}: it has {len(names)} classes, "
                    f"ids 0 to {max(names)}"
                )
            ids.add(i)
    return tuple(sorted(ids))
