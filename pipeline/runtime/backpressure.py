"""The dispatch policy: which actor gets the next batch, and when nothing may be sent.

Policy apart from mechanism: this class only counts and decides; the coordinator awaits it and
does the sending. The bound on batches in flight is the backpressure: while every actor's
window is full the coordinator stops pulling from the decoders' streams, and each decoder then
pauses once its own small buffer is full. Memory is bounded whatever the backlog size.
"""

from __future__ import annotations


class DispatchWindow:
    def __init__(self, num_actors: int, per_actor: int):
        if num_actors < 1 or per_actor < 1:
            raise ValueError("need at least one actor and a window of at least one batch")
        self.per_actor = per_actor
        self.in_flight = [0] * num_actors
        self.available = [True] * num_actors
        self.peak_in_flight = 0

    @property
    def total_in_flight(self) -> int:
        return sum(self.in_flight)

    @property
    def limit(self) -> int:
        return self.per_actor * len(self.in_flight)

    def pick(self) -> int | None:
        """The least-loaded available actor with room in its window, or None when all are full."""
        best = None
        for i, (load, ok) in enumerate(zip(self.in_flight, self.available)):
            if ok and load < self.per_actor and (best is None or load < self.in_flight[best]):
                best = i
        return best

    def acquire(self) -> int | None:
        i = self.pick()
        if i is not None:
            self.in_flight[i] += 1
            self.peak_in_flight = max(self.peak_in_flight, self.total_in_flight)
        return i

    def release(self, i: int) -> None:
        if self.in_flight[i] <= 0:
            raise RuntimeError(f"actor {i} released more batches than it was given")
        self.in_flight[i] -= 1

    def set_available(self, i: int, available: bool) -> None:
        """An actor whose call failed is skipped until it answers again (it may be restarting)."""
        self.available[i] = available
