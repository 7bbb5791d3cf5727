"""The control plane and its video workers without Ray (``data_path="workers"``): the same rows
as the coordinator's data path, batches packed across videos, a dead worker's open videos each
committed once elsewhere, and a worker that was presumed dead refused its commit."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass

import pyarrow.parquet as pq
import pytest
import ray.exceptions
from test_coordinator_logic import FRAMES, FakeActor, FakeCalls, Method, Metrics, facts

from pipeline.config import RunConfig
from pipeline.inference.synthetic import SyntheticDetector
from pipeline.media.decode import VideoOpened
from pipeline.media.source import VideoSource
from pipeline.output.manifest import Manifest
from pipeline.output.readers import read_detections
from pipeline.output.store import OutputStore
from pipeline.runtime.coalesce import Coalescer
from pipeline.runtime.control import ControlLogic
from pipeline.runtime.coordinator import CoordinatorLogic
from pipeline.runtime.messages import ActorStats, WorkerOutcome
from pipeline.runtime.video_worker import VideoWorkerLogic

IMGSZ = 160


@dataclass
class WorkerCalls(FakeCalls):
    """Decoders on the worker's node, as ``RayCalls(decoders_here=True)`` starts them."""

    node_id: str = "node-1"

    def start_decoder(self, path, spec, buffer):
        stream = super().start_decoder(path, spec, buffer)
        for ref in stream.refs:
            if isinstance(ref.value, VideoOpened):
                ref.value = dataclasses.replace(ref.value, node_id=self.node_id)
        return stream


class FakeWorker:
    """A video worker on the synthetic detector. ``die_on``: the ``process`` calls (1-based)
    that find it dead; ``partitioned_on``: calls whose caller is told it died while the worker
    goes on (a worker presumed dead that comes back); ``reply_lost_on``: calls whose videos are
    all done (and told) but whose reply never comes (the worker died just then)."""

    def __init__(
        self,
        calls: WorkerCalls,
        die_on=(),
        partitioned_on=(),
        raise_on=(),
        dead_at_start=0,
        reply_lost_on=(),
        tells=True,
        blank_on=(),
    ):
        self.calls, self.die_on, self.partitioned_on = calls, die_on, partitioned_on
        self.reply_lost_on, self.tells, self.blank_on = reply_lost_on, tells, blank_on
        self.handouts_running = 0
        self.dead_at_start = dead_at_start  # ``start_run`` calls that find it dead (restarting)
        self.raise_on = raise_on  # calls that raise inside the worker (a bug, a bad file)
        self.detector = SyntheticDetector(imgsz=IMGSZ)
        self.logic: VideoWorkerLogic | None = None
        self.count, self.background = 0, []
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
        if self.logic is None:
            self.logic = VideoWorkerLogic(
                self.detector,
                config,
                OutputStore(coordinator.store.layout.root),
                calls=self.calls,
                metrics=Metrics(),
                grant=Coalescer(coordinator.grant),
                tell=Coalescer(coordinator.outcomes) if self.tells else None,
                ended=Coalescer(coordinator.passes_ended),
            )

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
        if self.count in self.partitioned_on:
            self.background.append(asyncio.create_task(work))  # it goes on, unseen
            await asyncio.sleep(0)
            raise ray.exceptions.ActorUnavailableError("the node is unreachable", None)
        self.handouts_running += 1
        try:
            outcomes = await work
        finally:
            self.handouts_running -= 1
        if self.count in self.reply_lost_on:
            raise ray.exceptions.RayActorError()
        return outcomes

    async def _report(self):
        return self.logic.report() if self.logic else None

    async def _stats(self):
        return ActorStats(pid=1, device="cpu", batches=0, busy_s=0.0, memory={}, gpu=None)

    async def _ready(self):
        return facts()


def config(**kwargs) -> RunConfig:
    return RunConfig(
        model="synthetic.pt", imgsz=IMGSZ, engine="synthetic", data_path="workers", **kwargs
    )


