"""Which videos of a backlog need work: a streaming merge of the walk with the stored records,
not one lookup per video, so deciding over a hundred million videos costs minutes and flat memory.

The walk's videos are cut into runs of ``RUN_ROWS``, each sorted by video id (spilled to a
temporary Arrow file when there is more than one run), and merged; the stored records come in
video id order from the parts of ``videos.parquet`` (``VideosTable.latest``). One pass over both
pairs each video with its latest record (``Previous``): memory is one run while the walk is
sorted, then ``MERGE_HELD`` videos across the spilled runs and a chunk of the parts. Without
stored records the walk is passed through as it comes, in its own order.

Each video to process travels with what the output holds of it (``ToProcess.previous``), so the
coordinator needs no index of the stored records: it knows which older files to remove and which
part to take a video's old rows out of from the video itself.
"""

from __future__ import annotations

import heapq
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from operator import attrgetter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from pipeline.media.source import VideoSource
from pipeline.output.video_record import PREVIOUS_COLUMNS, Previous
from pipeline.output.videos_table import VideosTable

RUN_ROWS = 250_000  # videos sorted in memory at a time (about 40 MB); more are spilled
MERGE_HELD = 20_000  # videos the merge holds as objects, of all spilled runs together
# What a walked video is, as columns (a spilled run).
_SOURCE_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("video_id", pa.string()),
        ("size_bytes", pa.int64()),
        ("mtime_ns", pa.int64()),
        ("error", pa.string()),
    ]
)


@dataclass(frozen=True, slots=True)
class ToProcess:
    """A video to process, and its latest record from before this run (None: never recorded)."""

    source: VideoSource
    previous: Previous | None = None


def needing_work(
    videos: Iterable[VideoSource],
    table: VideosTable,
    settings_hash: str | None,
    on_skip: Callable[[], None] = lambda: None,
    run_rows: int | None = None,
    on_repeat: Callable[[], None] | None = None,
) -> Iterator[ToProcess]:
    """The videos that need work, each with its previous record; ``on_skip`` is called for each
    one complete with ``settings_hash`` (None: unknown until the model loads, then none is
    skipped here and the coordinator decides from ``previous``). ``on_repeat``: the walk leaves
    repeats to the sort, which drops them side by side and calls it for each (only when there
    are stored records: otherwise the walk is passed through, and must drop them itself)."""
    if not table.parts():
        yield from (ToProcess(source) for source in videos)
        return
    ordered = sorted_by_id(videos, run_rows)
    if on_repeat is not None:
        ordered = _without_repeats(ordered, on_repeat)
    for source, previous in _joined(ordered, _stored(table)):
        if (
            previous is not None
            and settings_hash is not None
            and not source.error
            and previous.complete_for(source, settings_hash)
        ):
            on_skip()
        else:
            yield ToProcess(source, previous)


def sorted_by_id(
    videos: Iterable[VideoSource], run_rows: int | None = None
) -> Iterator[VideoSource]:
    """``videos`` in video id order: sorted in runs of ``run_rows`` (``RUN_ROWS``; as Arrow
    columns, about 150 bytes a video: Python objects would be 1 KB), spilled, and merged."""
    videos, run_rows = iter(videos), run_rows or RUN_ROWS
    with tempfile.TemporaryDirectory(prefix="yolo-pipeline-resume-") as folder:
        runs: list[Path] = []
        while (run := _sorted_run(videos, run_rows)).num_rows:
            if not runs and run.num_rows < run_rows:  # one run: nothing to spill
                yield from _sources(run.to_batches(), MERGE_HELD)
                return
            runs.append(_spill(run, Path(folder) / f"run-{len(runs)}.arrow"))
            del run
        each = max(64, MERGE_HELD // max(1, len(runs)))
        merged = heapq.merge(*(_read_run(run, each) for run in runs), key=attrgetter("video_id"))
        yield from merged


def _sorted_run(videos: Iterator[VideoSource], rows: int) -> pa.Table:
    batches = []
    while rows > 0 and (chunk := list(islice(videos, min(rows, 8192)))):
        columns = {name: [getattr(v, name) for v in chunk] for name in _SOURCE_SCHEMA.names}
        batches.append(pa.RecordBatch.from_pydict(columns, schema=_SOURCE_SCHEMA))
        rows -= len(chunk)
    table = pa.Table.from_batches(batches, schema=_SOURCE_SCHEMA)
    return table.take(pc.sort_indices(table, [("video_id", "ascending")]))


def _spill(run: pa.Table, path: Path) -> Path:
    with ipc.new_file(path, _SOURCE_SCHEMA) as writer:
        writer.write_table(run, max_chunksize=8192)
    return path


def _read_run(path: Path, rows_at_a_time: int) -> Iterator[VideoSource]:
    with pa.OSFile(str(path)) as source:  # (a memory map would count every page read as RSS)
        reader = ipc.open_file(source)
        batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
        yield from _sources(batches, rows_at_a_time)


def _sources(batches: Iterable[pa.RecordBatch], rows_at_a_time: int) -> Iterator[VideoSource]:
    for batch in batches:
        for at in range(0, batch.num_rows, rows_at_a_time):
            for row in batch.slice(at, rows_at_a_time).to_pylist():
                yield VideoSource(**row)


def _without_repeats(
    videos: Iterator[VideoSource], on_repeat: Callable[[], None]
) -> Iterator[VideoSource]:
    last = None
    for source in videos:
        if source.video_id == last:
            on_repeat()
            continue
        last = source.video_id
        yield source


def _stored(table: VideosTable) -> Iterator[tuple[str, Previous]]:
    """Each stored video's latest record, in video id order."""
    for chunk in table.latest(PREVIOUS_COLUMNS):
        for row in chunk.to_pylist():
            yield row["video_id"], Previous.of(row)


def _joined(
    videos: Iterator[VideoSource], stored: Iterator[tuple[str, Previous]]
) -> Iterator[tuple[VideoSource, Previous | None]]:
    """Both in video id order: each video with its stored record, if any."""
    held = next(stored, None)
    for source in videos:
        while held is not None and held[0] < source.video_id:
            held = next(stored, None)
        yield source, (held[1] if held is not None and held[0] == source.video_id else None)
