"""The coordinator's logic driven with fake actors and fake decoder streams, without Ray: every
frame written once, a lost actor's batch sent to another, a dead decoder resumed after the last
batch it delivered, a video whose decoder always dies failed alone."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray.exceptions

from pipeline.config import RunConfig
from pipeline.inference.detections import BatchResult
from pipeline.inference.synthetic import SyntheticDetector
from pipeline.media.decode import BatchHeader, DecodeSpec, VideoEnded, VideoInfo, VideoOpened
from pipeline.media.letterbox import LetterboxGeometry
from pipeline.media.source import VideoSource
from pipeline.output.layout import OutputLayout
from pipeline.output.manifest import Manifest
from pipeline.runtime.coordinator import CoordinatorLogic
from pipeline.runtime.messages import ActorSample, ActorStats, InferredBatch, ModelFacts

WIDTH, HEIGHT, IMGSZ = 160, 96, 160


class Ref:
    """An object ref: awaiting it gives the value, or raises what the task raised."""

    def __init__(self, value=None, error: BaseException | None = None):
        self.value, self.error = value, error

    def __await__(self):
        if False:  # a generator, as __await__ must be
            yield
        if self.error is not None:
            raise self.error
        return self.value


class Stream:
    """A decoder task's stream: refs, one per item, the way Ray's streaming generators hand them."""

    def __init__(self, refs: list[Ref]):
        self.refs = refs
        self._refs = iter(refs)
        self.cancelled = False

    def __aiter__(self):
        return self

    async def __anext__(self) -> Ref:
        await asyncio.sleep(0)
        try:
            return next(self._refs)
        except StopIteration:
            raise StopAsyncIteration from None


def video_items(frames: int, spec: DecodeSpec) -> list:
    """A decode stream of ``frames`` frames, as ``stream_video`` yields it for ``spec``."""
    geometry = LetterboxGeometry.for_source(HEIGHT, WIDTH, spec.imgsz, stride=spec.model_stride)
    info = VideoInfo(WIDTH, HEIGHT, 30.0, "h264", 0, frames, frames / 30)
    items: list = [VideoOpened(info, geometry)]
    indices = list(range(0, frames, spec.stride))
    batches = [indices[i : i + spec.batch_size] for i in range(0, len(indices), spec.batch_size)]
    for seq, batch in enumerate(batches):
        if seq < spec.skip_batches:
            continue
        idx = np.asarray(batch, np.int64)
        items.append(BatchHeader(seq, idx, idx / 30.0, 0.001))
        items.append(np.zeros((len(batch), *geometry.out_shape, 3), np.uint8))
    items.append(VideoEnded(frames, None))
    return items


@dataclass
class FakeCalls:
    """``RayCalls`` with decoders that are lists; ``deaths[path]``: how many of that video's
    decoders die, each after delivering ``die_after`` items."""

    frames: dict[str, int]
    deaths: dict[str, int] = field(default_factory=dict)
    die_after: int = 5
    started: list[tuple[str, DecodeSpec]] = field(default_factory=list)

    def start_decoder(self, path: str, spec: DecodeSpec, buffer: int) -> Stream:
        self.started.append((path, spec))
        refs = [Ref(item) for item in video_items(self.frames[path], spec)]
        if self.deaths.get(path, 0) > 0:
            self.deaths[path] -= 1
            refs = refs[: self.die_after] + [Ref(error=ray.exceptions.WorkerCrashedError())]
        return Stream(refs)

    @staticmethod
    def cancel(stream) -> None:
        stream.cancelled = True

    def probe(self, path):
        raise AssertionError("small files are never probed")

    def track(self, *args):
        raise AssertionError("no tracking in these runs")

    @staticmethod
    def restart_actor(handle) -> None:
        handle.restarts += 1


class Method:
    def __init__(self, fn):
        self.fn = fn

    def remote(self, *args):
        return self.fn(*args)


class FakeActor:
    """A YoloActor on the synthetic detector; ``die_on``: the calls (1-based) that find it dead."""

    def __init__(self, die_on: tuple[int, ...] = ()):
        self.detector = SyntheticDetector(imgsz=IMGSZ)
        self.calls, self.die_on, self.restarts = 0, die_on, 0
        self.infer, self.ready, self.stats = (
            Method(self._infer),
            Method(self._ready),
            Method(self._stats),
        )

    async def _infer(self, frames_ref, geometry, video_id: str, header: BatchHeader):
        self.calls += 1
        if self.calls in self.die_on:
            raise ray.exceptions.RayActorError()
        frames = await frames_ref if isinstance(frames_ref, Ref) else frames_ref
        counts, detections = self.detector.detect(frames, geometry)
        result = BatchResult(
            video_id, header.seq, header.frame_indices, header.timestamps, counts, detections
        )
        return InferredBatch(result, 0.001, ActorSample(rss=1, gpu=None))

    async def _ready(self):
        return facts()

    async def _stats(self):
        return ActorStats(
            pid=1, device="cpu", batches=self.detector.batches_done, busy_s=0.0, memory={}, gpu=None
        )


def facts() -> ModelFacts:
    return ModelFacts({0: "object"}, 32, True, "cpu", False, "synthetic", {}, None, "node", 1)


class Metric:
    def inc(self, *args, **kwargs): ...
    def set(self, *args, **kwargs): ...
    def observe(self, *args, **kwargs): ...


class Metrics:
    def __getattr__(self, name):
        return Metric()


def run(tmp_path, name: str, frames: dict[str, int], actors: list[FakeActor], calls: FakeCalls):
    out = tmp_path / name
    out.mkdir()
    config = RunConfig(
        model="synthetic.pt", imgsz=IMGSZ, batch_size=4, engine="synthetic", max_open_videos=2
    )
    logic = CoordinatorLogic(str(out), config, actors, calls=calls, metrics=Metrics())
    sources = [
        VideoSource(path, f"{i:016x}", size_bytes=1000, mtime_ns=1) for i, path in enumerate(frames)
    ]

    async def main():
        await logic.add_videos(sources)
        await logic.backlog_walked()
        return await logic.run(facts())

    summary = asyncio.run(main())
    records = Manifest(out).records
    rows = {
        s.path: pq.read_table(OutputLayout(out).detections(s.video_id)).to_pylist()
        for s in sources
        if records[s.video_id].status == "ok"
    }
    return summary, {s.path: records[s.video_id] for s in sources}, rows


FRAMES = {"a.mp4": 37, "b.mp4": 22}


@pytest.fixture
def clean(tmp_path):
    return run(tmp_path, "clean", FRAMES, [FakeActor(), FakeActor()], FakeCalls(dict(FRAMES)))


def test_every_frame_is_written_once_in_order(clean):
    summary, records, rows = clean
    assert {p: r.status for p, r in records.items()} == {"a.mp4": "ok", "b.mp4": "ok"}
    for path, count in FRAMES.items():
        assert [r["frame_index"] for r in rows[path]] == list(range(count))
        assert all(r["num_detections"] == 5 for r in rows[path])
    assert summary.counts.frames_done == 59 and summary.counts.batches_done == 10 + 6
    assert summary.counts.videos_opened == 2 and summary.counts.estimated_frames() == (59, False)


def test_a_lost_actor_s_batch_goes_to_another_and_the_rows_stay_the_same(tmp_path, clean):
    dying = FakeActor(die_on=(2,))
    summary, records, rows = run(
        tmp_path, "lost", FRAMES, [dying, FakeActor()], FakeCalls(dict(FRAMES))
    )
    assert rows == clean[2]
    assert summary.counts.batches_retried == 1 and summary.counts.duplicate_batches_dropped == 0


def test_a_dead_decoder_resumes_after_the_last_batch_it_delivered(tmp_path, clean):
    calls = FakeCalls(dict(FRAMES), deaths={"a.mp4": 1}, die_after=7)  # opened + 3 batches
    summary, records, rows = run(tmp_path, "decoder", FRAMES, [FakeActor(), FakeActor()], calls)
    assert rows == clean[2] and summary.counts.decoder_retries == 1
    # The third batch came with no item after it to prove its frames: decoded again.
    assert [spec.skip_batches for path, spec in calls.started if path == "a.mp4"] == [0, 2]


def test_a_video_whose_decoder_always_dies_fails_alone(tmp_path, clean):
    calls = FakeCalls(dict(FRAMES), deaths={"a.mp4": 99}, die_after=1)  # no batch ever
    summary, records, rows = run(tmp_path, "fails", FRAMES, [FakeActor(), FakeActor()], calls)
    assert (
        records["a.mp4"].status == "failed" and "gave up after 3 attempts" in records["a.mp4"].error
    )
    assert records["b.mp4"].status == "ok" and rows["b.mp4"] == clean[2]["b.mp4"]
    assert not OutputLayout(tmp_path / "fails").detections(records["a.mp4"].video_id).exists()
