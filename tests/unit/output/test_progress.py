"""Progress: a live one-line bar on a terminal, periodic plain lines in logs and jobs, and the
progress file that the service polls."""

import io
from dataclasses import replace

from pipeline.output.outcomes import RunCounts
from pipeline.output.progress import ProgressDisplay, ProgressFile, RunProgress, read_progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def snapshot(done: int) -> RunProgress:
    counts = RunCounts(
        frames_done=done, frames_expected=100, videos_done=done // 50, videos_total=2
    )
    return RunProgress(counts, in_flight=3)


def test_a_terminal_gets_one_updated_line():
    stream = Terminal()
    display = ProgressDisplay(stream=stream, interval_s=0)
    for done in (10, 20, 30):
        display.update(snapshot(done))
    display.close()
    text = stream.getvalue()
    assert text.count("\r") >= 3 and text.count("\n") <= 1  # redrawn in place, one line at the end
    assert "30/100" in text and "progress:" not in text


def test_logs_get_periodic_plain_lines():
    stream = io.StringIO()
    display = ProgressDisplay(stream=stream, interval_s=0)
    for done in (10, 20):
        display.update(snapshot(done))
    lines = stream.getvalue().splitlines()
    assert (
        len(lines) == 2
        and all(line.startswith("progress: ") for line in lines)
        and "\r" not in stream.getvalue()
    )
    assert "20/100 frames (20%)" in lines[1]


def test_progress_file_is_throttled_and_replaced_whole(tmp_path):
    progress = ProgressFile(tmp_path, interval_s=3600)
    progress.running(replace(snapshot(10), elapsed_s=2.0))
    progress.running(replace(snapshot(20), elapsed_s=4.0))  # within the interval: not written
    state = read_progress(tmp_path)
    assert (
        state["state"] == "running" and state["frames_done"] == 10 and state["frames_per_s"] == 5.0
    )
    assert state["eta_s"] == 18.0
    assert [p.name for p in tmp_path.iterdir()] == ["progress.json"]  # no temporary file left
