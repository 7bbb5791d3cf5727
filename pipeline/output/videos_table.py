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
  backlog. Parts are merged when ``FANIN`` consecutive ones of a size tier pile up, so each
  record is rewritten about log_FANIN(N / tier) times over a run.
- Reads and merges stream: each part is sorted by video id, so every part is read in batches of
  ``BATCH_ROWS`` side by side and the batches merged in id order (``_merge_sorted``), so what a
  merge or a full read holds does not grow with the parts. Row groups are not small
  (``ROW_GROUP``): a part's footer costs memory per row group (about 21 KB each, 5 MiB per
  million rows at 4,096 a group), and every open part's footer is held while it is read.
- Every part is written under a hidden name and renamed into place (whole or absent). A merge's
  output covers its inputs' seq ranges, and a part whose range lies inside another's is
  superseded: a crash between a merge's rename and its inputs' removal leaves two copies of the
  same records (same seq: readers keep one), and the next writer removes the covered part.
- An output written before parts has one file here, in no id order: it is read as one part of
  seq 0 (whole, and sorted in memory), and a writer upgrades it in place, sorted (``upgrade``).
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

    # Rows per row group. Not small, because every open part's footer is held while it is read
    # and costs about 21 KB a row group (at 4,096 rows a group: 5 MiB a million rows, 520 MiB at
    # a hundred million; at 32,768, 65 MiB); reading never holds a whole row group, it streams in
    # batches. Not large either: a merge writes a row group at a time (a merge of 8 parts of
    # 131,072 rows peaked 212, 205 and 201 MiB at 65,536, 32,768 and 16,384 rows a group).
    ROW_GROUP = 32_768
    BATCH_ROWS = 2_048  # rows read from each part at a time
    READ_BUFFER = 1 << 16  # bytes read from a column chunk at a time
    CHUNK_ROWS = 8_192  # rows of merged output handed on at a time, about
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
        streams = [
            _part_in_id_order(f, p, names, wanted, self.BATCH_ROWS) for f, p in zip(files, parts)
        ]
        yield from _merge_sorted(streams, chunk_rows or self.CHUNK_ROWS)

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
        # Not pre-buffered: that reads every column chunk of the row groups asked for up front
        # and holds them while the file is open (a streamed read of a part held all of it). A
        # column chunk read locally through a small buffer, not whole (a row group is large);
        # from object storage whole, one request each rather than one per buffer.
        local = isinstance(self.fs, pafs.LocalFileSystem)
        buffer = self.READ_BUFFER if local else 0
        return pq.ParquetFile(part.path, filesystem=self.fs, buffer_size=buffer, pre_buffer=False)

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
        # read whole and sorted in memory: a file the code before parts rewrote whole each fold
        rows = _with_seq_of(pq.read_table(final, use_threads=False), 0)
        target = folder / Part.name_for(0, 0)
        temp = OutputLayout.temp_beside(target)
        with _part_writer(temp, rows.schema) as writer:
            writer.write_table(keep_latest(rows), self.ROW_GROUP)
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
            with _part_writer(temp, schema) as writer:
                writer.write_table(keep_latest(table).cast(schema), self.ROW_GROUP)
            _durable_replace(temp, target)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return Part(lo, hi, str(target))

    def due_merge(self) -> list[Part]:
        """The parts to merge now (none: nothing is due): ``FANIN`` consecutive parts whose
        newest is of the largest size tier among them, the lowest such tier first, then the
        oldest (a big part is not rewritten for small ones that follow it). Anywhere in the
        folder, not only at its newest end: folds go on while a merge runs, so a tier's parts
        are often followed by newer, smaller ones by the time the last of them is written (at
        the newest end only, a 10-million-record run merged no part past 131,072 records and
        kept 76 of them)."""
        parts = self.parts()
        if len(parts) < self.FANIN:
            return []
        tiers = [_tier(self.rows(p), self.TIER_ROWS, self.FANIN) for p in parts]
        for tier in sorted(set(tiers)):
            for end in range(self.FANIN - 1, len(parts)):
                window = range(end + 1 - self.FANIN, end + 1)
                if tiers[end] == tier and all(tiers[i] <= tier for i in window):
                    return parts[window.start : window.stop]
        return []

    def merge(self, parts: list[Part], schema: pa.Schema) -> Part:
        """One part of the latest records of ``parts`` (consecutive), streamed; then the inputs
        go. A crash at any point leaves each record readable once (see the module's doc)."""
        lo, hi = parts[0].lo, parts[-1].hi
        target = Path(self.path) / Part.name_for(lo, hi)
        temp = OutputLayout.temp_beside(target)
        try:
            with _part_writer(temp, schema) as writer:
                chunks = (_conform(c, schema) for c in self.latest(schema.names, parts=parts))
                if not _write_in_row_groups(writer, chunks, self.ROW_GROUP):
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


def _with_seq_of(table: pa.Table, seq: int) -> pa.Table:
    """A table of a part written before ``seq``: every row gets its part's."""
    if SEQ in table.column_names:
        return table
    return table.append_column(SEQ, pa.array([seq] * table.num_rows, pa.int64()))


def _part_writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    """A part's writer. Pages of 64 KiB, not 1 MiB: a reader decodes a page of each column at a
    time, and a merge or a rerun's planning reads every part side by side (a merge of 8 parts
    of 131,072 rows peaked at 250 MiB with 1 MiB pages, 206 with 64 KiB ones)."""
    return pq.ParquetWriter(
        path, schema, data_page_size=PAGE_BYTES, dictionary_pagesize_limit=PAGE_BYTES
    )


