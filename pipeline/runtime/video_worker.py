"""The video worker: a YoloActor (one per GPU) that owns its videos' whole data path.

The coordinator hands it whole videos (``process``). For each it starts the decoders on its own
node (frames never cross the network), infers their batches with its own detector, packed
across its open videos (``local_engine``), writes the rows under hidden names on the shared
output, tracks them (``--track``), and asks the coordinator for the commit before it puts the
files in place. Nothing per batch goes to the coordinator; per video, two messages (coalesced
with other videos' when they are ready together): the grant and the outcome, sent as soon as the
video's pass ends, so that a chunk's short clips are recorded one by one.

``VideoWorkerLogic`` is the worker without Ray's actor machinery (its Ray calls and the
coordinator handle are given to it); ``VideoWorker`` is the actor.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import ray

from pipeline.config import ConfigError, RunConfig
from pipeline.inference.model_ref import ModelLoadError
from pipeline.media.decode import VideoEnded
from pipeline.media.source import VideoSource
from pipeline.output.outcomes import should_commit
from pipeline.output.parts import goes_in_a_part
from pipeline.output.schema import detections_schema
from pipeline.output.store import OutputStore
from pipeline.output.writer import ROW_GROUP_FRAMES
from pipeline.runtime.coalesce import Coalescer
from pipeline.runtime.commit import (
    TrackedFiles,
    TrackingFailed,
    pass_outcome,
    put_in_place,
    track_writer,
)
from pipeline.runtime.context import RunContext
from pipeline.runtime.faults import FaultPlan
from pipeline.runtime.local_engine import LocalEngine
from pipeline.runtime.messages import (
    ActorSample,
    ActorStartFailure,
    ActorStats,
    CommitRequest,
    ModelFacts,
    WorkerOutcome,
    WorkerReport,
)
from pipeline.runtime.metrics import PipelineMetrics
from pipeline.runtime.monitoring import GpuSample, GpuSampler, PeakRss
from pipeline.runtime.part_commits import PartCommits
from pipeline.runtime.ray_calls import RayCalls
from pipeline.runtime.video_pass import VideoPass, VideoState


class VideoWorkerLogic:
    def __init__(
        self,
        detector,
        config: RunConfig,
        store: OutputStore,
        *,
        calls: RayCalls,
        metrics,
        grant,
        place,
        tell=None,
        ended=None,
        faults: FaultPlan | None = None,
        sample=None,
    ):
        """``grant(CommitRequest)``: awaits the coordinator's yes or no to putting a video's own
        files in place; ``place(PartPlacement)``: the coordinator puts a part file in place and
        records its videos; ``tell(outcome)``: hands a video's outcome to the coordinator as
        soon as it has one (without it, outcomes go only with the reply to the whole hand-out);
        ``ended((video_id, attempt_id))``: says a video's pass is over while its commit waits
        for a part, so the worker gets more videos."""
        self.ctx = RunContext(config, metrics, faults, node_id=calls.node_id)
        self.ctx.model_loaded(detector.names, detector.model_stride, detector.rect)
        self.store, self.calls, self.grant, self.tell = store, calls, grant, tell
        self.ended = ended
        self.parts = PartCommits(
            store,
            detections_schema(config.track),
            f"{os.getpid()}",
            place,
            part_rows=config.part_rows,
        )
        self._flusher: asyncio.Task | None = None
        self._idle_since = time.monotonic()
        # Batches in flight: the engine's window and one more per video open now (``process``),
        # so that short clips' batches wait together for a pass while a long video's decoder
        # never runs more than a couple of full batches ahead.
        self.engine = LocalEngine(
            detector,
            config.batch_size,
            window=config.window_per_actor + 1,
            sample=sample,
            after_pass=faults.on_actor_batch if faults else None,
            metrics=metrics,
        )
        self.video_pass = VideoPass(self.ctx, self.engine, calls, store.layout.root)
        self._tracking_slots = asyncio.Semaphore(max(1, min(4, (os.cpu_count() or 2) // 2)))
        self.tracker_peak_rss = 0
        self.open_videos = 0  # in their video pass now
        # when each commit step running now began (a rename, an upload): one stuck on storage
        # gets the worker restarted, as a stuck forward pass does (the coordinator decides)
        self._commits_since: list[float] = []
        self.engine.start()

    def set_config(self, config: RunConfig) -> None:
        self.ctx.set_config(config)
        self.parts.schema = detections_schema(config.track)
        self.parts.part_rows = config.part_rows

    async def process_many(
        self, sources: list[VideoSource], attempt_ids: list[int], fresh: list[bool] | None = None
    ) -> list[WorkerOutcome]:
        """``fresh``: per video, whether it was never recorded in this output (no files of an
        earlier version to remove); None: not known."""
        fresh = fresh or [False] * len(sources)
        return list(await asyncio.gather(*map(self.process, sources, attempt_ids, fresh)))

    async def process(
        self, source: VideoSource, attempt_id: int, fresh: bool = False
    ) -> WorkerOutcome:
        """Decode, infer, write, track and (if granted) commit one video."""
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._write_parts_when_due())
        self._opened(+1)
        try:
            state, ended = await self.video_pass.run(source)
        finally:
            self._opened(-1)
        outcome = await self._finish(state, ended, attempt_id, fresh)
        if self.tell is not None and outcome.record is not None:
            try:
                await self.tell(outcome)
            except Exception:  # noqa: BLE001 - the hand-out's reply carries the outcome too
                pass
        return outcome

    def _opened(self, change: int) -> None:
        self.open_videos += change
        self._idle_since = time.monotonic()
        self.engine.window.size = self.ctx.config.window_per_actor + max(1, self.open_videos)

    async def _finish(
        self, state: VideoState, ended: VideoEnded, attempt_id: int, fresh: bool
    ) -> WorkerOutcome:
        ctx, source, writer = self.ctx, state.source, state.writer
        if state.info is None:  # no decoder ever opened it
            ctx.counts.videos_never_opened += 1
        error = ended.error or state.error
        frames = writer.rows_written if writer else 0
        num_tracks, committed = None, False
        if writer and should_commit(frames, writer.pending):
            try:
                tracked = None
                if ctx.config.track:
                    tracked = await track_writer(ctx, self.calls, self._tracking_slots, writer)
                    self.tracker_peak_rss = max(self.tracker_peak_rss, tracked.rss)
                if goes_in_a_part(ctx.config.layout, frames):
                    return await self._commit_packed(
                        state, ended, attempt_id, error, tracked, fresh
                    )
                if not await self.grant(CommitRequest(source.video_id, attempt_id)):
                    # The video is another attempt's now: this one's files never land.
                    writer.abort()
                    for path in (tracked.detections, tracked.tracks) if tracked else ():
                        path.unlink(missing_ok=True)
                    return WorkerOutcome(attempt_id, None, committed=False)
                self._commits_since.append(started := time.monotonic())
                try:
                    num_tracks = await put_in_place(self.store, writer, tracked)
                finally:
                    self._commits_since.remove(started)
                committed = True
                ctx.counts.tracks += num_tracks or 0
                ctx.memory.mark_warm()
            except TrackingFailed as exc:
                error = str(exc)
        if writer and not committed:
            writer.abort()  # the coordinator removes an older version's files, after the record
        outcome = pass_outcome(state, ended, error, committed, num_tracks)
        return WorkerOutcome(attempt_id, outcome.record(ctx.settings_hash), committed)

    async def _commit_packed(
        self,
        state: VideoState,
        ended: VideoEnded,
        attempt_id: int,
        error: str | None,
        tracked: TrackedFiles | None,
        fresh: bool,
    ) -> WorkerOutcome:
        """The video's rows into the worker's next part file (``part_commits``)."""
        ctx, video_id, writer = self.ctx, state.source.video_id, state.writer
        assert writer is not None
        detections, tracks = await asyncio.to_thread(_rows_of, writer, tracked)
        num_tracks = tracked.num_tracks if tracked else None
        record = pass_outcome(state, ended, error, True, num_tracks).record(ctx.settings_hash)
        if self.ended is not None:
            try:
                await self.ended((video_id, attempt_id))
            except Exception:  # noqa: BLE001 - the coordinator gone: the run is over anyway
                pass
        placed = await self.parts.commit(video_id, attempt_id, record, detections, tracks, fresh)
        if placed is None:  # refused: the video is another attempt's now
            return WorkerOutcome(attempt_id, None, committed=False)
        ctx.counts.tracks += num_tracks or 0
        ctx.memory.mark_warm()
        return WorkerOutcome(attempt_id, placed, committed=True)

    async def _write_parts_when_due(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            idle = time.monotonic() - self._idle_since if not self.open_videos else 0.0
            if self.parts.due(self.open_videos, idle):
                await self.parts.flush_quietly()

    def _commit_running_s(self) -> float | None:
        starts = [*self._commits_since]
        if self.parts.staging_since is not None:
            starts.append(self.parts.staging_since)
        return time.monotonic() - min(starts) if starts else None

    def report(self) -> WorkerReport:
        ctx, engine = self.ctx, self.engine
        ctx.counts.mixed_batches = engine.figures.mixed_passes
        ctx.counts.commits_refused = self.parts.superseded  # the coordinator counts its own
        started = engine.figures.pass_started
        return WorkerReport(
            pid=os.getpid(),
            counts=ctx.counts,
            stage_s=dict(ctx.stage_s),
            in_flight=engine.window.in_flight,
            peak_in_flight=engine.window.peak_in_flight,
            sample=engine.last_sample,
            first_batch_done_at=ctx.first_batch_done_at,
            tracker_peak_bytes=self.tracker_peak_rss,
            pass_running_s=(None if started is None else time.monotonic() - started),
            slowest_pass_s=engine.figures.slowest_pass_s,
            commit_running_s=self._commit_running_s(),
            busy_s=engine.figures.busy_s,
        )


def _rows_of(writer, tracked: TrackedFiles | None) -> tuple[pa.Table, pa.Table | None]:
    """A finished video's detections (and tracks) as tables, its files gone."""
    if tracked is not None:
        detections, tracks = pq.read_table(tracked.detections), pq.read_table(tracked.tracks)
        tracked.detections.unlink(missing_ok=True)
        tracked.tracks.unlink(missing_ok=True)
        writer.abort()
        return detections, tracks
    table = writer.in_memory_table()
    if table is None:  # a long video (``--layout packed``): its rows streamed to its file
        table = pq.read_table(writer.finish())
    writer.abort()
    return table, None


