"""Detectors on OpenVINO and ONNX Runtime that import neither torch nor ultralytics.

Everything they need comes with the export: class names, stride and input shape from its
``metadata.yaml``; the letterbox is the decoder's; layout, BGR->RGB and /255 are compiled into
the OpenVINO graph (ONNX Runtime gets them in numpy); NMS is ``pipeline.inference.nms``. So an
actor holds only the engine's own runtime.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from pipeline.config import engine_traits
from pipeline.inference.detections import Detections
from pipeline.inference.engine_cache import CachedEngine, ensure_engine
from pipeline.inference.model_ref import ModelLoadError, read_class_names, resolve_classes
from pipeline.inference.nms import non_max_suppression
from pipeline.media.letterbox import LetterboxGeometry

log = logging.getLogger(__name__)

Shape = tuple[int, int]


@dataclass(frozen=True)
class ExportMetadata:
    names: dict[int, str]
    stride: int
    imgsz: Shape  # the static input shape (height, width)

    @classmethod
    def read(cls, folder: Path) -> ExportMetadata:
        path = folder / "metadata.yaml"
        if not path.exists():
            raise ModelLoadError(
                f"{folder} has no metadata.yaml (export the model with ultralytics)"
            )
        meta = yaml.safe_load(path.read_text()) or {}
        if meta.get("task", "detect") != "detect":
            raise ModelLoadError(
                f"model {folder} is a {meta['task']} model; this pipeline needs a detection model"
            )
        imgsz = meta.get("imgsz") or [640, 640]
        imgsz = (
            (int(imgsz[0]), int(imgsz[-1]))
            if isinstance(imgsz, (list, tuple))
            else (int(imgsz), int(imgsz))
        )
        names = meta.get("names") or {}
        names = {
            int(k): str(v)
            for k, v in (names.items() if isinstance(names, dict) else enumerate(names))
        }
        return cls(names, max(int(meta.get("stride", 32)), 32), imgsz)


class EngineSource:
    """Where a lean detector gets the engine for a letterbox shape."""

    rect: bool  # whether inputs are the minimal rectangle (True) or the export's square
    imgsz: int | None = None  # the square a given export takes
    names: dict[int, str]
    stride: int

    def engine_for(self, shape: Shape) -> Path:
        raise NotImplementedError


class GivenExport(EngineSource):
    """A user's export: one static shape, so frames are letterboxed to its square, as ``predict`` does."""

    def __init__(self, folder: Path):
        self.folder = folder
        meta = ExportMetadata.read(folder)
        if meta.imgsz[0] != meta.imgsz[1]:
            raise ModelLoadError(
                f"{folder} has a static {meta.imgsz[0]}x{meta.imgsz[1]} input; pass the .pt weights "
                "and the pipeline exports one engine per video shape itself"
            )
        self.names, self.stride, self.imgsz, self.rect = (
            meta.names,
            meta.stride,
            meta.imgsz[0],
            False,
        )

    def engine_for(self, shape: Shape) -> Path:
        if shape != (self.imgsz, self.imgsz):
            raise ValueError(
                f"the export takes {self.imgsz}x{self.imgsz} inputs, not {shape[1]}x{shape[0]}"
            )
        return self.folder


class ExportedOnDemand(EngineSource):
    """Engines exported from ``.pt`` weights, one per letterbox shape, through the node's cache."""

    def __init__(
        self,
        weights: Path,
        engine: str,
        *,
        cache_dir: Path | None = None,
        half: bool = False,
        ensure: Callable[..., CachedEngine] = ensure_engine,
    ):
        self.weights, self.engine, self.cache_dir, self.half, self._ensure = (
            weights,
            engine,
            cache_dir,
            half,
            ensure,
        )
        names = read_class_names(str(weights))
        if not names:
            raise ModelLoadError(f"cannot read the class names of {weights}")
        self.names, self.stride, self.rect = names, 32, True
        self.export_s: dict[Shape, float] = {}  # shapes this process built (absent: from the cache)

    def engine_for(self, shape: Shape) -> Path:
        built = self._ensure(
            self.weights, self.engine, shape, half=self.half, cache_dir=self.cache_dir
        )
        if built.export_s is not None:
            self.export_s[shape] = built.export_s
        return built.path


class _OpenVinoRunner:
    """One compiled static-shape OpenVINO model fed uint8 BGR frames, the frames of a batch run as
    parallel infer requests in THROUGHPUT mode."""

    def __init__(self, core, folder: Path, threads: int | None, precision: str = "fp32"):
        import openvino as ov
        from openvino.preprocess import ColorFormat, PrePostProcessor

        xml = next(folder.glob("*.xml"), None) if folder.is_dir() else folder
        if xml is None:
            raise ModelLoadError(f"no OpenVINO .xml model in {folder}")
        graph = core.read_model(xml)
        ppp = PrePostProcessor(graph)
        ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(
            ov.Layout("NHWC")
        ).set_color_format(ColorFormat.BGR)
        ppp.input().preprocess().convert_element_type(ov.Type.f32).convert_color(
            ColorFormat.RGB
        ).scale(255.0)
        ppp.input().model().set_layout(ov.Layout("NCHW"))
        # f32 explicitly: on CPUs with bf16 units OpenVINO would otherwise run in bf16, and the
        # boxes would drift from the weights' own (|Δconf| up to 0.18 measured).
        options: dict[str, str | int] = {
            "PERFORMANCE_HINT": "THROUGHPUT",
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
        }
        if threads:
            options["INFERENCE_NUM_THREADS"] = threads
        self.compiled = core.compile_model(ppp.build(), "CPU", options)
        self.queue = ov.AsyncInferQueue(
            self.compiled, self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
        )
        self._outputs: list = []
        self.queue.set_callback(self._collect)

    def _collect(self, request, index: int) -> None:
        self._outputs[index] = request.get_output_tensor(0).data.copy()

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        self._outputs = [None] * len(frames)
        for i in range(len(frames)):
            self.queue.start_async({0: frames[i : i + 1]}, i)
        self.queue.wait_all()
        return np.concatenate(self._outputs)


