"""A video worker's own detector, as its video passes see it: batches wait in a bounded window
(``acquire`` before a batch is handed over: the decoders' streams wait meanwhile), one forward
pass runs at a time in a thread (the event loop meanwhile takes the decoders' next batches),
and each pass packs the pending batches of one letterbox geometry across videos
(``pipeline.runtime.packing``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np

from pipeline.inference.detections import BatchResult
from pipeline.media.decode import BatchHeader
from pipeline.media.letterbox import LetterboxGeometry
from pipeline.runtime.backpressure import BatchWindow
from pipeline.runtime.messages import ActorSample
from pipeline.runtime.packing import BatchPacker, split_boxes


@dataclass
class _Queued:
    frames: np.ndarray
    geometry: LetterboxGeometry
    video_id: str
    header: BatchHeader
    answer: asyncio.Future


@dataclass(frozen=True)
class InferredBatch:
    """One decoder batch's boxes, and its share of the forward pass's time."""

    result: BatchResult
    infer_s: float


@dataclass
class EngineFigures:
    passes: int = 0  # forward passes
    mixed_passes: int = 0  # passes with frames of more than one video
    batches: int = 0  # decoder batches inferred
    frames: int = 0
    busy_s: float = 0.0  # time in the detector
    slowest_pass_s: float | None = None
    pass_started: float | None = None  # time.monotonic() of the pass running now


class LocalEngine:
    def __init__(
        self, detector, batch_size: int, window: int, sample=None, after_pass=None, metrics=None
    ):
        """``sample``: returns the worker's ``ActorSample`` (memory, GPU) after each pass;
        ``after_pass(passes_done)``: called in the engine's thread after each (fault tests);
        ``metrics``: the worker's ``PipelineMetrics`` (its batches in flight)."""
        self._after_pass = after_pass
        self.detector = detector
        self.window = BatchWindow(window)
        self.metrics = metrics
        self.figures = EngineFigures()
        self.last_sample: ActorSample | None = None  # after the latest pass
        self._sample = sample
        self._packer: BatchPacker[_Queued] = BatchPacker(batch_size)
        self._slot_freed: asyncio.Condition | None = None
        self._work: asyncio.Event | None = None
        self._runner: asyncio.Task | None = None

    def start(self) -> None:
        self._slot_freed, self._work = asyncio.Condition(), asyncio.Event()
        self._runner = asyncio.create_task(self._run())

    def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()

    async def acquire(self) -> None:
        """A slot in the window, for the batch about to be handed to ``infer``."""
        assert self._slot_freed is not None
        async with self._slot_freed:
            while not self.window.acquire():
                await self._slot_freed.wait()
        self._in_flight_changed()

    async def _release(self) -> None:
        assert self._slot_freed is not None
        async with self._slot_freed:
            self.window.release()
            self._slot_freed.notify_all()
        self._in_flight_changed()

    def _in_flight_changed(self) -> None:
        if self.metrics is not None:
            self.metrics.batches_in_flight.set(self.window.in_flight)

    async def infer(
        self, frames: np.ndarray, geometry: LetterboxGeometry, video_id: str, header: BatchHeader
    ) -> InferredBatch:
        """The boxes of one decoder batch, whose slot the caller acquired (released here)."""
        assert self._work is not None
        try:
            answer = asyncio.get_running_loop().create_future()
            self._packer.add(
                geometry, len(frames), _Queued(frames, geometry, video_id, header, answer)
            )
            self._work.set()
            return await answer
        finally:
            del frames
            await self._release()

    async def _run(self) -> None:
        assert self._work is not None
        while True:
            await self._work.wait()
            taken = self._packer.take()
            if not taken:
                self._work.clear()
                continue
            try:
                answers = await self._forward(taken)
            except Exception as exc:  # the detector's error is each batch's
                for queued in taken:
                    if not queued.answer.done():
                        queued.answer.set_exception(exc)
                continue
            for queued, answer in zip(taken, answers):
                if not queued.answer.done():
                    queued.answer.set_result(answer)

    def _detect(self, frames: np.ndarray, geometry: LetterboxGeometry):
        out = self.detector.detect(frames, geometry)
        if self._after_pass:
            self._after_pass(self.detector.batches_done)
        return out

    async def _forward(self, taken: list[_Queued]) -> list[InferredBatch]:
        frames = taken[0].frames if len(taken) == 1 else np.concatenate([q.frames for q in taken])
        started = time.perf_counter()
        self.figures.pass_started = time.monotonic()
        try:
            counts, detections = await asyncio.to_thread(self._detect, frames, taken[0].geometry)
        finally:
            self.figures.pass_started = None
        infer_s = time.perf_counter() - started
        figures = self.figures
        figures.slowest_pass_s = max(figures.slowest_pass_s or 0.0, infer_s)
        figures.passes += 1
        figures.mixed_passes += len({q.video_id for q in taken}) > 1
        figures.batches += len(taken)
        figures.frames += len(frames)
        figures.busy_s += infer_s
        self.last_sample = self._sample() if self._sample else ActorSample(rss=0, gpu=None)
        parts = split_boxes(counts, detections, [len(q.frames) for q in taken])
        return [
            InferredBatch(
                BatchResult(
                    q.video_id,
                    q.header.seq,
                    q.header.frame_indices,
                    q.header.timestamps,
                    part_counts,
                    part_boxes,
                ),
                # a pass's time, shared by its batches in proportion to their frames
                infer_s=infer_s * len(q.frames) / len(frames),
            )
            for q, (part_counts, part_boxes) in zip(taken, parts)
        ]
