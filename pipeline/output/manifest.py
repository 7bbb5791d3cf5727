"""Per-video status (``videos.parquet``) and the resume decision.

A video's status is recorded only after its detections file is in place, so after a crash every
``ok`` record has its rows on disk. Recording a finished video costs the same whatever the
backlog's size: one line appended to ``videos.log`` (JSON lines). The log is compacted into
``videos.parquet`` (replaced atomically, so readers never see a torn file) once it holds as
many lines as half the records or ``PENDING_MAX`` (so the records held in memory stay bounded;
past ``2 * PENDING_MAX`` videos a rewrite costs O(N) every ``PENDING_MAX`` videos); every 10 s
at most while videos finish, but never more often than 20 times the last compaction's duration
(so readers of a running output are not far behind); and at the end of every run. Loading
replays the log over the Parquet file: a run that died between two compactions loses nothing.

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from itertools import islice
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.locations import redact
from pipeline.media.source import VideoSource
from pipeline.output.layout import OutputLayout
from pipeline.output.parts import is_part
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


def _complete_key(video_id: str, settings_hash: str, size_bytes: int, mtime_ns: int) -> int:
    """What ``is_complete`` compares, in 8 bytes (Python's hash: only ever compared within one
    process; two different videos share a key with odds of about 2**-64)."""
    return hash((video_id, settings_hash, size_bytes, mtime_ns))


class Manifest:
    """The status of every video ever processed into one output directory.

    Its memory does not grow with the backlog: the records since ``videos.parquet`` was last
    written (``pending``, at most ``PENDING_MAX``) are held whole; of the stored ones only an
    8-byte key of each ``ok`` video, for the resume decision. ``save`` streams the stored rows
    through, a batch at a time. ``records`` reads them all, for tools and tests."""

    FILE_NAME = OutputLayout.MANIFEST
    LOG_NAME = OutputLayout.MANIFEST_LOG
    CLASS_NAMES_KEY = b"pipeline.class_names"  # the model's classes, so readers can reject a typo
    COMPACT_MIN_LINES = 256  # below this many logged videos, the count rule never asks to compact
    # The count rule asks at half the records, but never later than this many: the held records
    # (about 440 bytes each) stay bounded. Past 2 * PENDING_MAX videos a compaction costs
    # O(N) every PENDING_MAX videos: about 0.7 µs a stored row, 0.7 s per 25,000 videos at a million.
    PENDING_MAX = 25_000
    FRESH_S = 10.0  # the time rule: compact when this much time passed since the last one ...
    FRESH_COST_FACTOR = 20  # ... and at least this many times the last compaction's duration
    SAVE_CHUNK = 8192  # rows written (and stored rows read) at a time by save()

    def __init__(self, output: Path):
        layout = OutputLayout(output)
        self.path, self.log_path = layout.manifest, layout.manifest_log
        self.pending: dict[str, VideoRecord] = {}  # recorded since videos.parquet was written
        self.stored = 0  # rows in videos.parquet
        self._index = StoredIndex()  # what the resume decisions need of the stored rows
        self._dropped: set[str] = set()  # stored rows the next save leaves out
        self.class_names: dict[int, str] | None = None  # the latest run's model classes
        self.logged = 0  # lines in the log since the last compaction
        self.unsettled = InterruptedCommits()  # begun in the log, never recorded (a killed run)
        self._committing: dict[str, str | None] = {}  # this process's, not yet recorded
        self._compacted_at = time.monotonic()
        self._compaction_s = 0.0
        if self.path.exists():
            self._index_stored()
        if self.log_path.exists():
            self._replay({f.name for f in fields(VideoRecord)})

    def _index_stored(self) -> None:
        file = pq.ParquetFile(self.path)
        self.class_names = self.class_names_in(file.schema_arrow)
        self.stored = file.metadata.num_rows
        self._index = StoredIndex.of(file)

    def _replay(self, names: set[str]) -> None:
        for row in _log_lines(self.log_path):
            if "committing" in row:
                self.unsettled.begun(row["committing"], row.get("part"))
            elif "dropped" in row:
                self._drop(row["dropped"])
            else:
                try:
                    record = VideoRecord(**{k: v for k, v in row.items() if k in names})
                except (ValueError, TypeError) as exc:
                    log.warning(
                        "%s: a record is unreadable (%s): processed again", self.log_path, exc
                    )
                    continue
                self.pending[record.video_id] = record
                self.unsettled.recorded(record.video_id, record.detections_file)
                self.logged += 1

    @property
    def interrupted(self) -> dict[str, set[str | None]]:
        """Commits the log began but never recorded, by video: where each put rows (a part's
        key; None: the video's own files)."""
        return self.unsettled.places

    @classmethod
    def class_names_in(cls, schema: pa.Schema) -> dict[int, str] | None:
        raw = (schema.metadata or {}).get(cls.CLASS_NAMES_KEY)
        return {int(k): v for k, v in json.loads(raw).items()} if raw else None

    @property
    def records(self) -> dict[str, VideoRecord]:
        """Every record, read whole (O(backlog) memory: for tools and tests, not for a run)."""
        records: dict[str, VideoRecord] = {}
        names = {f.name for f in fields(VideoRecord)}
        for row in self._stored_rows():
            records[row["video_id"]] = VideoRecord(**{k: v for k, v in row.items() if k in names})
        for video_id in self._dropped:
            records.pop(video_id, None)
        records.update(self.pending)
        return records

    def _stored_rows(self) -> Iterator[dict]:
        if self.path.exists():
            for batch in pq.ParquetFile(self.path).iter_batches(self.SAVE_CHUNK, use_threads=False):
                yield from batch.to_pylist()

    def is_complete(self, source: VideoSource, settings_hash: str) -> bool:
        """Done before with the same content and the same result-changing settings.

        Only ``ok`` counts: a ``partial`` or ``failed`` video is tried again, since the file may
        have been repaired or the cause may have been transient.
        """
        record = self.pending.get(source.video_id)
        if record is not None:
            return (
                record.status == "ok"
                and record.settings_hash == settings_hash
                and record.size_bytes == source.size_bytes
                and record.mtime_ns == source.mtime_ns
            )
        if source.video_id in self._dropped:
            return False
        key = _complete_key(source.video_id, settings_hash, source.size_bytes, source.mtime_ns)
        return _holds(self._index.complete, key)

    def has_record(self, video_id: str) -> bool:
        """Whether the video was ever recorded here (so files of an earlier version may exist)."""
        if video_id in self.pending:
            return True
        if video_id in self._dropped:
            return False
        return _holds(self._index.ids, hash(video_id))

    def update(self, record: VideoRecord) -> None:
        """Change the record in memory only (``save`` writes it)."""
        self.pending[record.video_id] = record

    def committing(self, video_id: str, part: str | None = None) -> None:
        """Log that this video's files are about to be put in place (before its record):
        its own files, or its rows in the part file ``part``."""
        self._committing[video_id] = part
        self._append(
            {"committing": video_id} if part is None else {"committing": video_id, "part": part}
        )

    def record(self, record: VideoRecord) -> None:
        """Change the record and append it to the log: durable against a crash of this process, at
        a cost that does not depend on how many videos the manifest holds."""
        self.pending[record.video_id] = record
        self._append(record.as_row())
        self._committing.pop(record.video_id, None)
        self.logged += 1

    def drop(self, video_id: str) -> None:
        """The video has no record from now on (logged first): its rows are about to be taken
        out of the part that holds them, so a crash meanwhile cannot leave a record without rows."""
        self._append({"dropped": video_id})
        self._drop(video_id)

    def _drop(self, video_id: str) -> None:
        self.pending.pop(video_id, None)
        self._dropped.add(video_id)

    def part_of(self, video_id: str) -> tuple[str | None, str | None]:
        """The part files (detections, tracks) that hold this video's rows now; None each for
        its own files (or no rows)."""
        record = self.pending.get(video_id)
        if record is not None:
            return (
                record.detections_file if is_part(record.detections_file) else None,
                record.tracks_file if is_part(record.tracks_file) else None,
            )
        if video_id in self._dropped:
            return None, None
        return self._index.packed.get(video_id)

    def forget_interrupted(self) -> None:
        """After the caller removed the rows of the interrupted commits: drop their records too
        (an older record would describe rows that are gone), so those videos are processed again;
        a video recorded again after its interrupted commit keeps that newer record."""
        for video_id in self.unsettled.settle():
            self._drop(video_id)

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
        are records (O(N) work every N/2 videos) or ``PENDING_MAX``, or the time rule says
        readers waited long enough."""
        if not self.logged:
            return False
        half = (self.stored + len(self.pending)) // 2
        if self.logged >= max(self.COMPACT_MIN_LINES, min(half, self.PENDING_MAX)):
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
            with pq.ParquetWriter(temp, schema) as writer:
                gone = pa.array([*self.pending, *self._dropped], pa.string())
                rows, replaced = _copy_stored(self.path, gone, writer, schema)
                records = iter(self.pending.values())
                while chunk := list(islice(records, self.SAVE_CHUNK)):
                    writer.write_table(_as_table(chunk, schema))
                if not rows and not self.pending:
                    writer.write_table(schema.empty_table())
            durable_replace(temp, self.path)
        except BaseException:
            temp.unlink(missing_ok=True)  # the last complete videos.parquet stays as it was
            raise
        # Only now: a crash before this line replays lines that videos.parquet already holds, which
        # changes nothing.
        self.log_path.unlink(missing_ok=True)
        for video_id, part in self._committing.items():  # commits in progress keep their line
            self._append({"committing": video_id} | ({"part": part} if part else {}))
        self._index.saved(self.path, self.pending, self._dropped, replaced)
        self.stored = rows + len(self.pending)
        self.pending, self._dropped = {}, set()
        self.logged = 0
        self._compacted_at = time.monotonic()
        self._compaction_s = self._compacted_at - started


_KEY_COLUMNS = ("status", "video_id", "settings_hash", "size_bytes", "mtime_ns")


def _copy_stored(
    path: Path, gone: pa.Array, writer: pq.ParquetWriter, schema: pa.Schema
) -> tuple[int, np.ndarray]:
    """Copy the stored rows of videos not in ``gone`` (replaced by a pending record, or
    dropped), a batch at a time; returns how many, and the keys of the ok rows left out."""
    if not path.exists():
        return 0, np.empty(0, np.int64)
    rows, left_out = 0, []
    for batch in pq.ParquetFile(path).iter_batches(Manifest.SAVE_CHUNK, use_threads=False):
        out = pc.is_in(batch.column("video_id"), value_set=gone)
        if pc.any(out).as_py():
            left_out.append(_ok_keys(batch.filter(out).select(list(_KEY_COLUMNS))))
            batch = batch.filter(pc.invert(out))
        if batch.num_rows:
            writer.write_table(_in_schema(batch, schema))
            rows += batch.num_rows
    return rows, np.concatenate([np.empty(0, np.int64), *left_out])


def _log_lines(path: Path) -> Iterator[dict]:
    """The log's lines as dicts; a line cut short by a crash is skipped (its video is redone)."""
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            try:
                yield json.loads(line)
            except ValueError as exc:
                log.warning(
                    "%s line %d is unreadable (%s): its video is processed again", path, number, exc
                )


@dataclass
class InterruptedCommits:
    """Commits the log began (a ``committing`` line) and never recorded, by video: where each
    was putting rows (a part's key; None: the video's own files). A record settles the commit
    that put its rows where it says; one elsewhere (by a worker presumed dead) is still to be
    removed, but the video keeps that newer record."""

    places: dict[str, set[str | None]] = field(default_factory=dict)
    recorded_since: set[str] = field(default_factory=set)  # recorded again after such a commit

    def begun(self, video_id: str, part: str | None) -> None:
        self.places.setdefault(video_id, set()).add(part)
        self.recorded_since.discard(video_id)

    def recorded(self, video_id: str, detections_file: str | None) -> None:
        places = self.places.get(video_id)
        if places is None:
            return
        places.discard(detections_file if is_part(detections_file) else None)
        if places:
            self.recorded_since.add(video_id)
        else:
            del self.places[video_id]

    def settle(self) -> list[str]:
        """Forget them all (their rows are removed); returns the videos whose record must go."""
        drop = [v for v in self.places if v not in self.recorded_since]
        self.places, self.recorded_since = {}, set()
        return drop


def _as_table(records: list[VideoRecord], schema: pa.Schema) -> pa.Table:
    """Records as rows, a column at a time (a dict per row would hold every value twice over)."""
    columns = {f.name: [getattr(r, f.name) for r in records] for f in schema}
    return pa.Table.from_pydict(columns, schema=schema)


def _in_schema(batch: pa.RecordBatch, schema: pa.Schema) -> pa.Table:
    """Stored rows as today's schema: columns added since the file was written are null."""
    columns = [
        batch.column(f.name) if f.name in batch.schema.names else pa.nulls(batch.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def compact(output: Path, remove_rows: Callable[[str, set[str | None]], None]) -> bool:
    """Fold a log left by a run that ended early into videos.parquet. True when there was one.

    ``remove_rows(video_id, places)`` is called first for every commit the log began but never
    recorded, and must remove that video's rows from each place: its own files (None) or a part
    file's key."""
    if not (output / Manifest.LOG_NAME).exists():
        return False
    manifest = Manifest(output)
    for video_id in sorted(manifest.interrupted):
        remove_rows(video_id, manifest.interrupted[video_id])
    manifest.forget_interrupted()
    manifest.save()
    return True


def _holds(sorted_keys: np.ndarray, key: int) -> bool:
    at = int(np.searchsorted(sorted_keys, key))
    return at < len(sorted_keys) and int(sorted_keys[at]) == key


def _ok_keys(batch: pa.RecordBatch) -> np.ndarray:
    ok = batch.filter(pc.equal(batch.column("status"), "ok"))
    columns = [ok.column(name).to_pylist() for name in _KEY_COLUMNS[1:]]
    return np.fromiter((_complete_key(*row) for row in zip(*columns)), np.int64, count=ok.num_rows)


@dataclass
class StoredIndex:
    """What a run needs to know of ``videos.parquet``'s rows, in a few bytes a video: the keys
    of the complete ones (``is_complete``), every video's id hashed (``has_record``), where the
    packed ones are."""

    complete: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # sorted
    ids: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # sorted
    packed: _PackedIndex = field(default_factory=lambda: _PackedIndex())

    @classmethod
    def of(cls, file: pq.ParquetFile) -> StoredIndex:
        keys, ids = [], []
        columns = list(_KEY_COLUMNS)
        for batch in file.iter_batches(Manifest.SAVE_CHUNK, columns=columns, use_threads=False):
            keys.append(_ok_keys(batch))
            ids.append(np.fromiter(map(hash, batch.column("video_id").to_pylist()), np.int64))
        empty = np.empty(0, np.int64)
        return cls(
            np.unique(np.concatenate([empty, *keys])),
            np.unique(np.concatenate([empty, *ids])),
            _PackedIndex.of(file),
        )

    def saved(
        self, path: Path, pending: dict[str, VideoRecord], dropped: set[str], replaced: np.ndarray
    ) -> None:
        """After ``save``: the pending records are stored now, the dropped ones gone."""
        added = [
            _complete_key(r.video_id, r.settings_hash, r.size_bytes, r.mtime_ns)
            for r in pending.values()
            if r.status == "ok"
        ]
        kept = np.setdiff1d(self.complete, replaced, assume_unique=True)
        self.complete = np.unique(np.concatenate([kept, np.array(added, np.int64)]))
        gone = np.fromiter(map(hash, [*pending, *dropped]), np.int64)
        self.ids = np.union1d(
            np.setdiff1d(self.ids, gone), np.fromiter(map(hash, pending), np.int64)
        )
        if self.packed or any(is_part(r.detections_file) for r in pending.values()):
            self.packed = _PackedIndex.of(pq.ParquetFile(path))  # O(N), only with parts


class _PackedIndex:
    """Where the stored packed videos' rows are: 12 bytes a packed video (a key of its id, and
    which of the few distinct part pairs it is in), none for the others."""

    def __init__(self, keys=None, at=None, places: list | None = None):
        self.keys = np.empty(0, np.int64) if keys is None else keys  # sorted
        self.at = np.empty(0, np.int32) if at is None else at
        self.places: list[tuple[str | None, str | None]] = places or []

    def __bool__(self) -> bool:
        return bool(len(self.keys))

    @classmethod
    def of(cls, file: pq.ParquetFile) -> _PackedIndex:
        names = file.schema_arrow.names
        if "detections_file" not in names:
            return cls()
        columns = ["video_id", "status", "detections_file", "tracks_file"]
        places: dict[tuple, int] = {}
        keys, at = [], []
        for batch in file.iter_batches(Manifest.SAVE_CHUNK, columns=columns, use_threads=False):
            packed = batch.filter(pc.is_valid(batch.column("detections_file")))
            for video_id, status, detections, tracks in zip(
                *(packed.column(c).to_pylist() for c in columns)
            ):
                if status != "failed" and is_part(detections):
                    keys.append(hash(video_id))
                    at.append(
                        places.setdefault(
                            (detections, tracks if is_part(tracks) else None), len(places)
                        )
                    )
        order = np.argsort(np.array(keys, np.int64), kind="stable")
        return cls(np.array(keys, np.int64)[order], np.array(at, np.int32)[order], list(places))

    def get(self, video_id: str) -> tuple[str | None, str | None]:
        key = hash(video_id)
        i = int(np.searchsorted(self.keys, key))
        if i < len(self.keys) and int(self.keys[i]) == key:
            return self.places[int(self.at[i])]
        return None, None
