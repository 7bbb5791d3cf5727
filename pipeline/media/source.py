"""A video's identity: where it is, a stable id from its canonical location, and its content
(size and mtime), read once when the backlog is walked."""

from __future__ import annotations

import functools
import hashlib
import os
import stat
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pipeline import locations


@dataclass(frozen=True)
class VideoSource:
    path: str  # what is opened: the real path of a local file, the URI as given for object storage
    # hash of the canonical location (``canonical_location``): stable, safe as a file name
    video_id: str
    size_bytes: int = -1
    mtime_ns: int = -1
    error: str | None = None  # set when the file cannot even be opened for reading

    @property
    def content_identity(self) -> str:
        return f"{self.size_bytes}:{self.mtime_ns}"


def canonical_location(path: str) -> str:
    """One name per file, whichever way it was given: a local file's real path (symlinks and
    ``..`` resolved), an object's URI without credentials, query or fragment."""
    if locations.is_uri(path):
        parts = urlsplit(path)
        host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
        return urlunsplit(
            (parts.scheme.lower(), host, quote(unquote(parts.path), safe="/"), "", "")
        )
    return os.path.realpath(path)


def video_id_for(path: str) -> str:
    return _id_of(canonical_location(path))


def _id_of(canonical: str) -> str:
    return hashlib.sha256(os.fsencode(canonical)).hexdigest()[:16]


@functools.lru_cache(maxsize=4096)
def _real_folder(folder: str) -> str:
    """A folder's real path, once per folder of a walk (the working directory does not change
    during one): ``realpath`` costs one ``lstat`` per component of the path."""
    return os.path.realpath(folder)


def forget_folders() -> None:
    """Start a walk afresh: the folders' real paths are looked up again."""
    _real_folder.cache_clear()


def _real_path(path: str) -> tuple[str, os.stat_result | None]:
    """``os.path.realpath(path)``, from its folder's (cached) and one ``lstat`` of the file, which
    is also the file's ``stat`` when it is not a symbolic link (None: it is, or it is missing)."""
    folder, name = os.path.split(path)
    if name in ("", ".", ".."):
        return os.path.realpath(path), None
    try:
        st = os.lstat(path)
    except OSError:
        return os.path.realpath(path), None
    if stat.S_ISLNK(st.st_mode):
        return os.path.realpath(path), None
    return os.path.join(_real_folder(folder or "."), name), st


def describe(path: str) -> VideoSource:
    """Identity of one file; problems that stop it from being read are recorded, not raised."""
    if locations.is_uri(path):
        vid = video_id_for(path)
        try:
            found = locations.stat(path)
        except locations.InvalidUri as exc:
            return VideoSource(path, vid, error=str(exc))
        except OSError as exc:
            return VideoSource(
                path, vid, error=f"cannot read from object storage: {locations.redact(str(exc))}"
            )
        if found is None:
            return VideoSource(path, vid, error="file not found")
        size, mtime_ns = found
        return VideoSource(
            path, vid, size, mtime_ns, error="empty file (0 bytes)" if size == 0 else None
        )
    absolute, st = _real_path(path)
    vid = _id_of(absolute)
    try:
        st = st or os.stat(absolute)
    except FileNotFoundError:
        return VideoSource(absolute, vid, error="file not found")
    except OSError as exc:
        return VideoSource(absolute, vid, error=f"cannot stat file: {exc.strerror or exc}")
    if not stat.S_ISREG(st.st_mode):
        return VideoSource(absolute, vid, st.st_size, st.st_mtime_ns, error="not a regular file")
    if not os.access(absolute, os.R_OK):
        return VideoSource(
            absolute,
            vid,
            st.st_size,
            st.st_mtime_ns,
            error="permission denied (file is not readable)",
        )
    if st.st_size == 0:
        return VideoSource(absolute, vid, 0, st.st_mtime_ns, error="empty file (0 bytes)")
    return VideoSource(absolute, vid, st.st_size, st.st_mtime_ns)
