"""The coordinator, a control plane: it hands whole videos to video workers, grants their
commits, records the outcomes, and hands a dead worker's videos to another. Frames and boxes
never pass through it: per hand-out (a video, or a chunk of short clips) it sends one message
and answers the commit requests and the outcomes (each told as its video's pass ends,
coalesced by the worker).

Its decisions are ``assignment.Assignments`` (Ray-free); ``CoordinatorLogic`` reaches Ray only
through the worker handles it is given; ``Coordinator`` is the actor. The driver feeds
it the backlog (``add_videos``, ``backlog_walked``), starts it (``run``) and polls ``progress``.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import replace
from pathlib import Path

import ray

from pipeline.config import RunConfig
from pipeline.media.source import VideoSource
from pipeline.output.bookkeeping import return_freed_memory, tune_garbage_collection
from pipeline.output.manifest import VideoRecord
from pipeline.output.progress import RunProgress
from pipeline.output.store import OutputStore
from pipeline.output.video_record import Previous
from pipeline.plan.placement import Placement
from pipeline.plan.resume import ToProcess
from pipeline.runtime.assignment import (
    Assignments,
    ClipChunks,
    chunk_size,
    is_short_clip,
    videos_per_worker,
)
from pipeline.runtime.commit import VideoCommitter
from pipeline.runtime.context import RunContext
from pipeline.runtime.coordinator_fleet import CoordinatorFleet
from pipeline.runtime.deadlines import BatchDeadline
from pipeline.runtime.faults import FaultPlan
from pipeline.runtime.fleet import Fleet
from pipeline.runtime.messages import (
    ActorStats,
    CommitRequest,
    CoordinatorSummary,
    ModelFacts,
    PartPlacement,
    Placed,
    WorkerOutcome,
)
from pipeline.runtime.metrics import PipelineMetrics
from pipeline.runtime.pauses import PauseWatch
from pipeline.runtime.ray_calls import ACTOR_LOST, RayCalls, error_cause
from pipeline.runtime.worker_reports import WorkerReports

REPORT_EVERY_S = 1.0  # how often the workers' figures are polled (progress, run.json)
# The backlog as the driver walks it: bounded, so a walk of a million names waits here instead
# of filling this process; at least two hand-outs' room per worker, or a cluster's clips go out
# in smaller chunks (more messages per clip) because too few wait to fill them.
BACKLOG_QUEUE = 2000


class CoordinatorMonitoring:
    """The workers' health and figures: their reports, polled about once a second (progress,
    the run's summary: its own counts and the workers'), a worker hung in a forward pass
    restarted, a dead one awaited until Ray has restarted it."""

    ctx: RunContext
    reports: WorkerReports
    fleet: Fleet
    workers: list
    started: float
    cpu_started: float
    assignments: Assignments
    deadline: BatchDeadline
    calls: RayCalls
    pauses: PauseWatch
    me: object
    decode_here: list[bool]
    nodes: list[str | None]
    _final_stats: dict[int, ActorStats]

    def _worker_died(self, worker: int) -> None:
        raise NotImplementedError

    async def _poll_reports(self) -> None:
        while True:
            await asyncio.sleep(REPORT_EVERY_S)
            await self._poll_once()

    async def _poll_once(self) -> None:
        await self.reports.poll(self.workers, self.fleet.current)
        self._restart_hung()

    def _restart_hung(self) -> None:
        """A worker whose forward pass has run past the deadline (a stuck kernel, a deadlock),
        or whose commit step (a rename, an upload) has run past ``--stall-timeout`` (storage that
        hangs), is killed; Ray restarts it, and its videos go to the others as after any death."""
        for worker, report in enumerate(self.reports.latest):
            if report is None or not self.assignments.live[worker]:
                continue
            if report.slowest_pass_s is not None:
                self.deadline.observe(report.slowest_pass_s)
            hung_pass = report.pass_running_s is not None and (
                report.pass_running_s > self.deadline.seconds()
            )
            hung_commit = report.commit_running_s is not None and (
                report.commit_running_s > self.ctx.config.stall_timeout_s
            )
            if hung_pass or hung_commit:
                self.ctx.counts.actors_hung += 1
                self.calls.restart_actor(self.workers[worker])
                self.reports.retire(worker)  # its next report is its new process's
                self._worker_died(worker)  # no videos for it until it joins again

    async def progress(self) -> RunProgress:
        ctx, reports = self.ctx, self.reports
        ctx.metrics.process_rss.set(ctx.memory.sample(), tags={"role": "coordinator"})
        current = reports.current()
        return RunProgress(
            counts=reports.counts(ctx.counts),
            in_flight=sum(r.in_flight for r in current),
            peak_in_flight=sum(r.peak_in_flight for r in current),
            elapsed_s=time.time() - self.started,
            pid=os.getpid(),
            coordinator_rss=ctx.memory.last,
            actors=tuple(r.sample if r else None for r in reports.latest),
            workers_ready=self.fleet.ready,
            workers_wanted=self.fleet.wanted,
            workers_pending=self.fleet.pending,
        )

    async def summary(self) -> CoordinatorSummary:
        ctx, reports = self.ctx, self.reports
        every = reports.every()
        firsts = [r.first_batch_done_at for r in every if r.first_batch_done_at]
        stats: list[ActorStats | None] = []
        for worker, handle in enumerate(self.workers):
            if worker not in self.fleet.current:  # released (its figures kept), lost, never ready
                stats.append(self._final_stats.get(worker))
                continue
            try:
                stats.append(await asyncio.wait_for(handle.stats.remote(), timeout=30))
            except (asyncio.TimeoutError, *ACTOR_LOST):
                stats.append(None)
        by_process = {
            key: (r.busy_s, r.counts.frames_done) for key, r in reports.by_process.items()
        }
        return CoordinatorSummary(
            elapsed_s=time.time() - self.started,
            cpu_s=time.process_time() - self.cpu_started,
            first_batch_done_at=min(firsts) if firsts else None,
            counts=reports.counts(ctx.counts),
            stage_s=reports.stage_s(ctx.stage_s),
            peak_batches_in_flight=sum(r.peak_in_flight for r in reports.current()),
            window_limit=ctx.config.window_per_actor * len(self.workers),
            coordinator_memory=ctx.memory.as_dict(),
            tracker_peak_bytes=max((r.tracker_peak_bytes for r in every), default=0) or None,
            actors=stats,
            longest_pause_s=self.pauses.longest_s,
            nodes=list(self.nodes),
            workers=self.fleet.record(time.time(), by_process),
        )


class CoordinatorGrants:
    """Who may put a video's files in place: a worker's grant requests (its own files) and part
    placements (packed clips, put in place here), each for a video's current attempt only."""

    ctx: RunContext
    assignments: Assignments
    committer: VideoCommitter

    async def _record(self, out: WorkerOutcome) -> bool:
        raise NotImplementedError

    async def _made_room(self) -> None:
        raise NotImplementedError

    async def grant(self, requests: list[CommitRequest]) -> list[bool]:
        """A worker asks to put videos' own files in place (as many as were ready together):
        yes for a video's current attempt, once. The log's ``committing`` line comes first, so a
        crash after it is folded away by the next run."""
        answers = []
        for request in requests:
            granted = self.assignments.grant(request.video_id, request.attempt_id)
            if granted:
                self.committer.manifest.committing(request.video_id)
            else:
                self.ctx.counts.commits_refused += 1
            answers.append(granted)
        if any(answers):
            await self.committer.logged()  # the lines before any file moves
        return answers

    async def place_part(self, placement: PartPlacement) -> list[Placed]:
        """A worker's part file, complete under a hidden name: if every video in it is still
        that attempt's, the part is put in place here and its videos recorded; if one is not,
        the part is dropped (the others go in the worker's next part). The check and ``place``
        happen before any await, so no hand-out of these videos can come between the decision
        and the rows landing; the part moves once its ``committing`` lines are in the log."""
        entries = placement.entries
        current = [self.assignments.is_current(e.video_id, e.attempt_id) for e in entries]
        if not all(current):
            self.ctx.counts.commits_refused += current.count(False)
            await self.committer.drop_staged(placement)
            return ["again" if ok else "refused" for ok in current]
        for entry in entries:
            self.assignments.place(entry.video_id, entry.attempt_id)
            self.committer.manifest.committing(entry.video_id, placement.key)
        await self.committer.logged()  # the lines before the part moves
        older = [e.video_id for e in entries if not e.fresh]
        await self.committer.put_part_in_place(placement, older)
        for n, entry in enumerate(entries, 1):
            await self._record(WorkerOutcome(entry.attempt_id, entry.record, committed=True))
            if n % 256 == 0:
                await asyncio.sleep(0)  # a part of thousands of clips: grants go on meanwhile
        await self._made_room()
        return ["placed"] * len(entries)


