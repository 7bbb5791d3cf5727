"""How long the coordinator waits for an actor's answer before it calls the actor hung.

A deadline derived from measured latency: a stuck CUDA kernel or a deadlocked library shows up
as one call taking many times longer than any call so far. Before any batch has come back the
first call also loads caches and kernels, so it gets a generous fixed allowance. Pure and
Ray-free: the coordinator asks it, the tests drive it directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class BatchDeadline:
    fixed_s: float | None = None  # a user's --batch-timeout: used as is when set
    factor: float = 10.0  # the deadline is this many times the slowest batch seen ...
    floor_s: float = 30.0  # ... but never below this (a loaded machine has slow moments)
    first_batch_s: float = 600.0  # before any batch has returned (warm-up, kernel selection)
    slowest_s: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.fixed_s is not None and self.fixed_s <= 0:
            raise ValueError("a batch deadline must be positive")

    def observe(self, latency_s: float) -> None:
        self.slowest_s = latency_s if self.slowest_s is None else max(self.slowest_s, latency_s)

    def seconds(self) -> float:
        if self.fixed_s is not None:
            return self.fixed_s
        if self.slowest_s is None:
            return self.first_batch_s
        return max(self.floor_s, self.factor * self.slowest_s)
