"""The control plane and its video workers without Ray: decoder streams that are lists, worker
handles whose methods are coroutines, and a run of ``CoordinatorLogic`` over them. The unit tests of
the runtime drive the real logic (``CoordinatorLogic``, ``VideoWorkerLogic``, ``VideoPass``) with
these; only Ray is faked.

The synthetic detector's boxes are fixed (five per frame along the diagonal of the letterbox),
so ``expected_rows`` says what every run must write, without another run to compare with."""

from __future__ import annotations

import asyncio
import os
import threading
from dataclasses import dataclass, field

import numpy as np
import ray.exceptions

from pipeline.config import RunConfig
from pipeline.inference.synthetic import SyntheticDetector
from pipeline.media.decode import (
    BatchHeader,
    DecodedBatch,
    DecodeSpec,
    VideoEnded,
    VideoInfo,
    VideoOpened,
)
from pipeline.media.letterbox import LetterboxGeometry
from pipeline.media.source import VideoSource
from pipeline.output.manifest import Manifest
from pipeline.output.readers import read_detections
from pipeline.output.store import OutputStore
from pipeline.plan.resume import ToProcess
from pipeline.runtime.coalesce import Coalescer
from pipeline.runtime.coordinator import CoordinatorLogic
from pipeline.runtime.messages import ActorStats, ModelFacts, WorkerOutcome
from pipeline.runtime.video_worker import VideoWorkerLogic

WIDTH, HEIGHT, IMGSZ, FPS = 160, 96, 160, 30.0


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
    """A decoder task's stream: refs, one per item, the way Ray's streaming generators hand them.
    ``stall_after``: items handed out before the stream hangs (a stuck decoder)."""

    def __init__(self, refs: list[Ref], stall_after: int | None = None):
        self.refs = refs
        self._refs = iter(refs)
        self.cancelled = False
        self.stall_after, self.handed = stall_after, 0

    def __aiter__(self):
        return self

    async def __anext__(self) -> Ref:
        await asyncio.sleep(0)
        if self.stall_after is not None and self.handed >= self.stall_after:
            await asyncio.sleep(3600)
        self.handed += 1
        try:
            return next(self._refs)
        except StopIteration:
            raise StopAsyncIteration from None


def video_items(frames: int, spec: DecodeSpec, node_id: str) -> list:
    """A decode stream of ``frames`` frames, as ``stream_video`` yields it for ``spec``."""
    geometry = LetterboxGeometry.for_source(HEIGHT, WIDTH, spec.imgsz, stride=spec.model_stride)
    info = VideoInfo(WIDTH, HEIGHT, FPS, "h264", 0, frames, frames / FPS)
    items: list = [VideoOpened(info, geometry, node_id=node_id)]
    indices = list(range(0, frames, spec.sampling.stride))
    batches = [indices[i : i + spec.batch_size] for i in range(0, len(indices), spec.batch_size)]
    for seq, batch in enumerate(batches):
        if seq < spec.skip_batches:
            continue
        idx = np.asarray(batch, np.int64)
        pixels = np.zeros((len(batch), *geometry.out_shape, 3), np.uint8)
        items.append(DecodedBatch(BatchHeader(seq, idx, idx / FPS, 0.001), pixels))
    items.append(VideoEnded(frames, None))
    return items


@dataclass
class FakeCalls:
    """``RayCalls`` with decoders that are lists, on the worker's node. ``deaths[path]``: how
    many of that video's decoders die, each after delivering ``die_after`` items (the first is
    ``VideoOpened``); ``stalls[path]``: how many hang instead, after ``die_after`` items."""

    frames: dict[str, int]
    deaths: dict[str, int] = field(default_factory=dict)
    stalls: dict[str, int] = field(default_factory=dict)
    die_after: int = 5
    node_id: str = "node-1"
    started: list[tuple[str, DecodeSpec]] = field(default_factory=list)

    def start_decoder(self, path: str, spec: DecodeSpec, buffer: int) -> Stream:
        self.started.append((path, spec))
        refs = [Ref(item) for item in video_items(self.frames[path], spec, self.node_id)]
        if self.stalls.get(path, 0) > 0:
            self.stalls[path] -= 1
            return Stream(refs, stall_after=self.die_after)
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
        handle.kill()

    @staticmethod
    def release_actor(handle) -> None:
        handle.released = True

    @staticmethod
    def node_cpus() -> dict[str, float]:
        return {facts().node_id: 64.0}

    @staticmethod
    async def seen_from(node_id: str, path: str) -> bool:
        return os.path.exists(path)


class Method:
    def __init__(self, fn):
        self.fn = fn

    def remote(self, *args):
        return self.fn(*args)


def facts() -> ModelFacts:
    # (the pid of the process a worker's reports come from: this one)
    return ModelFacts(
        {0: "object"}, 32, True, "cpu", False, "synthetic", {}, None, "node", os.getpid()
    )


class Metric:
    def inc(self, *args, **kwargs): ...
    def set(self, *args, **kwargs): ...
    def observe(self, *args, **kwargs): ...


