"""Build one engine from ``.pt`` weights with ultralytics' exporter; run as a child process by
``pipeline.inference.engine_cache`` (``python -m pipeline.inference.export WEIGHTS --engine ... --output DIR``).

The result is a folder: an OpenVINO model (``.xml``, ``.bin``, ``metadata.yaml``), or
``model.onnx`` / ``model.engine`` with a ``metadata.yaml`` beside it. FP32, or FP16 with
``--half``; never quantized.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import sys
import tempfile
from pathlib import Path

from pipeline.config import engine_traits

# ultralytics' export format of each engine built from .pt weights
FORMATS = {e: engine_traits(e).export_format for e in ("openvino", "onnx", "tensorrt")}
TENSORRT_MAX_BATCH = 64


def export(weights: Path, engine: str, height: int, width: int, half: bool, output: Path) -> None:
    from ultralytics import YOLO

    with tempfile.TemporaryDirectory(prefix="pipeline-export-") as work:
        # ultralytics writes the export beside the weights: a private copy keeps the user's folder
        # untouched and concurrent exports apart.
        local = Path(work) / "model.pt"
        shutil.copyfile(weights, local)
        model = YOLO(str(local), task="detect")
        with contextlib.redirect_stdout(io.StringIO()):
            # TensorRT: dynamic batch (up to TENSORRT_MAX_BATCH, tuned for the shape given); the
            # CPU engines: batch 1, run as parallel requests.
            dynamic = engine == "tensorrt"
            produced = Path(
                model.export(
                    format=FORMATS[engine],
                    imgsz=(height, width),
                    half=half,
                    int8=False,
                    dynamic=dynamic,
                    batch=TENSORRT_MAX_BATCH if dynamic else 1,
                    verbose=False,
                )
            )
        if not produced.is_absolute():
            produced = (
                Path(work) / produced if (Path(work) / produced).exists() else produced.resolve()
            )
        if produced.is_dir():
            shutil.move(str(produced), output)
        else:
            output.mkdir()
            shutil.move(str(produced), output / f"model{produced.suffix}")
            _write_metadata(model, height, width, half, output / "metadata.yaml")


def _write_metadata(model, height: int, width: int, half: bool, path: Path) -> None:
    import yaml

    names = {int(k): str(v) for k, v in model.names.items()}
    stride = int(max(model.model.stride)) if hasattr(model.model, "stride") else 32
    path.write_text(
        yaml.safe_dump(
            {
                "task": "detect",
                "stride": stride,
                "batch": 1,
                "imgsz": [height, width],
                "half": half,
                "names": names,
            },
            sort_keys=False,
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.inference.export", description=__doc__
    )
    parser.add_argument("weights", type=Path)
    parser.add_argument("--engine", choices=sorted(FORMATS), required=True)
    parser.add_argument("--height", type=int, required=True)
    parser.add_argument("--width", type=int, required=True)
    parser.add_argument("--half", action="store_true")
    parser.add_argument(
        "--output", type=Path, required=True, help="folder to create (must not exist)"
    )
    args = parser.parse_args(argv)
    try:
        export(args.weights, args.engine, args.height, args.width, args.half, args.output)
    except Exception as exc:  # one line for the cache's error message
        print(
            f"{args.engine} export failed: {type(exc).__name__}: {exc}".replace("\n", " "),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
