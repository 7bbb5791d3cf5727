"""Batches that mix videos: a worker with several open videos fills one forward pass from the
batches its decoders made (short clips make batches of a few frames), then splits the boxes back
to each batch. Ray-free.

Only batches of one letterbox shape go together (they are stacked into one array). The oldest
pending batch always goes in the next pass, so no video waits behind the others; more join it,
oldest first, while they fit in ``batch_size`` frames. Nothing waits to fill a pass: whatever is
pending when the engine is free goes, so packing adds no latency, only fewer, fuller passes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from pipeline.inference.detections import Detections

T = TypeVar("T")


@dataclass
class Pending(Generic[T]):
    shape: Hashable  # what must agree to share a pass: the letterbox shape (and geometry)
    frames: int
    item: T


class BatchPacker(Generic[T]):
    def __init__(self, batch_size: int):
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.batch_size = batch_size
        self._pending: deque[Pending[T]] = deque()

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, shape: Hashable, frames: int, item: T) -> None:
        self._pending.append(Pending(shape, frames, item))

    def take(self) -> list[T]:
        """The next pass: the oldest pending batch, and every later one of its shape that still
        fits, in order. Empty when nothing is pending."""
        if not self._pending:
            return []
        first = self._pending.popleft()
        taken, room = [first.item], self.batch_size - first.frames
        kept: deque = deque()
        while self._pending:
            nxt = self._pending.popleft()
            if nxt.shape == first.shape and nxt.frames <= room:
                taken.append(nxt.item)
                room -= nxt.frames
            else:
                kept.append(nxt)
        self._pending = kept
        return taken


def split_boxes(
    counts: np.ndarray, detections: Detections, sizes: list[int]
) -> list[tuple[np.ndarray, Detections]]:
    """One pass's per-frame box counts and boxes, split back into batches of ``sizes`` frames."""
    if sum(sizes) != len(counts):
        raise ValueError(f"{len(counts)} frames in the pass, {sum(sizes)} in its batches")
    out = []
    frame, box = 0, 0
    for size in sizes:
        these = counts[frame : frame + size]
        boxes = int(these.sum())
        out.append((these, detections[box : box + boxes]))
        frame += size
        box += boxes
    return out
