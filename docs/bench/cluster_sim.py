"""The whole control plane at cluster size, by simulation: the real ``CoordinatorLogic`` and its
bookkeeping (``videos.parquet`` folds and merges, part placements, assignments) driven by
simulated video workers, Ray-free, in one process.

    python docs/bench/cluster_sim.py --clips 10000000 --workers 400 [--frames 4] \
        [--gpu-fps 2000] [--json out.json]

Each simulated worker is a GPU: a clip of ``--frames`` frames holds it ``frames / gpu_fps``
seconds (drawn around that, log-normal, sigma 0.2; the clips of one hand-out one after the
other), then the worker sends what a real video worker sends for a short clip: the pass's end
(``passes_ended``), the part file once it holds ``part_rows`` rows, has waited ``PART_WAIT_S`` or
the worker has been idle ``IDLE_FLUSH_S`` (``place_part``, with a real staged file that the
coordinator renames into place and records), the outcomes (``outcomes``), and the hand-out's
reply. Reports are polled every second and progress read as the driver does. What is measured:
hand-outs, placements and outcomes per second the control plane sustained, clips per second
over each tenth of the run, the loop's longest pause, the process's peak RSS, the simulated GPUs'
busy share, and the messages per clip (what Ray would charge on top: see the docs).

The simulated workers run on the coordinator's own loop, so every figure here includes their
Python too: the control plane alone is somewhat faster than what is measured. A worker holds the
records that wait for its part pickled, as bytes (a real one holds them in its own process, and
Ray pickles them on the way): as live objects, they would weigh on this process's memory and
garbage collector, which in a real run the coordinator never holds. Unpickling them
when the part is placed stands for what Ray's deserialization costs the coordinator.
"""

from __future__ import annotations

import os

# As `python -m pipeline` sets it for the coordinator's process (pipeline/__main__.py): read once,
# when pyarrow is first imported.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

import argparse
import asyncio
import hashlib
import json
import pickle
import random
import resource
import tempfile
import time
from collections import Counter
from pathlib import Path

from pipeline.config import RunConfig
from pipeline.media.source import VideoSource
from pipeline.output.bookkeeping import return_freed_memory, tune_garbage_collection
from pipeline.output.layout import OutputLayout
from pipeline.output.manifest import VideoRecord
from pipeline.output.outcomes import RunCounts
from pipeline.output.parts import new_part_key
from pipeline.plan.resume import ToProcess
from pipeline.runtime.coordinator import CoordinatorLogic
from pipeline.runtime.messages import (
    ModelFacts,
    PartEntry,
    PartPlacement,
    WorkerOutcome,
    WorkerReport,
)
from pipeline.runtime.part_commits import IDLE_FLUSH_S, PART_WAIT_S

MESSAGES: Counter[str] = Counter()  # calls between the coordinator and the workers, by kind


class Remote:
    """A method as a Ray handle exposes it: ``handle.method.remote(...)`` gives an awaitable."""

    def __init__(self, kind: str, method):
        self.kind, self.method = kind, method

    def remote(self, *args):
        MESSAGES[self.kind] += 1
        return self.method(*args)


class CoordinatorHandle:
    """What a worker holds of the coordinator: the calls a video worker makes."""

    def __init__(self, logic: CoordinatorLogic):
        self.place_part = Remote("place_part", logic.place_part)
        self.outcomes = Remote("outcomes", logic.outcomes)
        self.passes_ended = Remote("passes_ended", logic.passes_ended)
        self.grant = Remote("grant", logic.grant)
        self.logic = logic

    @property
    def settings_hash(self) -> str:  # (a real worker computes it from the run's settings)
        return self.logic.ctx.settings_hash


class NoMetrics:
    def __getattr__(self, name):
        return self

    def inc(self, *args, **kwargs): ...
    def set(self, *args, **kwargs): ...
    def observe(self, *args, **kwargs): ...


class NoCalls:
    node_id = "sim"  # the coordinator's node, and every simulated worker's (one file system)

    def restart_actor(self, actor) -> None:
        raise AssertionError("a simulated worker never hangs")

    def release_actor(self, actor) -> None:
        pass

    def node_cpus(self) -> dict[str, float]:
        return {"sim": 10_000.0}


def clip_record(source: VideoSource, frames: int, settings_hash: str) -> VideoRecord:
    return VideoRecord(
        video_id=source.video_id,
        path=source.path,
        status="ok",
        frames_processed=frames,
        width=1280,
        height=720,
        fps=30.0,
        frames_decoded=frames,
        num_detections=5 * frames,
        codec="h264",
        size_bytes=source.size_bytes,
        mtime_ns=source.mtime_ns,
        settings_hash=settings_hash,
        processing_s=0.1,
        decode_attempts=1,
        class_counts=[{"class_id": 0, "class_name": "person", "count": 5 * frames}],
    )


FACTS = ModelFacts({0: "person"}, 32, True, "cuda", True, "synthetic", {}, None, "sim", 1)


