"""The coordinator's side of an elastic run: each video worker joins when it is ready (the first
ones at the start, others when the cluster can place them, a lost one again once Ray has
started it on a node with room), and leaves when it has sat idle at the backlog's tail
(``--release-idle-after``), giving its GPU back. The decisions are ``fleet.Fleet`` and
``assignment.Assignments`` (Ray-free); this mixin of ``CoordinatorLogic`` makes the calls."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from pathlib import Path

from pipeline.errors import StartupError
from pipeline.output.layout import TEMP_PREFIX
from pipeline.output.store import OutputStore
from pipeline.plan.placement import Placement, decodes_on_own_node
from pipeline.runtime.assignment import Assignments
from pipeline.runtime.context import RunContext
from pipeline.runtime.fleet import Fleet
from pipeline.runtime.messages import ActorStartFailure, ActorStats
from pipeline.runtime.ray_calls import ACTOR_LOST, RayCalls
from pipeline.runtime.worker_reports import WorkerReports

log = logging.getLogger(__name__)

RELEASE_CHECK_S = 1.0  # how often idle workers are looked for
START_JOIN_WAIT_S = 30.0  # the most the first hand-out waits for the workers ready at the start
REJOIN_WAIT_S = 1.0  # between asks to a worker that is restarting


class NodeGone(Exception):
    """A node that a joining worker was on went away meanwhile."""


class CoordinatorFleet:
    ctx: RunContext
    store: OutputStore
    workers: list
    calls: RayCalls
    me: object
    reports: WorkerReports
    fleet: Fleet
    assignments: Assignments
    placement: Placement
    decode_here: list[bool]
    nodes: list[str | None]
    _final_stats: dict[int, ActorStats]
    _joins: set[asyncio.Task]
    _seen_by: set[str]
    _probe: Path | None
    _walked: bool
    _waiting_for_room: int
    _room: asyncio.Condition | None

    async def _start_fleet(self, ready_at_start: tuple[int, ...]) -> None:
        """Every worker asked to join; those ready now (``ready_at_start``) join before this
        returns, so that the first hand-outs are shared among them."""
        self.fleet = Fleet(
            len(self.workers),
            self.placement.actor_num_gpus,
            self.ctx.config.idle_release_s,
            time.time(),
            frozenset(ready_at_start),
        )
        joins = {w: self._join_when_ready(w) for w in range(len(self.workers))}
        if ready_at_start:  # a worker that died meanwhile joins later, once restarted
            await asyncio.wait([joins[w] for w in ready_at_start], timeout=START_JOIN_WAIT_S)

    async def _free_worker(self, room: int = 1) -> int:
        """The least loaded worker in the run with room for ``room`` videos: waits for one
        (a video ending, a worker joining)."""
        assert self._room is not None
        async with self._room:
            while (worker := self.assignments.free_worker(room)) is None:
                if not self.fleet.ready and not self.fleet.pending:
                    raise StartupError(self._no_worker_left())
                self._waiting_for_room += 1
                try:
                    await self._room.wait()
                finally:
                    self._waiting_for_room -= 1
        return worker

    async def _made_room(self) -> None:
        assert self._room is not None
        async with self._room:
            self._room.notify_all()

    def _worker_died(self, worker: int) -> None:
        """No videos for it until it joins again: Ray starts it again (unlimited restarts) on a
        node with room, however late (a spot node lost, its replacement added by the autoscaler)."""
        if self.assignments.live[worker]:
            self.assignments.worker_lost(worker)
            self.fleet.lost(worker, time.time())
            self._join_when_ready(worker)

    def _join_when_ready(self, worker: int) -> asyncio.Task:
        task = asyncio.create_task(self._join(worker))
        self._joins.add(task)
        task.add_done_callback(self._joins.discard)
        return task

    async def _join(self, worker: int) -> None:
        """The worker in the run once it is ready: its model loaded, its node able to see the
        output, the run's settings given. It waits as long as that takes (a node the
        autoscaler has yet to add, a restart after a loss): nothing else waits for it."""
        handle = self.workers[worker]
        while True:
            try:
                facts = await handle.ready.remote()
                if isinstance(facts, ActorStartFailure):
                    return self._refuse(worker, f"its model did not load: {facts.message}")
                if not await self._sees_output(facts.node_id):
                    return self._refuse(
                        worker,
                        f"its node {facts.node_id[:12]} cannot see --output {self.store.layout.root}"
                        " (each video is written on its worker's node): give a folder every node"
                        " mounts, or object storage (s3://...)",
                    )
                here = await self._decodes_here(worker, facts.node_id)
                await handle.start_run.remote(self.ctx.config, self.me, here)
                break
            except ACTOR_LOST:  # it died meanwhile: Ray starts it again
                await asyncio.sleep(REJOIN_WAIT_S)
            except NodeGone:  # its node went while its sight of the output was checked
                await asyncio.sleep(REJOIN_WAIT_S)
        self.decode_here[worker], self.nodes[worker] = here, facts.node_id
        self.fleet.joined(worker, facts.node_id, facts.pid, time.time())
        self.assignments.worker_back(worker)
        await self._made_room()

    def _refuse(self, worker: int, reason: str) -> None:
        log.warning("video worker %d cannot take part in the run: %s", worker, reason)
        self.fleet.refuse(worker, reason)
        self.calls.release_actor(self.workers[worker])
        wake = asyncio.create_task(self._made_room())  # a hand-out waiting may give up now
        self._joins.add(wake)
        wake.add_done_callback(self._joins.discard)

    def _no_worker_left(self) -> str:
        reasons = sorted(set(self.fleet.refused.values()))
        return "no video worker can take part in the run: " + "; ".join(reasons)

    async def _sees_output(self, node_id: str) -> bool:
        """Whether ``node_id`` sees the output folder (a probe file written here, looked for
        there); once per node. Object storage is seen from everywhere."""
        if self.store.remote_uri is not None or node_id in self._seen_by:
            return True
        if node_id == self.calls.node_id:
            self._seen_by.add(node_id)
            return True
        if self._probe is None:
            self._probe = self.store.layout.root / f"{TEMP_PREFIX}shared-probe-{uuid.uuid4().hex}"
            self._probe.write_text("")
        try:
            seen = await self.calls.seen_from(node_id, str(self._probe))
        except ACTOR_LOST:
            raise
        except Exception as exc:  # the node went (its task could not run there)
            raise NodeGone(node_id) from exc
        if seen:
            self._seen_by.add(node_id)
        return seen

    def _remove_probe(self) -> None:
        if self._probe is not None:
            self._probe.unlink(missing_ok=True)
            self._probe = None

    async def _decodes_here(self, worker: int, node_id: str) -> bool:
        """Whether the worker's node has CPUs left for decoders beside the workers on it
        (``decodes_on_own_node``); a worker joining a node without is named in a warning."""
        node_cpus = await asyncio.to_thread(self.calls.node_cpus)
        others = [
            n for w, n in enumerate(self.nodes) if n and w != worker and w in self.fleet.current
        ]
        here = decodes_on_own_node([*others, node_id], node_cpus, self.placement.actor_num_cpus)[-1]
        if not here:
            log.warning(
                "node %s has no CPU left for decoders beside its video workers: their videos are "
                "decoded on other nodes (their frames cross the network)",
                node_id[:12],
            )
        return here

    def _nothing_left(self) -> bool:
        """The whole backlog handed out and no video waiting for a worker."""
        return self._walked and not self._waiting_for_room

    async def _release_idle(self) -> None:
        while True:
            await asyncio.sleep(RELEASE_CHECK_S)
            current, now = self.fleet.current, time.time()
            open_now = {w: self.assignments.open_on(w) for w in current}
            due = self.fleet.to_release(now, open_now, self._nothing_left())
            for worker in due:  # out of the run before any await: no video can reach it
                self.assignments.worker_lost(worker)
                self.fleet.release(worker, now)
            for worker in due:
                await self._let_go(worker)

    async def _let_go(self, worker: int) -> None:
        """A released worker's last figures kept, and its process ended for good: its resources
        go back to the cluster (an autoscaler may remove its node)."""
        handle = self.workers[worker]
        try:
            report = await asyncio.wait_for(handle.report.remote(), 10)
            if report is not None:
                self.reports.take(worker, report)
            self._final_stats[worker] = await asyncio.wait_for(handle.stats.remote(), 10)
        except (asyncio.TimeoutError, *ACTOR_LOST):
            pass
        self.calls.release_actor(handle)
        log.info(
            "video worker %d released: idle %.0f s with nothing left to hand out (%d still in the run)",
            worker,
            self.fleet.idle_release_s,
            self.fleet.ready,
        )
