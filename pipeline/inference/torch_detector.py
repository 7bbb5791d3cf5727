"""The torch batch detector (also TensorRT, through ultralytics' loader): one warmed ultralytics
backend, preallocated input tensors, one forward pass and one batched NMS per batch, boxes
returned in source-frame pixels.

Ray-free on purpose: the ``YoloActor`` is a thin shell around it, and tests drive it directly.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from pipeline.inference.detections import Detections
from pipeline.inference.model_ref import ModelLoadError, check_model_available, resolve_classes
from pipeline.media.letterbox import LetterboxGeometry

log = logging.getLogger(__name__)


def load_backend(model: str, device: torch.device, *, half: bool):
    """An ultralytics ``AutoBackend`` (the loader ``YOLO.predict`` uses), for .pt, ONNX, OpenVINO, TensorRT…"""
    from ultralytics.nn.autobackend import AutoBackend

    check_model_available(model)
    quiet = io.StringIO()
    try:
        with contextlib.redirect_stdout(quiet):
            backend = AutoBackend(model, device=device, fp16=half, fuse=True, verbose=False)
    except Exception as exc:
        hint = "" if Path(model).exists() else " (no network? Pass --model PATH to local weights)"
        raise ModelLoadError(
            f"cannot load model {model}: {type(exc).__name__}: {exc}{hint}"
        ) from exc
    backend.eval()
    if getattr(backend, "task", "detect") not in ("detect", None):
        raise ModelLoadError(
            f"model {model} is a {backend.task} model; this pipeline needs a detection model"
        )
    return backend


class BatchDetector:
    """Detect objects in letterboxed uint8 BGR batches ``(B, H, W, 3)`` with ``B <= max_batch``.

    Buffers for the largest batch at the largest input shape are allocated once; every batch
    reuses a prefix of them, so memory does not grow with the number of batches.
    """

    def __init__(
        self,
        model: str,
        *,
        device: str = "cpu",
        imgsz: int = 640,
        conf: float = 0.25,
        iou: float = 0.7,
        classes: tuple[int | str, ...] | None = None,
        max_det: int = 300,
        max_batch: int = 16,
        half: bool | None = None,
    ):
        self.device = torch.device(device)
        self.half = self.device.type == "cuda" if half is None else half
        self.imgsz, self.conf, self.iou, self.max_det, self.max_batch = (
            imgsz,
            conf,
            iou,
            max_det,
            max_batch,
        )
        self.backend = load_backend(model, self.device, half=self.half)
        self.half = bool(self.backend.fp16)
        self.names: dict[int, str] = dict(self.backend.names)
        # ids or names; unknown ones raise ClassesError
        resolved = resolve_classes(classes, self.names)
        self.classes = list(resolved) if resolved else None
        self.model_stride = max(int(self.backend.stride), 32) if self.backend.format == "pt" else 32
        # Exported static-shape models need the square input; PyTorch models take the minimal
        # rectangle, exactly as ``YOLO.predict`` chooses (fewer pixels, identical boxes).
        self.rect = self.backend.format == "pt" or bool(getattr(self.backend, "dynamic", False))
        self.static_batch = self._static_batch_size()
        dtype = torch.float16 if self.half else torch.float32
        # All preallocated: the model input, and on CUDA two pinned host staging buffers (one is
        # being filled while the previous batch's copy may still be in flight) plus a device buffer.
        self._input = torch.empty((max_batch, 3, imgsz, imgsz), dtype=dtype, device=self.device)
        self._staging: list[torch.Tensor] = []
        self._device_u8 = None
        if self.device.type == "cuda":
            shape = (max_batch, imgsz, imgsz, 3)
            self._staging = [torch.empty(shape, dtype=torch.uint8).pin_memory() for _ in range(2)]
            self._device_u8 = torch.empty(shape, dtype=torch.uint8, device=self.device)
        self._next_staging = 0
        self.batches_done = 0
        self.warmup()

    @property
    def engine(self) -> str:
        """The inference backend actually used: torch, openvino, onnx, tensorrt, ..."""
        fmt = self.backend.format
        return {"pt": "torch", "engine": "tensorrt"}.get(fmt, fmt)

    def _static_batch_size(self) -> int | None:
        """Batch dimension fixed by an exported model (None when the model takes any batch)."""
        if self.backend.format == "pt" or getattr(self.backend, "dynamic", False):
            return None
        batch = getattr(self.backend, "batch", None)
        return int(batch) if isinstance(batch, int) and batch > 0 else 1

    def geometry(self, src_h: int, src_w: int) -> LetterboxGeometry:
        return LetterboxGeometry.for_source(
            src_h, src_w, self.imgsz, stride=self.model_stride, rect=self.rect
        )

    def warmup(self) -> None:
        """A forward pass so that the first real batch is not slow. On CUDA at the full batch
        (kernel selection and the allocator's pools depend on it); on the CPU one frame is enough,
        and a full batch would cost seconds of start-up for nothing."""
        batch = self.max_batch if self.device.type == "cuda" else 1
        shape = (batch, self.imgsz, self.imgsz, 3)
        self.detect(np.full(shape, 114, np.uint8), self.geometry(self.imgsz, self.imgsz))
        self.batches_done = 0

    def _to_input(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 BGR BHWC -> normalized RGB BCHW in the preallocated input, on the model's device."""
        b, h, w, _ = frames.shape
        with warnings.catch_warnings():
            # Batches from the object store are read-only; they are only ever read here.
            warnings.simplefilter("ignore", UserWarning)
            host = torch.from_numpy(frames)
        if self._device_u8 is not None:
            stage = self._staging[self._next_staging].view(-1)[: host.numel()].view(b, h, w, 3)
            self._next_staging ^= 1
            stage.copy_(host)
            src = self._device_u8.view(-1)[: host.numel()].view(b, h, w, 3)
            src.copy_(stage, non_blocking=True)
        else:
            src = host
        x = self._input.view(-1)[: b * 3 * h * w].view(b, 3, h, w)
        # BGR -> RGB and HWC -> CHW, with the dtype cast, in one strided copy per channel
        for c in range(3):
            x[:, c].copy_(src[..., 2 - c])
        return x.div_(255)

    @torch.inference_mode()
    def detect(
        self, frames: np.ndarray, geometry: LetterboxGeometry
    ) -> tuple[np.ndarray, Detections]:
        """Return ``(counts, detections)``: boxes per frame, and all boxes concatenated in frame order."""
        from ultralytics.utils.nms import non_max_suppression

        if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8:
            raise ValueError(
                f"frames must be uint8 (B, H, W, 3), got {frames.dtype} {frames.shape}"
            )
        b, h, w, _ = frames.shape
        if b > self.max_batch or h > self.imgsz or w > self.imgsz:
            raise ValueError(
                f"batch {frames.shape} exceeds the preallocated ({self.max_batch}, {self.imgsz}, {self.imgsz}, 3)"
            )
        if (h, w) != geometry.out_shape:
            raise ValueError(
                f"frames are {w}x{h} but the letterbox geometry says {geometry.out_w}x{geometry.out_h}"
            )
        preds = self._forward(self._to_input(frames))
        per_image = non_max_suppression(
            preds,
            self.conf,
            self.iou,
            self.classes,
            False,
            max_det=self.max_det,
            end2end=getattr(self.backend, "end2end", False),
        )
        counts = np.array([len(p) for p in per_image], np.int32)
        rows = torch.cat(per_image) if len(per_image) > 1 else per_image[0]
        geometry.boxes_to_source(rows[:, :4])
        rows = rows[:, :6].float().cpu().numpy()  # the one device-to-host copy of the batch
        self.batches_done += 1
        return counts, Detections.from_nms_rows(rows)

    def _forward(self, x: torch.Tensor):
        if self.static_batch is None or x.shape[0] == self.static_batch:
            return self.backend(x)
        # A fixed-batch export: run it in chunks of its batch size, padding the last chunk.
        outputs = []
        n = self.static_batch
        for start in range(0, x.shape[0], n):
            chunk = x[start : start + n]
            real = chunk.shape[0]
            if real < n:
                chunk = torch.cat([chunk, chunk[-1:].expand(n - real, *chunk.shape[1:])])
            out = self.backend(chunk)
            out = out[0] if isinstance(out, (list, tuple)) else out
            outputs.append(out[:real])
        return torch.cat(outputs)