class SimulatedWorker:
    """A video worker with a simulated GPU: the messages of a real one, none of its work."""

    def __init__(self, index: int, layout: OutputLayout, frames: int, gpu_fps: float, seed: int):
        self.index, self.layout, self.frames, self.gpu_fps = index, layout, frames, gpu_fps
        self.rng = random.Random(seed)
        self.gpu_free_at = 0.0
        self.busy_s = 0.0
        self.open_chunks = 0
        self.waiting: list[tuple[bytes, HandOut, int]] = []  # an entry pickled; its hand-out
        self.first_waiting_at = 0.0
        self.part_rows = 0
        self.waiting_bytes = 0
        self.counts = RunCounts()
        self.start_run = Remote("start_run", self._start_run)
        self.ready = Remote("ready", self._ready)
        self.report = Remote("report", self._report)
        self.stats = Remote("stats", self._nothing)
        self.process_many = Remote("process_many", self._process_many)

    async def _nothing(self, *args):
        return None

    async def _ready(self) -> ModelFacts:
        return FACTS

    async def _start_run(self, config: RunConfig, coordinator, decode_here: bool) -> None:
        self.settings_hash = coordinator.settings_hash

    async def _report(self) -> WorkerReport:
        return WorkerReport(self.index, self.counts, {}, self.open_chunks, 0, None, None, 0)

    async def _process_many(self, sources, attempts, config, me, fresh, decode_here):
        self.open_chunks += 1
        loop = asyncio.get_running_loop()
        seconds = [self.frames / self.gpu_fps * self.rng.lognormvariate(0, 0.2) for _ in sources]
        now = loop.time()
        done_at = max(now, self.gpu_free_at) + sum(seconds)
        self.gpu_free_at, self.busy_s = done_at, self.busy_s + sum(seconds)
        await asyncio.sleep(done_at - now)
        self.open_chunks -= 1
        await me.passes_ended.remote([(s.video_id, a) for s, a in zip(sources, attempts)])
        handout = HandOut(len(sources), loop.create_future())
        for index, (source, attempt, new) in enumerate(zip(sources, attempts, fresh)):
            record = clip_record(source, self.frames, self.settings_hash)
            entry = PartEntry(source.video_id, attempt, record, new)
            self._wait_for_part(pickle.dumps(entry), handout, index)
        if self.part_rows >= config.part_rows or loop.time() - self.first_waiting_at >= PART_WAIT_S:
            self._flush(me)
        elif not self.open_chunks:
            loop.call_later(IDLE_FLUSH_S, self._flush_if_idle, me)
        records = await handout.done
        outcomes = [
            WorkerOutcome(a, r, committed=True) for a, r in zip(attempts, records) if r is not None
        ]
        await me.outcomes.remote(outcomes)
        return outcomes

    def _wait_for_part(self, entry: bytes, handout: HandOut, index: int) -> None:
        if not self.waiting:
            self.first_waiting_at = asyncio.get_running_loop().time()
        self.waiting.append((entry, handout, index))
        self.part_rows += self.frames
        self.waiting_bytes += len(entry)

    def flush_if_waited(self, me, now: float) -> None:
        """A real worker's check every 0.25 s: its part goes once its first video waited long."""
        if self.waiting and now - self.first_waiting_at >= PART_WAIT_S:
            self._flush(me)

    def _flush_if_idle(self, me) -> None:
        if not self.open_chunks:
            self._flush(me)

    def _flush(self, me) -> None:
        if self.waiting:
            waiting, self.waiting, self.part_rows, self.waiting_bytes = self.waiting, [], 0, 0
            asyncio.get_running_loop().create_task(self._place(me, waiting))

    async def _place(self, me, waiting) -> None:
        """The part under a hidden name (a real, empty file: the coordinator renames it), then
        one request for all its videos."""
        key = new_part_key("detections", f"w{self.index:04d}")
        staged = OutputLayout.temp_beside(self.layout.path(key))
        await asyncio.to_thread(staged.touch)  # (a real worker writes it in a thread too)
        entries = []
        for group, (pickled, _, _) in enumerate(waiting):
            entry = pickle.loads(pickled)
            entry.record.detections_file, entry.record.row_groups = key, [group]
            entries.append(entry)
        answers = await me.place_part.remote(
            PartPlacement(key, self.layout.key(staged), None, None, tuple(entries))
        )
        for entry, (_, handout, index), answer in zip(entries, waiting, answers):
            handout.answer(index, entry.record if answer == "placed" else None)


class HandOut:
    """A hand-out's records as their parts are placed (None: refused), complete once all are."""

    def __init__(self, size: int, done: asyncio.Future):
        self.records: list[VideoRecord | None] = [None] * size
        self.left, self.done = size, done

    def answer(self, index: int, record: VideoRecord | None) -> None:
        self.records[index] = record
        self.left -= 1
        if not self.left:
            self.done.set_result(self.records)


