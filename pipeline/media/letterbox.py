"""Letterbox geometry: the same arithmetic as ultralytics' ``LetterBox`` and ``scale_boxes``.

It is computed once per video (every frame of a video has the same size), so the decoder can
resize frames into a fixed-shape batch and the detector can map boxes back to source pixels
without looking at the frames again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAD_VALUE = 114  # ultralytics' grey border


@dataclass(frozen=True)
class LetterboxGeometry:
    src_h: int
    src_w: int
    out_h: int  # shape of the model input, padding included
    out_w: int
    new_h: int  # shape of the resized image inside the padding
    new_w: int
    top: int
    left: int

    @classmethod
    def for_source(
        cls, src_h: int, src_w: int, imgsz: int, *, stride: int = 32, rect: bool = True
    ) -> LetterboxGeometry:
        """``rect=True`` pads only up to the next multiple of ``stride`` (ultralytics' ``auto`` for
        PyTorch models, what ``predict`` does); ``rect=False`` pads to ``imgsz x imgsz`` (static
        exported models)."""
        if src_h < 1 or src_w < 1:
            raise ValueError(f"source frame must be at least 1x1, got {src_w}x{src_h}")
        r = min(imgsz / src_h, imgsz / src_w)
        new_w, new_h = max(round(src_w * r), 1), max(round(src_h * r), 1)
        dw, dh = imgsz - new_w, imgsz - new_h
        if rect:
            dw, dh = dw % stride, dh % stride
        half_w, half_h = dw / 2, dh / 2
        top, bottom = round(half_h - 0.1), round(half_h + 0.1)
        left, right = round(half_w - 0.1), round(half_w + 0.1)
        return cls(
            src_h, src_w, new_h + top + bottom, new_w + left + right, new_h, new_w, top, left
        )

    @property
    def out_shape(self) -> tuple[int, int]:
        return self.out_h, self.out_w

    def new_canvas(self, batch: int) -> np.ndarray:
        """A grey (batch, out_h, out_w, 3) uint8 array to draw frames into."""
        return np.full((batch, self.out_h, self.out_w, 3), PAD_VALUE, dtype=np.uint8)

    def draw(self, frame: np.ndarray, canvas_slot: np.ndarray) -> None:
        """Resize ``frame`` (src_h, src_w, 3) into one slot of a canvas, leaving the border grey."""
        if frame.shape[:2] != (self.src_h, self.src_w):
            raise ValueError(
                f"frame is {frame.shape[1]}x{frame.shape[0]}, geometry expects {self.src_w}x{self.src_h}"
            )
        inner = canvas_slot[self.top : self.top + self.new_h, self.left : self.left + self.new_w]
        if (self.new_h, self.new_w) == (self.src_h, self.src_w):
            inner[...] = frame
        else:
            import cv2  # only where frames are letterboxed: not in the coordinator

            inner[...] = cv2.resize(frame, (self.new_w, self.new_h), interpolation=cv2.INTER_LINEAR)

    def apply(self, frame: np.ndarray) -> np.ndarray:
        canvas = self.new_canvas(1)
        self.draw(frame, canvas[0])
        return canvas[0]

    def boxes_to_source(self, boxes):
        """Map xyxy boxes (numpy or torch, modified in place) from model input to source pixels,
        clipped to the frame, exactly like ``ultralytics.utils.ops.scale_boxes``."""
        gain_x, gain_y = self.new_w / self.src_w, self.new_h / self.src_h
        boxes[..., [0, 2]] -= self.left
        boxes[..., [1, 3]] -= self.top
        boxes[..., [0, 2]] /= gain_x
        boxes[..., [1, 3]] /= gain_y
        boxes[..., [0, 2]] = boxes[..., [0, 2]].clip(0, self.src_w)
        boxes[..., [1, 3]] = boxes[..., [1, 3]].clip(0, self.src_h)
        return boxes
