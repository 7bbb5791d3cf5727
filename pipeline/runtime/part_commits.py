"""A video worker's short videos, committed together in part files (``pipeline.output.parts``).

A finished short video's rows (still in memory: fewer than a row group) wait here with the rows of
the worker's other finished short videos. The part is written when it holds ``part_rows`` rows
(``--part-rows``), when its first video has waited ``PART_WAIT_S``, or when the worker has had
no video open for ``IDLE_FLUSH_S`` (no more are coming for now). Then, in this order:

1. one grant request for all its videos (the coordinator logs ``committing`` with the part's
   key for each it grants); a refused video (its attempt is no longer the video's) leaves the part;
2. older per-video files of the granted videos are removed (a video redone into a part);
3. the part is written under a hidden name and renamed into place (published with one PUT on
   object storage): all its videos' rows appear at once;
4. each video's outcome, with where its rows are, goes back to its video pass, which tells the
   coordinator (it records them).

A kill before 3 redoes the videos; between 3 and 4 the next fold takes their rows out of the
part again (their ``committing`` lines name it). Ray-free: the grant and the store are given.
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
from pipeline.output.writer import durable_replace

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
        grant: Callable[[tuple[str, int, str]], Awaitable[bool]],
        *,
        part_rows: int,
    ):
        """``grant((video_id, attempt_id, part_key))``: the coordinator's yes or no."""
        self.store, self.schema, self.owner, self.grant = store, schema, owner, grant
        self.part_rows = part_rows
        self._detections = PartBuilder(schema)
        self._tracks = PartBuilder(TRACKS_SCHEMA)
        self._waiting: list[Waiting] = []
        self._first_at = 0.0
        self._writing = asyncio.Lock()
        self._flushes: set[asyncio.Task] = set()  # held: the loop keeps only weak references
        self.parts_written = 0
        self.superseded = 0  # attempts refused here: a later one of the same video waited too

    @property
    def rows(self) -> int:
        return self._detections.rows

    def __len__(self) -> int:
        return len(self._waiting)

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
        answers = await asyncio.gather(
            *(self.grant((w.video_id, w.attempt_id, key)) for w in waiting)
        )
        granted = []
        for w, yes in zip(waiting, answers):
            if yes:
                granted.append(w)
            else:  # another attempt has the video now: this one's rows never land
                detections.drop(w.video_id)
                tracks.drop(w.video_id)
                w.done.set_result(None)
        if not granted:
            return
        layout = self.store.layout
        places = await asyncio.to_thread(self._put_in_place, detections, tracks, key, name, granted)
        tracks_key = f"{layout.TRACKS}/{name}" if len(tracks) else None
        self.parts_written += 1
        for w in granted:
            w.done.set_result(
                dataclasses.replace(
                    w.record,
                    detections_file=key,
                    row_groups=places[w.video_id],
                    tracks_file=tracks_key if w.video_id in tracks.tables else None,
                )
            )

    def _put_in_place(
        self,
        detections: PartBuilder,
        tracks: PartBuilder,
        key: str,
        name: str,
        granted: list[Waiting],
    ) -> dict[str, list[int]]:
        """Steps 2 and 3, off the event loop: each video's row groups in the part."""
        layout, store = self.store.layout, self.store
        for w in granted:  # an older version in files of its own
            if not w.fresh:
                store.remove_video(w.video_id)
        final = layout.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        if len(tracks):  # first, so a part with track ids always has its summaries
            tracks_final = layout.path(f"{layout.TRACKS}/{name}")
            tracks_final.parent.mkdir(parents=True, exist_ok=True)
            temp = OutputLayout.temp_beside(tracks_final)
            tracks.write(temp)
            durable_replace(temp, tracks_final)
            store.publish(tracks_final)
        temp = OutputLayout.temp_beside(final)
        places = detections.write(temp)
        durable_replace(temp, final)
        store.publish(final)
        if store.is_remote:  # published: the staging folder stays small
            final.unlink()
            if len(tracks):
                layout.path(f"{layout.TRACKS}/{name}").unlink()
        return places