def run_workers(
    tmp_path, name, frames: dict[str, int], workers, on_record=None, sources=None, **settings
):
    """``on_record(logic, record)``: called as each outcome is recorded; ``sources``: the videos
    (default: one per ``frames`` path); ``name``: the output folder, kept between runs."""
    out = tmp_path / name
    out.mkdir(exist_ok=True)
    logic = ControlLogic(str(out), config(**settings), workers, calls=None, metrics=Metrics())
    logic.me = logic
    if on_record is not None:
        record = logic.committer.record

        async def recorded(video_record):
            on_record(logic, video_record)
            await record(video_record)

        logic.committer.record = recorded
    sources = sources or [
        VideoSource(path, f"{i:016x}", size_bytes=1000, mtime_ns=1) for i, path in enumerate(frames)
    ]

    async def main():
        await logic.add_videos(sources)
        await logic.backlog_walked()
        summary = await logic.run(facts())
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


def coordinator_rows(tmp_path, frames: dict[str, int], **settings):
    out = tmp_path / "coordinator"
    out.mkdir()
    cfg = RunConfig(model="synthetic.pt", imgsz=IMGSZ, engine="synthetic", **settings)
    logic = CoordinatorLogic(
        str(out), cfg, [FakeActor(), FakeActor()], calls=FakeCalls(dict(frames)), metrics=Metrics()
    )
    sources = [
        VideoSource(path, f"{i:016x}", size_bytes=1000, mtime_ns=1) for i, path in enumerate(frames)
    ]

    async def main():
        await logic.add_videos(sources)
        await logic.backlog_walked()
        await logic.run(facts())

    asyncio.run(main())
    return rows_of(out, sources)


CLIPS = {f"clip{i}.mp4": 3 for i in range(12)} | FRAMES


def test_workers_write_the_rows_the_coordinator_path_writes_and_mix_clips(tmp_path):
    settings = dict(batch_size=8, max_open_videos=8)
    workers = [FakeWorker(WorkerCalls(dict(CLIPS))), FakeWorker(WorkerCalls(dict(CLIPS)))]
    summary, out, sources = run_workers(tmp_path, "workers", CLIPS, workers, **settings)
    assert rows_of(out, sources) == coordinator_rows(tmp_path, CLIPS, **settings)
    counts = summary.counts
    assert counts.videos_ok == len(CLIPS) and counts.frames_done == sum(CLIPS.values())
    assert counts.mixed_batches > 0  # 3-frame clips shared forward passes
    assert (
        counts.batches_decoded_here == counts.batches_done and not counts.batches_decoded_elsewhere
    )
    assert not list((out / "detections").glob(".*"))  # no hidden file left


def test_a_dead_workers_open_videos_are_committed_once_elsewhere(tmp_path):
    frames = {f"v{i}.mp4": 9 for i in range(8)}
    # worker 0 dies with its first hand-out (a chunk of clips) open: each goes out again
    workers = [
        FakeWorker(WorkerCalls(dict(frames)), die_on=(1,)),
        FakeWorker(WorkerCalls(dict(frames))),
    ]
    summary, out, sources = run_workers(tmp_path, "deaths", frames, workers, batch_size=4)
    assert summary.counts.videos_ok == 8 and summary.counts.videos_reassigned >= 2
    rows = rows_of(out, sources)
    assert all([r["frame_index"] for r in rows[p]] == list(range(9)) for p in frames)


@pytest.mark.parametrize("layout", ["per-video", "packed"])
def test_a_worker_presumed_dead_is_refused_its_commit(tmp_path, layout):
    frames = {"a.mp4": 20, "b.mp4": 7}
    workers = [
        FakeWorker(WorkerCalls(dict(frames)), partitioned_on=(1,)),
        FakeWorker(WorkerCalls(dict(frames))),
    ]
    summary, out, sources = run_workers(
        tmp_path, "partition", frames, workers, batch_size=4, max_open_videos=2, layout=layout
    )
    # a backlog this short goes out a clip per worker: worker 0's attempt goes on unseen
    counts = summary.counts
    assert counts.commits_refused == counts.videos_reassigned == 1 and counts.videos_ok == 2
    rows = rows_of(out, sources)
    assert [r["frame_index"] for r in rows["a.mp4"]] == list(range(20))
    assert not list((out / "detections").glob(".*"))  # the refused attempt's file is gone


