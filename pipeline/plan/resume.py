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
import pyarrow.ipc as ipc

from pipeline.media.source import VideoSource
from pipeline.output.video_record import PREVIOUS_COLUMNS, Previous
from pipeline.output.videos_table import VideosTable

RUN_ROWS = 250_000  # videos sorted in memory at a time (about 90 MB); more are spilled
MERGE_HELD = 100_000  # videos the merge holds of all spilled runs together (a slice of each)
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
    run_rows: int = RUN_ROWS,
) -> Iterator[ToProcess]:
    """The videos that need work, each with its previous record; ``on_skip`` is called for each
    one complete with ``settings_hash`` (None: unknown until the model loads, then none is
    skipped here and the coordinator decides from ``previous``)."""
    if not table.parts():
        yield from (ToProcess(source) for source in videos)
        return
    for source, previous in _joined(sorted_by_id(videos, run_rows), _stored(table)):
        if (
            previous is not None
            and settings_hash is not None
            and not source.error
            and previous.complete_for(source, settings_hash)
        ):
            on_skip()
        else:
            yield ToProcess(source, previous)


def sorted_by_id(videos: Iterable[VideoSource], run_rows: int = RUN_ROWS) -> Iterator[VideoSource]:
    """``videos`` in video id order: sorted in runs of ``run_rows``, spilled, and merged."""
    videos = iter(videos)
    first = sorted(islice(videos, run_rows), key=attrgetter("video_id"))
    if len(first) < run_rows:
        yield from first
        return
    with tempfile.TemporaryDirectory(prefix="yolo-pipeline-resume-") as folder:
        runs = [_spill(first, Path(folder) / "run-0.arrow")]
        del first
        while chunk := sorted(islice(videos, run_rows), key=attrgetter("video_id")):
            runs.append(_spill(chunk, Path(folder) / f"run-{len(runs)}.arrow"))
        each = max(64, MERGE_HELD // len(runs))
        merged = heapq.merge(*(_read_run(run, each) for run in runs), key=attrgetter("video_id"))
        yield from merged


def _spill(videos: list[VideoSource], path: Path) -> Path:
    columns = {name: [getattr(v, name) for v in videos] for name in _SOURCE_SCHEMA.names}
    table = pa.Table.from_pydict(columns, schema=_SOURCE_SCHEMA)
    with ipc.new_file(path, _SOURCE_SCHEMA) as writer:
        writer.write_table(table, max_chunksize=8192)
    return path


def _read_run(path: Path, rows_at_a_time: int) -> Iterator[VideoSource]:
    with pa.memory_map(str(path)) as source:
        reader = ipc.open_file(source)
        for i in range(reader.num_record_batches):
            batch = reader.get_batch(i)
            for at in range(0, batch.num_rows, rows_at_a_time):
                for row in batch.slice(at, rows_at_a_time).to_pylist():
                    yield VideoSource(**row)


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
