"""Where things are: local paths and object storage URIs (s3://, gs://, …) through ``pyarrow.fs``.

Credentials come only from the environment or the provider's chain (pyarrow reads them); URIs
are redacted before they reach logs, ``run.json`` or ``videos.parquet``. A custom endpoint (an
S3-compatible server) goes in the URI: ``s3://bucket/path?endpoint_override=host:port&scheme=http``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.fs as pafs

from pipeline.errors import UsageError

_SECRET_KEYS = {
    "access_key",
    "secret_key",
    "session_token",
    "aws_access_key_id",
    "aws_secret_access_key",
}


def is_uri(location: str) -> bool:
    return bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", location)) and not location.startswith(
        "file://"
    )


_URI_IN_TEXT = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"]+")


def _redact_match(match: re.Match) -> str:
    uri = match.group(0)
    trail = len(uri) - len(uri.rstrip(":,.;)"))  # the sentence's punctuation, not the URI's
    uri, tail = (uri[:-trail], uri[-trail:]) if trail else (uri, "")
    return (redact(uri) if is_uri(uri) else uri) + tail


def redact(location: str) -> str:
    """The URI without user info or secret query parameters; in other text (an error message),
    every URI in it redacted the same way."""
    if not is_uri(location):
        return _URI_IN_TEXT.sub(_redact_match, location)
    parts = urlsplit(location)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k.lower() not in _SECRET_KEYS])
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


class InvalidUri(UsageError, ValueError):
    """A URI that names no object pyarrow can reach (the message is redacted)."""


def filesystem_from_uri(uri: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow's ``FileSystem.from_uri``, taking keys as people type them: a URI whose path has
    spaces or other characters a URI should escape is read as if they were percent-encoded."""
    try:
        return pafs.FileSystem.from_uri(uri)
    except pa.ArrowInvalid:
        parts = urlsplit(uri)
        escaped = urlunsplit(
            (parts.scheme, parts.netloc, quote(parts.path, safe="/%"), parts.query, "")
        )
        try:
            return pafs.FileSystem.from_uri(escaped)
        except pa.ArrowInvalid as exc:
            raise InvalidUri(f"cannot read the URI {redact(uri)}: {redact(str(exc))}") from None


@dataclass(frozen=True)
class RemoteLocation:
    """A folder or file on object storage: the filesystem, the path within it, and how to name
    children as URIs again (same scheme and query)."""

    uri: str

    @property
    def filesystem_and_path(self) -> tuple[pafs.FileSystem, str]:
        fs, path = filesystem_from_uri(self.uri)
        return fs, path.rstrip("/")

    def child_uri(self, fs_path: str) -> str:
        """The URI of ``fs_path`` (a path within the same filesystem)."""
        parts = urlsplit(self.uri)
        bucket_and_key = fs_path.lstrip("/")
        bucket, _, key = bucket_and_key.partition("/")
        # Percent-encoded, as a URI must be (spaces and the like are common in video names).
        return urlunsplit((parts.scheme, bucket, "/" + quote(key) if key else "", parts.query, ""))

    def join(self, relative: str) -> str:
        parts = urlsplit(self.uri)
        return urlunsplit(
            (parts.scheme, parts.netloc, parts.path.rstrip("/") + "/" + relative, parts.query, "")
        )


def open_input(location: str):
    """A seekable binary file for PyAV: a local path as is, a URI as a pyarrow input file."""
    if not is_uri(location):
        return location
    fs, path = filesystem_from_uri(location)
    return fs.open_input_file(path)


def stat(location: str) -> tuple[int, int] | None:
    """(size, mtime_ns) of a remote file, or None when it does not exist."""
    fs, path = filesystem_from_uri(location)
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.File:
        return None
    mtime_ns = info.mtime_ns if info.mtime_ns is not None else -1
    return info.size, mtime_ns


def list_files(location: str, suffixes: frozenset[str]) -> list[str] | None:
    """Video files under a remote folder (recursive), as URIs; None when it is not a folder."""
    remote = RemoteLocation(location)
    fs, path = remote.filesystem_and_path
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return None
    found = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    return sorted(
        remote.child_uri(f.path)
        for f in found
        if f.type == pafs.FileType.File and Path(f.path).suffix.lower() in suffixes
    )
