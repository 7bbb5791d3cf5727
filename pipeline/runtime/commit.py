"""A video whose pass is over, in two halves: the video worker's (``pass_outcome``, tracking,
the files put in place once the coordinator granted the commit) and the coordinator's
(``VideoCommitter``: the ``committing`` line, the record, an older version's rows removed),
exactly once and in that order (the crash-ordering rules are written where they are enforced)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import ray

from pipeline.media.decode import VideoEnded
from pipeline.output.bookkeeping import Bookkeeping
from pipeline.output.layout import OutputLayout
from pipeline.output.manifest import Manifest, VideoRecord
from pipeline.output.outcomes import VideoOutcome
from pipeline.output.store import OutputStore
from pipeline.output.writer import VideoResultWriter, durable_replace
from pipeline.runtime.coalesce import Coalescer
from pipeline.runtime.context import RunContext
from pipeline.runtime.messages import PartPlacement, TrackingReply
from pipeline.runtime.ray_calls import RayCalls, error_cause
from pipeline.runtime.video_pass import VideoState


def pass_outcome(
    state: VideoState, ended: VideoEnded, error: str | None, committed: bool, num_tracks: int | None
) -> VideoOutcome:
    """What a finished video pass comes to: its rows (when committed), its error, its figures."""
    writer = state.writer
    return VideoOutcome(
        state.source,
        state.info,
        error,
        committed,
        writer.rows_written if writer else 0,
        boxes=writer.boxes_written if writer and committed else 0,
        class_counts=writer.class_totals() if writer and committed else [],
        num_tracks=num_tracks,
        frames_decoded=ended.frames_decoded,
        attempts=state.attempts,
        processing_s=time.perf_counter() - state.started,
    )


class TrackingFailed(Exception):
    """The tracking task of a complete video failed; the video is recorded as failed."""


class VideoCommitter:
    """The coordinator's side: the manifest log (``committing`` lines, records), and an older
    version's rows removed once a video's new record says so."""

    def __init__(self, ctx: RunContext, store: OutputStore):
        self.ctx, self.store = ctx, store
        self.manifest = Manifest(store.layout.root)
        self.bookkeeping: Bookkeeping | None = None  # made on the event loop: start()
        self._part_removals: dict[str, Coalescer] = {}  # by part key

    def start(self, names: dict[int, str]) -> None:
        self.manifest.class_names = names  # recorded in videos.parquet for the readers
        # folds and merges in threads, off the event loop; each published (object storage)
        self.bookkeeping = Bookkeeping(self.manifest, self.store.publish_videos)

    async def put_part_in_place(self, placement: PartPlacement, older: list[str]) -> None:
        """A worker's staged part put in place (its tracks part first, so a part with track ids
        always has its summaries), after the older own files of ``older`` videos are removed
        (videos redone into a part). Off the event loop: renames, or copies on object storage."""

        def put() -> None:
            for video_id in older:
                self.store.remove_video(video_id)
            if placement.tracks_key is not None and placement.tracks_staged is not None:
                self.store.place(placement.tracks_staged, placement.tracks_key)
            self.store.place(placement.staged, placement.key)

        await asyncio.to_thread(put)

    async def drop_staged(self, placement: PartPlacement) -> None:
        """A part that will not be placed: its staged files go."""

        def drop() -> None:
            for staged in (placement.staged, placement.tracks_staged):
                if staged is not None:
                    self.store.discard_staged(staged)

        await asyncio.to_thread(drop)

    async def logged(self) -> None:
        """Every manifest line so far written (``Bookkeeping.logged``)."""
        assert self.bookkeeping is not None
        await self.bookkeeping.logged()

    async def discard(self, video_id: str) -> None:
        """No usable rows: remove any older version's files (once the record saying so is in
        the log: a crash between the two must not leave an ``ok`` record without its files)."""
        await self.logged()
        if self.store.is_remote:
            await asyncio.to_thread(self.store.remove_video, video_id)  # a DELETE: off the loop
        else:
            self.store.remove_video(video_id)  # two unlinks: cheaper than a thread's round trip
            await asyncio.sleep(0)  # a run of missing files still lets grants and progress in

    async def take_out_of_part(self, video_id: str, part: str | None) -> None:
        """A video about to be processed again (or failed) whose rows are in ``part`` (None:
        they are not): its record goes first (logged), then its rows leave the part, so readers
        of the folder never see its old rows beside its new ones. Removals from one part wait
        for each other and go together (one rewrite of the part for all that waited)."""
        if part is None:
            return
        self.manifest.drop(video_id)
        await self.logged()
        if part not in self._part_removals:

            async def remove(video_ids: list[str], part: str = part) -> list[bool]:
                await asyncio.to_thread(self.store.remove_from_part, part, set(video_ids))
                return [True] * len(video_ids)

            self._part_removals[part] = Coalescer(remove)
        await self._part_removals[part](video_id)

    async def record(self, record: VideoRecord) -> None:
        assert self.bookkeeping is not None
        # after the rows are in place: an 'ok' record always has its rows
        await self.bookkeeping.record(record)
        self.ctx.counts.video_finished(record)
        self.ctx.metrics.videos_finished.inc(tags={"status": record.status})
        self.ctx.memory.mark_warm()  # after the first video: the control plane's one unit of work
        self.ctx.memory.sample_now_and_then()

    async def save_manifest(self) -> None:
        """The last fold of the run, and the merges due, in a thread; then published."""
        assert self.bookkeeping is not None
        await self.bookkeeping.finish()


@dataclass
class TrackedFiles:
    """A finished video's tracked detections and track summary, still under hidden names."""

    detections: Path
    tracks: Path
    num_tracks: int
    rss: int  # the tracking task's peak memory


