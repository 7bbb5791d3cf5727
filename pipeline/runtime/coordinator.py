"""The coordinator: an async actor that walks the backlog with a fixed set of video workers,
each taking a video through its pass (``video_pass``: decoders, the actor pool, the writer) and
handing it to the committer (``commit``: tracking, the files put in place, the record).

``CoordinatorLogic`` is all of it, with Ray reached only through the actor handles and a
``RayCalls`` it is given; ``Coordinator`` is the Ray actor that gives it the real ones, so the
tests drive the logic with fake actors and fake decoder streams, without Ray.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import ray

from pipeline.config import RunConfig
from pipeline.media.source import VideoSource
from pipeline.output.manifest import VideoRecord
from pipeline.output.progress import RunProgress
from pipeline.output.store import OutputStore
from pipeline.runtime.actor_pool import ActorPool
from pipeline.runtime.commit import VideoCommitter
from pipeline.runtime.context import RunContext
from pipeline.runtime.deadlines import BatchDeadline
from pipeline.runtime.faults import FaultPlan
from pipeline.runtime.messages import CoordinatorSummary, ModelFacts
from pipeline.runtime.metrics import PipelineMetrics
from pipeline.runtime.ray_calls import RayCalls
from pipeline.runtime.video_pass import VideoPass

BACKLOG_QUEUE = 2000  # videos queued here ahead of the workers


class CoordinatorLogic:
    def __init__(
        self,
        output: str,
        config: RunConfig,
        actors: list,
        faults: FaultPlan | None = None,
        remote_output: str | None = None,
        *,
        calls: RayCalls,
        metrics,
    ):
        # Files are written in the store's folder (the staging folder of a remote output).
        self.store = OutputStore(Path(output), remote_output)
        self.ctx = RunContext(config, metrics, faults)
        self.pool = ActorPool(
            actors,
            config.window_per_actor,
            BatchDeadline(fixed_s=config.batch_timeout_s),
            calls,
            metrics,
            self.ctx.counts,
        )
        self.video_pass = VideoPass(self.ctx, self.pool, calls, self.store.layout.root)
        self.committer = VideoCommitter(self.ctx, self.store, calls)
        # The backlog as the driver walks it: bounded, so a walk of a million names waits here
        # instead of filling this process (None: the walk is over).
        self._backlog: asyncio.Queue[VideoSource | None] = asyncio.Queue(maxsize=BACKLOG_QUEUE)
        self.started = time.time()
        self.cpu_started = time.process_time()

    def set_config(self, config: RunConfig) -> None:
        """The settings once the loaded model turned class names into ids (the hash depends on them)."""
        self.ctx.set_config(config)
        self.pool.deadline.fixed_s = config.batch_timeout_s

    async def add_videos(self, videos: list[VideoSource]) -> None:
        """The driver's next part of the backlog; returns once it is queued (the queue is
        bounded: the driver's walk waits for the run)."""
        for video in videos:
            await self._backlog.put(video)
            self.ctx.counts.videos_total += 1

    async def backlog_walked(self) -> None:
        """No more videos will come."""
        await self._backlog.put(None)

    async def run(self, model_facts: ModelFacts) -> CoordinatorSummary:
        """Process the videos ``add_videos`` queues until ``backlog_walked``; ``model_facts`` is a
        YoloActor's ``ready()`` answer (letterbox shape, names)."""
        self.ctx.model_loaded(model_facts.names, model_facts.model_stride, model_facts.rect)
        self.pool.start()
        self.committer.start(model_facts.names)
        self.started = time.time()
        # this process's CPU, all its threads (Ray's included)
        self.cpu_started = time.process_time()
        workers = [
            asyncio.create_task(self._video_worker())
            for _ in range(self.ctx.config.max_open_videos or 1)
        ]
        try:
            await asyncio.gather(*workers)
            await self.committer.drain()
        finally:
            self.pool.stop()
        await self.committer.save_manifest()
        return await self.summary()

    async def _video_worker(self) -> None:
        # A fixed set of workers pulling from one queue: open videos (and so decoders) are
        # capped, and the backlog is walked lazily however long it is.
        ctx, committer = self.ctx, self.committer
        while (source := await self._backlog.get()) is not None:
            if source.error:
                ctx.counts.videos_never_opened += 1
                await committer.take_out_of_part(source.video_id)  # an output once packed
                await committer.record(VideoRecord.failed(source, source.error, ctx.settings_hash))
                # Rows of an earlier version go too (once the record says failed, so a crash
                # in between never leaves an 'ok' record without its rows).
                await committer.discard(None, source.video_id)
            elif committer.manifest.is_complete(source, ctx.settings_hash):
                ctx.counts.video_skipped()
            else:
                await committer.take_out_of_part(source.video_id)
                state, ended = await self.video_pass.run(source)
                # its commit (and tracking) goes on in the background meanwhile
                await committer.complete_later(state, ended)
        # for the next worker (one slot is free: this one took it)
        self._backlog.put_nowait(None)

    async def summary(self) -> CoordinatorSummary:
        ctx = self.ctx
        return CoordinatorSummary(
            elapsed_s=time.time() - self.started,
            cpu_s=time.process_time() - self.cpu_started,
            first_batch_done_at=ctx.first_batch_done_at,
            counts=ctx.counts,
            stage_s=dict(ctx.stage_s),
            peak_batches_in_flight=self.pool.window.peak_in_flight,
            window_limit=self.pool.window.limit,
            coordinator_memory=ctx.memory.as_dict(),
            tracker_peak_bytes=self.committer.tracker_peak_rss or None,
            actors=await self.pool.stats(),
        )

    async def progress(self) -> RunProgress:
        ctx = self.ctx
        ctx.metrics.process_rss.set(ctx.memory.sample(), tags={"role": "coordinator"})
        return RunProgress(
            counts=ctx.counts,
            in_flight=self.pool.window.total_in_flight,
            peak_in_flight=self.pool.window.peak_in_flight,
            elapsed_s=time.time() - self.started,
            pid=os.getpid(),
            coordinator_rss=ctx.memory.last,
            actors=tuple(self.pool.last_sample),
        )


@ray.remote(num_cpus=0, max_restarts=0)
class Coordinator(CoordinatorLogic):
    """The coordinator as a Ray actor (async: thousands of awaits cost no threads)."""

    def __init__(
        self,
        output: str,
        config: RunConfig,
        actors: list,
        faults: FaultPlan | None = None,
        remote_output: str | None = None,
    ):
        super().__init__(
            output,
            config,
            actors,
            faults,
            remote_output,
            calls=RayCalls(faults),
            metrics=PipelineMetrics(),
        )
