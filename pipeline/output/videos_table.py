"""``videos.parquet``: a folder of immutable parts, so a fold costs what it adds, not the backlog.

```
videos.parquet/part-<lo>-<hi>.parquet   the latest record of each video among the log's records
                                        numbered lo..hi (the ``seq`` column), sorted by video_id
```

A video's record is its row with the highest ``seq`` in the folder; a re-run's newer record
supersedes the older one in an older part until a merge drops the older. Readers keep the
latest (``VideosTable.latest``; pandas: ``.sort_values("seq").drop_duplicates("video_id",
keep="last")``).

- A fold writes the records logged since the last one as one new part: O(records), whatever the
  backlog. Parts are merged when ``FANIN`` of a size tier pile up at the newest end, so each
  record is rewritten about log_FANIN(N / tier) times over a run.
- A merge streams: the ids are cut into ranges of about ``CHUNK_ROWS`` rows (from the parts'
  row-group statistics on ``video_id``), and each range is read from every input, deduplicated
  and written in turn, so its memory does not grow with the parts.
- Every part is written under a hidden name and renamed into place (whole or absent). A merge's
  output covers its inputs' seq ranges, and a part whose range lies inside another's is
  superseded: a crash between a merge's rename and its inputs' removal leaves two copies of the
  same records (same seq: readers keep one), and the next writer removes the covered part.
- An output written before parts has one file here: it is read as one part of seq 0, and a
  writer upgrades it in place (``upgrade``).
"""

from __future__ import annotations

import bisect
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.output.layout import TEMP_PREFIX, OutputLayout

log = logging.getLogger(__name__)

SEQ = "seq"
_PART_NAME = re.compile(r"^part-(\d+)-(\d+)\.parquet$")


@dataclass(frozen=True)
class Part:
    """One part file: the records numbered ``lo``..``hi`` (a legacy single file: 0..0)."""

    lo: int
    hi: int
    path: str  # in the table's filesystem

    @staticmethod
    def name_for(lo: int, hi: int) -> str:
        return f"part-{lo:015d}-{hi:015d}.parquet"

    def covers(self, other: Part) -> bool:
        return self != other and self.lo <= other.lo and other.hi <= self.hi


def live_and_superseded(parts: Iterable[Part]) -> tuple[list[Part], list[Part]]:
    """The parts readers use, oldest first, and those a merge's output covers (left by a crash
    before their removal)."""
    ordered = sorted(parts, key=lambda p: (p.lo, -p.hi))
    live: list[Part] = []
    superseded: list[Part] = []
    for part in ordered:
        if live and live[-1].covers(part):  # (live parts are disjoint: the last one may cover)
            superseded.append(part)
        else:
            live.append(part)
    return live, superseded


