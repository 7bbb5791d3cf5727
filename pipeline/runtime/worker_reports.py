"""The video workers' latest figures, as the coordinator polls them (about once a second)."""

from __future__ import annotations

import asyncio

from pipeline.output.outcomes import RunCounts
from pipeline.runtime.messages import WorkerReport
from pipeline.runtime.ray_calls import ACTOR_LOST


class WorkerReports:
    """The workers' latest figures (polled about once a second); a worker that restarted keeps
    what its earlier process had done, so totals never go back."""

    def __init__(self, workers: int):
        self.latest: list[WorkerReport | None] = [None] * workers
        self._retired: list[WorkerReport] = []
        # each worker process's latest, by (worker, pid): a spell's figures in run.json
        self.by_process: dict[tuple[int, int], WorkerReport] = {}

    async def poll(self, workers: list, among) -> None:
        """The latest report of each worker in ``among`` (those in the run: one being placed
        or restarted would keep the poll waiting)."""
        for i in sorted(among):
            try:
                report = await asyncio.wait_for(workers[i].report.remote(), timeout=10)
            except (asyncio.TimeoutError, *ACTOR_LOST):
                continue
            if report is not None:
                self.take(i, report)

    def take(self, worker: int, report: WorkerReport) -> None:
        last = self.latest[worker]
        if last is not None and last.pid != report.pid:  # restarted
            self._retired.append(last)
        self.latest[worker] = report
        self.by_process[(worker, report.pid)] = report

    def retire(self, worker: int) -> None:
        """The worker's process is gone: what it did still counts, its next report is new."""
        last = self.latest[worker]
        if last is not None:
            self._retired.append(last)
            self.latest[worker] = None

    def current(self) -> list[WorkerReport]:
        return [r for r in self.latest if r is not None]

    def every(self) -> list[WorkerReport]:
        return [*self._retired, *self.current()]

    def counts(self, own: RunCounts) -> RunCounts:
        """The coordinator's counts (``own``) and every worker's, added up."""
        return own.merged([r.counts for r in self.every()])

    def stage_s(self, own: dict[str, float]) -> dict[str, float]:
        total = dict(own)
        for report in self.every():
            for stage, seconds in report.stage_s.items():
                total[stage] = total.get(stage, 0.0) + seconds
        return total