WARM_FRAMES = 2 * ROW_GROUP_FRAMES


class DetectorHost:
    """A warmed detector for the life of an actor, and the actor's health: its model facts
    (``ready``), its memory and GPU (``_report``, ``stats``). ``VideoWorker`` is one."""

    def __init__(self, config: RunConfig, faults: FaultPlan | None = None, warm_shapes: tuple = ()):
        # A model that cannot load is answered by ready() as one line for the driver to report;
        # raised from here, Ray would print the actor's whole traceback on the user's terminal.
        self.start_failure: ActorStartFailure | None = None
        try:
            self._start(config, faults, tuple(warm_shapes))
        except (ModelLoadError, ConfigError) as exc:
            self.start_failure = ActorStartFailure(str(exc), usage=True)
        except Exception as exc:
            self.start_failure = ActorStartFailure(f"{type(exc).__name__}: {exc}", usage=False)

    def _start(self, config: RunConfig, faults: FaultPlan | None, warm_shapes: tuple) -> None:
        from pipeline.inference.open import open_detector, worker_device

        device = worker_device(config, len(ray.get_gpu_ids()))
        opened = open_detector(config, device, warm_shapes=warm_shapes)
        self.detector, self.engine = opened.detector, opened.engine
        self.engine_export_s, self.engine_fallback = opened.export_s, opened.fallback
        self.faults = faults
        self.memory = PeakRss()
        self.gpu = GpuSampler() if device == "cuda" else None
        self.device = device
        self.gpu_util_sum, self.gpu_util_n, self.gpu_mem_peak = 0.0, 0, 0
        self.metrics = PipelineMetrics()
        self._last_report = 0.0
        self._last_gpu: list[GpuSample] | None = None

    def ready(self) -> ModelFacts | ActorStartFailure:
        """Model facts the decoders need (letterbox shape), and a liveness answer for the coordinator;
        why the model did not load, if it did not."""
        if self.start_failure:
            return self.start_failure
        if self.faults:
            self.faults.on_actor_call("ready")
        d = self.detector
        return ModelFacts(
            names=d.names,
            model_stride=d.model_stride,
            rect=d.rect,
            device=self.device,
            half=d.half,
            engine=self.engine,
            engine_export_s=self.engine_export_s,
            engine_fallback=self.engine_fallback,
            node_id=ray.get_runtime_context().get_node_id(),
            pid=os.getpid(),
        )

    def _report(self) -> None:
        self.metrics.process_rss.set(self.memory.sample(), tags={"role": "actor"})
        if self.gpu and self.gpu.available:
            samples = self.gpu.sample()
            self._last_gpu = samples
            self.metrics.record_gpu(samples)
            for s in samples:
                self.gpu_util_sum += s.utilization_percent
                self.gpu_util_n += 1
                self.gpu_mem_peak = max(self.gpu_mem_peak, s.memory_used_bytes)

    def stats(self, batches: int = 0, busy_s: float = 0.0) -> ActorStats:
        """``batches``, ``busy_s``: the worker's forward passes and its time in them."""
        self._report()
        gpu = None
        if self.gpu_util_n:
            gpu = {
                "mean_utilization_percent": self.gpu_util_sum / self.gpu_util_n,
                "peak_memory_used_bytes": self.gpu_mem_peak,
            }
        if self.device == "cuda":
            import torch

            gpu = dict(gpu or {}, torch_memory_allocated_bytes=torch.cuda.memory_allocated())
        return ActorStats(
            pid=os.getpid(),
            device=self.device,
            batches=batches,
            busy_s=busy_s,
            memory=self.memory.as_dict(),
            gpu=gpu,
        )


