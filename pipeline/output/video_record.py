"""One video's record in ``videos.parquet``: its fields, their Arrow schema, and the key that
the resume decision compares (Ray-free)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal

import pyarrow as pa

from pipeline.locations import redact
from pipeline.media.source import VideoSource
from pipeline.output.parts import is_part

Status = Literal["ok", "partial", "failed"]

VIDEOS_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("path", pa.string()),
        ("status", pa.string()),
        ("frames_processed", pa.int64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("fps", pa.float64()),
        ("error", pa.string()),
        ("frames_decoded", pa.int64()),
        ("num_detections", pa.int64()),
        ("codec", pa.string()),
        ("rotation", pa.int32()),
        ("size_bytes", pa.int64()),
        ("mtime_ns", pa.int64()),
        ("settings_hash", pa.string()),
        ("processing_s", pa.float64()),
        ("decode_attempts", pa.int32()),
        # Boxes per class, busiest first: lets readers skip the files of videos without a class.
        (
            "class_counts",
            pa.list_(
                pa.struct(
                    [("class_id", pa.int32()), ("class_name", pa.string()), ("count", pa.int64())]
                )
            ),
        ),
        ("num_tracks", pa.int32()),  # null when the run did not track
        # Where a packed video's rows are (pipeline.output.parts): its part file (a key under the
        # output) and row groups. Null: its own file, detections/<video_id>.parquet, all of it.
        ("detections_file", pa.string()),
        ("row_groups", pa.list_(pa.int32())),
        ("tracks_file", pa.string()),  # with --track; null: tracks/<video_id>.parquet
    ]
)


@dataclass(slots=True)
class VideoRecord:
    video_id: str
    path: str
    status: Status
    frames_processed: int = 0
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    error: str | None = None
    frames_decoded: int = 0
    num_detections: int = 0
    codec: str | None = None
    rotation: int = 0
    size_bytes: int = -1
    mtime_ns: int = -1
    settings_hash: str = ""
    processing_s: float = 0.0
    decode_attempts: int = 0
    class_counts: list[dict] = field(default_factory=list)
    num_tracks: int | None = None
    detections_file: str | None = None
    row_groups: list[int] | None = None
    tracks_file: str | None = None

    def __post_init__(self) -> None:
        # null in files written before the column existed
        self.class_counts = list(self.class_counts or [])
        if self.status not in ("ok", "partial", "failed"):
            raise ValueError(f"status must be ok, partial or failed; got {self.status!r}")
        if self.status == "ok" and self.frames_processed == 0:
            raise ValueError(f"video {self.path}: 'ok' with 0 frames is not allowed")
        if self.status != "ok" and not self.error:
            raise ValueError(f"video {self.path}: status {self.status} needs an error message")

    def as_row(self) -> dict:
        """The record as a plain dict (shallow: ``dataclasses.asdict`` deep-copies, 10x slower)."""
        return {name: getattr(self, name) for name in _RECORD_FIELDS}

    @classmethod
    def failed(cls, source: VideoSource, error: str, settings_hash: str, **extra) -> VideoRecord:
        return cls(
            video_id=source.video_id,
            path=redact(source.path),
            status="failed",
            error=error,
            size_bytes=source.size_bytes,
            mtime_ns=source.mtime_ns,
            settings_hash=settings_hash,
            **extra,
        )


_RECORD_FIELDS = tuple(f.name for f in fields(VideoRecord))


# The stored columns a ``Previous`` is made of.
PREVIOUS_COLUMNS = [
    "status",
    "settings_hash",
    "size_bytes",
    "mtime_ns",
    "detections_file",
    "tracks_file",
]


@dataclass(frozen=True, slots=True)
class Previous:
    """A video's latest record from before this run, as much as the run needs of it: whether it
    is complete for the run's settings (``complete_for``), and where its rows are when they are
    in part files (to take them out before the video is processed again)."""

    status: str
    settings_hash: str
    size_bytes: int
    mtime_ns: int
    detections_part: str | None = None  # None: its own files (or, failed, no rows)
    tracks_part: str | None = None

    @classmethod
    def of(cls, row: dict) -> Previous:
        """From a stored row (or ``VideoRecord.as_row()``): a failed video's rows are gone, so
        it has no part."""
        detections = row.get("detections_file")  # (absent from outputs written before parts)
        tracks = row.get("tracks_file")
        packed = row["status"] != "failed" and is_part(detections)
        return cls(
            row["status"],
            row["settings_hash"] or "",
            row["size_bytes"],
            row["mtime_ns"],
            detections if packed else None,
            tracks if packed and is_part(tracks) else None,
        )

    def complete_for(self, source: VideoSource, settings_hash: str) -> bool:
        """Done with the same content and the same result-changing settings. Only ``ok``
        counts: a ``partial`` or ``failed`` video is tried again (the file may have been
        repaired, the cause may have been transient)."""
        return (
            self.status == "ok"
            and self.settings_hash == settings_hash
            and self.size_bytes == source.size_bytes
            and self.mtime_ns == source.mtime_ns
        )