@pytest.mark.parametrize("seed", range(4))
def test_random_worker_deaths_every_frame_once(tmp_path, seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    frames = {f"v{i}.mp4": int(rng.integers(1, 30)) for i in range(10)}
    workers = [
        FakeWorker(WorkerCalls(dict(frames)), die_on=tuple(rng.choice(12, 2, replace=False) + 1))
        for _ in range(3)
    ]
    summary, out, sources = run_workers(
        tmp_path, "random", frames, workers, batch_size=4, max_open_videos=6
    )
    rows = rows_of(out, sources)
    assert summary.counts.videos_ok == 10
    assert all([r["frame_index"] for r in rows[p]] == list(range(n)) for p, n in frames.items())


def test_a_worker_killed_before_its_run_started_gets_its_videos_when_it_is_back(tmp_path):
    frames = {f"v{i}.mp4": 5 for i in range(6)}
    # worker 0 died between its model's ready answer and the run's start: it restarts (twice)
    workers = [
        FakeWorker(WorkerCalls(dict(frames)), dead_at_start=2),
        FakeWorker(WorkerCalls(dict(frames))),
    ]
    summary, out, sources = run_workers(
        tmp_path, "late", frames, workers, batch_size=4, max_open_videos=4
    )
    assert summary.counts.videos_ok == 6 and workers[0].dead_at_start == 0
    rows = rows_of(out, sources)
    assert all([r["frame_index"] for r in rows[p]] == list(range(5)) for p in frames)


def test_a_worker_that_raises_fails_its_videos_and_loses_none(tmp_path):
    frames = {f"v{i}.mp4": 5 for i in range(3)}
    workers = [FakeWorker(WorkerCalls(dict(frames)), raise_on=(1,))]
    summary, out, sources = run_workers(tmp_path, "raises", frames, workers, batch_size=4)
    records = Manifest(out).records
    assert summary.counts.videos_failed == 3 and len(records) == 3
    assert all("the worker tripped" in r.error for r in records.values())


@pytest.mark.parametrize("tells", [True, False])
def test_a_chunks_clip_is_recorded_when_its_pass_ends_not_with_the_chunk(tmp_path, tells):
    """A driver killed while a chunk's long clip still runs keeps its short clips: they were
    recorded as each ended (told by the worker), not when the whole hand-out came back."""
    frames = {"short.mp4": 2, "long.mp4": 120}
    worker = FakeWorker(WorkerCalls(dict(frames)), tells=tells)
    recorded: list[tuple[str, int]] = []  # (video id, hand-outs still running)
    summary, out, sources = run_workers(
        tmp_path,
        "told",
        frames,
        [worker],
        on_record=lambda logic, r: recorded.append((r.video_id, worker.handouts_running)),
        batch_size=4,
        max_open_videos=4,
        layout="per-video",  # packed, both would wait for one part
    )
    assert summary.counts.videos_ok == 2 and worker.count == 1  # one hand-out, both clips
    short, long = (s.video_id for s in sources)
    if tells:  # the short clip first, while the hand-out (its long clip) still ran
        assert recorded == [(short, 1), (long, 1)]
    else:  # both with the hand-out's reply
        assert recorded == [(short, 0), (long, 0)]


def test_a_worker_lost_after_telling_its_outcomes_keeps_them(tmp_path):
    """The worker told each outcome, then died before its reply: nothing is redone or failed."""
    frames = {f"v{i}.mp4": 5 for i in range(4)}
    workers = [FakeWorker(WorkerCalls(dict(frames)), reply_lost_on=(1,))]
    summary, out, sources = run_workers(tmp_path, "told-then-lost", frames, workers, batch_size=4)
    counts = summary.counts
    assert counts.videos_ok == 4 and counts.videos_failed == 0 and counts.videos_reassigned == 0
    assert workers[0].count == 1 and {r.status for r in Manifest(out).records.values()} == {"ok"}


def test_short_clips_are_packed_into_a_few_part_files_with_the_same_rows(tmp_path):
    clips = {f"clip{i}.mp4": 1 + i % 5 for i in range(40)} | {"long.mp4": 600}
    settings = dict(batch_size=8, max_open_videos=8)
    workers = [FakeWorker(WorkerCalls(dict(clips))), FakeWorker(WorkerCalls(dict(clips)))]
    summary, out, sources = run_workers(tmp_path, "packed", clips, workers, **settings)
    per_video = [FakeWorker(WorkerCalls(dict(clips))), FakeWorker(WorkerCalls(dict(clips)))]
    _, own, _ = run_workers(tmp_path, "own", clips, per_video, layout="per-video", **settings)
    assert rows_of(out, sources) == rows_of(own, sources)
    assert summary.counts.videos_ok == len(clips)
    files = sorted(p.name for p in (out / "detections").iterdir())
    parts = [name for name in files if name.startswith("part-")]
    long_id = sources[-1].video_id
    assert f"{long_id}.parquet" in files and 1 <= len(parts) <= 4  # 40 clips in a few parts
    assert len(files) == len(parts) + 1  # no hidden file left, no clip of its own
    records = Manifest(out).records
    for source in sources[:-1]:
        record = records[source.video_id]
        assert record.detections_file.startswith("detections/part-") and len(record.row_groups) == 1
    assert records[long_id].detections_file is None
    assert len(list((own / "detections").iterdir())) == len(clips)


@pytest.mark.parametrize("first_layout", ["auto", "per-video"])
def test_a_clip_redone_leaves_its_old_rows_before_its_new_rows_land(tmp_path, first_layout):
    """A rerun over changed clips (packed the second time): each clip's rows once, none left
    behind in its old part or its old file of its own."""
    clips = {f"clip{i}.mp4": 2 + i % 3 for i in range(12)}

    def run(sources, frames, layout="auto"):
        workers = [FakeWorker(WorkerCalls(dict(frames)))]
        settings = dict(batch_size=4, max_open_videos=8, layout=layout)
        return run_workers(tmp_path, "out", frames, workers, sources=sources, **settings)

    first = [VideoSource(p, f"{i:016x}", size_bytes=1000, mtime_ns=1) for i, p in enumerate(clips)]
    run(first, clips, first_layout)
    changed = {p: (n + 3 if i % 4 == 0 else n) for i, (p, n) in enumerate(clips.items())}
    second = [dataclasses.replace(s, mtime_ns=2) if i % 4 == 0 else s for i, s in enumerate(first)]
    summary, out, _ = run(second, changed)
    assert summary.counts.videos_ok == 3 and summary.counts.videos_skipped == 9
    expected = {s.video_id: changed[s.path] for s in first}
    direct = pq.read_table(out / "detections").to_pandas()  # what DuckDB, pandas, Spark see
    for rows in (read_detections(out, flat=False), direct):
        assert not rows.duplicated(["video_id", "frame_index"]).any()
        assert rows.groupby("video_id").size().to_dict() == expected


def test_a_reply_without_outcomes_never_leaves_a_video_open(tmp_path):
    frames = {f"v{i}.mp4": 3 for i in range(3)}
    workers = [FakeWorker(WorkerCalls(dict(frames)), blank_on=(1,))]
    summary, out, sources = run_workers(tmp_path, "blank", frames, workers, batch_size=4)
    counts = summary.counts
    assert counts.videos_ok == 3 and counts.videos_done == 3 and counts.videos_reassigned == 3
