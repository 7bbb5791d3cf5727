"""The bound on a video worker's batches in flight: the backpressure.

Policy apart from mechanism: this class only counts and decides; the worker's engine awaits a
slot before it takes a batch from a decoder's stream. While the window is full the worker stops
pulling from its decoders' streams, and each decoder then pauses once its own small buffer is
full, so memory is bounded whatever the backlog. The worker widens the window by one batch per
video it has open (``size``), so that short clips' batches can wait together for a pass.
"""

from __future__ import annotations


class BatchWindow:
    def __init__(self, size: int):
        if size < 1:
            raise ValueError("a window of at least one batch")
        self.size = size
        self.in_flight = 0
        self.peak_in_flight = 0

    def acquire(self) -> bool:
        """A slot for one more batch, if the window has room (else the caller waits)."""
        if self.in_flight >= self.size:
            return False
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        return True

    def release(self) -> None:
        if self.in_flight <= 0:
            raise RuntimeError("a batch released that was never given a slot")
        self.in_flight -= 1
