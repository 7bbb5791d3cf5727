"""Turning the command line's INPUTs into a list of videos, each with a stable identity."""

from __future__ import annotations

import difflib
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pipeline import storage

VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mov .mkv .webm .avi .mpg .mpeg .ts .mts .m2ts .flv .wmv .3gp .ogv .h264 .h265 .hevc".split()
)


class InputError(ValueError):
    """The inputs as a whole are unusable (nothing to process, unreadable list file)."""


@dataclass(frozen=True)
class VideoSource:
    path: str  # what is opened: the real path of a local file, the URI as given for object storage
    video_id: str  # hash of the canonical location (``canonical_location``): stable, safe as a file name
    size_bytes: int = -1
    mtime_ns: int = -1
    error: str | None = None  # set when the file cannot even be opened for reading

    @property
    def content_identity(self) -> str:
        return f"{self.size_bytes}:{self.mtime_ns}"


def canonical_location(path: str) -> str:
    """One name per file, whichever way it was given: a local file's real path (symlinks and
    ``..`` resolved), an object's URI without credentials, query or fragment."""
    if storage.is_uri(path):
        parts = urlsplit(path)
        host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme.lower(), host, quote(unquote(parts.path), safe="/"), "", ""))
    return os.path.realpath(path)


def video_id_for(path: str) -> str:
    return hashlib.sha256(os.fsencode(canonical_location(path))).hexdigest()[:16]


def describe(path: str) -> VideoSource:
    """Identity of one file; problems that stop it from being read are recorded, not raised."""
    if storage.is_uri(path):
        vid = video_id_for(path)
        try:
            found = storage.stat(path)
        except storage.InvalidUri as exc:
            return VideoSource(path, vid, error=str(exc))
        except OSError as exc:
            return VideoSource(path, vid, error=f"cannot read from object storage: {storage.redact(str(exc))}")
        if found is None:
            return VideoSource(path, vid, error="file not found")
        size, mtime_ns = found
        return VideoSource(path, vid, size, mtime_ns, error="empty file (0 bytes)" if size == 0 else None)
    absolute = os.path.realpath(path)
    vid = video_id_for(absolute)
    try:
        st = os.stat(absolute)
    except FileNotFoundError:
        return VideoSource(absolute, vid, error="file not found")
    except OSError as exc:
        return VideoSource(absolute, vid, error=f"cannot stat file: {exc.strerror or exc}")
    if not os.path.isfile(absolute):
        return VideoSource(absolute, vid, st.st_size, st.st_mtime_ns, error="not a regular file")
    if not os.access(absolute, os.R_OK):
        return VideoSource(absolute, vid, st.st_size, st.st_mtime_ns, error="permission denied (file is not readable)")
    if st.st_size == 0:
        return VideoSource(absolute, vid, 0, st.st_mtime_ns, error="empty file (0 bytes)")
    return VideoSource(absolute, vid, st.st_size, st.st_mtime_ns)


def _read_list(list_path: str) -> list[str]:
    try:
        text = Path(list_path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read input list {list_path}: {exc.strerror or exc}") from exc
    base = Path(list_path).resolve().parent
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            entries.append(line if os.path.isabs(line) or storage.is_uri(line) else str(base / line))
    return entries


def _scan_directory(folder: str) -> list[str]:
    found = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            if Path(name).suffix.lower() in VIDEO_EXTENSIONS:
                found.append(os.path.join(root, name))
    return found


def _did_you_mean(path: str) -> str:
    """A hint for a misspelled local file name: the closest names in its folder."""
    if storage.is_uri(path):
        return ""
    folder, name = os.path.split(os.path.abspath(path))
    try:
        names = os.listdir(folder)
    except OSError:
        return f" (no such folder: {os.path.dirname(path) or folder})"
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.7)
    return f" (did you mean {os.path.join(os.path.dirname(path), close[0])}?)" if close else " (no such file)"


def expand_inputs(inputs: Iterable[str | os.PathLike]) -> tuple[list[VideoSource], list[str]]:
    """Files, directories (searched recursively) and ``@list.txt`` files, in order, without repeats.

    Returns the videos and warnings (an empty directory is a warning: nothing of it is lost).
    A file named in ``inputs`` that does not exist is a mistake in the command (``InputError``,
    before anything starts); an entry of a list file that does not exist, or any other unreadable
    file, is returned with its error, so that it is reported in ``videos.parquet`` like any other
    bad video.
    """
    videos: list[VideoSource] = []
    warnings: list[str] = []
    seen: set[str] = set()

    def add(path: str, *, named: bool = False) -> None:
        source = describe(path)
        if named and source.error == "file not found":
            raise InputError(f"input not found: {storage.redact(path)}{_did_you_mean(path)}")
        if source.video_id not in seen:  # one file given twice, or through a link: one video
            seen.add(source.video_id)
            videos.append(source)

    inputs = [os.fspath(item) for item in inputs]  # pathlib.Path works as well as str
    for item in inputs:
        if item.startswith("@"):
            for entry in _read_list(item[1:]):
                add(entry)
        elif storage.is_uri(item):
            try:
                found = storage.list_files(item, VIDEO_EXTENSIONS)
            except storage.InvalidUri as exc:
                raise InputError(str(exc)) from None
            if found is None:
                add(item, named=True)
            elif not found:
                warnings.append(f"no video files under {storage.redact(item)}")
            for uri in found or []:
                add(uri)
        elif os.path.isdir(item):
            found = _scan_directory(item)
            if not found:
                warnings.append(f"no video files in directory {item}")
            for path in found:
                add(path)
        else:
            add(item, named=True)
    if not videos:
        raise InputError("no video files found in the inputs: " + " ".join(inputs))
    return videos, warnings
