"""The control plane's longest pause: how late a timer on its event loop fires.

Anything slow on the coordinator's event loop (a synchronous fold, a big sort) holds every
caller: hand-outs, commit grants, outcomes. A timer that should fire every ``interval`` seconds
measures it from the inside, at a cost of one wake-up per interval; ``run.json`` reports the
longest (``coordinator.longest_pause_ms``)."""

from __future__ import annotations

import asyncio
import time


class PauseWatch:
    def __init__(self, interval_s: float = 0.025):
        self.interval_s = interval_s
        self.longest_s = 0.0

    async def run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.interval_s)
            late = time.perf_counter() - before - self.interval_s
            self.longest_s = max(self.longest_s, late)
