"""Faults from outside: video workers and decoders SIGKILLed by pid at random moments while each
worker has several videos open (every video committed once, every frame once); a long video's
decoders killed again and again, and its worker (the video still ok, every frame once); the
coordinator killed between a video's commit and its record, and at a random moment of its folds
and merges (the rerun completes, nothing twice).

The synthetic engine with a simulated GPU (each pass held 20 + 1 ms a frame) makes the runs long
enough to be hit, and lets two workers fit on two cores."""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import pytest
from conftest import (
    frames_by_reader,
    ray_worker_pids,
    read_rows,
    read_status,
    synthetic_rows,
    tiny_videos,
)
from conftest import rows_by_name as rows
from conftest import synthetic_run as run

from pipeline.output.manifest import Manifest
from pipeline.runtime.faults import FaultPlan

pytestmark = pytest.mark.slow

VIDEOS, FRAMES = 16, 200
SETTINGS = dict(
    batch_size=8,
    num_actors=2,
    synthetic_latency_ms=(20, 1),
    worker_retries=6,  # the worker attempts of a video: above the kill count
)
TARGETS = ("ray::VideoWorker", "ray::decode_video")


# The faults placed by a hook (not at random moments) need no long run.
SHORT_FRAMES = 50


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    return tiny_videos(tmp_path_factory.mktemp("videos"), [FRAMES] * VIDEOS)


@pytest.fixture(scope="module")
def short_videos(tmp_path_factory):
    return tiny_videos(tmp_path_factory.mktemp("short"), [SHORT_FRAMES] * VIDEOS)


def clean(videos, frames: int) -> list[tuple]:
    """A clean run's rows (the synthetic engine's boxes are fixed)."""
    return synthetic_rows(videos, [frames] * len(videos))


@pytest.mark.parametrize("seed", [2])  # (seeds 1 and 2 pass: checked at 7228047)
def test_random_sigkills_of_workers_and_decoders(ray_local, videos, tmp_path, model_path, seed):
    rng = random.Random(seed)
    result, killed = {}, []

    def run_in_thread():
        try:
            result["record"] = run(videos, tmp_path / "out", model_path, **SETTINGS)
        except BaseException as exc:  # re-raised below, with the kills that led to it
            result["error"] = exc

    run_thread = threading.Thread(target=run_in_thread)
    run_thread.start()
    # the first kill lands while videos are open: once a worker's decoders run (a worker killed
    # before its run started is test_a_worker_killed_between_its_model_loaded_and_the_run_started)
    deadline = time.monotonic() + 120
    while not ray_worker_pids(("ray::decode_video",)) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(rng.uniform(0.2, 1.5))
    while len(killed) < 3 and run_thread.is_alive():
        candidates = sorted(ray_worker_pids(TARGETS).items())
        workers = [c for c in candidates if c[1] == "ray::VideoWorker"]
        # the first kill is a worker's (with its chunk of videos open), the others at random
        pool = workers if not killed and workers else candidates
        if pool:
            pid, kind = rng.choice(pool)
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(kind)
            except ProcessLookupError:
                pass
        time.sleep(rng.uniform(0.3, 1.5))
    run_thread.join(timeout=600)
    assert not run_thread.is_alive()
    if "error" in result:
        raise AssertionError(f"the run raised after killing {killed}") from result["error"]
    record = result["record"]
    assert "ray::VideoWorker" in killed, killed
    assert record["exit_code"] == 0 and record["totals"]["videos_ok"] == VIDEOS
    assert record["totals"]["videos_reassigned"] >= 1
    got = rows(tmp_path / "out")
    assert got == clean(videos, FRAMES)  # every frame once, the clean run's rows
    assert not list((tmp_path / "out" / "detections").glob(".*"))


