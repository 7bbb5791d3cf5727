"""Object tracks: ultralytics' ByteTrack over one video's detections, fed in frame order.

The tracker runs where the rows are written (the coordinator's per-video writer), after the
reorder buffer, so it sees every processed frame of a video once and in order, however many
actors inferred the batches and in whatever order they finished. It uses the stored boxes
only (no image), so tracking costs no inference and no pixels cross the object store for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa

from pipeline.detections import Detections

NO_TRACK = -1  # a detection the tracker did not (yet) confirm: stored as a null track_id

TRACKS_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("track_id", pa.int32()),
        ("class_id", pa.int32()),
        ("class_name", pa.string()),
        ("first_frame", pa.int64()),
        ("last_frame", pa.int64()),
        ("num_frames", pa.int64()),
        ("first_timestamp_s", pa.float64()),
        ("last_timestamp_s", pa.float64()),
        ("mean_confidence", pa.float32()),
    ]
)


def bytetrack_settings() -> dict:
    """ultralytics' own ByteTrack defaults (``cfg/trackers/bytetrack.yaml``), read from the package."""
    import ultralytics
    import yaml

    path = Path(ultralytics.__file__).parent / "cfg" / "trackers" / "bytetrack.yaml"
    return yaml.safe_load(path.read_text())


class _Boxes:
    """The slice of ``ultralytics.engine.results.Boxes`` that ``BYTETracker.update`` reads."""

    def __init__(self, xyxy: np.ndarray, conf: np.ndarray, cls: np.ndarray):
        self.xyxy, self.conf, self.cls = xyxy, conf, cls
        self.xywh = np.empty_like(xyxy)
        self.xywh[:, 0] = (xyxy[:, 0] + xyxy[:, 2]) / 2
        self.xywh[:, 1] = (xyxy[:, 1] + xyxy[:, 3]) / 2
        self.xywh[:, 2] = xyxy[:, 2] - xyxy[:, 0]
        self.xywh[:, 3] = xyxy[:, 3] - xyxy[:, 1]

    def __len__(self) -> int:
        return len(self.conf)

    def __getitem__(self, index) -> _Boxes:
        return _Boxes(self.xyxy[index], self.conf[index], self.cls[index])


@dataclass
class _TrackStats:
    first_frame: int
    first_timestamp_s: float
    last_frame: int = 0
    last_timestamp_s: float = 0.0
    num_frames: int = 0
    confidence_sum: float = 0.0
    class_votes: dict[int, int] = field(default_factory=dict)

    def add(self, frame_index: int, timestamp_s: float, class_id: int, confidence: float) -> None:
        self.last_frame, self.last_timestamp_s = frame_index, timestamp_s
        self.num_frames += 1
        self.confidence_sum += confidence
        self.class_votes[class_id] = self.class_votes.get(class_id, 0) + 1

    @property
    def class_id(self) -> int:
        # The class seen most often: a track keeps one label even if a few frames disagree.
        return max(self.class_votes.items(), key=lambda kv: (kv[1], -kv[0]))[0]


class VideoTracker:
    """Assigns track ids to one video's detections, frame by frame, in frame order.

    Ids are 1, 2, 3, … in order of first appearance within the video, whatever ids the tracker
    library hands out internally, so they depend only on the detections and their order.
    """

    @staticmethod
    def preload() -> None:
        """Import the tracker library ahead of the first video."""
        from ultralytics.trackers.byte_tracker import BYTETracker  # noqa: F401

    def __init__(self, settings: dict | None = None):
        from ultralytics.trackers.byte_tracker import BYTETracker

        self._tracker = BYTETracker(SimpleNamespace(**(settings or bytetrack_settings())))
        self._ids: dict[int, int] = {}
        self._stats: dict[int, _TrackStats] = {}
        self._last_frame = -1

    def update(self, frame_index: int, timestamp_s: float, detections: Detections) -> np.ndarray:
        """Track ids (int32, ``NO_TRACK`` where none) for this frame's detections, in their order."""
        if frame_index <= self._last_frame:
            raise ValueError(f"frames must come in order: frame {frame_index} after {self._last_frame}")
        self._last_frame = frame_index
        track_ids = np.full(len(detections), NO_TRACK, dtype=np.int32)
        boxes = _Boxes(detections.xyxy, detections.confidence, detections.class_id.astype(np.float32))
        tracked = self._tracker.update(boxes)
        for row in tracked:  # [x1, y1, x2, y2, track_id, score, cls, detection index]
            raw_id, det_index = int(row[-4]), int(row[-1])
            local = self._ids.setdefault(raw_id, len(self._ids) + 1)
            track_ids[det_index] = local
        for det_index in np.flatnonzero(track_ids != NO_TRACK):
            local = int(track_ids[det_index])
            stats = self._stats.get(local)
            if stats is None:
                stats = self._stats[local] = _TrackStats(frame_index, timestamp_s)
            stats.add(frame_index, timestamp_s, int(detections.class_id[det_index]), float(detections.confidence[det_index]))
        return track_ids

    @property
    def num_tracks(self) -> int:
        return len(self._stats)

    def summary_table(self, video_id: str, names: dict[int, str]) -> pa.Table:
        """One row per track: its class, first and last frame, and the frames it was seen in."""
        rows = []
        for track_id in sorted(self._stats):
            s = self._stats[track_id]
            rows.append(
                {
                    "video_id": video_id,
                    "track_id": track_id,
                    "class_id": s.class_id,
                    "class_name": names.get(s.class_id, str(s.class_id)),
                    "first_frame": s.first_frame,
                    "last_frame": s.last_frame,
                    "num_frames": s.num_frames,
                    "first_timestamp_s": s.first_timestamp_s,
                    "last_timestamp_s": s.last_timestamp_s,
                    "mean_confidence": s.confidence_sum / s.num_frames,
                }
            )
        return pa.Table.from_pylist(rows, schema=TRACKS_SCHEMA)
