"""Turning the command line's INPUTs into a list of videos, each with a stable identity."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from pipeline import locations
from pipeline.errors import UsageError
from pipeline.media.source import VideoSource, describe, forget_folders

VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mov .mkv .webm .avi .mpg .mpeg .ts .mts .m2ts .flv .wmv .3gp .ogv .h264 .h265 .hevc".split()
)


class InputError(UsageError, ValueError):
    """The inputs as a whole are unusable (nothing to process, unreadable list file)."""


def _read_list(list_path: str) -> Iterator[str]:
    """The entries of a list file, one per line, read as they are needed (a list may hold
    millions of names). An unreadable list is an ``InputError`` when the walk starts."""
    try:
        handle = open(list_path, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read input list {list_path}: {exc.strerror or exc}") from exc
    base = Path(list_path).resolve().parent

    def entries() -> Iterator[str]:
        with handle:
            for line in handle:
                line = line.strip()
                if line and not line.startswith("#"):
                    yield (
                        line if os.path.isabs(line) or locations.is_uri(line) else str(base / line)
                    )

    return entries()


def _scan_directory(folder: str) -> Iterator[str]:
    """The video files under ``folder``, in sorted order, one directory listing at a time."""
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            if Path(name).suffix.lower() in VIDEO_EXTENSIONS:
                yield os.path.join(root, name)


def _did_you_mean(path: str) -> str:
    """A hint for a misspelled local file name: the closest names in its folder."""
    if locations.is_uri(path):
        return ""
    folder, name = os.path.split(os.path.abspath(path))
    try:
        names = os.listdir(folder)
    except OSError:
        return f" (no such folder: {os.path.dirname(path) or folder})"
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.7)
    return (
        f" (did you mean {os.path.join(os.path.dirname(path), close[0])}?)"
        if close
        else " (no such file)"
    )


class IdSet:
    """A set of 64-bit video ids: the latest ones in a Python set, all others in one sorted numpy
    array that they are merged into ``recent`` at a time. 8 bytes an id, 16 while a merge runs
    (a Python set of ints takes about 70, an open-addressing table 16 to 48 as it grows)."""

    def __init__(self, recent: int = 1 << 16):
        self._recent: set[int] = set()
        self._recent_max = recent
        self._sorted = np.zeros(0, np.uint64)

    def __len__(self) -> int:
        return len(self._recent) + len(self._sorted)

    def add(self, key: int) -> bool:
        """Add ``key``; False when it was there already."""
        if key in self._recent:
            return False
        at = int(np.searchsorted(self._sorted, np.uint64(key)))
        if at < len(self._sorted) and int(self._sorted[at]) == key:
            return False
        self._recent.add(key)
        if len(self._recent) >= self._recent_max:
            self._merge_recent()
        return True

    def _merge_recent(self) -> None:
        merged = np.concatenate([self._sorted, np.fromiter(self._recent, np.uint64)])
        self._sorted = merged  # the old array goes now, before the sort's own buffer
        merged.sort(kind="stable")  # two sorted runs: timsort merges them in one pass
        self._recent = set()


class InputWalk:
    """The videos of the command line's INPUTs (files, directories searched recursively,
    ``@list.txt`` files, object storage URIs), in order, without repeats, read lazily: a list of a
    million names is walked as the run goes, never held whole.

    Mistakes in the command itself are raised by the constructor, before anything starts: a named
    file that does not exist, an unreadable list file (``InputError``). An entry of a list file
    that does not exist, or any other unreadable file, is yielded with its error, so that it is
    reported in ``videos.parquet`` like any other bad video. ``warnings`` collects what is not an
    error (an empty directory: nothing of it is lost); ``count`` is the videos yielded so far.
    """

    def __init__(self, inputs: Iterable[str | os.PathLike]):
        self.inputs = [os.fspath(item) for item in inputs]  # pathlib.Path works as well as str
        forget_folders()  # folders' real paths are cached for one walk (a link may have moved)
        self.warnings: list[str] = []
        self.count = 0
        # Repeats dropped as the walk goes: a million video ids in 8 MB (None: the caller drops
        # them, as a sorted walk does for free)
        self._seen: IdSet | None = IdSet()
        self._parts = [self._expand(item) for item in self.inputs]  # named items checked now
        self._started = False

    def _expand(self, item: str) -> Iterable[str] | VideoSource:
        if item.startswith("@"):
            return _read_list(item[1:])
        if locations.is_uri(item):
            try:
                found = locations.list_files(item, VIDEO_EXTENSIONS)
            except locations.InvalidUri as exc:
                raise InputError(str(exc)) from None
            if found is None:
                return self._named(item)
            if not found:
                self.warnings.append(f"no video files under {locations.redact(item)}")
            return found
        if os.path.isdir(item):
            if next(_scan_directory(item), None) is None:  # stops at the first video found
                self.warnings.append(f"no video files in directory {item}")
            return _scan_directory(item)  # walked again, lazily, when its turn comes
        return self._named(item)

    @staticmethod
    def _named(path: str) -> VideoSource:
        source = describe(path)
        if source.error == "file not found":
            raise InputError(f"input not found: {locations.redact(path)}{_did_you_mean(path)}")
        return source

    def repeats_dropped_later(self) -> None:
        """From now on, a video given twice is yielded twice: the caller drops repeats (a sorted
        walk has them side by side) and calls ``repeat_dropped`` for each, so the walk holds no
        set of every id."""
        self._seen = None

    def repeat_dropped(self) -> None:
        self.count -= 1

    def __iter__(self) -> Iterator[VideoSource]:
        if self._started:
            raise RuntimeError("an InputWalk is walked once")
        self._started = True
        for part in self._parts:
            for source in [part] if isinstance(part, VideoSource) else map(describe, part):
                # one file given twice, or through a link: one video
                if self._seen is None or self._seen.add(int(source.video_id, 16)):
                    self.count += 1
                    yield source
        self._parts = []


def expand_inputs(inputs: Iterable[str | os.PathLike]) -> tuple[list[VideoSource], list[str]]:
    """Every video of ``inputs`` at once (``InputWalk`` walks them lazily), and the warnings.
    Raises ``InputError`` when there is none."""
    walk = InputWalk(inputs)
    videos = list(walk)
    if not videos:
        raise InputError("no video files found in the inputs: " + " ".join(walk.inputs))
    return videos, walk.warnings