class _OnnxRunner:
    """One static-shape ONNX model on ONNX Runtime; normalization in numpy (the graph takes floats)."""

    def __init__(self, folder: Path, threads: int | None):
        import onnxruntime as ort

        path = next(folder.glob("*.onnx"), None) if folder.is_dir() else folder
        if path is None:
            raise ModelLoadError(f"no .onnx model in {folder}")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self._x: np.ndarray | None = None

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        b, h, w, _ = frames.shape
        if self._x is None or self._x.shape != (1, 3, h, w):
            self._x = np.empty((1, 3, h, w), np.float32)  # reused for every frame of this shape
        outputs = []
        for frame in frames:
            for c in range(3):  # BGR -> RGB, HWC -> CHW, /255
                np.multiply(frame[..., 2 - c], 1 / 255, out=self._x[0, c], casting="unsafe")
            outputs.append(self.session.run(None, {self.input: self._x})[0])
        return np.concatenate(outputs)


class LeanDetector:
    """``BatchDetector``'s interface on OpenVINO or ONNX Runtime, without torch."""

    half = False

    def __init__(
        self,
        source: EngineSource,
        engine: str,
        *,
        imgsz: int = 640,
        conf: float = 0.25,
        iou: float = 0.7,
        classes=None,
        max_det: int = 300,
        max_batch: int = 16,
        threads: int | None = None,
        warm_shapes: tuple[Shape, ...] = (),
        precision: str = "fp32",
    ):
        if not engine_traits(engine).lean:
            raise ValueError(f"no lean runner for {engine}")
        self.source, self.engine = source, engine
        self.imgsz, self.conf, self.iou, self.max_det, self.max_batch = (
            imgsz,
            conf,
            iou,
            max_det,
            max_batch,
        )
        self.names = dict(source.names)
        resolved = resolve_classes(classes, self.names)
        self.classes = list(resolved) if resolved else None
        self.model_stride, self.rect = source.stride, source.rect
        self.threads, self.precision = threads, precision
        if not source.rect and source.imgsz != imgsz:
            raise ModelLoadError(
                f"the export takes {source.imgsz}x{source.imgsz} inputs; pass --imgsz {source.imgsz}"
            )
        self._runners: dict[Shape, object] = {}
        self._core = None
        if engine == "openvino":
            import openvino as ov

            self._core = ov.Core()
        self.batches_done = 0
        if not source.rect:  # a given export has one shape: compile it now
            warm_shapes = ((imgsz, imgsz),)
        for shape in warm_shapes:
            self.warmup(shape)

    def geometry(self, src_h: int, src_w: int) -> LetterboxGeometry:
        return LetterboxGeometry.for_source(
            src_h, src_w, self.imgsz, stride=self.model_stride, rect=self.rect
        )

    def _runner(self, shape: Shape):
        runner = self._runners.get(shape)
        if runner is None:
            folder = self.source.engine_for(shape)
            try:
                runner = (
                    _OpenVinoRunner(self._core, folder, self.threads, self.precision)
                    if self.engine == "openvino"
                    else _OnnxRunner(folder, self.threads)
                )
            except ModelLoadError:
                raise
            except Exception as exc:
                raise ModelLoadError(
                    f"cannot load the {self.engine} model {folder}: {type(exc).__name__}: {exc}"
                ) from exc
            self._runners[shape] = runner
        return runner

    def warmup(self, shape: Shape) -> None:
        """Build (or find) and compile the engine for ``shape``, and run one frame through it."""
        self._runner(shape)(np.full((1, *shape, 3), 114, np.uint8))

    def detect(
        self, frames: np.ndarray, geometry: LetterboxGeometry
    ) -> tuple[np.ndarray, Detections]:
        if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8:
            raise ValueError(
                f"frames must be uint8 (B, H, W, 3), got {frames.dtype} {frames.shape}"
            )
        if frames.shape[1:3] != geometry.out_shape:
            raise ValueError(
                f"frames are {frames.shape[2]}x{frames.shape[1]} but the letterbox geometry says "
                f"{geometry.out_w}x{geometry.out_h}"
            )
        predictions = self._runner(geometry.out_shape)(frames)
        per_image = non_max_suppression(
            predictions, self.conf, self.iou, self.classes, self.max_det
        )
        counts = np.array([len(p) for p in per_image], np.int32)
        rows = np.concatenate(per_image) if per_image else np.zeros((0, 6), np.float32)
        geometry.boxes_to_source(rows[:, :4])
        self.batches_done += 1
        return counts, Detections.from_nms_rows(rows)

    @property
    def export_s(self) -> dict[str, float]:
        built = getattr(self.source, "export_s", {})
        return {f"{h}x{w}": s for (h, w), s in built.items()}