class Metrics:
    def __getattr__(self, name):
        return Metric()


class FakeWorker:
    """A video worker on the synthetic detector. ``die_on``: the ``process`` calls (1-based)
    that find it dead; ``partitioned_on``: calls whose caller is told it died while the worker
    goes on (a worker presumed dead that comes back); ``reply_lost_on``: calls whose videos are
    all done (and told) but whose reply never comes (the worker died just then);
    ``cut_off_after_commit``: its first commit request is answered, then the coordinator loses
    sight of it (its first hand-out's call fails) and it is held there, its answer in hand,
    until the run is over (``release``: a worker cut off from the cluster that comes back);
    ``hang_commit``: its first process's first commit hangs in the upload after the rename
    (storage that stopped answering), until the run is over."""

    def __init__(
        self,
        calls: FakeCalls,
        die_on=(),
        partitioned_on=(),
        raise_on=(),
        dead_at_start=0,
        reply_lost_on=(),
        tells=True,
        blank_on=(),
        cut_off_after_commit=False,
        hang_commit=False,
    ):
        self.hang_commit = hang_commit
        self.unhang = threading.Event()
        self.killed: asyncio.Event | None = None
        self.calls, self.die_on, self.partitioned_on = calls, die_on, partitioned_on
        self.cut_off_after_commit = cut_off_after_commit
        self.cut: asyncio.Event | None = None
        self.release: asyncio.Event | None = None
        self.reply_lost_on, self.tells, self.blank_on = reply_lost_on, tells, blank_on
        self.handouts_running = 0
        self.dead_at_start = dead_at_start  # ``start_run`` calls that find it dead (restarting)
        self.raise_on = raise_on  # calls that raise inside the worker (a bug, a bad file)
        self.detector = SyntheticDetector(imgsz=IMGSZ)
        self.logic: VideoWorkerLogic | None = None
        self.count, self.background, self.restarts = 0, [], 0
        self.released = False  # let go by the coordinator (idle)
        self.start_run, self.process_many = Method(self._start_run), Method(self._process_many)
        self.report, self.stats, self.ready = (
            Method(self._report),
            Method(self._stats),
            Method(self._ready),
        )

    async def _start_run(self, config, coordinator, decode_here=True):
        if self.dead_at_start:
            self.dead_at_start -= 1
            raise ray.exceptions.ActorDiedError()
        if self.killed is None:
            self.killed = asyncio.Event()
        if self.logic is None:
            self.cut, self.release = asyncio.Event(), asyncio.Event()
            self.logic = VideoWorkerLogic(
                self.detector,
                config,
                OutputStore(coordinator.store.layout.root),
                calls=self.calls,
                metrics=Metrics(),
                grant=Coalescer(self._held(coordinator.grant)),
                place=self._held(coordinator.place_part),
                tell=Coalescer(coordinator.outcomes) if self.tells else None,
                ended=Coalescer(coordinator.passes_ended),
            )
            if self.hang_commit:
                self._hang_the_first_commit()

    def _hang_the_first_commit(self) -> None:
        assert self.logic is not None
        store, unhang = self.logic.store, self.unhang
        publish = store.publish_video

        def hung(*args, **kwargs):
            unhang.wait(60)
            return publish(*args, **kwargs)

        store.publish_video = hung  # type: ignore[method-assign]
        self.hang_commit = False

    def kill(self) -> None:
        """Ray killed this worker (a hung one): its calls fail, and it starts again as a new
        process (a new logic) once asked."""
        assert self.killed is not None
        killed, self.killed, self.logic = self.killed, asyncio.Event(), None
        killed.set()

    def _held(self, ask):
        """``ask``, whose first answer this worker (``cut_off_after_commit``) gets only once
        ``release`` is set, the coordinator told meanwhile that it is gone."""

        async def held(*args):
            answer = await ask(*args)
            if self.cut_off_after_commit and self.cut is not None and not self.cut.is_set():
                assert self.release is not None
                self.cut.set()
                await self.release.wait()
            return answer

        return held

    async def _process_many(
        self, sources, attempt_ids, config, coordinator, fresh=None, decode_here=True
    ):
        assert self.logic is not None, "given videos before start_run"
        self.count += 1
        if self.count in self.die_on:
            await asyncio.sleep(0.01)
            raise ray.exceptions.RayActorError()
        if self.count in self.blank_on:  # a reply without the videos' outcomes (a bug)
            return [WorkerOutcome(a, None, committed=False) for a in attempt_ids]
        if self.count in self.raise_on:
            cause = ValueError("the worker tripped")
            raise ray.exceptions.RayTaskError("process_many", "Traceback ...", cause)
        work = self.logic.process_many(sources, attempt_ids, fresh)
        if self.cut_off_after_commit and self.count == 1:
            assert self.cut is not None
            task = asyncio.create_task(work)
            self.background.append(task)  # it goes on, unseen
            cut = asyncio.create_task(self.cut.wait())
            await asyncio.wait([task, cut], return_when=asyncio.FIRST_COMPLETED)
            raise ray.exceptions.ActorUnavailableError("the node is unreachable", None)
        if self.count in self.partitioned_on:
            self.background.append(asyncio.create_task(work))  # it goes on, unseen
            await asyncio.sleep(0)
            raise ray.exceptions.ActorUnavailableError("the node is unreachable", None)
        self.handouts_running += 1
        assert self.killed is not None
        task, killed = asyncio.create_task(work), asyncio.create_task(self.killed.wait())
        try:
            await asyncio.wait([task, killed], return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.handouts_running -= 1
            killed.cancel()
        if not task.done():  # killed meanwhile: its work goes on, unseen, until it ends
            self.background.append(task)
            raise ray.exceptions.RayActorError()
        outcomes = task.result()
        if self.count in self.reply_lost_on:
            raise ray.exceptions.RayActorError()
        return outcomes

    async def _report(self):
        return self.logic.report() if self.logic else None

    async def _stats(self):
        return ActorStats(pid=1, device="cpu", batches=0, busy_s=0.0, memory={}, gpu=None)

    async def _ready(self):
        if self.cut is not None and self.cut.is_set() and not self.release.is_set():
            raise ray.exceptions.ActorUnavailableError("the node is unreachable", None)
        return facts()


def workers(frames: dict[str, int], count: int = 2, **calls) -> list[FakeWorker]:
    return [FakeWorker(FakeCalls(dict(frames), **calls)) for _ in range(count)]


def config(**kwargs) -> RunConfig:
    return RunConfig(model="synthetic.pt", imgsz=IMGSZ, engine="synthetic", **kwargs)


def sources_of(frames: dict[str, int]) -> list[VideoSource]:
    return [
        VideoSource(path, f"{i:016x}", size_bytes=1000, mtime_ns=1) for i, path in enumerate(frames)
    ]


def run_workers(
    tmp_path, name, frames: dict[str, int], workers, on_record=None, sources=None, **settings
):
    """A run of the control plane over ``workers``. ``on_record(logic, record)``: called as each
    outcome is recorded; ``sources``: the videos (default: one per ``frames`` path); ``name``:
    the output folder, kept between runs. Returns the summary, the output and the sources."""
    out = tmp_path / name
    out.mkdir(exist_ok=True)
    logic = CoordinatorLogic(
        str(out), config(**settings), workers, calls=FakeCalls({}), metrics=Metrics()
    )
    logic.me = logic
    if on_record is not None:
        record = logic.committer.record

        async def recorded(video_record):
            on_record(logic, video_record)
            await record(video_record)

        logic.committer.record = recorded
    sources = sources or sources_of(frames)

    async def main():
        # each with its previous record, as the planner pairs them
        stored = Manifest(out)
        await logic.add_videos([ToProcess(s, stored.previous(s.video_id)) for s in sources])
        await logic.backlog_walked()
        summary = await logic.run(facts(), tuple(range(len(workers))))
        for worker in workers:  # a worker cut off comes back; storage that hung answers
            if worker.release is not None:
                worker.release.set()
            worker.unhang.set()
        if any(worker.background for worker in workers):
            for worker in workers:  # a partitioned worker's late attempts end too
                await asyncio.gather(*worker.background, return_exceptions=True)
            summary = await logic.summary()  # with their refused commits
        return summary

    summary = asyncio.run(main())
    return summary, out, sources


def rows_of(out, sources) -> dict[str, list]:
    """Each ok video's rows, wherever they are (its own file or a part)."""
    records = Manifest(out).records
    return {
        s.path: read_detections(out, flat=False, video_id=s.video_id).to_dict("records")
        for s in sources
        if records[s.video_id].status == "ok"
    }


def synthetic_boxes(width: int, height: int, imgsz: int) -> list[tuple]:
    """The synthetic detector's five boxes of every frame, in a ``width`` x ``height`` source's
    pixels: squares of side 16 at 8..64 along the letterbox's diagonal, mapped back."""
    geometry = LetterboxGeometry.for_source(height, width, imgsz, stride=32)
    corners = np.linspace(8, 64, 5, dtype=np.float32)
    boxes = np.stack([corners, corners, corners + 16, corners + 16], axis=1)
    geometry.boxes_to_source(boxes)
    return [tuple(round(float(v), 2) for v in box) for box in boxes]


def expected_rows(frames: dict[str, int], stride: int = 1) -> dict[str, list[tuple]]:
    """What every run of the fakes must write: per video, (frame_index, timestamp_s, boxes)."""
    boxes = synthetic_boxes(WIDTH, HEIGHT, IMGSZ)
    return {path: [(i, i / FPS, boxes) for i in range(0, n, stride)] for path, n in frames.items()}


def written_rows(out, sources) -> dict[str, list[tuple]]:
    """``rows_of`` in ``expected_rows``' form."""
    return {
        path: [
            (
                row["frame_index"],
                row["timestamp_s"],
                [
                    tuple(round(float(d[k]), 2) for k in ("x1", "y1", "x2", "y2"))
                    for d in row["detections"]
                ],
            )
            for row in rows
        ]
        for path, rows in rows_of(out, sources).items()
    }
