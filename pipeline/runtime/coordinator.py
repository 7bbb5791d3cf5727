"""The coordinator: an async actor that feeds decoder streams to the actor pool under a bounded
window, collects the detections and writes them, one video at a time, exactly once."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError, RayActorError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from pipeline.config import RunConfig
from pipeline.locations import redact
from pipeline.media.decode import BatchHeader, DecodeSpec, VideoEnded, VideoInfo, VideoOpened
from pipeline.media.letterbox import LetterboxGeometry
from pipeline.media.segments import WHOLE_VIDEO, Segment, SplitPolicy, decode_bound, plan_segments
from pipeline.media.source import VideoSource
from pipeline.output.layout import OutputLayout
from pipeline.output.manifest import Manifest, VideoRecord
from pipeline.output.outcomes import RetryPolicy, RunCounts, VideoOutcome, should_commit
from pipeline.output.progress import RunProgress
from pipeline.output.store import OutputStore
from pipeline.output.writer import (
    VideoResultWriter,
    durable_replace,
)
from pipeline.runtime.backpressure import DispatchWindow
from pipeline.runtime.deadlines import BatchDeadline
from pipeline.runtime.faults import FaultPlan
from pipeline.runtime.messages import ActorSample, CoordinatorSummary, ModelFacts
from pipeline.runtime.metrics import PipelineMetrics
from pipeline.runtime.monitoring import PeakRss
from pipeline.runtime.workers import decode_video, probe_video, track_video

log = logging.getLogger(__name__)

ACTOR_LOST = (RayActorError, ActorDiedError, ActorUnavailableError)
# A batch's frames were in the object store of a node that died, and the decoder that made them
# cannot make them again by itself (it is not retried by Ray): the coordinator decodes them again.
FRAMES_LOST = (ray.exceptions.ObjectLostError, ray.exceptions.NodeDiedError)


BACKLOG_QUEUE = 2000  # videos queued here ahead of the workers


class DecoderLost(Exception):
    """The decoder process died or stopped producing; the video may be retried."""


class BatchFailed(Exception):
    """A batch could not be inferred (an error in the model, or every retry's actor died)."""


class TrackingFailed(Exception):
    """The tracking task of a complete video failed; the video is recorded as failed."""


@dataclass
class SegmentStream:
    """One decoder's share of a video (the whole video, unless it is split)."""

    segment: Segment
    received: int = 0  # batches of this segment taken from its decoder streams, over all attempts
    attempts: int = 0


@dataclass
class VideoState:
    source: VideoSource
    info: VideoInfo | None = None
    geometry: LetterboxGeometry | None = None
    writer: VideoResultWriter | None = None
    tasks: set = field(default_factory=set)
    error: str | None = None
    frames_decoded: int = 0
    attempts: int = 0  # decoder streams started, over all segments
    lost: set = field(default_factory=set)  # batches whose frames died with a node: to decode again


@ray.remote(num_cpus=0, max_restarts=0)
class Coordinator:
    def __init__(
        self,
        output: str,
        config: RunConfig,
        actors: list,
        faults: FaultPlan | None = None,
        remote_output: str | None = None,
    ):
        # Files are written in the store's folder (the staging folder of a remote output).
        self.store = OutputStore(Path(output), remote_output)
        self.output = self.store.layout.root
        self.config = config
        self.actors = actors
        self.names: dict[int, str] = {}
        self.decode_spec: DecodeSpec | None = None  # set by run() from what the actors report
        self.faults = faults
        self.settings_hash = config.settings_hash()
        self.window = DispatchWindow(len(actors), config.window_per_actor)
        self.deadline = BatchDeadline(fixed_s=config.batch_timeout_s)
        self.manifest = Manifest(self.output)
        self.metrics = PipelineMetrics()
        self.memory = PeakRss()
        self.counts = RunCounts()
        self.retry = RetryPolicy(config.decode_retries, config.batch_retries)
        self.split_policy = SplitPolicy(
            segments=config.segments, min_segment_frames=config.segment_min_frames
        )
        self._frames_decoded = 0  # frames whose decode time is in stage_s["decode"]
        self.stage_s = {"decode": 0.0, "infer": 0.0, "batch_round_trip": 0.0, "write": 0.0}
        if config.track:
            self.stage_s["track"] = 0.0
        self.tracker_peak_rss = 0
        # Tracking tasks run on this node (the files are here), a few at a time: each holds
        # ultralytics (and so torch) in memory.
        tracking_tasks = max(1, min(8, (os.cpu_count() or 2) // 2))
        self._tracking_slots = asyncio.Semaphore(tracking_tasks)
        self._on_this_node = NodeAffinitySchedulingStrategy(
            node_id=ray.get_runtime_context().get_node_id(), soft=False
        )
        self._completing: set[asyncio.Task] = set()
        self._completion_slots = asyncio.Semaphore(4 * tracking_tasks)
        self._completion_errors: list[BaseException] = []
        self.started = time.time()
        self.cpu_started = time.process_time()
        self.first_batch_done_at: float | None = None  # wall clock, for the start-up figures
        self._slot_freed: asyncio.Condition | None = None
        # The backlog as the driver walks it: bounded, so a walk of a million names waits here
        # instead of filling this process (None: the walk is over).
        self._backlog: asyncio.Queue[VideoSource | None] = asyncio.Queue(maxsize=BACKLOG_QUEUE)
        self._probes: dict[int, asyncio.Task] = {}
        # What each actor said last (RSS, GPU use): the driver's timeline samples it.
        self.actor_last: list[ActorSample | None] = [None] * len(actors)

    def set_config(self, config: RunConfig) -> None:
        """The settings once the loaded model turned class names into ids (the hash depends on them)."""
        self.config = config
        self.deadline.fixed_s = config.batch_timeout_s
        self.settings_hash = config.settings_hash()
        self.retry = RetryPolicy(config.decode_retries, config.batch_retries)
        self.split_policy = SplitPolicy(
            segments=config.segments, min_segment_frames=config.segment_min_frames
        )

    # ---- the dispatch window -------------------------------------------------------------

    async def _acquire(self) -> int:
        async with self._slot_freed:
            while (i := self.window.acquire()) is None:
                await self._slot_freed.wait()
        self.metrics.batches_in_flight.set(self.window.total_in_flight)
        return i

    async def _release(self, i: int) -> None:
        async with self._slot_freed:
            self.window.release(i)
            self._slot_freed.notify_all()
        self.metrics.batches_in_flight.set(self.window.total_in_flight)

    def _suspend_actor(self, i: int) -> None:
        """Stop sending to an actor whose call failed until it answers again (Ray restarts it)."""
        if self.window.available[i]:
            self.window.set_available(i, False)
            self._probes[i] = asyncio.create_task(self._probe(i))

    def _restart(self, i: int) -> None:
        """Kill a hung actor; Ray starts it again (unlimited restarts)."""
        try:
            ray.kill(self.actors[i], no_restart=False)
        except Exception:  # already dead or restarting: Ray is on it
            pass

    async def _probe(self, i: int) -> None:
        while True:
            try:  # a restarted actor loads its model first: the first batch's allowance
                await asyncio.wait_for(
                    self.actors[i].ready.remote(), timeout=self.deadline.first_batch_s
                )
                break
            except ACTOR_LOST:
                await asyncio.sleep(1.0)
            except asyncio.TimeoutError:
                log.warning(
                    "actor %d did not come back in %.0f s: restarting it",
                    i,
                    self.deadline.first_batch_s,
                )
                self._restart(i)
        async with self._slot_freed:
            self.window.set_available(i, True)
            self._slot_freed.notify_all()

    # ---- one batch -------------------------------------------------------------------------

    async def _infer(self, actor: int, header: BatchHeader, frames_ref, state: VideoState) -> None:
        sent = time.perf_counter()
        try:
            for attempt in itertools.count(1):
                try:
                    call = self.actors[actor].infer.remote(
                        frames_ref, state.geometry, state.source.video_id, header
                    )
                    out = await asyncio.wait_for(call, timeout=self.deadline.seconds())
                    actor_used = actor
                    break
                except (*ACTOR_LOST, asyncio.TimeoutError) as exc:
                    # Hung: kill it (once, for the first of its batches to time out); Ray starts a new one.
                    if isinstance(exc, asyncio.TimeoutError) and self.window.available[actor]:
                        log.warning(
                            "actor %d gave no answer in %.0f s: restarting it",
                            actor,
                            self.deadline.seconds(),
                        )
                        self.counts.actors_hung += 1
                        self._restart(actor)
                    self._suspend_actor(actor)
                    await self._release(actor)
                    actor = -1
                    if not self.retry.retry_batch(attempt):
                        raise BatchFailed(
                            f"batch {header.seq} lost its actor {attempt} times: {type(exc).__name__}"
                        ) from exc
                    self.counts.batches_retried += 1
                    actor = await self._acquire()
            await self._release(actor)
            actor = -1
        except BatchFailed as exc:
            state.error = state.error or str(exc)
            return
        except (ray.exceptions.RayTaskError, *FRAMES_LOST) as exc:
            if actor >= 0:
                await self._release(actor)
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            if isinstance(cause, FRAMES_LOST):
                # The frames were in the object store of a node that is gone: not the batch's
                # fault. It is decoded again once this pass over the video is over.
                state.lost.add(header.seq)
                return
            state.error = (
                state.error
                or f"inference failed on batch {header.seq}: {type(cause).__name__}: {cause}"
            )
            return
        finally:
            del frames_ref  # the batch's frames can leave the object store now
        latency = time.perf_counter() - sent
        if self.first_batch_done_at is None:
            self.first_batch_done_at = time.time()
        self.deadline.observe(latency)
        self.actor_last[actor_used] = out.sample
        self.metrics.batch_latency.observe(latency)
        self.stage_s["batch_round_trip"] += latency
        self.stage_s["infer"] += out.infer_s
        result = out.result
        t0 = time.perf_counter()
        if state.writer.add(result):
            self.counts.batches_done += 1
            self.counts.frames_done += result.num_frames
            self.counts.boxes += len(result.detections)
            self.metrics.frames_inferred.inc(result.num_frames)
            if state.writer.row_groups_written:
                # Warm once rows have reached the disk: the Parquet writer's buffers and codecs
                # are allocated then, so growth after this point is what a leak would look like.
                self.memory.mark_warm()
        else:
            self.counts.duplicate_batches_dropped += 1
        self.stage_s["write"] += time.perf_counter() - t0

    # ---- one video ---------------------------------------------------------------------

    async def _next(self, stream):
        try:
            return await asyncio.wait_for(stream.__anext__(), timeout=self.config.stall_timeout_s)
        except asyncio.TimeoutError:
            raise DecoderLost(
                f"decoder stalled: nothing for {self.config.stall_timeout_s:.0f} s"
            ) from None
        except StopAsyncIteration:
            raise DecoderLost("decoder stream ended without its end marker") from None
        except ray.exceptions.RayError as exc:
            raise DecoderLost(f"decoder process died ({type(exc).__name__})") from exc

    async def _fetch(self, ref):
        try:
            return await ref
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            raise DecoderLost(f"decoder raised {type(cause).__name__}: {cause}") from exc
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.RayError) as exc:
            raise DecoderLost(f"decoder process died ({type(exc).__name__})") from exc

    async def _consume(
        self, stream, state: VideoState, part: SegmentStream, only: set[int] | None = None
    ) -> VideoEnded:
        """Dispatch the stream's batches. A batch is sent only once the item after its frames
        has arrived intact: a decoder that dies between a header and its frames leaves an error
        where the frames should be (Ray's streaming generators do not raise for it), and only the
        next item proves the frames real. Until then the batch is not counted as received, so a
        retried decoder decodes it again."""
        held: tuple[BatchHeader, object] | None = None
        while True:
            item = await self._fetch(await self._next(stream))  # DecoderLost drops ``held``
            if held is not None:
                await self._dispatch(*held, state, part, only)
                held = None
                if only is not None and not only:  # every batch asked for is on its way again
                    return VideoEnded(state.frames_decoded, None)
            if isinstance(item, VideoOpened):
                if state.info is None:
                    state.info, state.geometry = item.info, item.geometry
                    state.writer = VideoResultWriter(self.output, state.source.video_id, self.names)
                    if item.info.header_frames:
                        self.counts.frames_expected += -(
                            -item.info.header_frames // self.config.stride
                        )
            elif isinstance(item, BatchHeader):
                held = (item, await self._next(stream))
            elif isinstance(item, VideoEnded):
                return item
            if state.error:  # a batch failed for good: no point decoding the rest
                return VideoEnded(state.frames_decoded, state.error)

    async def _dispatch(
        self,
        header: BatchHeader,
        frames_ref,
        state: VideoState,
        part: SegmentStream,
        only: set[int] | None,
    ) -> None:
        """Send one batch to an actor; with ``only``, just the batches in it (a repair pass)."""
        part.received = header.seq - part.segment.first_seq + 1
        if only is not None:
            if header.seq not in only:
                return  # its rows are safe already
            only.discard(header.seq)
        self.stage_s["decode"] += header.decode_s
        self._frames_decoded += len(header.frame_indices)
        actor = await self._acquire()  # backpressure: wait here while every window is full
        # kept if the decoder dies
        state.frames_decoded = max(state.frames_decoded, int(header.frame_indices[-1]) + 1)
        self.metrics.frames_decoded.inc(len(header.frame_indices))
        task = asyncio.create_task(self._infer(actor, header, frames_ref, state))
        state.tasks.add(task)
        task.add_done_callback(state.tasks.discard)

    async def _decode_with_retries(
        self, state: VideoState, part: SegmentStream, only: set[int] | None = None
    ) -> VideoEnded:
        cfg = self.config
        attempts = 0
        while True:
            attempts += 1
            state.attempts += 1
            stream = decode_video.options(
                _generator_backpressure_num_objects=2 * cfg.decoder_buffer
            ).remote(
                state.source.path,
                self.decode_spec.resumed(part.segment, part.received),
                self.faults,
            )
            self.counts.decoder_opened()
            try:
                ended = await self._consume(stream, state, part, only)
                if state.error or only is not None:  # the decoder must not run on alone
                    self._cancel(stream)
                return ended
            except DecoderLost as exc:
                self._cancel(stream)
                if not self.retry.retry_decoder(attempts):
                    return VideoEnded(
                        state.frames_decoded, f"{exc} (gave up after {attempts} attempts)"
                    )
                self.counts.decoder_retries += 1
                log.warning(
                    "retrying decoder of %s after: %s", redact(state.source.path), redact(str(exc))
                )
            finally:
                self.counts.decoder_closed()
                part.attempts = attempts

    async def _segments(self, source: VideoSource) -> list[Segment]:
        """The segments this video is decoded in: the whole video, unless the split policy says
        otherwise for its length (which a probe finds), the free decoders and the bottleneck."""
        policy = self.split_policy
        if not policy.worth_probing(source.size_bytes):
            return [WHOLE_VIDEO]
        # less this video's own
        free = (self.config.max_open_videos or 1) - self.counts.open_decoders - 1
        frames = self.counts.frames_done
        bound = decode_bound(
            self.stage_s["decode"] / self._frames_decoded if self._frames_decoded else None,
            self.stage_s["infer"] / frames if frames else None,
            len(self.actors),
            on_gpu=self.config.resolved_device == "cuda",
        )
        if policy.segments is None and (not bound or free <= 0):
            return [WHOLE_VIDEO]  # no probe: nothing it finds would split this video
        try:
            times = await probe_video.remote(source.path)
        except ray.exceptions.RayError as exc:  # the decoder will say what is wrong with the file
            log.info(
                "not splitting %s: its probe failed (%s)", redact(source.path), type(exc).__name__
            )
            return [WHOLE_VIDEO]
        count = policy.count(len(times.pts), free_decoders=free, decode_bound=bound)
        segments = plan_segments(
            times, count, stride=self.config.stride, batch_size=self.config.batch_size
        )
        if len(segments) > 1:
            self.counts.videos_split += 1
            self.counts.segments += len(segments)
        return segments

    @staticmethod
    def _cancel(stream) -> None:
        try:
            ray.cancel(stream, force=True)
        except Exception:  # already finished, or its worker is gone
            pass

    async def _process_video(self, source: VideoSource) -> None:
        """Decode and infer one video; its commit (and tracking) goes on in the background so
        the worker can open the next video meanwhile."""
        started = time.perf_counter()
        state = VideoState(source)
        try:
            parts = [SegmentStream(segment) for segment in await self._segments(source)]
            ends = await asyncio.gather(*(self._decode_with_retries(state, part) for part in parts))
            # The last segment's end speaks for the video's length; any segment's error for the video.
            ended = VideoEnded(
                ends[-1].frames_decoded, next((e.error for e in ends if e.error), None)
            )
            if state.tasks:
                await asyncio.gather(*list(state.tasks))
            repairs = 0
            # frames lost with a node: decode those batches again
            while state.lost and not state.error:
                if not self.retry.repair_again(repairs):
                    state.error = (
                        f"batches {sorted(state.lost)} were lost {repairs} times with their nodes"
                    )
                    break
                repairs += 1
                only, state.lost = set(state.lost), set()
                self.counts.batches_redecoded += len(only)
                log.warning(
                    "decoding %d batches of %s again: their frames were lost with a node",
                    len(only),
                    redact(source.path),
                )
                repaired = await self._decode_with_retries(
                    state, SegmentStream(WHOLE_VIDEO, received=min(only)), only
                )
                if state.tasks:
                    await asyncio.gather(*list(state.tasks))
                if repaired.error and not state.error:
                    state.error = repaired.error
        except BaseException:
            if state.writer:
                state.writer.abort()
            raise
        # Bounded: when tracking falls behind inference, the workers wait here (backpressure)
        # instead of piling up finished videos.
        await self._completion_slots.acquire()
        task = asyncio.create_task(self._complete_video(state, ended, started))
        self._completing.add(task)
        task.add_done_callback(self._completed)

    def _completed(self, task: asyncio.Task) -> None:
        self._completing.discard(task)
        self._completion_slots.release()
        if not task.cancelled() and task.exception() is not None:
            self._completion_errors.append(task.exception())  # raised by run(), not lost

    async def _track(self, writer: VideoResultWriter) -> tuple[Path, Path, int]:
        """Track a finished video in a task on this node: (tracked file, tracks file, tracks),
        both files still under hidden names."""
        untracked = writer.finish()
        tracked = OutputLayout.temp_beside(writer.final_path, f"tracked-{writer.video_id}")
        tracks = OutputLayout.temp_beside(writer.tracks_final_path)
        tracks.parent.mkdir(parents=True, exist_ok=True)
        async with self._tracking_slots:
            task = track_video.options(scheduling_strategy=self._on_this_node).remote(
                str(untracked), str(tracked), str(tracks), writer.video_id, self.names, self.faults
            )
            # ByteTrack takes about a millisecond a frame: a hundred times that, and 5 minutes
            # for start-up, before a silent task is called hung.
            deadline = 300 + 0.1 * writer.rows_written
            try:
                out = await asyncio.wait_for(task, timeout=deadline)
            except (ray.exceptions.RayError, asyncio.TimeoutError) as exc:
                for path in (tracked, tracks):
                    path.unlink(missing_ok=True)
                if isinstance(exc, asyncio.TimeoutError):
                    self._cancel(task)
                    raise TrackingFailed(f"tracking gave no answer in {deadline:.0f} s") from None
                cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                raise TrackingFailed(f"tracking failed: {type(cause).__name__}: {cause}") from exc
            finally:
                untracked.unlink(missing_ok=True)
        self.stage_s["track"] += out.track_s
        self.tracker_peak_rss = max(self.tracker_peak_rss, out.rss)
        return tracked, tracks, out.num_tracks

    async def _commit(self, writer: VideoResultWriter) -> int | None:
        """Put a complete video's files in place (tracks first, so a detections file with track
        ids always has its summary) and publish them; returns the track count when tracking."""
        video_id = writer.video_id
        num_tracks = None
        if self.config.track:
            tracked, tracks, num_tracks = await self._track(writer)
        # A kill from here to the video's record leaves files without one: this line lets the
        # next fold of the log remove them.
        self.manifest.committing(video_id)
        # Closing the Parquet file, fsync and rename take milliseconds: off the event loop, which
        # meanwhile keeps the other videos' batches moving.
        if self.config.track:
            await asyncio.to_thread(durable_replace, tracks, writer.tracks_final_path)
            await asyncio.to_thread(durable_replace, tracked, writer.final_path)
        else:
            await asyncio.to_thread(writer.commit)
        # Object storage calls (nothing, for a local output): off the event loop.
        await asyncio.to_thread(
            self.store.publish_video, video_id, with_tracks=num_tracks is not None
        )
        if self.faults:
            self.faults.on_commit()
        return num_tracks

    async def _publish(self, path: Path) -> None:
        await asyncio.to_thread(self.store.publish, path)  # one PUT on object storage: off the loop

    async def _discard(self, writer: VideoResultWriter | None, video_id: str) -> None:
        """No usable rows: remove this attempt's and any older version's files."""
        if writer:
            writer.abort()
        await asyncio.to_thread(self.store.remove_video, video_id)  # object storage: off the loop

    async def _complete_video(self, state: VideoState, ended: VideoEnded, started: float) -> None:
        source, writer = state.source, state.writer
        error = ended.error or state.error
        frames = writer.rows_written if writer else 0
        num_tracks = None
        committed = False
        if writer and should_commit(frames, writer.pending):
            try:
                num_tracks = await self._commit(writer)
                committed = True
                self.memory.mark_warm()  # a video shorter than a row group reaches the disk here
            except TrackingFailed as exc:
                error = str(exc)
        if not committed:
            await self._discard(writer, source.video_id)
        elif num_tracks:
            self.counts.tracks += num_tracks
        outcome = VideoOutcome(
            source,
            state.info,
            error,
            committed,
            frames,
            boxes=writer.boxes_written if committed else 0,
            class_counts=writer.class_totals() if committed else [],
            num_tracks=num_tracks,
            frames_decoded=ended.frames_decoded,
            attempts=state.attempts,
            processing_s=time.perf_counter() - started,
        )
        record = outcome.record(self.settings_hash)
        await self._finish(record)

    async def _finish(self, record: VideoRecord) -> None:
        async with self._manifest_lock:  # one writer at a time: an older upload never lands last
            # after the rows are in place: an 'ok' record always has its rows
            self.manifest.record(record)
            # O(N), every N/2 videos (or ≤ 5 % of the time): O(1) per video
            if self.manifest.compaction_due():
                self.manifest.save()
                await self._publish(self.manifest.path)
        self.counts.video_finished(record.status)
        self.metrics.videos_finished.inc(tags={"status": record.status})
        self.memory.sample()

    # ---- the run -------------------------------------------------------------------------

    async def add_videos(self, videos: list[VideoSource]) -> None:
        """The driver's next part of the backlog; returns once it is queued (the queue is
        bounded: the driver's walk waits for the run)."""
        for video in videos:
            await self._backlog.put(video)
            self.counts.videos_total += 1

    async def backlog_walked(self) -> None:
        """No more videos will come."""
        await self._backlog.put(None)

    async def run(self, model_facts: ModelFacts) -> CoordinatorSummary:
        """Process the videos ``add_videos`` queues until ``backlog_walked``; ``model_facts`` is a
        YoloActor's ``ready()`` answer (letterbox shape, names)."""
        self.names = model_facts.names
        self.manifest.class_names = self.names  # recorded in videos.parquet for the readers
        self.decode_spec = DecodeSpec(
            imgsz=self.config.imgsz,
            model_stride=model_facts.model_stride,
            rect=model_facts.rect,
            stride=self.config.stride,
            batch_size=self.config.batch_size,
        )
        self._slot_freed = asyncio.Condition()
        self._manifest_lock = asyncio.Lock()
        self.started = time.time()
        # this process's CPU, all its threads (Ray's included)
        self.cpu_started = time.process_time()

        async def worker() -> None:
            # A fixed set of workers pulling from one queue: open videos (and so decoders) are
            # capped, and the backlog is walked lazily however long it is.
            while (source := await self._backlog.get()) is not None:
                if source.error:
                    await self._finish(VideoRecord.failed(source, source.error, self.settings_hash))
                    # Rows of an earlier version go too (once the record says failed, so a crash
                    # in between never leaves an 'ok' record without its rows).
                    await self._discard(None, source.video_id)
                elif self.manifest.is_complete(source, self.settings_hash):
                    self.counts.video_skipped()
                else:
                    await self._process_video(source)
            # for the next worker (one slot is free: this one took it)
            self._backlog.put_nowait(None)

        workers = [asyncio.create_task(worker()) for _ in range(self.config.max_open_videos or 1)]
        try:
            await asyncio.gather(*workers)
            while self._completing:  # commits and tracking of the last videos
                await asyncio.gather(*list(self._completing), return_exceptions=True)
            if self._completion_errors:
                raise self._completion_errors[0]
        finally:
            for probe in self._probes.values():
                probe.cancel()
        self.manifest.save()
        await self._publish(self.manifest.path)
        return await self.summary()

    async def summary(self) -> CoordinatorSummary:
        actor_stats = []
        for handle in self.actors:
            try:
                actor_stats.append(await asyncio.wait_for(handle.stats.remote(), timeout=30))
            except (asyncio.TimeoutError, GetTimeoutError, *ACTOR_LOST):
                actor_stats.append(None)
        return CoordinatorSummary(
            elapsed_s=time.time() - self.started,
            cpu_s=time.process_time() - self.cpu_started,
            first_batch_done_at=self.first_batch_done_at,
            counts=self.counts,
            stage_s=dict(self.stage_s),
            peak_batches_in_flight=self.window.peak_in_flight,
            window_limit=self.window.limit,
            coordinator_memory=self.memory.as_dict(),
            tracker_peak_bytes=self.tracker_peak_rss or None,
            actors=actor_stats,
        )

    async def progress(self) -> RunProgress:
        self.metrics.process_rss.set(self.memory.sample(), tags={"role": "coordinator"})
        return RunProgress(
            counts=self.counts,
            in_flight=self.window.total_in_flight,
            peak_in_flight=self.window.peak_in_flight,
            elapsed_s=time.time() - self.started,
            pid=os.getpid(),
            coordinator_rss=self.memory.last,
            actors=tuple(self.actor_last),
        )
