"""The command line's contract: help, exit statuses and one-line errors for user mistakes.

Every mistake runs as a real subprocess, as a user types it. Ray is made unimportable in those
processes (a stand-in ``ray`` package that raises on import comes first on PYTHONPATH): a
mistake that is found without Ray cannot have started it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.inference.detections import BatchResult, Detections
from pipeline.media.samples import write_video
from pipeline.media.source import video_id_for
from pipeline.output.manifest import Manifest, VideoRecord
from pipeline.output.writer import VideoResultWriter

USAGE_SECONDS = 2.0  # a usage error is reported within this, Python's start-up included


def pipeline_cli(*args, cwd=None, block_ray: Path | None = None, timeout=120):
    env = {**os.environ, "YOLO_OFFLINE": "1"}
    if block_ray is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(block_ray), env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
    )
    return done, time.monotonic() - started


@pytest.fixture(scope="session")
def no_ray(tmp_path_factory) -> Path:
    """A folder whose ``ray`` package fails to import: put first on PYTHONPATH."""
    folder = tmp_path_factory.mktemp("no_ray")
    (folder / "ray").mkdir()
    (folder / "ray" / "__init__.py").write_text('raise ImportError("this process imported ray")\n')
    return folder


def test_help_explains_inputs_outputs_and_exit_statuses():
    done, _ = pipeline_cli("run", "--help")
    assert done.returncode == 0
    for text in (
        "@list.txt",
        "videos.parquet",
        "run.json",
        "--stride",
        "--device",
        "exit status",
        "resume",
    ):
        assert text in done.stdout


def test_bench_help_gives_every_option_a_meaning_and_default():
    done, _ = pipeline_cli("bench", "--help")
    assert done.returncode == 0
    options = done.stdout[done.stdout.index("options:") :]
    for option in ("--imgsz", "--conf", "--iou", "--stride", "--batch-size"):
        # the option's entry: from its name to the next option's
        entry = re.search(rf"^  {option} .*?(?=^  -)", options, re.S | re.M).group(0)
        assert re.search(r"\w+ .*\(default [\d.]+\)", " ".join(entry.split())), entry


@dataclass
class Mistake:
    """One user mistake: the command, what the single error line must say, and the exit status."""

    argv: list[str]
    says: list[
        str
    ]  # fragments of the error line: the problem, and what to do where there is a hint
    code: int = 2
    uses_ray: bool = False  # found only once the model loads in a YoloActor
    writes: list[str] = field(default_factory=lambda: ["{tmp}/o"])  # must not exist afterwards


class NotAYoloModel:
    """A pickled object that carries class names but is no ultralytics model."""

    names = {0: "thing"}


MISTAKES = {
    # argparse and option ranges
    "unknown option": Mistake(
        ["run", "{video}", "-o", "{tmp}/o", "--bogus"], ["unrecognized arguments: --bogus"]
    ),
    "no --output": Mistake(["run", "{video}"], ["--output"]),
    "bad --device": Mistake(
        ["run", "{video}", "-o", "{tmp}/o", "--device", "tpu"], ["invalid choice: 'tpu'"]
    ),
    "--conf 2": Mistake(
        ["run", "{video}", "-o", "{tmp}/o", "--conf", "2"], ["--conf must be between 0 and 1"]
    ),
    "--imgsz 100": Mistake(
        ["run", "{video}", "-o", "{tmp}/o", "--imgsz", "100"], ["--imgsz must be a multiple of 32"]
    ),
    "--batch-size 0": Mistake(
        ["run", "{video}", "-o", "{tmp}/o", "--batch-size", "0"], ["--batch-size must be between"]
    ),
    "--stride 0": Mistake(
        ["run", "{video}", "-o", "{tmp}/o", "--stride", "0"], ["--stride must be at least 1"]
    ),
    "--fps 0": Mistake(
        ["run", "{video}", "-o", "{tmp}/o", "--fps", "0"], ["--fps must be positive"]
    ),
    "--fps -1": Mistake(
        ["run", "{video}", "-o", "{tmp}/o", "--fps", "-1"], ["--fps must be positive"]
    ),
    "--fps with --stride": Mistake(
        ["run", "{video}", "-o", "{tmp}/o", "--fps", "1", "--stride", "2"],
        ["--fps and --stride are exclusive"],
    ),
    "--imgsz 10^12": Mistake(
        ["run", "{video}", "-o", "{tmp}/o", "--imgsz", "1000000000000"],
        ["--imgsz must be at most 4096"],
    ),
    "--num-actors 10^6": Mistake(
        ["run", "{video}", "-o", "{tmp}/o", "--num-actors", "1000000"],
        ["--num-actors must be at most 1024"],
    ),
    "--stall-timeout 10^9": Mistake(
        ["run", "{video}", "-o", "{tmp}/o", "--stall-timeout", "1e9"],
        ["--stall-timeout must be at most 86400"],
    ),
    "empty --classes": Mistake(
        ["run", "{video}", "-o", "{tmp}/o", "--classes", ","], ["--classes is empty", "person,car"]
    ),
    # inputs
    "misspelled input": Mistake(
        ["run", "{tmp}/clip.mpp4", "-o", "{tmp}/o"], ["input not found", "did you mean", "clip.mp4"]
    ),
    "missing input folder": Mistake(
        ["run", "{tmp}/nowhere/a.mp4", "-o", "{tmp}/o"], ["input not found", "no such folder"]
    ),
    "empty directory": Mistake(
        ["run", "{tmp}/empty_dir", "-o", "{tmp}/o"], ["no video files found"]
    ),
    "missing @list": Mistake(
        ["run", "@{tmp}/missing.txt", "-o", "{tmp}/o"], ["cannot read input list"]
    ),
    # the model and its classes
    "offline default model": Mistake(
        ["run", "{video}", "-o", "{tmp}/o", "--model", "yolo11n.pt"],
        ["cannot be downloaded", "Pass --model PATH"],
    ),
    "missing model": Mistake(
        ["run", "{video}", "-o", "{tmp}/o", "--model", "{tmp}/nope.pt"],
        ["model not found", "Pass --model PATH"],
    ),
    "corrupt .pt": Mistake(
        ["run", "{video}", "-o", "{tmp}/o", "--model", "{tmp}/garbage.pt"],
        ["not a readable PyTorch checkpoint", "Pass --model PATH"],
    ),
    ".pt without a model": Mistake(
        ["run", "{video}", "-o", "{tmp}/o", "--model", "{tmp}/no_model.pt"],
        ["not a YOLO checkpoint", "Pass --model PATH"],
    ),
    "--model an image": Mistake(
        ["run", "{video}", "-o", "{tmp}/o", "--model", "{tmp}/frame.jpg"],
        ["is not a model file", "Pass --model PATH"],
    ),
    "--model a text file": Mistake(
        ["run", "{video}", "-o", "{tmp}/o", "--model", "{tmp}/notes.txt"],
        ["is not a model file", "Pass --model PATH"],
    ),
    "--model the video": Mistake(
        ["run", "{video}", "-o", "{tmp}/o", "--model", "{video}"], ["is not a model file"]
    ),
    "--model an empty file": Mistake(
        ["run", "{video}", "-o", "{tmp}/o", "--model", "{tmp}/empty.pt"], ["is an empty file"]
    ),
    "--model a folder without an export": Mistake(
        ["run", "{video}", "-o", "{tmp}/o", "--model", "{tmp}/empty_dir"],
        ["folder with no exported model in it"],
    ),
    "--classes 99": Mistake(
        ["run", "{video}", "-o", "{tmp}/o", "--classes", "99", "--model", "{model}"],
        ["the model has no class id 99", "ids 0 to 79"],
    ),
    "--classes persn": Mistake(
        ["run", "{video}", "-o", "{tmp}/o", "--classes", "persn", "--model", "{model}"],
        ["no class named 'persn'", "did you mean 'person'"],
    ),
    # the output
    "output under a file": Mistake(
        ["run", "{video}", "-o", "{video}/o", "--model", "{model}"],
        ["is not writable"],
        writes=["{video}/o"],
    ),
    # a model that only fails once an actor loads it: one line too, and no output folder left
    "unloadable checkpoint": Mistake(
        ["run", "{video}", "-o", "{tmp}/o", "--model", "{tmp}/not_yolo.pt", "--device", "cpu"],
        ["cannot load model", "not_yolo.pt"],
        uses_ray=True,
    ),
    # render
    "render: output folder missing": Mistake(
        ["render", "{video}", "--results", "{results}", "-o", "{tmp}/missing_dir/x.mp4"],
        ["missing_dir", "does not exist", "create it first"],
        writes=["{tmp}/missing_dir"],
    ),
    "render: output is the input": Mistake(
        ["render", "{video}", "--results", "{results}", "-o", "{video}"],
        ["is the input video", "another file name"],
        writes=[],
    ),
    "render: unknown class": Mistake(
        ["render", "{video}", "--results", "{results}", "-o", "{tmp}/x.mp4", "--classes", "persn"],
        ["the run's model has no class named 'persn'", "did you mean 'person'"],
        writes=["{tmp}/x.mp4"],
    ),
    "render: missing video": Mistake(
        ["render", "{tmp}/missing.mp4", "--results", "{results}", "-o", "{tmp}/x.mp4"],
        ["file not found"],
        writes=["{tmp}/x.mp4"],
    ),
    "render: --end before --start": Mistake(
        [
            "render",
            "{video}",
            "--results",
            "{results}",
            "-o",
            "{tmp}/x.mp4",
            "--start",
            "5",
            "--end",
            "1",
        ],
        ["--end must not be before --start"],
        writes=["{tmp}/x.mp4"],
    ),
    "render: not a run output": Mistake(
        ["render", "{video}", "--results", "{tmp}/nothing-here", "-o", "{tmp}/x.mp4"],
        ["nothing-here", "does not exist", "--output folder of a run"],
        writes=["{tmp}/x.mp4"],
    ),
    # report
    "report: output folder missing": Mistake(
        ["report", "{results}", "-o", "{tmp}/missing_dir/r.html"],
        ["missing_dir", "does not exist"],
        writes=["{tmp}/missing_dir"],
    ),
    "report: not a run output": Mistake(
        ["report", "{tmp}/nothing-here"],
        ["does not exist", "--output folder of a run"],
        writes=["{tmp}/nothing-here"],
    ),
    "report: --top-classes 0": Mistake(
        ["report", "{results}", "--top-classes", "0"],
        ["at least 1"],
        writes=["{results}/report.html"],
    ),
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, model_path) -> dict:
    """A video, a small run output made without Ray (for render and report), and bad models."""
    import torch

    tmp = tmp_path_factory.mktemp("mistakes")
    video = tmp / "clip.mp4"
    write_video(video, [np.full((48, 64, 3), 90, np.uint8)] * 3)
    (tmp / "empty_dir").mkdir()
    (tmp / "garbage.pt").write_bytes(b"not a checkpoint at all")
    (tmp / "empty.pt").write_bytes(b"")
    (tmp / "notes.txt").write_text("not a model")
    cv2.imwrite(str(tmp / "frame.jpg"), np.full((48, 64, 3), 90, np.uint8))
    torch.save({"weights": torch.zeros(2)}, tmp / "no_model.pt")
    torch.save({"model": NotAYoloModel()}, tmp / "not_yolo.pt")

    results = tmp / "results"
    vid = video_id_for(str(video))
    names = {0: "person", 2: "car"}
    writer = VideoResultWriter(results, vid, names)
    idx = np.arange(3)
    writer.add(
        BatchResult(
            vid,
            0,
            idx,
            idx / 30,
            [1, 0, 1],
            Detections(np.array([[4, 4, 20, 20]] * 2, float), np.array([0.9, 0.8]), [0, 2]),
        )
    )
    writer.commit()
    manifest = Manifest(results)
    manifest.class_names = names
    manifest.update(
        VideoRecord(
            vid,
            str(video),
            "ok",
            frames_processed=3,
            num_detections=2,
            class_counts=writer.class_totals(),
        )
    )
    manifest.save()
    return {"tmp": tmp, "video": video, "results": results, "model": model_path}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.slow) if m.uses_ray else name
        for name, m in MISTAKES.items()
    ],
)
def test_each_mistake_gets_one_line_and_leaves_nothing(name, workspace, no_ray):
    mistake = MISTAKES[name]
    fill = lambda text: text.format(**workspace)  # noqa: E731
    leftovers = [Path(fill(w)) for w in mistake.writes]
    before = {path: path.exists() for path in leftovers}
    done, seconds = pipeline_cli(
        *map(fill, mistake.argv),
        cwd=workspace["tmp"],
        block_ray=None if mistake.uses_ray else no_ray,
        timeout=300,
    )
    print(f"{name}: exit {done.returncode} in {seconds:.2f} s: {done.stderr.strip()}")
    assert done.returncode == mistake.code, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for fragment in mistake.says:
        assert fragment in lines[0], (fragment, lines[0])
    assert "Traceback" not in done.stderr and done.stdout == ""
    for path in leftovers:
        assert path.exists() == before[path], f"{path} left behind"
    if not mistake.uses_ray:
        assert "this process imported ray" not in done.stderr
        assert seconds < USAGE_SECONDS, f"{name} took {seconds:.2f} s"


def test_a_list_entry_that_is_missing_is_a_failed_video_not_a_usage_error(
    tmp_path, no_ray, model_path
):
    """Only inputs named on the command line are checked up front; a @list's entries are videos
    to report. With nothing else to do, no Ray is started for it."""
    listing = tmp_path / "list.txt"
    listing.write_text("gone.mp4\n")
    done, _ = pipeline_cli(
        "run", f"@{listing}", "-o", tmp_path / "o", "--model", model_path, block_ray=no_ray
    )
    assert done.returncode == 3, done.stderr
    assert "gone.mp4: file not found" in done.stderr
    import pyarrow.parquet as pq

    rows = pq.read_table(tmp_path / "o" / "videos.parquet").to_pylist()
    assert [(Path(r["path"]).name, r["status"], r["error"]) for r in rows] == [
        ("gone.mp4", "failed", "file not found")
    ]


# ---- with Ray: a rerun with nothing to do, and Ctrl-C while Ray starts ----------------------------


@pytest.mark.slow
def test_a_rerun_with_nothing_to_do_starts_nothing_and_keeps_the_record(
    tmp_path, clips, model_path, no_ray
):
    import json

    out = tmp_path / "out"
    argv = [
        "run",
        clips["tiny_17"],
        "--output",
        out,
        "--model",
        model_path,
        "--device",
        "cpu",
        "--no-progress",
    ]
    first, _ = pipeline_cli(*argv, timeout=600)
    assert first.returncode == 0, first.stderr
    record = json.loads((out / "run.json").read_text())
    assert record["totals"]["frames"] == 17 and record["did_work"]

    again, seconds = pipeline_cli(*argv, block_ray=no_ray)  # Ray cannot even be imported here
    print(f"rerun: {seconds:.2f} s: {again.stdout.strip()}")
    assert again.returncode == 0, again.stderr
    assert "All 1 videos already done" in again.stdout and again.stderr == ""
    assert seconds < 3.0
    assert json.loads((out / "run.json").read_text()) == record  # the run that did the work
    runs = sorted((out / "runs").iterdir())
    assert len(runs) == 2
    assert [json.loads(r.read_text())["did_work"] for r in runs] == [True, False]
    assert json.loads(runs[0].read_text())["totals"] == record["totals"]


@pytest.mark.slow
@pytest.mark.parametrize("delay_s", [0.8, 2.0, 3.0])
def test_ctrl_c_while_ray_starts_exits_130_in_one_line(tmp_path, clips, model_path, delay_s):
    """Ctrl-C reaches the whole foreground process group, as a terminal sends it."""
    import signal

    def ray_processes() -> set[int]:
        listing = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
        return {
            int(line.split()[0])
            for line in listing.splitlines()
            if any(name in line for name in ("raylet", "gcs_server", "ray::"))
        }

    before = ray_processes()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline",
            "run",
            str(clips["small_h264"]),
            "--output",
            str(tmp_path / "o"),
            "--model",
            model_path,
            "--device",
            "cpu",
            "--no-progress",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "YOLO_OFFLINE": "1"},
        # default SIGINT, as in a terminal's foreground (a suite launched in the background of
        # a shell passes on an ignored SIGINT, and the run would finish as if never interrupted)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(delay_s)
    os.killpg(process.pid, signal.SIGINT)
    # Ray's dashboard interrupted while it starts hangs, and ray.init() waits a minute for it:
    # the run must not.
    _, stderr = process.communicate(timeout=30)
    print(f"Ctrl-C after {delay_s} s: exit {process.returncode}: {stderr.strip()}")
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert (
        len(lines) == 1
        and "interrupted" in lines[0]
        and "run the same command again" in lines[0].lower()
    )
    deadline = time.monotonic() + 20
    while ray_processes() - before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not ray_processes() - before, "Ray processes left running"


@pytest.mark.slow
def test_a_run_in_a_terminal_prints_only_its_own_output(tmp_path, clips, model_path):
    """On a terminal: no Ray token-authentication warning, no stray reset code after the summary,
    and with --track the summary names the tracks and where they are."""
    import pty
    import select

    main_fd, terminal = pty.openpty()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline",
            "run",
            str(clips["tiny_17"]),
            "--output",
            str(tmp_path / "o"),
            "--model",
            model_path,
            "--device",
            "cpu",
            "--track",
        ],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env={**os.environ, "YOLO_OFFLINE": "1"},
        close_fds=True,
    )
    os.close(terminal)
    screen = b""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if select.select([main_fd], [], [], 1.0)[0]:
            try:
                chunk = os.read(main_fd, 65536)
            except OSError:  # the terminal closed: the process has ended
                break
            if not chunk:
                break
            screen += chunk
        elif process.poll() is not None:
            break
    os.close(main_fd)
    assert process.wait(timeout=60) == 0, screen.decode(errors="replace")[-3000:]
    text = screen.decode(errors="replace")
    print(text[-1500:])
    assert "Token authentication" not in text and "WARNING" not in text
    assert not text.rstrip().endswith("\x1b[0m") and "\x1b[0m" not in text.split("Videos:")[-1]
    assert "Tracks: " in text and "/tracks" in text
    assert text.rstrip().splitlines()[-1].startswith("Output: ")


@pytest.mark.slow
def test_a_second_run_on_an_output_in_use_stops_at_once_and_leaves_the_first_alone(
    tmp_path, people_mp4, model_path, no_ray
):
    import cv2

    from pipeline.media.samples import read_frames

    video = tmp_path / "long.mp4"
    write_video(video, [cv2.resize(f, (320, 180)) for f in read_frames(people_mp4, limit=240)])
    out = tmp_path / "out"
    argv = [
        sys.executable,
        "-m",
        "pipeline",
        "run",
        str(video),
        "--output",
        str(out),
        "--model",
        model_path,
        "--device",
        "cpu",
        "--no-progress",
    ]
    first = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "YOLO_OFFLINE": "1"},
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / ".lease").exists():  # the first run has begun
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()[1][
                -2000:
            ]
            time.sleep(0.1)
        second, seconds = pipeline_cli(*argv[3:], block_ray=no_ray)
        print(f"second run: exit {second.returncode} in {seconds:.2f} s: {second.stderr.strip()}")
        assert second.returncode == 2 and seconds < USAGE_SECONDS
        assert f"in use by another run (pid {first.pid} on " in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1 and "Traceback" not in second.stderr
    finally:
        _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr[-2000:]
    import pyarrow.parquet as pq

    assert pq.read_table(out / "detections").num_rows == 240
    assert not (out / ".lease").exists()


def test_listing_the_bad_videos_at_the_end_never_ends_in_a_traceback(monkeypatch, capsys):
    """The run is over and its exit status decided: an unreadable videos.parquet (object storage
    gone meanwhile) is said in one line, with credentials and query redacted."""
    import pipeline.output.readers
    from pipeline.cli.main import _print_bad_videos

    def unreachable(output, limit):
        raise OSError(f"When reading {output}: connection refused")

    monkeypatch.setattr(pipeline.output.readers, "videos_not_ok", unreachable)
    _print_bad_videos("s3://KEY:SECRET@bucket/out?endpoint_override=10.0.0.1:9000")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "could not list them" in err and "connection refused" in err
    assert "SECRET" not in err
