"""Per-video status (``videos.parquet``) and the resume decision.

A video's status is recorded only after its detections file is in place, so after a crash every
``ok`` record has its rows on disk. Recording a finished video costs the same whatever the
backlog's size: one line appended to ``videos.log`` (JSON lines, each record numbered: ``seq``).
The log is folded into a new part of ``videos.parquet`` (a folder of parts:
``pipeline.output.videos_table``) once it holds ``PENDING_MAX`` records (so the records held in
memory stay bounded); every 10 s at most while videos finish, but never more often than 20 times
the last fold's duration (so readers of a running output are not far behind); and at the end of
every run. A fold writes only the records since the last one. Loading replays the log over the
parts: a run that died between two folds loses nothing.

Before a video's files are put in place, a ``{"committing": id}`` line is logged. A run killed
between that line and the video's record leaves complete files without a record; the next fold of
the log (``compact``, at the end of every run and before the next one plans) removes them, so
readers never see rows that ``videos.parquet`` does not account for.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

import pyarrow as pa

from pipeline.media.source import VideoSource
from pipeline.output.layout import OutputLayout
from pipeline.output.manifest_log import (
    INTERRUPTED,
    TAKEN_OUT,
    InterruptedCommits,
    ManifestLog,
)
from pipeline.output.unfolded import Fold, Unfolded
from pipeline.output.video_record import (
    PREVIOUS_COLUMNS,
    VIDEOS_SCHEMA,
    Previous,
    Status,
    VideoRecord,
)
from pipeline.output.videos_table import SEQ, VideosTable

__all__ = ["VIDEOS_SCHEMA", "Manifest", "Status", "VideoRecord", "compact"]

log = logging.getLogger(__name__)


class Manifest:
    """The status of every video ever processed into one output directory.

    ``videos.parquet`` is a folder of parts (``VideosTable``): a fold writes the records logged
    since the last one as a new part, whatever the backlog, and merges parts when due. The
    records since the last fold (``Unfolded``, at most ``PENDING_MAX``) are held whole, and
    nothing of the stored ones (a run's planner pairs each video with its stored record in one
    streaming pass: ``pipeline.plan.resume``). Each record's log
    line carries its number (``seq``): the latest of a video wins, in the log and in the parts."""

    FILE_NAME = OutputLayout.MANIFEST
    LOG_NAME = OutputLayout.MANIFEST_LOG
    CLASS_NAMES_KEY = b"pipeline.class_names"  # the model's classes, so readers can reject a typo
    # Fold at this many logged records at the latest: the held records (about 440 bytes each)
    # stay bounded, and a fold writes this many rows whatever the backlog.
    PENDING_MAX = 16_384
    FRESH_S = 10.0  # the time rule: fold when this much time passed since the last one ...
    FRESH_COST_FACTOR = 20  # ... and at least this many times the last fold's duration

    def __init__(self, output: Path):
        layout = OutputLayout(output)
        self.path, self.log_path = layout.manifest, layout.manifest_log
        self.log = ManifestLog(self.log_path)
        self.table = VideosTable(self.path)
        self.unfolded = Unfolded()  # logged since the last fold
        self.folding: Fold | None = None  # a fold being written (begin_fold .. end_fold)
        self.class_names: dict[int, str] | None = None  # the latest run's model classes
        self.unsettled = InterruptedCommits()  # begun in the log, never recorded (a killed run)
        self._committing: dict[str, str | None] = {}  # this process's, not yet recorded
        self.timer = FoldTimer(self.FRESH_S, self.FRESH_COST_FACTOR)
        self.table.upgrade()  # an output written before parts: once
        self.table.remove_superseded()
        self.next_seq = self.table.last_seq() + 1
        if self.table.exists():
            schema = self.table.schema()
            self.class_names = self.class_names_in(schema) if schema is not None else None
        # the rotated logs too (a fold cut short), then the log
        self.log.replay(self.unfolded, self.unsettled, self._take_seq)

    @property
    def pending(self) -> dict[str, VideoRecord]:
        """The records since the last fold."""
        return self.unfolded.records

    @property
    def logged(self) -> int:
        """Records and drops in the log since the last fold."""
        return self.unfolded.logged

    @property
    def stored(self) -> int:
        """Rows in the live parts (a superseded record counts until a merge drops it)."""
        return sum(self.table.rows(part) for part in self.table.parts())

    def _take_seq(self, seq: int | None = None) -> int:
        seq = self.next_seq if seq is None else int(seq)
        self.next_seq = max(self.next_seq, seq + 1)
        self.unfolded.numbered(seq)
        return seq

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
        return _every_record(self.table, self.folding, self.unfolded)

    def previous(self, video_id: str) -> Previous | None:
        """The video's latest record as a resume decision sees it (None: never recorded, or
        dropped since): held since the last fold, in the fold being written, or stored (one
        lookup in the parts: for tools and tests; a run's planner gives each video its own in
        one streaming pass, ``pipeline.plan.resume``)."""
        record = self._held(video_id)
        if record is not None:
            return Previous.of(record.as_row())
        if self._was_dropped(video_id):
            return None
        for chunk in self.table.latest(PREVIOUS_COLUMNS, video_ids=[video_id]):
            for row in chunk.to_pylist():
                return Previous.of(row)
        return None

    def is_complete(self, source: VideoSource, settings_hash: str) -> bool:
        """Done before with the same content and the same result-changing settings."""
        previous = self.previous(source.video_id)
        return previous is not None and previous.complete_for(source, settings_hash)

    def has_record(self, video_id: str) -> bool:
        """Whether the video was ever recorded here (so files of an earlier version may exist)."""
        return self.previous(video_id) is not None

    def update(self, record: VideoRecord) -> None:
        """Change the record in memory only (``save`` writes it)."""
        self.unfolded.hold(record, self._take_seq())

    def committing(self, video_id: str, part: str | None = None) -> None:
        """Log that this video's files are about to be put in place (before its record):
        its own files, or its rows in the part file ``part``. The files may move once the
        line is written."""
        self._committing[video_id] = part
        self.log.append(
            {"committing": video_id} if part is None else {"committing": video_id, "part": part}
        )

    def record(self, record: VideoRecord) -> None:
        """Change the record and append it to the log: durable against a crash of this process
        once written, at a cost that does not depend on how many videos the manifest holds."""
        seq = self._take_seq()
        self.unfolded.hold(record, seq)
        self.log.append(record.as_row() | {"seq": seq})
        self._committing.pop(record.video_id, None)
        self.unfolded.logged += 1

    def drop(self, video_id: str) -> None:
        """The video has no usable record from now on (logged first): its rows are about to be
        taken out of the part that holds them, so a crash meanwhile cannot leave a record without
        rows. Unless a newer record follows, it is folded as ``failed``."""
        seq = self._take_seq()
        self.log.append({"dropped": video_id, "seq": seq})
        self.unfolded.drop(video_id, seq, TAKEN_OUT)
        self.unfolded.logged += 1

    def part_of(self, video_id: str) -> tuple[str | None, str | None]:
        """The part files (detections, tracks) that hold this video's rows now; None each for
        its own files (or no rows)."""
        previous = self.previous(video_id)
        return (
            (None, None) if previous is None else (previous.detections_part, previous.tracks_part)
        )

    def _held(self, video_id: str) -> VideoRecord | None:
        """The video's record since the last fold, or in the fold being written."""
        record = self.unfolded.records.get(video_id)
        if record is None and video_id not in self.unfolded.dropped and self.folding is not None:
            record = self.folding.record(video_id)
        return record

    def _was_dropped(self, video_id: str) -> bool:
        if video_id in self.unfolded.dropped:
            return True
        return self.folding is not None and video_id in self.folding.dropped

    def forget_interrupted(self) -> None:
        """After the caller removed the rows of the interrupted commits: drop their records too
        (an older record would describe rows that are gone), so those videos are processed again;
        a video recorded again after its interrupted commit keeps that newer record."""
        for video_id in self.unsettled.settle():
            self.unfolded.drop(video_id, self._take_seq(), INTERRUPTED)

    def compaction_due(self, now: float | None = None) -> bool:
        """Whether to fold the log into a new part now: it holds ``PENDING_MAX`` records, or the
        time rule says readers waited long enough."""
        return self.logged >= self.PENDING_MAX or (self.logged > 0 and self.timer.due(now))

    def schema(self) -> pa.Schema:
        return table_schema(self.class_names, self.CLASS_NAMES_KEY)

    def save(self) -> None:
        """Fold the records since the last fold into a new part of videos.parquet (whole or not
        at all), empty the log, and merge parts that are due, all in this thread."""
        fold = self.begin_fold()
        try:
            self.write_fold(fold)
        except BaseException:
            self.abort_fold(fold)
            raise
        self.end_fold(fold)
        self.merge_due()

    def begin_fold(self) -> Fold:
        """Take the records since the last fold out of the log (rotated: ``videos.log.<n>``)
        and hold them as a fold for ``write_fold`` (any thread) and then ``end_fold``; records
        meanwhile go to a new log. Refuses while interrupted commits are unsettled (their files
        would outlive the log that names them)."""
        if self.interrupted:
            raise RuntimeError(
                f"{len(self.interrupted)} interrupted commits: remove their files, "
                "then call forget_interrupted()"
            )
        assert self.folding is None, "one fold at a time"
        if self.unfolded.lo is None:
            self.next_seq += 1  # nothing since the last fold: an empty part's number
        self.log.rotation.result()  # the last fold's rename done: its number is on disk
        logs = self.log.rotated()
        fold = self.unfolded.take(self.next_seq - 1, logs, self.schema(), time.monotonic())
        if (rotated := self.log.rotate(logs)) is not None:
            fold.logs.append(rotated)
        for video_id, part in self._committing.items():  # commits in progress keep their line
            self.log.append({"committing": video_id} | ({"part": part} if part else {}))
        self.folding = fold
        return fold

    def write_fold(self, fold: Fold) -> None:
        """The fold's part (any thread: it touches only the fold and the parts)."""
        fold.write(self.table)

    def end_fold(self, fold: Fold) -> None:
        """After ``write_fold``: the fold's logs go (a crash before this replays lines the new part
        holds, and the next fold writes the same part or one that covers it)."""
        self.log.rotation.result()  # (done already, unless the log's thread is behind)
        for rotated in fold.logs:
            rotated.unlink(missing_ok=True)
        self.folding = None
        self.timer.folded(fold.started)

    def abort_fold(self, fold: Fold) -> None:
        """A fold whose part could not be written: its records are held again."""
        self.unfolded.give_back(fold)
        self.folding = None

    def merge_due(self) -> int:
        """Merge parts while a merge is due (any thread, one at a time: folds may add parts
        meanwhile, and only merges remove them); how many merges."""
        merges = 0
        while due := self.table.due_merge():
            self.table.merge(due, self.schema())
            merges += 1
        return merges


