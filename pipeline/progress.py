"""Progress on long runs: a tqdm bar on a terminal, a plain line every few seconds otherwise
(``ray job logs`` and CI logs read badly with carriage returns)."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


def format_eta(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class ProgressDisplay:
    def __init__(self, *, enabled: bool = True, stream=None, interval_s: float = 10.0):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.interactive = enabled and self.stream.isatty()
        self.interval_s = interval_s
        self._bar = None
        self._last_line = 0.0
        self._started = time.monotonic()

    def update(self, p: dict) -> None:
        if not self.enabled:
            return
        done, expected = p["frames_done"], max(p["frames_expected"], p["frames_done"])
        videos = f"{p['videos_done']}/{p['videos_total']} videos"
        if self.interactive:
            if self._bar is None:
                self._bar = tqdm(total=expected or None, unit="frame", file=self.stream, dynamic_ncols=True)
            if expected and self._bar.total != expected:
                self._bar.total = expected
            self._bar.n = done
            self._bar.set_postfix_str(f"{videos}, {p['in_flight']} in flight", refresh=False)
            self._bar.refresh()
            return
        now = time.monotonic()
        if now - self._last_line >= self.interval_s:
            self._last_line = now
            elapsed = now - self._started
            fps = done / elapsed if elapsed > 0 else 0.0
            eta = (expected - done) / fps if fps and expected else None
            pct = f" ({100 * done / expected:.0f}%)" if expected else ""
            print(
                f"progress: {done}/{expected or '?'} frames{pct}, {fps:.1f} fps, ETA {format_eta(eta)}, {videos}",
                file=self.stream,
                flush=True,
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
