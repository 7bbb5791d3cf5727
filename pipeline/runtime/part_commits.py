"""A video worker's short videos, committed together in part files (``pipeline.output.parts``).

A finished short video's rows (still in memory: fewer than a row group) wait here with the rows of
the worker's other finished short videos. The part is written when it holds ``part_rows`` rows
(``--part-rows``), when its first video has waited ``PART_WAIT_S``, or when the worker has had
no video open for ``IDLE_FLUSH_S`` (no more are coming for now). Then, in this order:

1. the part is written under a hidden name (uploaded under ``.staging/`` on object storage),
   with each video's record saying where its rows are;
2. one request to the coordinator (``PartPlacement``), which decides for every video at once:
   if each attempt is still the video's, it logs ``committing`` with the part's key for each,
   removes older files of those videos, puts the part in place (a rename; a server-side copy on
   object storage: all its rows appear at once) and records the videos; if one is not, the part
   is dropped, that video is refused and the others wait for the worker's next part;
3. each video's outcome goes back to its video pass.

The coordinator makes the rows visible, not the worker: a worker cut off after its request can
never land the part later, after its videos went to another worker. A kill before 2 redoes the
videos; one of the coordinator between its rename and its records has the next fold take their
rows out of the part again (their ``committing`` lines name it). Ray-free: the coordinator's
answer and the store are given.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pyarrow as pa

from pipeline.output.layout import OutputLayout
from pipeline.output.manifest import VideoRecord
from pipeline.output.parts import PartBuilder, new_part_key
from pipeline.output.schema import TRACKS_SCHEMA
from pipeline.output.store import OutputStore
from pipeline.runtime.messages import PartEntry, PartPlacement, Placed

log = logging.getLogger(__name__)

PART_WAIT_S = 30.0  # the longest a finished video waits for its part
IDLE_FLUSH_S = 0.5  # no video open on the worker this long: write what waits


@dataclass
class Waiting:
    video_id: str
    attempt_id: int
    record: VideoRecord
    done: asyncio.Future  # the record as committed (with its place), or None: refused
    fresh: bool  # never recorded in this output: no files of an earlier version to remove


class PartCommits:
    def __init__(
        self,
        store: OutputStore,
        schema: pa.Schema,
        owner: str,
        place: Callable[[PartPlacement], Awaitable[list[Placed]]],
        *,
        part_rows: int,
    ):
        """``place(placement)``: the coordinator's answer for each of the part's videos."""
        self.store, self.schema, self.owner, self.place = store, schema, owner, place
        self.part_rows = part_rows
        self._detections = PartBuilder(schema)
        self._tracks = PartBuilder(TRACKS_SCHEMA)
        self._waiting: list[Waiting] = []
        self._first_at = 0.0
        self._writing = asyncio.Lock()
        self._flushes: set[asyncio.Task] = set()  # held: the loop keeps only weak references
        self.parts_written = 0
        self.staging_since: float | None = None  # time.monotonic() of the part being written
        self.superseded = 0  # attempts refused here: a later one of the same video waited too

    @property
    def rows(self) -> int:
        return self._detections.rows

    async def commit(
        self,
        video_id: str,
        attempt_id: int,
        record: VideoRecord,
        detections: pa.Table,
        tracks: pa.Table | None = None,
        fresh: bool = False,
    ) -> VideoRecord | None:
        """Wait until the video's rows are in place in a part: its record, saying where; None
        when the commit was refused."""
        for other in [w for w in self._waiting if w.video_id == video_id]:
            # Another attempt of the same video waits here (this worker was presumed dead and
            # the video came back to it): attempt ids grow, so the older one cannot be granted.
            self.superseded += 1
            if other.attempt_id > attempt_id:
                return None
            self._waiting.remove(other)
            self._detections.drop(video_id)
            self._tracks.drop(video_id)
            other.done.set_result(None)
        if not self._waiting:
            self._first_at = time.monotonic()
        self._detections.add(video_id, detections)
        if tracks is not None:
            self._tracks.add(video_id, tracks)
        done = asyncio.get_running_loop().create_future()
        waiting = Waiting(video_id, attempt_id, record, done, fresh)
        self._waiting.append(waiting)
        if self.rows >= self.part_rows:
            self._flushes.add(task := asyncio.create_task(self.flush_quietly()))
            task.add_done_callback(self._flushes.discard)
        return await waiting.done

    def due(self, open_videos: int, idle_s: float, now: float | None = None) -> bool:
        """Whether what waits should be written now (the worker asks about four times a second)."""
        if not self._waiting:
            return False
        now = time.monotonic() if now is None else now
        return (open_videos == 0 and idle_s >= IDLE_FLUSH_S) or now - self._first_at >= PART_WAIT_S

    async def flush_quietly(self) -> None:
        """``flush``, its error left to the waiting video passes (each raises it)."""
        try:
            await self.flush()
        except Exception:  # noqa: BLE001 - delivered to every waiting video
            log.exception("a part file could not be written")

    async def flush(self) -> None:
        """Write the part of what waits now (see the module's steps)."""
        async with self._writing:
            if not self._waiting:
                return
            waiting, detections, tracks = self._waiting, self._detections, self._tracks
            self._waiting = []
            self._detections, self._tracks = PartBuilder(self.schema), PartBuilder(TRACKS_SCHEMA)
            try:
                await self._write(waiting, detections, tracks)
            except BaseException as exc:  # each waiting video pass sees it
                for w in waiting:
                    if not w.done.done():
                        w.done.set_exception(exc)
                raise

    async def _write(
        self, waiting: list[Waiting], detections: PartBuilder, tracks: PartBuilder
    ) -> None:
        key = new_part_key(OutputLayout.DETECTIONS, self.owner)
        name = key.rsplit("/", 1)[-1]
        tracks_key = f"{OutputLayout.TRACKS}/{name}" if len(tracks) else None
        self.staging_since = time.monotonic()
        try:
            staged, tracks_staged, places = await asyncio.to_thread(
                self._stage, detections, tracks, key, tracks_key
            )
        finally:
            self.staging_since = None
        entries = tuple(
            PartEntry(
                w.video_id,
                w.attempt_id,
                dataclasses.replace(
                    w.record,
                    detections_file=key,
                    row_groups=places[w.video_id],
                    tracks_file=tracks_key if w.video_id in tracks.tables else None,
                ),
                w.fresh,
            )
            for w in waiting
        )
        answers = await self.place(PartPlacement(key, staged, tracks_key, tracks_staged, entries))
        self.parts_written += "placed" in answers
        for w, entry, answer in zip(waiting, entries, answers):
            if answer == "placed":
                w.done.set_result(entry.record)
            elif answer == "again":  # still this worker's: into its next part
                self._wait_again(w, detections, tracks)
            else:  # another attempt has the video now: this one's rows never land
                w.done.set_result(None)

    def _wait_again(self, w: Waiting, detections: PartBuilder, tracks: PartBuilder) -> None:
        if not self._waiting:
            self._first_at = time.monotonic()
        self._waiting.append(w)
        self._detections.add(w.video_id, detections.tables[w.video_id])
        if w.video_id in tracks.tables:
            self._tracks.add(w.video_id, tracks.tables[w.video_id])

    def _stage(
        self, detections: PartBuilder, tracks: PartBuilder, key: str, tracks_key: str | None
    ) -> tuple[str, str | None, dict[str, list[int]]]:
        """Step 1, off the event loop: the part (and its tracks part) under hidden names; each
        video's row groups in it."""
        layout = self.store.layout
        tracks_staged = None
        if tracks_key is not None:
            temp = OutputLayout.temp_beside(layout.path(tracks_key))
            temp.parent.mkdir(parents=True, exist_ok=True)
            tracks.write(temp)
            tracks_staged = self.store.stage(temp)
        temp = OutputLayout.temp_beside(layout.path(key))
        temp.parent.mkdir(parents=True, exist_ok=True)
        places = detections.write(temp)
        return self.store.stage(temp), tracks_staged, places