class CoordinatorLogic(CoordinatorFleet, CoordinatorGrants, CoordinatorMonitoring):
    def __init__(
        self,
        output: str,
        config: RunConfig,
        workers: list,
        faults: FaultPlan | None = None,
        remote_output: str | None = None,
        *,
        calls: RayCalls,
        metrics,
        me=None,
        open_per_worker: int | None = None,
        placement: Placement | None = None,
    ):
        """``me``: this coordinator's own handle, which the workers ask for grants;
        ``open_per_worker``: videos a worker has open at once (None: from ``config``);
        ``placement``: what each worker reserves (None: one CPU, no GPU)."""
        if faults is not None:
            faults.bookkeeping_scale()
        self.store = OutputStore(Path(output), remote_output)
        self.pauses = PauseWatch()  # the event loop's longest pause, for run.json
        self.ctx = RunContext(config, metrics, faults)
        self.workers, self.calls, self.me = workers, calls, me
        self.committer = VideoCommitter(self.ctx, self.store)
        self.assignments = Assignments(
            len(workers),
            open_per_worker or videos_per_worker(config.max_open_videos, len(workers)),
            max_attempts=config.worker_retries + 1,
            start_live=False,  # each joins once it is ready (``_join``)
        )
        self.placement = placement or Placement(len(workers), 0.0, 1.0, None, len(workers))
        room = 2 * self.assignments.open_per_worker * len(workers)
        self._backlog: asyncio.Queue[ToProcess | None] = asyncio.Queue(
            maxsize=max(BACKLOG_QUEUE, room)
        )
        # The previous records of the videos taken from the backlog and not yet recorded: only
        # those in flight (the planner hands each video's own, so no index of the output is held)
        self._previous: dict[str, Previous] = {}
        self._room: asyncio.Condition | None = None
        self.reports = WorkerReports(len(workers))
        self._handouts: set[asyncio.Task] = set()
        self._handout_errors: list[BaseException] = []
        self._joins: set[asyncio.Task] = set()  # held: the loop keeps only weak references
        self.decode_here = [True] * len(workers)
        self.nodes: list[str | None] = [None] * len(workers)  # each worker's latest node
        self._final_stats: dict[int, ActorStats] = {}  # of the workers released
        self._seen_by: set[str] = set()  # nodes known to see the output folder
        self._probe: Path | None = None  # the file they look for
        self._walked = False  # the whole backlog handed out
        self._waiting_for_room = 0  # hand-outs waiting for a worker
        self.fleet = Fleet(len(workers), self.placement.actor_num_gpus, 0.0, time.time())
        self.deadline = BatchDeadline(config.batch_timeout_s)  # for a forward pass
        self.started = time.time()
        self.cpu_started = time.process_time()

    def set_config(self, config: RunConfig) -> None:
        self.ctx.set_config(config)

    async def add_videos(self, videos: list[ToProcess]) -> None:
        for video in videos:
            await self._backlog.put(video)
            self.ctx.counts.videos_total += 1

    async def backlog_walked(self) -> None:
        await self._backlog.put(None)

    async def run(
        self, model_facts: ModelFacts, ready_at_start: tuple[int, ...] = ()
    ) -> CoordinatorSummary:
        """The run, from the first worker ready to the last video recorded. The workers ready
        now (``ready_at_start``) join before the first hand-out, so that a small backlog is
        shared among them; the others join as each becomes ready, however late
        (``CoordinatorFleet._join``)."""
        ctx = self.ctx
        ctx.model_loaded(model_facts.names, model_facts.model_stride, model_facts.rect)
        self.committer.start(model_facts.names)
        self._room = asyncio.Condition()
        self.started, self.cpu_started = time.time(), time.process_time()
        await self._start_fleet(ready_at_start)
        reporter = asyncio.create_task(self._poll_reports())
        pauses = asyncio.create_task(self.pauses.run())
        releaser = asyncio.create_task(self._release_idle())
        try:
            await self._hand_out_backlog()
            self._walked = True  # from here, a worker with nothing open may be let go
            while self._handouts:
                await asyncio.gather(*list(self._handouts), return_exceptions=True)
            if self._handout_errors:
                raise self._handout_errors[0]
            await self._poll_once()
        finally:
            reporter.cancel()
            pauses.cancel()
            releaser.cancel()
            for join in list(self._joins):  # a worker not in the run yet has no work left
                join.cancel()
            self._remove_probe()
        await self.committer.save_manifest()
        return await self.summary()

    async def _hand_out_backlog(self) -> None:
        """Each video of the backlog as the driver walks it: handed out (short clips in
        chunks), skipped, or failed (never opened)."""
        ctx = self.ctx
        chunks = ClipChunks(chunk_size(self.assignments.open_per_worker), len(self.workers))
        while (todo := await self._backlog.get()) is not None:
            due, source, previous = None, todo.source, todo.previous
            if previous is not None:
                self._previous[source.video_id] = previous
            if source.error:
                ctx.counts.videos_never_opened += 1
                await self._failed(source, source.error)
            elif previous is not None and previous.complete_for(source, ctx.settings_hash):
                # (planning could not tell: it did not know the model's classes)
                del self._previous[source.video_id]
                ctx.counts.video_skipped()
            elif is_short_clip(source.size_bytes):
                due = chunks.add(source, self._backlog.qsize(), time.monotonic())
            else:
                await self._hand_out([source])
            if due := due or chunks.due(self._backlog.qsize(), time.monotonic()):
                await self._hand_out(due)
            await asyncio.sleep(0)  # else 400 workers' room is filled with no grant answered
        if chunks.clips:
            await self._hand_out(chunks.take())

    async def _hand_out(self, sources: list[VideoSource]) -> None:
        """Give ``sources`` to the least loaded worker with room for them all (waits for one)."""
        worker = await self._free_worker(len(sources))
        attempts = [self.assignments.assign(s.video_id, worker).attempt_id for s in sources]
        self.ctx.counts.handouts += 1
        task = asyncio.create_task(self._videos(sources, worker, attempts))
        self._handouts.add(task)
        task.add_done_callback(self._handed_back)

    def _handed_back(self, task: asyncio.Task) -> None:
        self._handouts.discard(task)
        error = None if task.cancelled() else task.exception()
        if error is not None:
            self._handout_errors.append(error)  # raised by run(), never lost

    async def _videos(self, sources: list[VideoSource], worker: int, attempts: list[int]) -> None:
        """One hand-out until each video's outcome is recorded; if the worker dies, each of its
        videos goes out again on its own (or is failed once its attempts are used up)."""
        fresh = [source.video_id not in self._previous for source in sources]
        for source in sources:
            await self.committer.take_out_of_part(source.video_id, self._packed_in(source))
        try:
            outcomes = await self.workers[worker].process_many.remote(
                sources, attempts, self.ctx.config, self.me, fresh, self.decode_here[worker]
            )
        except ray.exceptions.RayTaskError as exc:  # the worker raised: each video fails with it
            cause = error_cause(exc)
            for source, attempt_id in zip(sources, attempts):
                if self.assignments.finish(source.video_id, attempt_id):
                    await self._failed(
                        source, f"its worker failed: {type(cause).__name__}: {cause}"
                    )
        except ACTOR_LOST as exc:
            self._worker_died(worker)
            for source, attempt_id in zip(sources, attempts):
                if self.assignments.lost_with_worker(source.video_id, attempt_id):
                    # (one not current was told and recorded before the worker died; one the
                    # coordinator is placing in a part is recorded as it lands)
                    tries = self.assignments.max_attempts
                    error = f"its worker died {tries} times ({type(exc).__name__})"
                    await self._again_or_failed(source, attempt_id, error)
        else:
            for out in outcomes:  # those the worker told as they ended are recorded already
                await self._record(out)
            for source, attempt_id in zip(sources, attempts):
                if self.assignments.is_current(source.video_id, attempt_id):
                    # answered without a record (a worker's bug): never left open at the end
                    await self._again_or_failed(source, attempt_id, "its worker gave no outcome")
        finally:
            await self._made_room()

    async def _again_or_failed(self, source: VideoSource, attempt_id: int, error: str) -> None:
        """An attempt over without an outcome: the video goes out again, or fails with
        ``error`` once its attempts are used up."""
        if self.assignments.abandon(source.video_id, attempt_id):
            self.ctx.counts.videos_reassigned += 1
            await self._hand_out([source])
        else:
            await self._failed(source, error)

    def _packed_in(self, source: VideoSource) -> str | None:
        """The part holding the video's rows from before this run, once: they are taken out
        before it goes out again (a retry finds them gone)."""
        previous = self._previous.get(source.video_id)
        if previous is None or previous.detections_part is None:
            return None
        self._previous[source.video_id] = replace(previous, detections_part=None, tracks_part=None)
        return previous.detections_part

    async def _failed(self, source: VideoSource, error: str) -> None:
        await self.committer.take_out_of_part(source.video_id, self._packed_in(source))
        await self.committer.record(VideoRecord.failed(source, error, self.ctx.settings_hash))
        self._previous.pop(source.video_id, None)
        await self.committer.discard(source.video_id)  # an older version's rows

    async def outcomes(self, outcomes: list[WorkerOutcome]) -> list[bool]:
        """A worker's videos whose passes ended (told as each ends, coalesced): each recorded
        now, not once the worker's whole hand-out is done, so a run stopped meanwhile keeps them."""
        recorded = [await self._record(out) for out in outcomes]
        await self._made_room()
        return recorded

    async def _record(self, out: WorkerOutcome) -> bool:
        """``out``'s record, once per attempt; a stale attempt's answer is dropped (the video's
        current attempt records it)."""
        attempt = self.assignments.open.get(out.record.video_id) if out.record else None
        if out.record is None or not self.assignments.finish(out.record.video_id, out.attempt_id):
            return False
        assert attempt is not None
        self.fleet.video_done(attempt.worker)
        if out.committed and self.ctx.faults:  # its files are in place, its record not yet
            self.ctx.faults.on_commit()
        await self.committer.record(out.record)
        self._previous.pop(out.record.video_id, None)
        if not out.committed:  # an older version's rows go (after the record says so)
            await self.committer.discard(out.record.video_id)
        return True

    async def passes_ended(self, passes: list[tuple[str, int]]) -> list[bool]:
        """Videos whose passes are over and whose commits wait for a part: room for more."""
        ended = [self.assignments.ended(video_id, attempt_id) for video_id, attempt_id in passes]
        await self._made_room()
        return ended


@ray.remote(num_cpus=0, max_restarts=0)
class Coordinator(CoordinatorLogic):
    def __init__(
        self,
        output: str,
        config: RunConfig,
        workers: list,
        faults: FaultPlan | None = None,
        remote_output: str | None = None,
        open_per_worker: int | None = None,
        placement: Placement | None = None,
    ):
        super().__init__(
            output,
            config,
            workers,
            faults,
            remote_output,
            calls=RayCalls(faults),
            metrics=PipelineMetrics(),
            me=ray.get_runtime_context().current_actor,
            open_per_worker=open_per_worker,
            placement=placement,
        )
        return_freed_memory()  # this process does the run's bookkeeping
        tune_garbage_collection()
