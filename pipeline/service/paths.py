"""Confinement: every path or URI a request names must lie inside the roots the service was
started with. Local paths are compared after resolving symlinks and ``..``, so a link inside a
root that points outside it is refused too."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from pipeline.errors import UsageError
from pipeline.locations import is_uri, redact


class PathNotAllowed(UsageError):
    """A path outside the service's roots (the message never echoes credentials)."""


def _inside_local(path: str, root: str) -> bool:
    real, real_root = os.path.realpath(path), os.path.realpath(root)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def _inside_uri(uri: str, root: str) -> bool:
    parts, root_parts = urlsplit(uri), urlsplit(root)
    if parts.query or parts.fragment or "@" in parts.netloc or ".." in parts.path.split("/"):
        return False  # no credentials, no query strings and no parent segments in job URIs
    prefix = root_parts.path.rstrip("/")
    return (parts.scheme, parts.netloc) == (root_parts.scheme, root_parts.netloc) and (
        parts.path.rstrip("/") == prefix or parts.path.startswith(prefix + "/")
    )


def confine(location: str, roots: tuple[str, ...], *, what: str) -> str:
    """``location`` itself when it lies inside one of ``roots``; else ``PathNotAllowed``.
    Local paths come back resolved (absolute, no symlinks), URIs as given."""
    if not isinstance(location, str) or not location or "\x00" in location:
        raise PathNotAllowed(f"{what} must be a non-empty path")
    if is_uri(location):
        if any(is_uri(root) and _inside_uri(location, root) for root in roots):
            return location
    elif not os.path.isabs(location):
        raise PathNotAllowed(f"{what} {redact(location)!r} must be an absolute path")
    elif any(not is_uri(root) and _inside_local(location, root) for root in roots):
        return os.path.realpath(location)
    raise PathNotAllowed(f"{what} {redact(location)!r} is outside the folders this service may use")
