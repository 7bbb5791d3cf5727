"""The command line as a separate process: SIGKILL of the driver, Ctrl-C, and a long run's memory.

Each run starts its own local Ray (no shared instance in this module), so that killing the
driver is as real as it gets. A stopped run's Ray processes must end on their own: its daemons
and workers at once, its agents (a minute or so after a SIGKILL) by the end of the module.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import frames_by_reader, part_files, read_rows, tiny_videos, write_people_clips

from pipeline.media.samples import write_video

pytestmark = pytest.mark.slow


def command(inputs, out, model, *extra):
    return [
        sys.executable,
        "-m",
        "pipeline",
        "run",
        *map(str, inputs),
        "--output",
        str(out),
        "--model",
        model,
        "--batch-size",
        "4",
        "--no-progress",
        *extra,
    ]


def start(args) -> subprocess.Popen:
    env = {**os.environ, "YOLO_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    # Default SIGINT in the child, as in a terminal's foreground: a test run launched in the
    # background of a shell would otherwise pass on an ignored SIGINT.
    return subprocess.Popen(
        args,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def run_to_end(args, timeout=600) -> subprocess.CompletedProcess:
    """A run of the command to its end; it must succeed."""
    done = subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "YOLO_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def stop_orphaned_ray():
    subprocess.run(
        [str(Path(sys.executable).with_name("ray")), "stop", "--force"], capture_output=True
    )


def ok_videos(out: Path) -> set[str]:
    """Complete videos as the next run sees them: videos.parquet and the log not yet folded into it."""
    from pipeline.output.manifest import Manifest

    if not out.exists():
        return set()
    return {vid for vid, r in Manifest(out).records.items() if r.status == "ok"}


def wait_for(condition, proc, timeout=300):
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.2)


CLIP_FRAMES = 32


@pytest.fixture(scope="module")
def videos(tmp_path_factory, people_mp4):
    return write_people_clips(
        tmp_path_factory.mktemp("kill"), people_mp4, count=5, length=CLIP_FRAMES, step=5
    )


@pytest.fixture(scope="module")
def clean_output(tmp_path_factory, videos, model_path):
    out = tmp_path_factory.mktemp("clean") / "out"
    run_to_end(command(videos, out, model_path))
    return comparable(out)


def comparable(out):
    """Rows in a fixed order, video_id included: the same videos (same paths) have the same ids,
    so a row that landed under the wrong video shows up here."""
    return read_rows(out).sort_values(["video_id", "frame_index"]).reset_index(drop=True)


def ray_processes(since: float) -> dict[int, str]:
    """Ray's own processes on this machine (its daemons and workers) started at ``since`` or
    later (those of earlier test modules' Ray may still be winding down): command lines by pid."""
    import psutil

    found = {}
    for proc in psutil.process_iter(["cmdline", "create_time"]):
        if proc.info["create_time"] < since:
            continue
        line = " ".join(proc.info["cmdline"] or [])
        if any(
            key in line
            for key in ("raylet", "gcs_server", "ray::", "default_worker.py", "dashboard.py")
        ):
            found[proc.pid] = line[:120]
    return found


class Orphans:
    """After the driver is gone, Ray's processes must go too, before any `ray stop --force`
    could hide them: its daemons and workers within seconds (``check_core``), its dashboard and
    runtime-env agents (which wait about a minute for the dead GCS) within a few minutes
    (``check_agents``). The agents are those of the stopped run only: a rerun may start meanwhile
    (it does not need them gone)."""

    def __init__(self, since: float):
        self.since, self.stopped = since, time.time()
        self.pids = ray_processes(since)

    def _left(self, agents: bool) -> list[str]:
        import psutil

        alive = {pid: line for pid, line in self.pids.items() if psutil.pid_exists(pid)}
        return [line for line in alive.values() if agents or "Agent" not in line]

    def check_core(self, timeout: float = 30) -> None:
        while (left := self._left(agents=False)) and time.time() - self.stopped < timeout:
            time.sleep(1)
        assert not left, f"processes outlived the driver: {left[:5]}"

    def check_agents(self, timeout: float = 180) -> None:
        while (left := self._left(agents=True)) and time.time() - self.stopped < timeout:
            time.sleep(2)
        assert not left, f"processes outlived the driver by {timeout:.0f} s: {left[:5]}"


@pytest.fixture(scope="module")
def stopped_runs():
    """The stopped runs' Ray processes (``Orphans``), their agents checked at the end of the
    module: meanwhile the other tests run (a run does not need an earlier run's agents gone),
    and no ``ray stop --force`` runs before then unless a test failed."""
    stopped: list[Orphans] = []
    yield stopped
    try:
        for orphans in stopped:
            orphans.check_agents()
    finally:
        stop_orphaned_ray()


def stopped(started: float, stopped_runs: list) -> None:
    """After a driver is gone: its Ray daemons and workers must go at once (checked now), its
    agents within a few minutes (checked at the end of the module)."""
    orphans = Orphans(started)
    try:
        orphans.check_core()
    except AssertionError:
        stop_orphaned_ray()
        raise
    stopped_runs.append(orphans)


def test_driver_sigkill_then_rerun_finishes_without_redoing_or_duplicating(
    tmp_path, videos, model_path, clean_output, stopped_runs
):
    """SIGKILL of the driver once a video is complete and before all are (one open video at a
    time): nothing is left running, each video's outcome was recorded as it ended (the workers
    tell them), so the rerun skips those, and its rows are a clean run's."""
    out = tmp_path / "out"
    started = time.time() - 1  # process start times are rounded
    extra = ["--layout", "per-video"]
    proc = start(command(videos, out, model_path, "--max-open-videos", "1", *extra))
    try:
        wait_for(lambda: len(ok_videos(out)) >= 1, proc)
    finally:
        proc.kill()
        proc.wait()
    stopped(started, stopped_runs)
    done_before_kill = ok_videos(out)
    assert 1 <= len(done_before_kill) < len(videos), "the kill must land mid-run"
    run_to_end(command(videos, out, model_path, *extra))  # while the agents wind down
    record = json.loads((out / "run.json").read_text())
    assert record["totals"]["videos_skipped"] >= len(done_before_kill)  # not decoded again
    assert record["totals"]["frames"] <= CLIP_FRAMES * (len(videos) - len(done_before_kill))
    assert not read_rows(out).duplicated(["video_id", "frame_index"]).any()
    assert [p for p in out.rglob("*") if p.name.startswith(".tmp-")] == []
    pd.testing.assert_frame_equal(comparable(out), clean_output)


@pytest.mark.parametrize("seed", [1])
def test_the_driver_killed_during_a_packed_run_then_a_rerun_each_frame_once(
    tmp_path, model_path, seed, stopped_runs
):
    """SIGKILL of the driver a random moment after the first part file landed (parts of 64
    rows: several in the run): the rerun leaves each frame once for every reader (a part put in
    place before its records is taken apart by the next fold), and no hidden file."""
    import random

    lengths = [3 + (7 * i) % 40 for i in range(30)]  # 3 to 42 frames
    videos = tiny_videos(tmp_path, lengths)
    out = tmp_path / "out"
    extra = ["--imgsz", "160", "--part-rows", "64", "--layout", "packed"]
    started = time.time() - 1  # process start times are rounded
    proc = start(command(videos, out, model_path, *extra))
    deadline = time.time() + 300
    try:
        while not ((out / "detections").is_dir() and part_files(out)):
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline
            time.sleep(0.05)
        time.sleep(random.Random(seed).uniform(0, 2.0))
    finally:
        proc.kill()
        proc.wait()
    stopped(started, stopped_runs)
    run_to_end(command(videos, out, model_path, *extra))
    for name, frame in frames_by_reader(out, ray_data=False).items():
        assert not frame.duplicated(["video_id", "frame_index"]).any(), name
        assert len(frame) == sum(lengths), name
    assert [p for p in out.rglob("*") if p.name.startswith(".tmp-")] == []


def test_interrupt_stops_cleanly_and_says_how_to_resume(
    tmp_path, videos, model_path, clean_output, stopped_runs
):
    """Ctrl-C (SIGINT), then SIGTERM (``ray job stop``, a scheduler) on the rerun: each a clean
    stop that keeps the videos done so far and says how to resume; then a resume to the end."""
    out = tmp_path / "out"
    # each clip's part written as it ends: one is done early
    extra = ["--max-open-videos", "1", "--part-rows", "1"]
    kept: set[str] = set()
    for signum, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        started = time.time() - 1  # process start times are rounded
        proc = start(command(videos, out, model_path, *extra))
        wait_for(lambda: len(ok_videos(out)) > len(kept), proc)  # noqa: B023 - called here
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=120)
        stopped(started, stopped_runs)
        assert proc.returncode == code, stderr[-2000:]
        assert "Run the same command again to resume" in stderr.strip().splitlines()[-1]
        assert [p for p in out.rglob("*") if p.name.startswith(".tmp-")] == []
        now_kept = ok_videos(out)
        assert now_kept > kept  # what the earlier stop kept, and more
        assert set(read_rows(out)["video_id"]) == now_kept  # only complete videos are visible
        kept = now_kept
        # Its own record says it was stopped, and so does its last progress file.
        record = json.loads(sorted((out / "runs").glob("*.json"))[-1].read_text())
        assert record["stopped_by"] == signal.Signals(signum).name and record["exit_code"] == code
        assert record["totals"]["videos"] >= 1 and not (out / "run.json").exists()
        progress = json.loads((out / "progress.json").read_text())
        assert progress["state"] == "stopped" and progress["exit_code"] == code

    run_to_end(command(videos, out, model_path))  # while the agents wind down
    pd.testing.assert_frame_equal(comparable(out), clean_output)


