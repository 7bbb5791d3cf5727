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


def test_videos_not_opened_yet_count_in_the_frames_expected_so_the_eta_does_not_reach_0(tmp_path):
    """A two-video job: the second video has not been opened when the first is nearly done."""
    counts = RunCounts(videos_total=2, videos_opened=1, videos_with_header_frames=1)
    counts.frames_expected, counts.frames_done = 302, 300
    progress = RunProgress(counts, elapsed_s=10.0)
    assert progress.frames_expected == 604 and progress.frames_expected_estimated
    ProgressFile(tmp_path, interval_s=0).running(progress)
    state = read_progress(tmp_path)
    assert state["frames_expected"] == 604 and state["frames_expected_estimated"] is True
    assert state["eta_s"] == 304 / 30.0
    # Once the second is open, its header counts, and the figure is no estimate.
    counts.videos_opened, counts.videos_with_header_frames, counts.frames_expected = 2, 2, 362
    assert progress.frames_expected == 362 and not progress.frames_expected_estimated
    # Skipped and unreadable videos are no frames to wait for.
    waiting = RunCounts(videos_total=4, videos_skipped=1, videos_never_opened=1, videos_opened=1)
    waiting.videos_with_header_frames, waiting.frames_expected = 1, 100
    assert waiting.estimated_frames() == (200, True)


def test_a_log_line_says_when_the_frames_expected_is_an_estimate():
    stream = io.StringIO()
    counts = RunCounts(videos_total=2, videos_opened=1, videos_with_header_frames=1)
    counts.frames_expected, counts.frames_done = 100, 50
    ProgressDisplay(stream=stream, interval_s=0).update(RunProgress(counts))
    assert "50/~200 frames" in stream.getvalue()


def test_progress_shows_the_workers_in_the_run_against_those_wanted(tmp_path):
    stream = io.StringIO()
    now = replace(snapshot(50), workers_ready=5, workers_wanted=6, workers_pending=1)
    ProgressDisplay(stream=stream, interval_s=0).update(now)
    assert "1/2 videos, workers 5/6" in stream.getvalue()
    ProgressFile(tmp_path).running(now)
    assert read_progress(tmp_path)["workers"] == {"ready": 5, "wanted": 6, "pending": 1}
