"""A detector with no model: the same boxes on every frame, at almost no cost.

The coordination benchmark runs the real decoder → coordinator → actor → writer path on it, so
that what it measures is the pipeline's own cost per batch, not the model's.

With ``latency_ms=(a, b)`` it is a simulated GPU: a batch of n frames takes a + b·n milliseconds
(2 + 0.35·n is about yolov8n in TensorRT FP16 on an A100), slept with the GIL released as a
CUDA stream's wait is, so the actor's other threads (and the node's other processes) go on.
How busy it is kept is then the pipeline's measure of GPU feeding, with no GPU.
"""

from __future__ import annotations

import time

import numpy as np

from pipeline.inference.detections import Detections
from pipeline.media.letterbox import LetterboxGeometry


class SyntheticDetector:
    """``BatchDetector``'s interface; ``boxes_per_frame`` fixed boxes in letterbox pixels."""

    engine = "synthetic"
    half = False

    def __init__(
        self,
        *,
        imgsz: int = 640,
        boxes_per_frame: int = 5,
        latency_ms: tuple[float, float] | None = None,
        **_ignored,
    ):
        self.imgsz = imgsz
        self.latency_ms = latency_ms
        self.names = {0: "object"}
        self.model_stride, self.rect = 32, True
        self.batches_done = 0
        side = np.linspace(8, 64, boxes_per_frame, dtype=np.float32)
        # x1, y1, x2, y2, confidence, class: small boxes along the diagonal
        self._rows = np.stack(
            [side, side, side + 16, side + 16, np.full_like(side, 0.9), np.zeros_like(side)], axis=1
        )

    def geometry(self, src_h: int, src_w: int) -> LetterboxGeometry:
        return LetterboxGeometry.for_source(
            src_h, src_w, self.imgsz, stride=self.model_stride, rect=self.rect
        )

    def detect(
        self, frames: np.ndarray, geometry: LetterboxGeometry
    ) -> tuple[np.ndarray, Detections]:
        batch = len(frames)
        if self.latency_ms is not None:
            fixed, per_frame = self.latency_ms
            time.sleep((fixed + per_frame * batch) / 1000)  # releases the GIL
        rows = np.tile(self._rows, (batch, 1))
        geometry.boxes_to_source(rows[:, :4])
        self.batches_done += 1
        return np.full(batch, len(self._rows), np.int32), Detections.from_nms_rows(rows)
