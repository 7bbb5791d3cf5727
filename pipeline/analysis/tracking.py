"""Object tracks: ultralytics' ByteTrack over one video's detections, fed in frame order.

A video is tracked once its rows are complete: ``track_detections_file`` reads the video's
(still hidden) detections file, which the writer's reorder buffer filled in frame order, so the
tracker sees every processed frame once and in order, however many actors inferred the batches
and in whatever order they finished. It uses the stored boxes only (no image), so tracking
costs no inference, and it runs in its own Ray task per video: about 3 ms of CPU per frame
that would otherwise cap a whole run at one coordinator core's pace.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.inference.detections import Detections
from pipeline.output.schema import TRACKED_BOX_TYPE, TRACKS_SCHEMA, detections_schema

NO_TRACK = -1  # a detection the tracker did not (yet) confirm: stored as a null track_id


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

    def __init__(self, settings: dict | None = None):
        from ultralytics.trackers.byte_tracker import BYTETracker

        self._tracker = BYTETracker(SimpleNamespace(**(settings or bytetrack_settings())))
        self._ids: dict[int, int] = {}
        self._stats: dict[int, _TrackStats] = {}
        self._last_frame = -1

    def update(self, frame_index: int, timestamp_s: float, detections: Detections) -> np.ndarray:
        """Track ids (int32, ``NO_TRACK`` where none) for this frame's detections, in their order."""
        if frame_index <= self._last_frame:
            raise ValueError(
                f"frames must come in order: frame {frame_index} after {self._last_frame}"
            )
        self._last_frame = frame_index
        track_ids = np.full(len(detections), NO_TRACK, dtype=np.int32)
        boxes = _Boxes(
            detections.xyxy, detections.confidence, detections.class_id.astype(np.float32)
        )
        tracked = self._tracker.update(boxes)
        for row in tracked:  # [x1, y1, x2, y2, track_id, score, cls, detection index]
            raw_id, det_index = int(row[-4]), int(row[-1])
            local = self._ids.setdefault(raw_id, len(self._ids) + 1)
            track_ids[det_index] = local
        for tracked_index in np.flatnonzero(track_ids != NO_TRACK):
            local = int(track_ids[tracked_index])
            stats = self._stats.get(local)
            if stats is None:
                stats = self._stats[local] = _TrackStats(frame_index, timestamp_s)
            stats.add(
                frame_index,
                timestamp_s,
                int(detections.class_id[tracked_index]),
                float(detections.confidence[tracked_index]),
            )
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


def _with_track_ids(table: pa.Table, tracker: VideoTracker) -> pa.Table:
    """``table`` (one row group of a video's detections, in frame order) with a ``track_id`` in
    every box."""
    lists = table["detections"].combine_chunks()
    offsets = lists.offsets.to_numpy()
    offsets = offsets - offsets[0]
    boxes = lists.flatten()
    xyxy = np.stack(
        [
            pc.struct_field(boxes, k).to_numpy(zero_copy_only=False)
            for k in ("x1", "y1", "x2", "y2")
        ],
        axis=1,
    )
    confidence = pc.struct_field(boxes, "confidence").to_numpy(zero_copy_only=False)
    class_id = pc.struct_field(boxes, "class_id").to_numpy(zero_copy_only=False)
    track_ids = np.full(len(boxes), NO_TRACK, np.int32)
    frames = table["frame_index"].to_numpy()
    stamps = table["timestamp_s"].to_numpy()
    for i in range(table.num_rows):
        a, b = offsets[i], offsets[i + 1]
        track_ids[a:b] = tracker.update(
            int(frames[i]), float(stamps[i]), Detections(xyxy[a:b], confidence[a:b], class_id[a:b])
        )
    fields = boxes.flatten()
    fields.append(pa.array(track_ids, pa.int32(), mask=track_ids == NO_TRACK))
    tracked_boxes = pa.StructArray.from_arrays(fields, fields=list(TRACKED_BOX_TYPE))
    tracked_lists = pa.ListArray.from_arrays(
        pa.array(offsets, pa.int32()), tracked_boxes, type=pa.list_(TRACKED_BOX_TYPE)
    )
    return table.set_column(
        table.schema.get_field_index("detections"),
        pa.field("detections", tracked_lists.type),
        tracked_lists,
    )


def track_detections_file(
    source: Path,
    tracked: Path,
    tracks: Path,
    *,
    video_id: str,
    names: dict[int, str],
    settings: dict | None = None,
) -> int:
    """Track one video: read its detections (``source``, in frame order) a row group at a time,
    write the same rows with track ids to ``tracked`` (same row groups) and the per-track
    summary to ``tracks``. Memory stays flat however long the video. Returns the track count."""
    tracker = VideoTracker(settings)
    parquet = pq.ParquetFile(source)
    with pq.ParquetWriter(tracked, detections_schema(tracked=True), compression="zstd") as writer:
        for group in range(parquet.num_row_groups):
            table = parquet.read_row_group(group)
            writer.write_table(
                _with_track_ids(table, tracker), row_group_size=max(table.num_rows, 1)
            )
    pq.write_table(tracker.summary_table(video_id, names), tracks, compression="zstd")
    return tracker.num_tracks
