"""Per-video status (``videos.parquet``) and the resume decision.

A video's status is recorded only after its detections file is in place, so after a crash every
``ok`` record has its rows on disk. Recording a finished video costs the same whatever the
backlog's size: one line appended to ``videos.log`` (JSON lines). The log is compacted into
``videos.parquet`` (replaced atomically, so readers never see a torn file) once it holds as
many lines as half the records, so the rewrites cost O(1) per video amortized; every 10 s at
most while videos finish, but never more often than 20 times the last compaction's duration
(so they take at most 5 % of the coordinator's time), so readers of a running output are not
far behind; and at the end of every run. Loading replays the log over the Parquet file: a run that died between two
compactions loses nothing.

Before a video's files are put in place, a ``{"committing": id}`` line is logged. A run killed
between that line and the video's record leaves complete files without a record; the next fold of
the log (``compact``, at the end of every run and before the next one plans) removes them, so
readers never see rows that ``videos.parquet`` does not account for.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from itertools import islice
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.locations import redact
from pipeline.media.source import VideoSource
from pipeline.output.layout import OutputLayout
from pipeline.output.writer import durable_replace

log = logging.getLogger(__name__)

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


class Manifest:
    """The status of every video ever processed into one output directory."""

    FILE_NAME = OutputLayout.MANIFEST
    LOG_NAME = OutputLayout.MANIFEST_LOG
    CLASS_NAMES_KEY = b"pipeline.class_names"  # the model's classes, so readers can reject a typo
    COMPACT_MIN_LINES = 256  # below this many logged videos, the count rule never asks to compact
    FRESH_S = 10.0  # the time rule: compact when this much time passed since the last one ...
    FRESH_COST_FACTOR = 20  # ... and at least this many times the last compaction's duration
    SAVE_CHUNK = 65536  # records turned into rows at a time by save()

    def __init__(self, output: Path):
        layout = OutputLayout(output)
        self.path, self.log_path = layout.manifest, layout.manifest_log
        self.records: dict[str, VideoRecord] = {}
        self.class_names: dict[int, str] | None = None  # the latest run's model classes
        self.logged = 0  # lines in the log since the last compaction
        # commits the log began but never recorded (a killed run)
        self.interrupted: set[str] = set()
        self._committing: set[str] = set()  # commits begun by this process, not yet recorded
        self._compacted_at = time.monotonic()
        self._compaction_s = 0.0
        names = {f.name for f in fields(VideoRecord)}
        if self.path.exists():
            table = pq.read_table(self.path)
            self.class_names = self.class_names_in(table.schema)
            for row in table.to_pylist():
                record = VideoRecord(**{k: v for k, v in row.items() if k in names})
                self.records[record.video_id] = record
        if self.log_path.exists():
            self._replay(names)

    def _replay(self, names: set[str]) -> None:
        with open(self.log_path, "rb") as f:
            for number, line in enumerate(f, 1):
                try:
                    row = json.loads(line)
                    if "committing" in row:
                        self.interrupted.add(row["committing"])
                        continue
                    record = VideoRecord(**{k: v for k, v in row.items() if k in names})
                except (
                    ValueError,
                    TypeError,
                ) as exc:  # a line cut short by a crash: that video is redone
                    log.warning(
                        "%s line %d is unreadable (%s); its video will be processed again",
                        self.log_path,
                        number,
                        exc,
                    )
                    continue
                self.records[record.video_id] = record
                self.interrupted.discard(record.video_id)
                self.logged += 1

    @classmethod
    def class_names_in(cls, schema: pa.Schema) -> dict[int, str] | None:
        raw = (schema.metadata or {}).get(cls.CLASS_NAMES_KEY)
        return {int(k): v for k, v in json.loads(raw).items()} if raw else None

    def is_complete(self, source: VideoSource, settings_hash: str) -> bool:
        """Done before with the same content and the same result-changing settings.

        Only ``ok`` counts: a ``partial`` or ``failed`` video is tried again, since the file may
        have been repaired or the cause may have been transient.
        """
        record = self.records.get(source.video_id)
        return (
            record is not None
            and record.status == "ok"
            and record.settings_hash == settings_hash
            and record.size_bytes == source.size_bytes
            and record.mtime_ns == source.mtime_ns
        )

    def update(self, record: VideoRecord) -> None:
        """Change the record in memory only (``save`` writes it)."""
        self.records[record.video_id] = record

    def committing(self, video_id: str) -> None:
        """Log that this video's files are about to be put in place (before its record)."""
        self._committing.add(video_id)
        self._append({"committing": video_id})

    def record(self, record: VideoRecord) -> None:
        """Change the record and append it to the log: durable against a crash of this process, at
        a cost that does not depend on how many videos the manifest holds."""
        self.records[record.video_id] = record
        self._append(record.as_row())
        self._committing.discard(record.video_id)
        self.logged += 1

    def forget_interrupted(self) -> None:
        """After the caller removed the files of the interrupted commits: drop their records too
        (an older record would describe rows that are gone), so those videos are processed again."""
        for video_id in self.interrupted:
            self.records.pop(video_id, None)
        self.interrupted = set()

    def _append(self, row: dict) -> None:
        line = (json.dumps(row, separators=(",", ":")) + "\n").encode()
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            # one write of one line: a crash leaves whole lines and at most a torn last one
            os.write(fd, line)
        finally:
            os.close(fd)

    def compaction_due(self, now: float | None = None) -> bool:
        """Whether to fold the log into videos.parquet now: it holds half as many lines as there
        are records (O(N) work every N/2 videos), or the time rule says readers waited long enough."""
        if not self.logged:
            return False
        if self.logged >= max(self.COMPACT_MIN_LINES, len(self.records) // 2):
            return True
        now = time.monotonic() if now is None else now
        return now - self._compacted_at >= max(
            self.FRESH_S, self.FRESH_COST_FACTOR * self._compaction_s
        )

    def save(self) -> None:
        """Write every record into videos.parquet (atomically), then empty the log. Refuses while
        interrupted commits are unsettled (their files would outlive the log that names them)."""
        if self.interrupted:
            raise RuntimeError(
                f"{len(self.interrupted)} interrupted commits: remove their files, "
                "then call forget_interrupted()"
            )
        started = time.monotonic()
        schema = VIDEOS_SCHEMA
        if self.class_names is not None:
            schema = schema.with_metadata({self.CLASS_NAMES_KEY: json.dumps(self.class_names)})
        temp = OutputLayout.temp_beside(self.path, "videos")
        try:
            # A chunk of rows at a time: a million records never exist twice over as row dicts.
            with pq.ParquetWriter(temp, schema) as writer:
                records = iter(self.records.values())
                while chunk := [r.as_row() for r in islice(records, self.SAVE_CHUNK)]:
                    writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
                if not self.records:
                    writer.write_table(schema.empty_table())
            durable_replace(temp, self.path)
        except BaseException:
            temp.unlink(missing_ok=True)  # the last complete videos.parquet stays as it was
            raise
        # Only now: a crash before this line replays lines that videos.parquet already holds, which
        # changes nothing.
        self.log_path.unlink(missing_ok=True)
        for video_id in self._committing:  # commits in progress keep their line
            self._append({"committing": video_id})
        self.logged = 0
        self._compacted_at = time.monotonic()
        self._compaction_s = self._compacted_at - started


def compact(output: Path, remove_files: Callable[[str], None]) -> bool:
    """Fold a log left by a run that ended early into videos.parquet. True when there was one.

    ``remove_files(video_id)`` is called first for every commit the log began but never recorded,
    and must remove that video's files wherever they were put."""
    if not (output / Manifest.LOG_NAME).exists():
        return False
    manifest = Manifest(output)
    for video_id in sorted(manifest.interrupted):
        remove_files(video_id)
    manifest.forget_interrupted()
    manifest.save()
    return True