def test_coordinator_killed_between_a_commit_and_its_record(
    ray_local, short_videos, tmp_path, model_path
):
    from pipeline.errors import RunStalled
    from pipeline.output.manifest import Manifest

    out = tmp_path / "out"
    plan = FaultPlan(marker_dir=str(tmp_path), coordinator_exit_after_commit=True)
    with pytest.raises(RunStalled, match="coordinator's process died"):
        run(short_videos, out, model_path, faults=plan, **SETTINGS)
    assert list(tmp_path.glob("commit-*")), "the fault hook never fired"
    recorded = {vid for vid, r in Manifest(out).records.items() if r.status == "ok"}
    # what any reader of the folder sees (the clips are packed: a part landed before its records)
    files = list((out / "detections").glob("*.parquet"))
    on_disk = set(read_rows(out)["video_id"]) if files else set()
    assert on_disk == recorded and len(recorded) < VIDEOS
    record = run(short_videos, out, model_path, **SETTINGS)
    assert record["exit_code"] == 0 and record["totals"]["videos_skipped"] == len(recorded)
    assert rows(out) == clean(short_videos, SHORT_FRAMES)


@pytest.mark.parametrize("seed", [3])  # (seeds 1 to 4 pass: checked when it was written)
def test_the_coordinator_killed_at_a_random_moment_of_its_folds_and_merges(
    ray_local, tmp_path, model_path, seed
):
    """The coordinator's bookkeeping at a tiny scale (a fold every 6 records, parts merged three
    at a time), so that folds and merges run all through the run; its process SIGKILLed by pid
    a random moment after the first fold: the run stops (``RunStalled``: its coordinator died),
    each stored video is recorded once, and a rerun leaves each video recorded once, ok, and each
    frame once for every reader."""
    from pipeline.errors import RunStalled
    from pipeline.output.readers import read_videos

    rng = random.Random(seed)
    lengths = [3 + (5 * i) % 6 for i in range(240)]
    (tmp_path / "clips").mkdir()
    videos = tiny_videos(tmp_path / "clips", lengths)
    out, result = tmp_path / "out", {}
    plan = FaultPlan(marker_dir=str(tmp_path), fold_every_records=6)
    settings = dict(SETTINGS, synthetic_latency_ms=(5, 1), layout="packed", part_rows=16)

    def run_in_thread():
        try:
            result["record"] = run(videos, out, model_path, faults=plan, **settings)
        except BaseException as exc:  # noqa: BLE001 - checked below
            result["error"] = exc

    thread = threading.Thread(target=run_in_thread)
    thread.start()
    deadline = time.monotonic() + 120
    while not list((out / Manifest.FILE_NAME).glob("part-*")) and time.monotonic() < deadline:
        time.sleep(0.02)  # the first fold has landed: from now on the kill may land anywhere
    time.sleep(rng.uniform(0.0, 1.0))
    pids = ray_worker_pids(("ray::Coordinator",))
    assert thread.is_alive() and len(pids) == 1, "the run must still be going"
    (pid,) = pids
    os.kill(pid, signal.SIGKILL)
    thread.join(timeout=300)
    assert isinstance(result.get("error"), RunStalled), result
    stored = read_videos(out)
    assert 0 < len(stored) < len(videos) and not stored["video_id"].duplicated().any()

    record = run(videos, out, model_path, **dict(settings, synthetic_latency_ms=None))
    assert record["exit_code"] == 0 and record["totals"]["videos_skipped"] >= 1
    assert rows(out) == synthetic_rows(videos, lengths)
    for name, frame in frames_by_reader(out, ray_data=False).items():
        assert not frame.duplicated(["video_id", "frame_index"]).any(), name
        assert len(frame) == sum(lengths), name
    stored = read_videos(out)
    assert len(stored) == len(videos) and set(stored["status"]) == {"ok"}


@pytest.mark.parametrize("call", ["ready", "start_run"])
def test_a_worker_killed_between_its_model_loaded_and_the_run_started(
    ray_local, short_videos, tmp_path, model_path, call
):
    """The driver asks a worker that died in ``ready`` again; the coordinator gives a worker
    that died in ``start_run`` its videos once Ray has restarted it."""
    plan = FaultPlan(marker_dir=str(tmp_path), actor_exit_in=call)
    record = run(short_videos, tmp_path / "out", model_path, faults=plan, **SETTINGS)
    assert list(tmp_path.glob(f"exit-in-{call}-*")), "the fault hook never fired"
    assert record["exit_code"] == 0 and record["totals"]["videos_ok"] == VIDEOS
    assert rows(tmp_path / "out") == clean(short_videos, SHORT_FRAMES)


