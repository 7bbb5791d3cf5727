"""The command line's contract: help, exit statuses and one-line errors for user mistakes.
Every case here fails before Ray starts, so they run as real subprocesses."""

import os
import subprocess
import sys

import pytest


def pipeline_cli(*args, cwd=None):
    env = {**os.environ, "YOLO_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120)


def test_help_explains_inputs_outputs_and_exit_statuses():
    done = pipeline_cli("run", "--help")
    assert done.returncode == 0
    for text in ("@list.txt", "videos.parquet", "run.json", "--stride", "--device", "exit status", "resume"):
        assert text in done.stdout


@pytest.fixture
def video(tmp_path):
    path = tmp_path / "v.mp4"
    path.write_bytes(b"not checked before the model")
    return path


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "{video}", "--output", "{tmp}/o", "--bogus"], "unrecognized arguments: --bogus"),
        (["run", "{video}"], "--output"),
        (["run", "{video}", "--output", "{tmp}/o", "--device", "tpu"], "invalid choice: 'tpu'"),
        (["run", "{video}", "--output", "{tmp}/o", "--conf", "2"], "--conf must be between 0 and 1"),
        (["run", "{video}", "--output", "{tmp}/o", "--imgsz", "100"], "--imgsz must be a multiple of 32"),
        (["run", "{tmp}/empty_dir", "--output", "{tmp}/o"], "no video files found"),
        (["run", "@{tmp}/missing.txt", "--output", "{tmp}/o"], "cannot read input list"),
        (["run", "{video}", "--output", "{video}/o"], "is not writable"),
        (["run", "{video}", "--output", "{tmp}/o", "--model", "yolo11n.pt"], "Pass --model PATH"),
        (["run", "{video}", "--output", "{tmp}/o", "--model", "{tmp}/nope.pt"], "model not found"),
    ],
)
def test_user_mistakes_exit_2_with_one_line(tmp_path, video, args, message):
    (tmp_path / "empty_dir").mkdir()
    argv = [a.format(video=video, tmp=tmp_path) for a in args]
    done = pipeline_cli(*argv, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    error_lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["report", "{tmp}/nothing-here"], "no videos.parquet"),
        (["report", "{tmp}", "--top-classes", "0"], "at least 1"),
        (["render", "{tmp}/missing.mp4", "--results", "{tmp}", "--output", "{tmp}/o.mp4"], "file not found"),
        (["render", "{video}", "--results", "{tmp}", "--output", "{tmp}/o.mp4", "--start", "5", "--end", "1"],
         "--end must not be before --start"),
        (["render", "{video}", "--results", "{tmp}/nothing-here", "--output", "{tmp}/o.mp4"], "no videos.parquet"),
    ],
)
def test_render_and_report_usage_errors(tmp_path, argv, message):
    import numpy as np

    from pipeline.samples import write_video

    video = tmp_path / "v.mp4"
    write_video(video, [np.zeros((32, 32, 3), np.uint8)] * 2)
    done = pipeline_cli(*[a.format(tmp=tmp_path, video=video) for a in argv])
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