@dataclass
class FoldTimer:
    """The time rule: fold when ``fresh_s`` passed since the last fold, and at least
    ``cost_factor`` times that fold's duration (so readers of a running output are not far
    behind, and folds take a bounded share of the time)."""

    fresh_s: float
    cost_factor: float
    folded_at: float = field(default_factory=time.monotonic)
    took_s: float = 0.0

    def due(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return now - self.folded_at >= max(self.fresh_s, self.cost_factor * self.took_s)

    def folded(self, started: float) -> None:
        self.folded_at = time.monotonic()
        self.took_s = self.folded_at - started


def table_schema(class_names: dict[int, str] | None, key: bytes) -> pa.Schema:
    """``videos.parquet``'s schema, with the latest run's model classes (readers reject a typo)."""
    if class_names is None:
        return VIDEOS_TABLE_SCHEMA
    return VIDEOS_TABLE_SCHEMA.with_metadata({key: json.dumps(class_names)})


def _every_record(
    table: VideosTable, folding: Fold | None, unfolded: Unfolded
) -> dict[str, VideoRecord]:
    """The stored records, then the fold's being written, then those since: the latest wins."""
    records: dict[str, VideoRecord] = {}
    names = {f.name for f in fields(VideoRecord)}
    for chunk in table.latest():
        for row in chunk.to_pylist():
            records[row["video_id"]] = VideoRecord(**{k: v for k, v in row.items() if k in names})
    if folding is not None:
        for video_id in folding.dropped:
            records.pop(video_id, None)
        records.update({r.video_id: r for r in folding.records})
    for video_id in unfolded.dropped:
        records.pop(video_id, None)
    records.update(unfolded.records)
    return records


VIDEOS_TABLE_SCHEMA = VIDEOS_SCHEMA.append(pa.field(SEQ, pa.int64()))


def compact(output: Path, remove_rows: Callable[[str, set[str | None]], None]) -> bool:
    """Fold a log left by a run that ended early into videos.parquet. True when there was one.

    ``remove_rows(video_id, places)`` is called first for every commit the log began but never
    recorded, and must remove that video's rows from each place: its own files (None) or a part
    file's key."""
    if not any(output.glob(f"{Manifest.LOG_NAME}*")):  # the log, or logs a fold rotated
        return False
    manifest = Manifest(output)
    for video_id in sorted(manifest.interrupted):
        remove_rows(video_id, manifest.interrupted[video_id])
    manifest.forget_interrupted()
    manifest.save()
    return True