@pytest.mark.timeout(300)  # without the deadline this run waits for the hung worker for an hour
def test_a_worker_hung_in_a_forward_pass_is_restarted_and_its_videos_go_to_another(
    ray_local, short_videos, tmp_path, model_path
):
    plan = FaultPlan(marker_dir=str(tmp_path), actor_hang_after_batches=3)
    record = run(
        short_videos, tmp_path / "out", model_path, faults=plan, batch_timeout_s=5, **SETTINGS
    )
    assert list(tmp_path.glob("hang-*")), "the fault hook never fired"
    totals = record["totals"]
    assert record["exit_code"] == 0 and totals["actors_hung"] == 1
    assert totals["videos_ok"] == VIDEOS and totals["videos_reassigned"] >= 1
    assert rows(tmp_path / "out") == clean(short_videos, SHORT_FRAMES)


LONG = 3200  # frames of the long video: about 15 s of simulated GPU at batches of 8


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    return tiny_videos(tmp_path_factory.mktemp("long"), [LONG])


def _kill_when_running(title: str, deadline: float, killed: set[int], after_s: float = 0.0) -> bool:
    """SIGKILL a process titled ``title`` that was not killed before, ``after_s`` seconds after it
    is first seen running (False: none ran before ``deadline``). A process SIGKILLed a moment ago
    can still be listed."""
    first_seen: dict[int, float] = {}
    while time.monotonic() < deadline:
        now = time.monotonic()
        for pid in sorted(set(ray_worker_pids((title,))) - killed):
            if now - first_seen.setdefault(pid, now) < after_s:
                continue
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
                return True
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("seed", [1])  # (seeds 1 and 2 pass: checked at 7228047)
def test_a_long_videos_decoders_killed_again_and_again_and_its_worker_leave_it_ok(
    ray_local, long_video, tmp_path, model_path, seed
):
    """Three decoder kills in one attempt (the default retry budget is two deaths in a row
    without a batch: each of these delivered batches first), then the worker, then its new
    attempt's decoder: the video is ok, every frame once."""
    rng = random.Random(seed)
    result: dict = {}
    settings = dict(batch_size=8, num_actors=1, synthetic_latency_ms=(30, 1))

    def run_in_thread():
        try:
            result["record"] = run(long_video, tmp_path / "out", model_path, **settings)
        except BaseException as exc:  # re-raised below
            result["error"] = exc

    thread = threading.Thread(target=run_in_thread)
    thread.start()
    killed: list[str] = []
    pids: set[int] = set()
    deadline = time.monotonic() + 120
    for title in ["ray::decode_video"] * 3 + ["ray::VideoWorker", "ray::decode_video"]:
        # each decoder runs for a while before its kill, so it delivers batches (a decoder killed
        # as it starts, twice in a row, would rightly count toward giving up, and on a loaded
        # machine a restart can take longer than a fixed pause); before the worker's kill, long
        # enough for a video given up after the third death to be recorded (the run is over)
        time.sleep(3 if title == "ray::VideoWorker" else 0)
        if not _kill_when_running(title, deadline, pids, after_s=rng.uniform(1.0, 2.0)):
            break
        killed.append(title)
    thread.join(timeout=600)
    assert not thread.is_alive()
    if "error" in result:
        raise AssertionError(f"the run raised after killing {killed}") from result["error"]
    assert len(killed) == 5, f"the run ended after only {killed}"
    record = result["record"]
    assert record["exit_code"] == 0, read_status(tmp_path / "out")
    assert record["totals"]["videos_ok"] == 1 and record["totals"]["frames"] == LONG
    assert rows(tmp_path / "out") == synthetic_rows(long_video, [LONG])