def by_tenth(samples: list[tuple[float, int]]) -> list[float]:
    """Clips recorded per second over each tenth of the run's time."""
    total = samples[-1][0]
    rates, before = [], 0
    for k in range(1, 11):
        done = max((n for t, n in samples if t <= k * total / 10), default=0)
        rates.append(round((done - before) / (total / 10), 1))
        before = done
    return rates


def sources(clips: int):
    for i in range(clips):
        path = f"/videos/clip{i:09d}.mp4"
        video_id = hashlib.sha256(path.encode()).hexdigest()[:16]
        yield VideoSource(path, video_id, size_bytes=400_000, mtime_ns=1_700_000_000 + i)


async def simulate(args, folder: Path) -> dict:
    config = RunConfig(model="synthetic.pt", imgsz=160, engine="synthetic")
    layout = OutputLayout(folder)
    layout.path("detections").mkdir(parents=True)
    workers = [
        SimulatedWorker(w, layout, args.frames, args.gpu_fps, seed=args.seed * 100_003 + w)
        for w in range(args.workers)
    ]
    logic = CoordinatorLogic(str(folder), config, workers, calls=NoCalls(), metrics=NoMetrics())
    logic.me = CoordinatorHandle(logic)
    return_freed_memory()  # as the coordinator's process does
    tune_garbage_collection()
    facts = FACTS
    samples: list[tuple[float, int]] = []  # (seconds since the start, clips recorded)
    most_waiting = [0, 0]  # the most records the simulated workers held at once, and their bytes

    async def feed() -> None:
        batch = []
        for source in sources(args.clips):
            batch.append(ToProcess(source, None))
            if len(batch) == 1000:
                await logic.add_videos(batch)
                batch = []
        await logic.add_videos(batch)
        await logic.backlog_walked()

    async def flush_waited_parts() -> None:
        while True:
            await asyncio.sleep(0.25)
            now = asyncio.get_running_loop().time()
            for worker in workers:
                worker.flush_if_waited(logic.me, now)
            waiting = sum(len(w.waiting) for w in workers), sum(w.waiting_bytes for w in workers)
            most_waiting[:] = max(most_waiting, list(waiting))

    async def watch() -> None:  # the driver's progress poll; clips done, once a second
        started = time.perf_counter()
        while True:
            await asyncio.sleep(1.0)
            progress = await logic.progress()
            samples.append((time.perf_counter() - started, progress.counts.videos_done))
            if args.verbose:
                print(f"{samples[-1][0]:7.1f} s {samples[-1][1]:>10,} clips", flush=True)

    cpu, started = time.process_time(), time.perf_counter()
    feeder = asyncio.create_task(feed())
    watcher = asyncio.create_task(watch())
    flusher = asyncio.create_task(flush_waited_parts())
    summary = await logic.run(facts, tuple(range(args.workers)))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    watcher.cancel()
    flusher.cancel()
    await feeder
    counts = summary.counts
    assert counts.videos_done == args.clips, (counts.videos_done, args.clips)
    busy = sum(w.busy_s for w in workers) / (seconds * len(workers))
    per_s = args.clips / seconds
    messages = {kind: MESSAGES[kind] for kind in sorted(MESSAGES)}
    work_messages = sum(n for kind, n in messages.items() if kind not in ("report", "start_run"))
    return {
        "clips": args.clips,
        "workers": args.workers,
        "frames_per_clip": args.frames,
        "gpu_fps": args.gpu_fps,
        "seconds": round(seconds, 1),
        "cpu_s": round(cpu, 1),
        "clips_per_s": round(per_s, 1),
        "clips_per_s_by_tenth": by_tenth(samples + [(seconds, args.clips)]),
        "handouts_per_s": round(counts.handouts / seconds, 1),
        "placements_per_s": round(messages.get("place_part", 0) / seconds, 1),
        "outcomes_per_s": round(counts.videos_done / seconds, 1),
        "messages": messages,
        "messages_per_clip": round(work_messages / args.clips, 3),
        "longest_pause_ms": round(1000 * summary.longest_pause_s, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "most_records_waiting_in_simulated_workers": most_waiting[0],
        "their_pickled_mib": round(most_waiting[1] / 2**20, 1),
        "simulated_gpu_busy_share": round(busy, 3),
        "gpus_one_control_plane_feeds": {
            f"{frames}_frame_clips": round(per_s * frames / args.gpu_fps, 1) for frames in (4, 300)
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=400, help="simulated GPUs (50 nodes of 8)")
    parser.add_argument("--frames", type=int, default=4, help="frames per clip")
    parser.add_argument("--gpu-fps", type=float, default=2000.0, help="one GPU's frames/s")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the result here")
    parser.add_argument("--verbose", action="store_true", help="clips done every second")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cluster-sim-", dir=os.environ.get("TMPDIR")) as tmp:
        result = asyncio.run(simulate(args, Path(tmp)))
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
