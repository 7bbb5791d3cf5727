"""The ``YoloActor``s as the coordinator sees them: a dispatch window per actor (the least loaded
first: ``pipeline.runtime.backpressure``), each actor's health (one whose call failed is
suspended until it answers ``ready()`` again; one that does not answer in time is restarted:
``pipeline.runtime.deadlines``) and a batch's re-dispatch when its actor is lost."""

from __future__ import annotations

import asyncio
import itertools
import logging

from ray.exceptions import GetTimeoutError

from pipeline.media.decode import BatchHeader
from pipeline.media.letterbox import LetterboxGeometry
from pipeline.output.outcomes import RetryPolicy, RunCounts
from pipeline.runtime.backpressure import DispatchWindow
from pipeline.runtime.deadlines import BatchDeadline
from pipeline.runtime.messages import ActorSample, ActorStats, InferredBatch
from pipeline.runtime.ray_calls import ACTOR_LOST, RayCalls

log = logging.getLogger(__name__)


class BatchFailed(Exception):
    """A batch could not be inferred (every retry's actor died or hung)."""


class ActorPool:
    def __init__(
        self,
        actors: list,
        per_actor: int,
        deadline: BatchDeadline,
        calls: RayCalls,
        metrics,
        counts: RunCounts,
    ):
        self.actors = actors
        self.window = DispatchWindow(len(actors), per_actor)
        self.deadline = deadline
        self.calls = calls
        self.metrics = metrics
        self.counts = counts
        self._slot_freed: asyncio.Condition | None = None  # made on the event loop: start()
        self._probes: dict[int, asyncio.Task] = {}
        # What each actor said last (RSS, GPU use): the driver's timeline samples it.
        self.last_sample: list[ActorSample | None] = [None] * len(actors)

    def start(self) -> None:
        self._slot_freed = asyncio.Condition()

    def stop(self) -> None:
        for probe in self._probes.values():
            probe.cancel()

    async def acquire(self) -> int:
        """A slot in the least loaded live actor's window; waits while every window is full."""
        assert self._slot_freed is not None
        async with self._slot_freed:
            while (i := self.window.acquire()) is None:
                await self._slot_freed.wait()
        self.metrics.batches_in_flight.set(self.window.total_in_flight)
        return i

    async def release(self, i: int) -> None:
        assert self._slot_freed is not None
        async with self._slot_freed:
            self.window.release(i)
            self._slot_freed.notify_all()
        self.metrics.batches_in_flight.set(self.window.total_in_flight)

    def _suspend(self, i: int) -> None:
        """Stop sending to an actor whose call failed until it answers again (Ray restarts it)."""
        if self.window.available[i]:
            self.window.set_available(i, False)
            self._probes[i] = asyncio.create_task(self._probe(i))

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
                self.calls.restart_actor(self.actors[i])
        assert self._slot_freed is not None
        async with self._slot_freed:
            self.window.set_available(i, True)
            self._slot_freed.notify_all()

    async def infer(
        self,
        actor: int,
        frames_ref,
        geometry: LetterboxGeometry,
        video_id: str,
        header: BatchHeader,
        retry: RetryPolicy,
    ) -> tuple[InferredBatch, int]:
        """Infer one batch on ``actor``, whose slot the caller acquired; each time the actor is
        lost (dead, or hung past the deadline), on the next free one. Returns the answer and the
        actor that gave it. The slot is released however it ends; raises ``BatchFailed`` when
        the retries are used up, and what the actor's call raised otherwise."""
        try:
            for attempt in itertools.count(1):
                try:
                    call = self.actors[actor].infer.remote(frames_ref, geometry, video_id, header)
                    out = await asyncio.wait_for(call, timeout=self.deadline.seconds())
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
                        self.calls.restart_actor(self.actors[actor])
                    self._suspend(actor)
                    await self.release(actor)
                    actor = -1
                    if not retry.retry_batch(attempt):
                        raise BatchFailed(
                            f"batch {header.seq} lost its actor {attempt} times: {type(exc).__name__}"
                        ) from exc
                    self.counts.batches_retried += 1
                    actor = await self.acquire()
        except Exception:  # the batch's own error (a task error, frames lost with a node)
            if actor >= 0:
                await self.release(actor)
            raise
        await self.release(actor)
        self.last_sample[actor] = out.sample
        return out, actor

    async def stats(self) -> list[ActorStats | None]:
        """Each actor's end-of-run figures (None for one that does not answer in 30 s)."""
        stats: list[ActorStats | None] = []
        for handle in self.actors:
            try:
                stats.append(await asyncio.wait_for(handle.stats.remote(), timeout=30))
            except (asyncio.TimeoutError, GetTimeoutError, *ACTOR_LOST):
                stats.append(None)
        return stats