# (Ray's stubs know no max_concurrency for actors)
@ray.remote(max_restarts=-1, max_task_retries=0, max_concurrency=1000)  # type: ignore[call-overload]
class VideoWorker(DetectorHost):
    """A YoloActor that decodes, infers and writes its own videos (async: its video passes,
    their decoders and the forward passes overlap in one event loop and one engine thread)."""

    def __init__(
        self,
        config: RunConfig,
        faults: FaultPlan | None = None,
        warm_shapes: tuple = (),
        output: str = "",
        remote_output: str | None = None,
    ):
        super().__init__(config, faults, warm_shapes)
        self._args = (output, remote_output, faults)
        self.logic: VideoWorkerLogic | None = None

    async def start_run(self, config: RunConfig, coordinator, decode_here: bool = True) -> None:
        """The run's settings as the driver resolved them, the coordinator that grants commits,
        and whether this worker's decoders run on its node (they do unless it has no CPU left)."""
        output, remote_output, faults = self._args
        if faults:
            faults.on_actor_call("start_run")
        if self.logic is not None:
            self.logic.set_config(config)
            return

        # (an ObjectRef is awaitable: each call's answer is awaited where it is used)
        self.logic = VideoWorkerLogic(
            self.detector,
            config,
            OutputStore(Path(output), remote_output),
            calls=RayCalls(faults, decoders_here=decode_here),
            metrics=PipelineMetrics(),
            grant=Coalescer(coordinator.grant.remote),
            place=coordinator.place_part.remote,
            tell=Coalescer(coordinator.outcomes.remote),
            ended=Coalescer(coordinator.passes_ended.remote),
            faults=faults,
            sample=self._after_pass,
        )

    def _after_pass(self) -> ActorSample:
        """The actor's memory and GPU after a forward pass. Warm once it has inferred
        ``WARM_FRAMES``: by then its allocator pools have filled and its first video's writer
        has written a row group (its RSS is flat from there: docs/BENCHMARKS.md)."""
        if self.logic is not None and self.logic.engine.figures.frames >= WARM_FRAMES:
            self.memory.mark_warm()
        return ActorSample(rss=self.memory.sample(), gpu=self._last_gpu)

    async def process_many(
        self,
        sources: list[VideoSource],
        attempt_ids: list[int],
        config: RunConfig,
        coordinator,
        fresh: list[bool] | None = None,
        decode_here: bool = True,
    ) -> list[WorkerOutcome]:
        """A hand-out (one video, or a chunk of short clips): each video's outcome. The run's
        settings and coordinator come with it: a worker that Ray restarted meanwhile (calls
        sent to a restarting actor reach its new process) starts on them."""
        if self.logic is None:
            await self.start_run(config, coordinator, decode_here)
        assert self.logic is not None
        return await self.logic.process_many(sources, attempt_ids, fresh)

    async def report(self) -> WorkerReport | None:
        self._report()  # memory and NVML, into this actor's metrics
        return self.logic.report() if self.logic else None

    def stats(self) -> ActorStats:  # type: ignore[override]
        if self.logic is None:
            return super().stats()
        figures = self.logic.engine.figures
        return super().stats(figures.passes, figures.busy_s)
