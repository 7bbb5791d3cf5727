"""A video worker's engine without Ray: batches that wait while a pass runs share the next one
(one geometry only), each gets back its own boxes, and a detector's error reaches each batch."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from pipeline.inference.synthetic import SyntheticDetector
from pipeline.media.decode import BatchHeader
from pipeline.runtime.local_engine import LocalEngine


class SlowDetector(SyntheticDetector):
    """The synthetic detector, a pass at a time held until the test lets it go."""

    def __init__(self):
        super().__init__(imgsz=160)
        self.release = threading.Event()
        self.pass_sizes: list[int] = []

    def detect(self, frames, geometry):
        self.release.wait(5)
        self.pass_sizes.append(len(frames))
        return super().detect(frames, geometry)


def header(seq: int, frames: int) -> BatchHeader:
    idx = np.arange(seq * frames, (seq + 1) * frames)
    return BatchHeader(seq, idx, idx / 30, 0.0)


async def submit(engine, frames, geometry, video_id, seq):
    await engine.acquire()
    batch = np.zeros((frames, *geometry.out_shape, 3), np.uint8)
    return await engine.infer(batch, geometry, video_id, header(seq, frames))


def test_batches_waiting_for_the_engine_share_a_pass_and_get_their_own_boxes():
    detector = SlowDetector()
    wide, tall = detector.geometry(96, 160), detector.geometry(160, 96)

    async def main():
        engine = LocalEngine(detector, batch_size=8, window=16)
        engine.start()
        first = asyncio.create_task(submit(engine, 4, wide, "a", 0))
        await asyncio.sleep(0.05)  # the first pass is running (held)
        others = [
            asyncio.create_task(submit(engine, 3, wide, "b", 0)),
            asyncio.create_task(submit(engine, 3, wide, "c", 0)),
            asyncio.create_task(submit(engine, 2, tall, "d", 0)),
            asyncio.create_task(submit(engine, 4, wide, "e", 0)),
        ]
        await asyncio.sleep(0.05)
        detector.release.set()
        results = [await first, *[await t for t in others]]
        engine.stop()
        return engine, results

    engine, results = asyncio.run(main())
    # pass 1: a alone; pass 2: b and c (6 frames, e does not fit); then d (its own geometry), e
    assert detector.pass_sizes == [4, 6, 2, 4]
    assert engine.figures.passes == 4 and engine.figures.mixed_passes == 1
    for out, (video, frames) in zip(results, [("a", 4), ("b", 3), ("c", 3), ("d", 2), ("e", 4)]):
        assert out.result.video_id == video and out.result.num_frames == frames
        assert (
            out.result.counts.tolist() == [5] * frames and len(out.result.detections) == 5 * frames
        )
    assert engine.window.in_flight == 0  # every slot given back


def test_a_detector_error_reaches_every_batch_of_its_pass():
    class Broken(SyntheticDetector):
        def detect(self, frames, geometry):
            raise RuntimeError("engine fault")

    async def main():
        detector = Broken(imgsz=160)
        engine = LocalEngine(detector, batch_size=8, window=4)
        engine.start()
        geometry = detector.geometry(96, 160)
        outcomes = await asyncio.gather(
            submit(engine, 2, geometry, "a", 0),
            submit(engine, 2, geometry, "b", 0),
            return_exceptions=True,
        )
        engine.stop()
        return engine, outcomes

    engine, outcomes = asyncio.run(main())
    assert all(isinstance(o, RuntimeError) and "engine fault" in str(o) for o in outcomes)
    assert engine.window.in_flight == 0
    with pytest.raises(ValueError):
        LocalEngine(SyntheticDetector(imgsz=160), batch_size=0, window=1)