LONG_RUN_FRAMES = 6_000


def test_long_run_memory_stays_flat(tmp_path, model_path):
    """6,000 small frames through the whole pipeline: actor and coordinator RSS must not grow."""
    import numpy as np

    video = tmp_path / "long.mp4"
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    frames = (np.roll(base, i, axis=1) for i in range(LONG_RUN_FRAMES))
    write_video(video, frames, options={"preset": "ultrafast"})
    out = tmp_path / "out"
    run_to_end(
        command([video], out, model_path, "--imgsz", "64", "--batch-size", "32"), timeout=900
    )
    record = json.loads((out / "run.json").read_text())
    assert record["totals"]["frames"] == LONG_RUN_FRAMES
    mib = 1024 * 1024
    roles = {
        "coordinator": record["memory"]["coordinator"],
        **{f"actor{i}": a for i, a in enumerate(record["memory"]["actors"])},
    }
    for role, mem in roles.items():
        growth = (mem["last_bytes"] - mem["warm_bytes"]) / mib
        print(
            f"{role}: start {mem['start_bytes'] / mib:.0f} MiB, warm {mem['warm_bytes'] / mib:.0f} MiB, "
            f"end {mem['last_bytes'] / mib:.0f} MiB, growth after warm-up {growth:.1f} MiB"
        )
        assert growth < 50, role
    # The coordinator's RSS over the run (run.json's timeline): flat from a fifth of the frames on.
    # Up to nine tenths of the frames: the video's commit, record and videos.parquet's first
    # write come at the end of a one-video run (once per run, not a growth with the frames).
    points = [
        p
        for p in record["timeline"]["points"]
        if p["coordinator_rss"] and p["frames_done"] <= 0.9 * LONG_RUN_FRAMES
    ]
    settled = next(p for p in points if p["frames_done"] >= 0.2 * LONG_RUN_FRAMES)
    drift = (points[-1]["coordinator_rss"] - settled["coordinator_rss"]) / mib
    print(
        f"coordinator drift from {settled['frames_done']} to {points[-1]['frames_done']} frames: {drift:.1f} MiB"
    )
    assert abs(drift) < 20
