"""``videos.log``: the manifest's records since the last fold, one JSON line each, and what a
crash in the middle of a commit leaves behind (``InterruptedCommits``).

A line is a record (with its number, ``seq``), a drop (``{"dropped": id}``: the video's rows are
about to leave their part) or a commit begun (``{"committing": id}``, with the part's key for a
packed video). Each line goes to the file in one write, so a crash leaves whole lines and at most
a torn last one, which replay skips. A fold rotates the log (``videos.log.<n>``) and removes the
rotated ones once its part is written.

A run's coordinator writes its lines from a thread (``in_background``): a write that extends a
file can wait for the file system's journal, which another thread's fsync holds (a part put in
place, a fold): hundreds of milliseconds in ``docs/bench/cluster_sim.py`` when the lines were
written on the event loop. The thread writes the lines that waited together in one write;
``written()`` says when every line so far is in the file, and the caller waits for it before any
step that the line must precede (a rename, a removal, a grant's answer). Without a thread
(tools, tests) each line is written before ``append`` returns.
"""

from __future__ import annotations

import io
import json
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field, fields
from pathlib import Path

from pipeline.output.parts import is_part
from pipeline.output.unfolded import Unfolded
from pipeline.output.video_record import VideoRecord

log = logging.getLogger(__name__)

# Why a video that had a record has a failed one now (its rows were removed; the next run redoes it)
TAKEN_OUT = "its rows were taken out of their part to process it again, and the run ended first"
INTERRUPTED = "the run was stopped while its results were put in place (they were removed)"

LogWritten = Future  # done once a line (and every line before it) is in the file
WRITE_LINES_MAX = 4096  # lines the log's thread joins into one write, at most


def _done() -> LogWritten:
    written: LogWritten = Future()
    written.set_result(None)
    return written


class ManifestLog:
    def __init__(self, path: Path):
        self.path = path
        # kept open: opening it per line cost more than the line itself
        self._file: io.FileIO | None = None
        self._writer: _LogWriter | None = None
        self.rotation: LogWritten = _done()  # the latest ``rotate``: done once renamed

    def in_background(self) -> None:
        """Lines are written by a thread from now on (``close`` stops it)."""
        if self._writer is None:
            self._writer = _LogWriter(self)

    def append(self, row: dict) -> None:
        line = (json.dumps(row, separators=(",", ":")) + "\n").encode()
        if self._writer is None:
            self._write(line)
        else:
            self._writer.put(line)

    def written(self) -> LogWritten:
        """Done once every line appended so far (and every rotation) is in place."""
        return _done() if self._writer is None else self._writer.written()

    def waiting(self) -> int:
        """Lines appended and not written yet (0 without a thread)."""
        return 0 if self._writer is None else self._writer.waiting()

    def close(self) -> None:
        """The lines written, the thread stopped, the file closed (idempotent)."""
        if self._writer is not None:
            self._writer.stop()
            self._writer = None
        self._close_file()

    def rotated(self) -> list[Path]:
        """Logs rotated by folds that a crash kept from ending, oldest first."""
        found = []
        for path in self.path.parent.glob(f"{self.path.name}.*"):
            suffix = path.name.rsplit(".", 1)[-1]
            if suffix.isdigit():
                found.append((int(suffix), path))
        return [path for _, path in sorted(found)]

    def rotate(self, rotated: list[Path]) -> Path | None:
        """The log renamed after the ``rotated`` ones: its path, or None when there was no log.
        In the background, the rename waits for the lines before it (``rotation`` is done
        once it happened) and the path is returned whether or not a log was there."""
        number = 1 + max((int(p.name.rsplit(".", 1)[1]) for p in rotated), default=0)
        target = self.path.with_name(f"{self.path.name}.{number}")
        if self._writer is None:
            return target if self._rename_to(target) else None
        self._writer.put(target)
        self.rotation = self._writer.written()
        return target

    def _rename_to(self, target: Path) -> bool:
        self._close_file()  # the next line goes to a new log, not the renamed one
        if not self.path.exists():
            return False
        os.replace(self.path, target)
        return True

    def _write(self, data: bytes) -> None:
        if self._file is None:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._file = io.FileIO(fd, "a")
        view = memoryview(data)
        while view:
            view = view[self._file.write(view) or 0 :]

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def replay(
        self,
        unfolded: Unfolded,
        unsettled: InterruptedCommits,
        number: Callable[[int | None], int],
    ) -> None:
        """Every line into ``unfolded`` (records and drops, ``number``ed: lines written before
        ``seq`` get the next number) and ``unsettled`` (commits begun)."""
        names = {f.name for f in fields(VideoRecord)}
        for path, row in self.every_line():
            if "committing" in row:
                unsettled.begun(row["committing"], row.get("part"))
                continue
            seq = number(row.get("seq"))
            if "dropped" in row:
                unfolded.drop(row["dropped"], seq, row.get("why", TAKEN_OUT))
                unfolded.logged += 1
                continue
            try:
                record = VideoRecord(**{k: v for k, v in row.items() if k in names})
            except (ValueError, TypeError) as exc:
                log.warning("%s: a record is unreadable (%s): processed again", path, exc)
                continue
            unfolded.hold(record, seq)
            unsettled.recorded(record.video_id, record.detections_file)
            unfolded.logged += 1

    def every_line(self) -> Iterator[tuple[Path, dict]]:
        """The rotated logs' lines, then the log's; a line cut short by a crash is skipped (its
        video is redone)."""
        for path in [*self.rotated(), self.path]:
            if not path.exists():
                continue
            with open(path, "rb") as f:
                for number, line in enumerate(f, 1):
                    try:
                        yield path, json.loads(line)
                    except ValueError as exc:
                        log.warning(
                            "%s line %d is unreadable (%s): its video is processed again",
                            path,
                            number,
                            exc,
                        )


