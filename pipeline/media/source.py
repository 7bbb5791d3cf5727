"""A video's identity: where it is, a stable id from its canonical location, and its content
(size and mtime), read once when the backlog is walked."""

from __future__ import annotations

import hashlib
import os
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
    return hashlib.sha256(os.fsencode(canonical_location(path))).hexdigest()[:16]


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