class VideosTable:
    """Reads (any filesystem) and writes (local) the parts of one ``videos.parquet``."""

    # Rows per row group: a merge or a streamed read cuts its id ranges at row groups, so these
    # bound what it holds (with CHUNK_ROWS: about 80,000 rows across 8 parts); a lookup by video
    # id reads one per part.
    ROW_GROUP = 4096
    CHUNK_ROWS = 32_768  # rows a merge or a streamed read holds at a time, about
    FANIN = 8  # parts of one size tier merged together
    TIER_ROWS = 25_000  # the smallest tier: a fold's part, at most about this many rows

    def __init__(self, path: str | Path, fs: pafs.FileSystem | None = None):
        self.path = str(path)
        self.fs = fs or pafs.LocalFileSystem()
        self._rows: dict[str, int] = {}  # rows per part, by path (parts never change)

    # ----------------------------------------------------------------- reading

    def kind(self) -> pafs.FileType:
        return self.fs.get_file_info(self.path).type

    def exists(self) -> bool:
        return self.kind() in (pafs.FileType.File, pafs.FileType.Directory)

    def all_parts(self) -> list[Part]:
        kind = self.kind()
        if kind == pafs.FileType.File:
            return [Part(0, 0, self.path)]  # written before parts: one part of seq 0
        if kind != pafs.FileType.Directory:
            return []
        found = []
        for info in self.fs.get_file_info(pafs.FileSelector(self.path)):
            match = _PART_NAME.match(info.base_name)
            if match and info.type == pafs.FileType.File:
                found.append(Part(int(match[1]), int(match[2]), info.path))
        return found

    def parts(self) -> list[Part]:
        """The live parts, oldest first."""
        return live_and_superseded(self.all_parts())[0]

    def rows(self, part: Part) -> int:
        if part.path not in self._rows:
            self._rows[part.path] = self._file(part).metadata.num_rows
        return self._rows[part.path]

    def last_seq(self) -> int:
        return max((p.hi for p in self.all_parts()), default=0)

    def schema(self) -> pa.Schema | None:
        """The newest part's schema (its metadata holds the latest run's model classes)."""
        files = self._open(None)[1]
        return files[-1].schema_arrow if files else None

    def latest(
        self,
        columns: list[str] | None = None,
        *,
        parts: list[Part] | None = None,
        video_ids: Iterable[str] | None = None,
        chunk_rows: int | None = None,
    ) -> Iterator[pa.Table]:
        """Each video's latest record, in video_id order, a chunk of about ``chunk_rows`` rows at a
        time (``columns``: those only, with ``video_id`` and ``seq``; ``video_ids``: those only,
        reading only the row groups that may hold them)."""
        wanted = None if video_ids is None else pa.array(sorted(set(video_ids)), pa.string())
        if wanted is not None and not len(wanted):
            return
        parts, files = self._open(parts)
        if not parts:
            return
        names = _with_keys(columns or files[-1].schema_arrow.names)
        groups = [_RowGroups.of(f) for f in files]
        ids = None if wanted is None else wanted.to_pylist()  # sorted
        for lo, hi in _ranges(groups, chunk_rows or self.CHUNK_ROWS, wanted):
            pieces = [
                _read_range(f, g, p, names, lo, hi, wanted, ids)
                for f, g, p in zip(files, groups, parts)
            ]
            pieces = [t for t in pieces if t.num_rows]
            if pieces:
                yield keep_latest(pa.concat_tables(pieces, promote_options="permissive"))

    def read(self, columns: list[str] | None = None) -> pa.Table | None:
        """Every video's latest record (None: no parts yet)."""
        chunks = list(self.latest(columns))
        if not chunks:
            return None
        return pa.concat_tables(chunks, promote_options="permissive")

    def _open(self, parts: list[Part] | None) -> tuple[list[Part], list[pq.ParquetFile]]:
        """The live parts (or ``parts``), opened: an open part stays readable when a merge
        removes it, and a listing that a merge changed before the opening is taken again."""
        for attempt in range(5):
            listed = self.parts() if parts is None else parts
            try:
                return listed, [self._file(p) for p in listed]
            except FileNotFoundError:
                if parts is not None or attempt == 4:
                    raise
        raise AssertionError("unreachable")

    def _file(self, part: Part) -> pq.ParquetFile:
        return pq.ParquetFile(part.path, filesystem=self.fs)

    # ----------------------------------------------------------------- writing (local)

    def upgrade(self) -> bool:
        """Turn a single ``videos.parquet`` file (written before parts) into a folder of one part,
        in place: the file's rows as the part of seq 0, then the folder renamed over the file.
        True when there was one to upgrade."""
        final = Path(self.path)
        folder = final.with_name(f"{TEMP_PREFIX}{final.name}.upgrade")
        old = final.with_name(f"{TEMP_PREFIX}{final.name}.old")
        if old.exists() and final.is_dir():  # a crash after the swap
            old.unlink()
        if not final.is_file():
            return False
        folder.mkdir(exist_ok=True)
        source = pq.ParquetFile(final)
        schema = source.schema_arrow
        target = folder / Part.name_for(0, 0)
        temp = OutputLayout.temp_beside(target)
        with pq.ParquetWriter(temp, _with_seq(schema)) as writer:
            for batch in source.iter_batches(self.ROW_GROUP, use_threads=False):
                seq = pa.array([0] * batch.num_rows, pa.int64())
                writer.write_table(pa.Table.from_batches([batch]).append_column(SEQ, seq))
            if not source.metadata.num_rows:
                writer.write_table(_with_seq(schema).empty_table())
        _durable_replace(temp, target)
        # the old file set aside, the folder into its place: readers see one or the other
        final.rename(old)
        folder.rename(final)
        _fsync_folder(final.parent)
        old.unlink()
        log.warning("%s: upgraded in place into a folder of parts (done once)", final)
        return True

    def write_part(self, table: pa.Table, lo: int, hi: int, schema: pa.Schema) -> Part:
        """The records numbered ``lo``..``hi`` (with their ``seq``), latest per video, sorted by
        video id, as a new part: whole or not at all."""
        folder = Path(self.path)
        if not folder.is_dir():
            folder.mkdir(parents=True)
            _fsync_folder(folder.parent)  # the new folder's entry, before a part counts
        target = folder / Part.name_for(lo, hi)
        temp = OutputLayout.temp_beside(target)
        try:
            with pq.ParquetWriter(temp, schema) as writer:
                writer.write_table(keep_latest(table).cast(schema), self.ROW_GROUP)
            _durable_replace(temp, target)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return Part(lo, hi, str(target))

    def due_merge(self, newer_than: int = -1) -> list[Part]:
        """The parts to merge now (none: nothing is due): the ``FANIN`` newest of one size tier
        or smaller, when that many pile up at the newest end (parts newer than ``newer_than`` only,
        so a merge under way is not counted twice)."""
        parts = [p for p in self.parts() if p.lo > newer_than]
        if len(parts) < self.FANIN:
            return []
        run: list[Part] = []
        tier = None
        for part in reversed(parts):
            rows = self.rows(part)
            part_tier = _tier(rows, self.TIER_ROWS, self.FANIN)
            if tier is None:
                tier = part_tier
            if part_tier > tier:
                break
            run.append(part)
            if len(run) == self.FANIN:
                return run[::-1]
        return []

    def merge(self, parts: list[Part], schema: pa.Schema) -> Part:
        """One part of the latest records of ``parts`` (consecutive), streamed; then the inputs
        go. A crash at any point leaves each record readable once (see the module's doc)."""
        lo, hi = parts[0].lo, parts[-1].hi
        target = Path(self.path) / Part.name_for(lo, hi)
        temp = OutputLayout.temp_beside(target)
        try:
            with pq.ParquetWriter(temp, schema) as writer:
                wrote = False
                for chunk in self.latest(schema.names, parts=parts):
                    writer.write_table(_conform(chunk, schema), self.ROW_GROUP)
                    wrote = True
                if not wrote:
                    writer.write_table(schema.empty_table())
            _durable_replace(temp, target)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        for part in parts:
            Path(part.path).unlink(missing_ok=True)
        return Part(lo, hi, str(target))

    def remove_superseded(self) -> list[Part]:
        """Parts that a merge's output covers (a crash before their removal), and stale hidden
        files of killed writers: removed. Only the output's writer may call this."""
        gone = live_and_superseded(self.all_parts())[1]
        for part in gone:
            Path(part.path).unlink(missing_ok=True)
        folder = Path(self.path)
        if folder.is_dir():
            for stale in folder.glob(f"{TEMP_PREFIX}*"):
                stale.unlink(missing_ok=True)
        return gone