PAGE_BYTES = 1 << 16


def _write_in_row_groups(writer: pq.ParquetWriter, chunks: Iterable[pa.Table], rows: int) -> bool:
    """``chunks`` written in row groups of ``rows`` (the last one smaller), holding no more than
    one row group's worth at a time (each ``write_table`` starts a new row group). False when
    there were no rows."""
    held: list[pa.Table] = []
    count = 0
    wrote = False
    for chunk in chunks:
        held.append(chunk)
        count += chunk.num_rows
        if count < rows:
            continue
        table = pa.concat_tables(held)
        while table.num_rows >= rows:
            writer.write_table(table.slice(0, rows), rows)
            table = table.slice(rows)
            wrote = True
        held, count = [table], table.num_rows
    if count:
        writer.write_table(pa.concat_tables(held), rows)
        wrote = True
    return wrote


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


def _part_in_id_order(
    file: pq.ParquetFile, part: Part, names: list[str], wanted: pa.Array | None, batch_rows: int
) -> Iterator[pa.Table]:
    """The part's rows (``names`` it has, and ``seq``; those of ``wanted`` ids only), in video id
    order, ``batch_rows`` at a time, reading only the row groups that may hold ``wanted``. A part
    is sorted when its row groups' id ranges follow each other (every part this module writes);
    a file written before parts is not, and is read whole and sorted."""
    present = [n for n in names if n in file.schema_arrow.names]
    bounds = _id_bounds(file)
    if not _follow_each_other(bounds):
        table = _with_seq_of(file.read(columns=present, use_threads=False), part.hi)
        if wanted is not None:
            table = table.filter(pc.is_in(table.column("video_id"), value_set=wanted))
        table = keep_latest(table)
        for at in range(0, table.num_rows, batch_rows):
            yield table.slice(at, batch_rows)
        return
    ids = None if wanted is None else wanted.to_pylist()  # sorted
    groups = [g for g, b in enumerate(bounds) if ids is None or (b and _any_within(ids, *b))]
    if not groups:
        return
    last = None
    for batch in file.iter_batches(batch_rows, groups, present, use_threads=False):
        table = _with_seq_of(pa.Table.from_batches([batch]), part.hi)
        if wanted is not None:
            table = table.filter(pc.is_in(table.column("video_id"), value_set=wanted))
        if not table.num_rows:
            continue
        ids_here = table.column("video_id")
        first = ids_here[0].as_py()
        in_order = (
            table.num_rows < 2
            or pc.all(pc.less(ids_here.slice(0, table.num_rows - 1), ids_here.slice(1))).as_py()
        )
        if not in_order or (last is not None and first <= last):
            raise ValueError(f"{part.path}: rows not in video_id order (not written as a part)")
        last = ids_here[-1].as_py()
        yield table


def _id_bounds(file: pq.ParquetFile) -> list[tuple[str, str] | None]:
    """Each row group's smallest and largest video id, from the footer (None: unknown)."""
    meta = file.metadata
    at = file.schema_arrow.get_field_index("video_id")
    bounds: list[tuple[str, str] | None] = []
    for group in range(meta.num_row_groups):
        stats = meta.row_group(group).column(at).statistics
        known = stats is not None and stats.has_min_max
        bounds.append((stats.min, stats.max) if known else None)
    return bounds


def _follow_each_other(bounds: list[tuple[str, str] | None]) -> bool:
    """Whether every row group's ids are known and come after the one before's."""
    if any(b is None for b in bounds):
        return False
    pairs = [b for b in bounds if b is not None]
    return all(a[1] < b[0] for a, b in zip(pairs, pairs[1:]))


def _merge_sorted(streams: list[Iterator[pa.Table]], chunk_rows: int) -> Iterator[pa.Table]:
    """The rows of streams sorted by video id (each id once per stream), merged in id order, the
    latest row per video, about ``chunk_rows`` at a time. Each round takes, from every stream,
    the rows up to the smallest of the streams' last buffered ids: every row of those ids is
    buffered by then, so a video's rows always land in one chunk."""
    heads = [next(s, None) for s in streams]
    taken: list[pa.Table] = []
    held = 0
    while True:
        live = [i for i, head in enumerate(heads) if head is not None]
        if not live:
            break
        cut = min(_last_id(heads[i]) for i in live)  # type: ignore[arg-type]
        for i in live:
            head = heads[i]
            assert head is not None
            count = _rows_up_to(head, cut)
            if count:
                taken.append(head.slice(0, count))
                held += count
            heads[i] = head.slice(count) if count < head.num_rows else next(streams[i], None)
        if held >= chunk_rows:
            yield keep_latest(pa.concat_tables(taken, promote_options="permissive"))
            taken, held = [], 0
    if taken:
        yield keep_latest(pa.concat_tables(taken, promote_options="permissive"))


def _last_id(table: pa.Table) -> str:
    return table.column("video_id")[-1].as_py()


def _rows_up_to(table: pa.Table, cut: str) -> int:
    """How many of the table's leading rows (sorted by video id) have an id <= ``cut``."""
    ids = table.column("video_id")
    if ids[0].as_py() > cut:
        return 0
    if ids[-1].as_py() <= cut:
        return table.num_rows
    return pc.sum(pc.less_equal(ids, cut)).as_py()


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
