"""The manifest's records since its last fold, and a fold of them into a part (Ray-free).

``Unfolded`` holds what was logged since the last fold, whole (at most about
``Manifest.PENDING_MAX`` records): each video's latest record with its number in the log
(``seq``), and the videos dropped since. A ``Fold`` is what one fold writes as a part: taken from
``Unfolded`` on the coordinator's loop (``take``), written in a thread, and given back when the
write failed (``give_back``), so that no record is lost between the two.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import pyarrow as pa

from pipeline.output.video_record import VideoRecord
from pipeline.output.videos_table import SEQ, VideosTable

ROWS_AT_A_TIME = 8192  # records turned into Arrow at a time by a fold
# A drop: the record the video had before (None: a stored one) and why its rows are gone.
Drop = tuple[VideoRecord | None, str]


@dataclass
class Fold:
    """The records a fold writes as one part: those logged (and dropped) between two folds,
    numbered ``lo``..``hi``; ``logs``: the rotated logs that hold them."""

    records: list[VideoRecord]
    seqs: list[int]
    dropped: dict[str, Drop]
    drop_seqs: dict[str, int]
    lo: int
    hi: int
    logs: list[Path]
    schema: pa.Schema
    started: float
    written: list[VideoRecord] = field(default_factory=list)
    _by_id: dict[str, VideoRecord] | None = None

    def write(self, table: VideosTable) -> None:
        """The fold's part, whole or absent (any thread: it touches only the fold and the
        parts)."""
        self.written = [*self.records, *failed_drops(self.dropped, table)]
        if self.written or not table.exists():
            seqs = self.seqs + [
                self.drop_seqs[r.video_id] for r in self.written[len(self.records) :]
            ]
            rows = as_table(self.written, seqs, self.schema)
            table.write_part(rows, self.lo, self.hi, self.schema)

    def record(self, video_id: str) -> VideoRecord | None:
        if self._by_id is None:
            self._by_id = {r.video_id: r for r in self.records}
        return self._by_id.get(video_id)


@dataclass
class Unfolded:
    """What was logged since the last fold: each video's latest record and the videos dropped
    since (a drop that no newer record follows folds as a failed record: its rows are gone),
    each with its log number."""

    records: dict[str, VideoRecord] = field(default_factory=dict)
    dropped: dict[str, Drop] = field(default_factory=dict)
    seqs: dict[str, int] = field(default_factory=dict)  # of each record and drop
    lo: int | None = None  # the first number logged since the last fold
    logged: int = 0  # records and drops in the log since the last fold

    def numbered(self, seq: int) -> None:
        self.lo = seq if self.lo is None else min(self.lo, seq)

    def hold(self, record: VideoRecord, seq: int) -> None:
        self.records[record.video_id] = record
        self.seqs[record.video_id] = seq
        self.dropped.pop(record.video_id, None)

    def drop(self, video_id: str, seq: int, why: str) -> None:
        self.dropped[video_id] = (self.records.pop(video_id, None), why)
        self.seqs[video_id] = seq

    def take(self, hi: int, logs: list[Path], schema: pa.Schema, started: float) -> Fold:
        """Everything held, as a fold of the numbers up to ``hi``; this is left empty."""
        fold = Fold(
            records=list(self.records.values()),
            seqs=[self.seqs[v] for v in self.records],
            dropped=self.dropped,
            drop_seqs={v: self.seqs[v] for v in self.dropped},
            lo=self.lo if self.lo is not None else hi,
            hi=hi,
            logs=logs,
            schema=schema,
            started=started,
        )
        self.records, self.dropped, self.seqs = {}, {}, {}
        self.lo, self.logged = None, 0
        return fold

    def give_back(self, fold: Fold) -> None:
        """A fold whose part could not be written: its records are held again (its logs stay,
        and the next fold takes them in); a record made since wins."""
        for record, seq in zip(fold.records, fold.seqs):
            if record.video_id not in self.records and record.video_id not in self.dropped:
                self.records[record.video_id] = record
                self.seqs[record.video_id] = seq
        for video_id, before in fold.dropped.items():
            if video_id not in self.records and video_id not in self.dropped:
                self.dropped[video_id] = before
                self.seqs[video_id] = fold.drop_seqs[video_id]
        self.logged += len(fold.records) + len(fold.dropped)
        self.numbered(fold.lo)


def failed_drops(dropped: dict[str, Drop], table: VideosTable) -> list[VideoRecord]:
    """Drops that no newer record followed, as failed records (their rows are gone): from the
    record each had before, or its stored one."""
    if not dropped:
        return []
    before = {video_id: record for video_id, (record, _) in dropped.items()}
    stored_ids = [v for v, record in before.items() if record is None]
    names = {f.name for f in fields(VideoRecord)}
    for chunk in table.latest(video_ids=stored_ids):
        for row in chunk.to_pylist():
            before[row["video_id"]] = VideoRecord(**{k: v for k, v in row.items() if k in names})
    failed = []
    for video_id, record in before.items():
        if record is None:
            continue  # never stored: nothing to report
        failed.append(
            VideoRecord(
                video_id=video_id,
                path=record.path,
                status="failed",
                error=dropped[video_id][1],
                size_bytes=record.size_bytes,
                mtime_ns=record.mtime_ns,
                settings_hash=record.settings_hash,
            )
        )
    return failed


def as_table(records: list[VideoRecord], seqs: list[int], schema: pa.Schema) -> pa.Table:
    """Records as rows, a column at a time (a dict per row would hold every value twice over),
    ``ROWS_AT_A_TIME`` at a time."""
    names = [f.name for f in schema if f.name != SEQ]
    chunks = []
    step = ROWS_AT_A_TIME
    for at in range(0, max(len(records), 1), step):
        chunk = records[at : at + step]
        columns = {name: [getattr(r, name) for r in chunk] for name in names}
        columns[SEQ] = seqs[at : at + step]
        chunks.append(pa.Table.from_pydict(columns, schema=schema))
    return pa.concat_tables(chunks)
