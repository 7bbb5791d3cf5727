"""Progress on long runs: a tqdm bar on a terminal, a plain line every few seconds otherwise
(``ray job logs`` and CI logs read badly with carriage returns)."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from pipeline.output.layout import TEMP_PREFIX, OutputLayout
from pipeline.output.outcomes import RunCounts

log = logging.getLogger(__name__)


def format_eta(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


@dataclass(frozen=True)
class RunProgress:
    """Where a run stands (the coordinator's ``progress()``): its counters and what is in flight.
    ``actors`` holds each actor's latest ``ActorSample`` (``pipeline.runtime.messages``), or None."""

    counts: RunCounts
    in_flight: int = 0
    peak_in_flight: int = 0
    elapsed_s: float = 0.0
    pid: int = 0
    coordinator_rss: int | None = None
    actors: tuple = field(default_factory=tuple)
    workers_ready: int = 0  # video workers in the run now
    workers_wanted: int = 0  # --num-actors (or as planned): the most the run asks for
    workers_pending: int = 0  # asked for and not in the run yet (being placed, loading, restarting)

    @property
    def frames_done(self) -> int:
        return self.counts.frames_done

    @property
    def frames_expected(self) -> int:
        """What the headers announce, never less than what is done; with videos not opened
        yet, estimated (``frames_expected_estimated``)."""
        return self.counts.estimated_frames()[0]

    @property
    def frames_expected_estimated(self) -> bool:
        return self.counts.estimated_frames()[1]


class ProgressDisplay:
    def __init__(self, *, enabled: bool = True, stream=None, interval_s: float = 10.0):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.interactive = enabled and self.stream.isatty()
        self.interval_s = interval_s
        self._bar: tqdm | None = None
        self._last_line = 0.0
        self._started = time.monotonic()

    def update(self, p: RunProgress) -> None:
        if not self.enabled:
            return
        done, expected = p.frames_done, p.frames_expected
        videos = f"{p.counts.videos_done}/{p.counts.videos_total} videos"
        if p.workers_wanted:  # in the run now / the most asked for (the rest join when placed)
            videos += f", workers {p.workers_ready}/{p.workers_wanted}"
        if self.interactive:
            bar = self._bar
            if bar is None:
                bar = self._bar = tqdm(
                    total=expected or None, unit="frame", file=self.stream, dynamic_ncols=True
                )
            if expected and bar.total != expected:
                bar.total = expected
            bar.n = done
            bar.set_postfix_str(f"{videos}, {p.in_flight} in flight", refresh=False)
            bar.refresh()
            return
        now = time.monotonic()
        if now - self._last_line >= self.interval_s:
            self._last_line = now
            elapsed = now - self._started
            fps = done / elapsed if elapsed > 0 else 0.0
            eta = (expected - done) / fps if fps and expected else None
            pct = f" ({100 * done / expected:.0f}%)" if expected else ""
            about = "~" if p.frames_expected_estimated else ""  # videos not opened yet
            print(
                f"progress: {done}/{about}{expected or '?'} frames{pct}, {fps:.1f} fps, "
                f"ETA {format_eta(eta)}, {videos}",
                file=self.stream,
                flush=True,
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _write_json(path: Path, data: dict) -> None:
    """Replace ``path`` by a rename, so that a reader polling it never sees half a file."""
    tmp = path.with_name(f"{TEMP_PREFIX}{path.name}-{os.getpid()}")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


class ProgressFile:
    """``OUT/progress.json``: the run's progress, replaced every few seconds and once at the end.

    It is what the service (and any script) polls for frames done, frames/s, ETA and video
    counts without talking to Ray. ``job_id`` is ``$PIPELINE_JOB_ID`` when set (the service sets
    it), so a poller can tell its run's file from a later run's on the same output.
    """

    def __init__(self, folder: str | os.PathLike, *, interval_s: float = 2.0):
        self.path = OutputLayout(Path(folder)).progress_file
        self.job_id = os.environ.get("PIPELINE_JOB_ID")
        self.attempt = os.environ.get("PIPELINE_JOB_ATTEMPT")
        self.interval_s = interval_s
        # the first snapshot is always written (monotonic time may start near 0)
        self._last = -math.inf

    def running(self, p: RunProgress) -> None:
        """From the coordinator's ``progress()``; written at most every ``interval_s``."""
        now = time.monotonic()
        if now - self._last < self.interval_s:
            return
        self._last = now
        done, expected = p.frames_done, p.frames_expected
        elapsed = p.elapsed_s
        fps = done / elapsed if elapsed > 0 else 0.0
        c = p.counts
        skipped, failed, partial = c.videos_skipped, c.videos_failed, c.videos_partial
        self._write(
            "running",
            frames_done=done,
            frames_expected=expected,
            frames_expected_estimated=p.frames_expected_estimated,
            frames_per_s=fps,
            eta_s=(expected - done) / fps if fps and expected else None,
            videos={
                "total": c.videos_total,
                "done": c.videos_done,
                "ok": c.videos_done - failed - partial - skipped,
                "partial": partial,
                "failed": failed,
                "skipped": skipped,
            },
            workers={
                "ready": p.workers_ready,
                "wanted": p.workers_wanted,
                "pending": p.workers_pending,
            },
        )

    def finished(self, record: dict) -> None:
        """The run's last word: ``finished``, or ``stopped`` for a run a signal stopped."""
        totals = record.get("totals", {})
        stopped = bool(record.get("stopped_by"))
        done = sum(
            totals.get(k, 0)
            for k in ("videos_ok", "videos_partial", "videos_failed", "videos_skipped")
        )
        videos = {
            "total": totals.get("videos", 0),
            "done": done if stopped else totals.get("videos", 0),
            "ok": totals.get("videos_ok", 0),
            "partial": totals.get("videos_partial", 0),
            "failed": totals.get("videos_failed", 0),
            "skipped": totals.get("videos_skipped", 0),
        }
        self._write(
            "stopped" if stopped else "finished",
            exit_code=record.get("exit_code"),
            frames_done=totals.get("frames", 0),
            frames_expected=totals.get("frames", 0),
            frames_per_s=record.get("throughput", {}).get("frames_per_s", 0.0),
            eta_s=None if stopped else 0.0,
            videos=videos,
        )

    def _write(self, state: str, **fields) -> None:
        try:
            _write_json(
                self.path,
                {
                    "state": state,
                    "job_id": self.job_id,
                    **({"attempt": self.attempt} if self.attempt else {}),
                    "updated_at": time.time(),
                    **fields,
                },
            )
        except OSError as exc:  # progress is a convenience: never fail a run over it
            log.debug("cannot write %s: %s", self.path, exc)


def read_progress(folder: str | os.PathLike) -> dict | None:
    """The last ``progress.json`` of a local output folder, or None."""
    try:
        return json.loads(OutputLayout(Path(folder)).progress_file.read_text())
    except (OSError, ValueError):
        return None