async def track_writer(
    ctx: RunContext, calls: RayCalls, slots: asyncio.Semaphore, writer: VideoResultWriter
) -> TrackedFiles:
    """Track a finished video in a task (``calls.track`` places it where the files are), a few
    at a time (``slots``); ``TrackingFailed`` when it fails or gives no answer."""
    untracked = writer.finish()
    tracked = OutputLayout.temp_beside(writer.final_path, f"tracked-{writer.video_id}")
    tracks = OutputLayout.temp_beside(writer.tracks_final_path)
    tracks.parent.mkdir(parents=True, exist_ok=True)
    async with slots:
        task = calls.track(str(untracked), str(tracked), str(tracks), writer.video_id, ctx.names)
        # ByteTrack takes about a millisecond a frame: a hundred times that, and 5 minutes
        # for start-up, before a silent task is called hung.
        deadline = 300 + 0.1 * writer.rows_written
        try:
            out: TrackingReply = await asyncio.wait_for(task, timeout=deadline)
        except (ray.exceptions.RayError, asyncio.TimeoutError) as exc:
            for path in (tracked, tracks):
                path.unlink(missing_ok=True)
            if isinstance(exc, asyncio.TimeoutError):
                calls.cancel(task)
                raise TrackingFailed(f"tracking gave no answer in {deadline:.0f} s") from None
            cause = error_cause(exc)
            raise TrackingFailed(f"tracking failed: {type(cause).__name__}: {cause}") from exc
        finally:
            untracked.unlink(missing_ok=True)
    ctx.stage_s["track"] += out.track_s
    return TrackedFiles(tracked, tracks, out.num_tracks, out.rss)


async def put_in_place(
    store: OutputStore, writer: VideoResultWriter, tracked: TrackedFiles | None
) -> int | None:
    """Rename a complete video's files into place (tracks first, so a detections file with
    track ids always has its summary) and publish them; the track count when tracking. The
    caller has logged ``committing`` (or been granted the commit) first."""
    # Closing the Parquet file, fsync and rename take milliseconds: off the event loop, which
    # meanwhile keeps the other videos' batches moving.
    if tracked is not None:
        await asyncio.to_thread(durable_replace, tracked.tracks, writer.tracks_final_path)
        await asyncio.to_thread(durable_replace, tracked.detections, writer.final_path)
    else:
        await asyncio.to_thread(writer.commit)
    # Object storage calls (nothing, for a local output): off the event loop.
    await asyncio.to_thread(store.publish_video, writer.video_id, with_tracks=tracked is not None)
    return tracked.num_tracks if tracked is not None else None