class _LogWriter:
    """The thread that writes a ``ManifestLog``'s lines (and renames it), in the order given.
    Appending costs a deque's append (no lock, no future): callers ask ``written()`` only
    before the steps that must follow their lines."""

    def __init__(self, log_: ManifestLog):
        self._log = log_
        self._items: deque[bytes | Path | None] = deque()  # None: stop
        self._put = 0  # items given (this side)
        self._done = 0  # items written (the thread's side)
        self._waiters: list[tuple[int, LogWritten]] = []  # (items to be written, its future)
        self._lock = threading.Lock()  # the waiters, the count written, the error
        self._wake = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="videos-log", daemon=True)
        self._thread.start()

    def put(self, item: bytes | Path | None) -> None:
        if self._error is not None:  # the log cannot be written: say so at once
            raise self._error
        self._items.append(item)
        self._put += 1
        if not self._wake.is_set():
            self._wake.set()

    def written(self) -> LogWritten:
        future: LogWritten = Future()
        with self._lock:
            if self._error is not None:
                future.set_exception(self._error)
            elif self._done >= self._put:
                future.set_result(None)
            else:
                self._waiters.append((self._put, future))
        return future

    def waiting(self) -> int:
        return self._put - self._done

    def stop(self) -> None:
        if self._error is None:
            self.put(None)
            self.written().exception()  # waits
        self._thread.join()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            lines: list[bytes] = []
            taken = 0
            try:
                while self._items:
                    item = self._items.popleft()
                    taken += 1
                    if isinstance(item, bytes):
                        lines.append(item)
                        if len(lines) >= WRITE_LINES_MAX:  # one write's memory stays bounded
                            self._flush(lines)
                        continue
                    self._flush(lines)  # a rotation or the end: the lines before it first
                    if item is None:
                        self._written(taken)
                        return
                    self._log._rename_to(item)
                self._flush(lines)
            except BaseException as exc:  # noqa: BLE001 - handed to every waiter, now and later
                with self._lock:
                    self._error = exc
                    waiters, self._waiters = self._waiters, []
                for _, future in waiters:
                    future.set_exception(exc)
                return
            self._written(taken)

    def _written(self, count: int) -> None:
        with self._lock:
            self._done += count
            ready = [w for w in self._waiters if w[0] <= self._done]
            self._waiters = [w for w in self._waiters if w[0] > self._done]
        for _, future in ready:
            future.set_result(None)

    def _flush(self, lines: list[bytes]) -> None:
        if lines:
            self._log._write(b"".join(lines))
            lines.clear()


@dataclass
class InterruptedCommits:
    """Commits the log began (a ``committing`` line) and never recorded, by video: where each
    was putting rows (a part's key; None: the video's own files). A record settles the commit
    that put its rows where it says; one elsewhere (by a worker presumed dead) is still to be
    removed, but the video keeps that newer record."""

    places: dict[str, set[str | None]] = field(default_factory=dict)
    recorded_since: set[str] = field(default_factory=set)  # recorded again after such a commit

    def begun(self, video_id: str, part: str | None) -> None:
        self.places.setdefault(video_id, set()).add(part)
        self.recorded_since.discard(video_id)

    def recorded(self, video_id: str, detections_file: str | None) -> None:
        places = self.places.get(video_id)
        if places is None:
            return
        places.discard(detections_file if is_part(detections_file) else None)
        if places:
            self.recorded_since.add(video_id)
        else:
            del self.places[video_id]

    def settle(self) -> list[str]:
        """Forget them all (their rows are removed); returns the videos whose record must go."""
        drop = [v for v in self.places if v not in self.recorded_since]
        self.places, self.recorded_since = {}, set()
        return drop
