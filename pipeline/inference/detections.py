"""The core result types: boxes of one frame, and the boxes of one batch of frames."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Detections:
    """Boxes of one or more frames as parallel numpy arrays (xyxy in source-frame pixels)."""

    xyxy: np.ndarray  # float32 (N, 4)
    confidence: np.ndarray  # float32 (N,)
    class_id: np.ndarray  # int32 (N,)

    def __post_init__(self) -> None:
        self.xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        self.confidence = np.asarray(self.confidence, dtype=np.float32).reshape(-1)
        self.class_id = np.asarray(self.class_id, dtype=np.int32).reshape(-1)
        n = len(self.xyxy)
        if len(self.confidence) != n or len(self.class_id) != n:
            raise ValueError(
                f"xyxy, confidence and class_id must have the same length; got {n}, "
                f"{len(self.confidence)}, {len(self.class_id)}"
            )

    def __len__(self) -> int:
        return len(self.xyxy)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))

    @classmethod
    def from_ultralytics(cls, result) -> Detections:
        """From one ``ultralytics.engine.results.Results`` (what ``YOLO.predict`` returns per image)."""
        boxes = result.boxes
        return cls(
            boxes.xyxy.cpu().numpy(),
            boxes.conf.cpu().numpy(),
            boxes.cls.cpu().numpy().astype(np.int32),
        )

    @classmethod
    def from_nms_rows(cls, rows: np.ndarray) -> Detections:
        """From NMS output rows ``(x1, y1, x2, y2, conf, cls)``."""
        rows = np.asarray(rows, dtype=np.float32).reshape(-1, 6)
        return cls(rows[:, :4], rows[:, 4], rows[:, 5].astype(np.int32))

    def __getitem__(self, index) -> Detections:
        return Detections(self.xyxy[index], self.confidence[index], self.class_id[index])


@dataclass
class BatchResult:
    """Detections for one batch of one video: what a YoloActor sends back (a few KB)."""

    video_id: str
    seq: int
    frame_indices: np.ndarray  # int64 (B,)
    timestamps: np.ndarray  # float64 (B,)
    counts: np.ndarray  # int32 (B,): boxes per frame; frame i owns rows offsets[i]:offsets[i+1]
    detections: Detections  # all frames' boxes, concatenated in frame order

    def __post_init__(self) -> None:
        self.counts = np.asarray(self.counts, dtype=np.int32)
        if not (len(self.frame_indices) == len(self.timestamps) == len(self.counts)):
            raise ValueError("frame_indices, timestamps and counts must have one entry per frame")
        if int(self.counts.sum()) != len(self.detections):
            raise ValueError(
                f"counts add up to {int(self.counts.sum())} boxes but {len(self.detections)} were given"
            )

    @property
    def num_frames(self) -> int:
        return len(self.frame_indices)

    def frame(self, i: int) -> Detections:
        offsets = np.concatenate([[0], np.cumsum(self.counts)])
        return self.detections[offsets[i] : offsets[i + 1]]
