"""The one interface every inference engine's detector implements: torch and TensorRT
(``torch_detector.BatchDetector``, through ultralytics' loader), OpenVINO and ONNX Runtime
(``lean_detector.LeanDetector``, without torch) and the model-less ``synthetic.SyntheticDetector``.
What differs between engines beyond this is in ``pipeline.config.engine_traits``."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from pipeline.inference.detections import Detections
from pipeline.media.letterbox import LetterboxGeometry


class Detector(Protocol):
    names: dict[int, str]  # the model's classes
    model_stride: int  # the letterbox's stride: frames are padded to a multiple of it
    rect: bool  # the minimal rectangle (as predict does) rather than a square
    half: bool  # FP16 arithmetic
    batches_done: int

    def detect(
        self, frames: np.ndarray, geometry: LetterboxGeometry
    ) -> tuple[np.ndarray, Detections]:
        """Boxes of a batch of letterboxed uint8 (B, H, W, 3) frames, in source-frame pixels:
        ``(counts, detections)``, boxes per frame and all boxes concatenated in frame order."""
        ...