def keep_latest(table: pa.Table) -> pa.Table:
    """The row with the highest ``seq`` of each video, in video_id order."""
    if table.num_rows < 2:
        return table
    table = table.take(pc.sort_indices(table, [("video_id", "ascending"), (SEQ, "descending")]))
    ids = table.column("video_id").combine_chunks()
    first = pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1))
    keep = pa.concat_arrays([pa.array([True]), first.fill_null(True)])
    return table.filter(keep)


def _tier(rows: int, base: int, fanin: int) -> int:
    tier, size = 0, base
    while rows > size:
        tier, size = tier + 1, size * fanin
    return tier


def _with_keys(columns: list[str]) -> list[str]:
    return ["video_id", SEQ, *(c for c in columns if c not in ("video_id", SEQ))]


def _with_seq(schema: pa.Schema) -> pa.Schema:
    return schema if SEQ in schema.names else schema.append(pa.field(SEQ, pa.int64()))


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` in ``schema``'s columns and order: columns a part lacks (written before they
    existed) are null."""
    columns = [
        table.column(f.name).cast(f.type)
        if f.name in table.column_names
        else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


@dataclass(frozen=True)
class _RowGroups:
    """A part's row groups by video id, from its footer: read once per pass over the parts, not
    per range (a part of millions of records has thousands of row groups, and a merge reads it in
    hundreds of ranges: per range, that was seconds of Python holding the GIL at 30 million)."""

    bounds: list[tuple[str, str] | None]  # each group's smallest and largest id (None: unknown)
    rows: list[int]
    lows: list[str]  # each group's smallest id when all are known and in order (else empty)
    highs: list[str]

    @classmethod
    def of(cls, file: pq.ParquetFile) -> _RowGroups:
        meta = file.metadata
        at = file.schema_arrow.get_field_index("video_id")
        bounds: list[tuple[str, str] | None] = []
        rows = []
        for group in range(meta.num_row_groups):
            row_group = meta.row_group(group)
            stats = row_group.column(at).statistics
            known = stats is not None and stats.has_min_max
            bounds.append((stats.min, stats.max) if known else None)
            rows.append(row_group.num_rows)
        known_bounds = [b for b in bounds if b is not None]
        lows, highs = [b[0] for b in known_bounds], [b[1] for b in known_bounds]
        in_order = (
            len(known_bounds) == len(bounds) and lows == sorted(lows) and highs == sorted(highs)
        )
        return cls(bounds, rows, lows if in_order else [], highs if in_order else [])

    def overlapping(self, lo: str | None, hi: str | None) -> list[int]:
        """The row groups that may hold ids in [lo, hi)."""
        if self.lows:
            start = 0 if lo is None else bisect.bisect_left(self.highs, lo)
            stop = len(self.rows) if hi is None else bisect.bisect_left(self.lows, hi)
            return list(range(start, max(start, stop)))
        return [
            group
            for group, b in enumerate(self.bounds)
            if b is None or ((hi is None or b[0] < hi) and (lo is None or b[1] >= lo))
        ]

    def may_hold(self, group: int, sorted_ids: list[str]) -> bool:
        b = self.bounds[group]
        return b is None or _any_within(sorted_ids, *b)


def _ranges(
    groups: list[_RowGroups], chunk_rows: int, wanted: pa.Array | None
) -> list[tuple[str | None, str | None]]:
    """Video id ranges [lo, hi) that together cover every id, each of about ``chunk_rows`` rows
    across the files (cut at row groups' smallest ids); one range when ``wanted`` ids are few."""
    if wanted is not None and len(wanted) <= chunk_rows:
        return [(None, None)]
    starts: list[tuple[str, int]] = []
    for part in groups:
        for group, rows in zip(part.bounds, part.rows):
            if group is None:
                return [(None, None)]  # no statistics: one range (a file without them is small)
            starts.append((group[0], rows))
    starts.sort()
    cuts: list[str] = []
    held = 0
    for low, rows in starts:
        if held >= chunk_rows and (not cuts or low > cuts[-1]):
            cuts.append(low)
            held = 0
        held += rows
    bounds: list[str | None] = [None, *cuts, None]
    return list(zip(bounds[:-1], bounds[1:]))


def _read_range(
    file: pq.ParquetFile,
    groups_of_file: _RowGroups,
    part: Part,
    names: list[str],
    lo: str | None,
    hi: str | None,
    wanted: pa.Array | None,
    ids_wanted: list[str] | None,
) -> pa.Table:
    """The rows of ``file`` whose video id is in [lo, hi) (and in ``wanted``: ``ids_wanted`` as
    a sorted list), from the row groups that may hold them only; a part written before ``seq``
    gets its part's ``hi``."""
    groups = [
        group
        for group in groups_of_file.overlapping(lo, hi)
        if ids_wanted is None or groups_of_file.may_hold(group, ids_wanted)
    ]
    schema = file.schema_arrow
    present = [n for n in names if n in schema.names]
    if not groups:
        table = schema.empty_table().select(present)
    else:
        table = file.read_row_groups(groups, columns=present, use_threads=False)
    ids = table.column("video_id")
    mask = None
    if lo is not None:
        mask = pc.greater_equal(ids, lo)
    if hi is not None:
        below = pc.less(ids, hi)
        mask = below if mask is None else pc.and_(mask, below)
    if wanted is not None:
        inside = pc.is_in(ids, value_set=wanted)
        mask = inside if mask is None else pc.and_(mask, inside)
    if mask is not None:
        table = table.filter(mask)
    if SEQ not in table.column_names:
        table = table.append_column(SEQ, pa.array([part.hi] * table.num_rows, pa.int64()))
    return table


def _any_within(sorted_ids: list[str], low: str, high: str) -> bool:
    at = bisect.bisect_left(sorted_ids, low)
    return at < len(sorted_ids) and sorted_ids[at] <= high


def _durable_replace(temp: Path, final: Path) -> None:
    from pipeline.output.writer import durable_replace

    durable_replace(temp, final)


def _fsync_folder(folder: Path) -> None:
    import os

    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
