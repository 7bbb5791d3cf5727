"""Where a run's output lives: a local folder, or object storage staged through a local folder.
``OutputStore`` is the one place that knows which; everything else writes into
``store.layout`` and calls ``publish`` once a file is complete.

The output on object storage is staged: each writer (a video worker, on its node, for its videos'
files; the coordinator for ``videos.parquet``) writes each file locally, exactly as for a local
output, and then publishes it with one PUT. A PUT is atomic (readers see the old
object or the new one, never a part), so a video's rows appear at once, as with the local
rename. ``videos.parquet`` is a folder of immutable parts: each new part is one PUT, and the parts
a merge replaced are deleted after the merged one is up (readers keep one copy of a record).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pyarrow.fs as pafs

from pipeline.locations import RemoteLocation, is_uri, redact
from pipeline.output.layout import TEMP_PREFIX, OutputLayout
from pipeline.output.parts import remove_videos
from pipeline.output.writer import durable_replace


class RemoteOutput:
    """Publishes files of a local staging folder to an output folder on object storage."""

    def __init__(self, uri: str):
        self.uri = uri
        self.fs, self.root = RemoteLocation(uri).filesystem_and_path
        self.fs.create_dir(self.root, recursive=True)

    def check_writable(self) -> None:
        probe = f"{self.root}/.write-test"
        with self.fs.open_output_stream(probe) as f:
            f.write(b"")
        self.fs.delete_file(probe)

    def pull(self, relative: str, local: Path) -> bool:
        """Copy a remote file into the staging folder, when there is one."""
        remote = f"{self.root}/{relative}"
        if self.fs.get_file_info(remote).type != pafs.FileType.File:
            return False
        local.parent.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(
            remote,
            str(local),
            source_filesystem=self.fs,
            destination_filesystem=pafs.LocalFileSystem(),
        )
        return True

    def pull_folder(self, relative: str, local: Path) -> bool:
        """Copy a remote folder's files (or a file of that name) into the staging folder."""
        remote = f"{self.root}/{relative}"
        kind = self.fs.get_file_info(remote).type
        if kind == pafs.FileType.File:
            return self.pull(relative, local)
        if kind != pafs.FileType.Directory:
            return False
        local.mkdir(parents=True, exist_ok=True)
        for info in self.fs.get_file_info(pafs.FileSelector(remote)):
            if info.type == pafs.FileType.File and not info.base_name.startswith(TEMP_PREFIX):
                self.pull(f"{relative}/{info.base_name}", local / info.base_name)
        return True

    def sync_folder(self, local: Path, relative: str) -> None:
        """The remote folder as the local one is: new files PUT first, then the remote files the
        local folder no longer has deleted, then a remote file of the folder's name (an output
        written before the folder existed)."""
        remote = f"{self.root}/{relative}"
        kind = self.fs.get_file_info(remote).type
        there: set[str] = set()
        if kind == pafs.FileType.Directory:
            there = {
                i.base_name
                for i in self.fs.get_file_info(pafs.FileSelector(remote))
                if i.type == pafs.FileType.File
            }
        here = {
            p.name for p in local.iterdir() if p.is_file() and not p.name.startswith(TEMP_PREFIX)
        }
        for name in sorted(here - there):
            self.publish(local / name, f"{relative}/{name}")
        for name in sorted(there - here):
            self.delete(f"{relative}/{name}")
        if kind == pafs.FileType.File:
            self.delete(relative)

    def publish(self, local: Path, relative: str) -> None:
        """One PUT of a complete local file: atomic for readers of the remote folder."""
        pafs.copy_files(
            str(local),
            f"{self.root}/{relative}",
            source_filesystem=pafs.LocalFileSystem(),
            destination_filesystem=self.fs,
        )

    def move(self, source: str, relative: str) -> None:
        """A server-side copy (no data through this process), then the source's DELETE: the
        object appears whole at ``relative``."""
        self.fs.copy_file(f"{self.root}/{source}", f"{self.root}/{relative}")
        self.delete(source)

    def delete(self, relative: str) -> None:
        try:
            self.fs.delete_file(f"{self.root}/{relative}")
        except FileNotFoundError:
            pass
        except OSError as exc:
            if "not found" not in str(exc).lower() and "does not exist" not in str(exc).lower():
                raise


def staging_dir_for(uri: str) -> Path:
    """A local folder, stable per output URI, where a remote output is staged (and resumed from).

    It is in the user's cache folder (``$XDG_CACHE_HOME`` or ``~/.cache``), private to the user:
    a fixed path in a shared ``/tmp`` could be created first, or read, by another user.
    ``PIPELINE_STAGING_DIR`` puts it elsewhere (a large local disk, say)."""
    digest = hashlib.sha256(redact(uri).encode()).hexdigest()[:16]
    if os.environ.get("PIPELINE_STAGING_DIR"):
        return Path(os.environ["PIPELINE_STAGING_DIR"]) / digest
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    base = cache / "yolo-pipeline" / "staging"
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    base.chmod(0o700)
    return base / digest


class OutputStore:
    """A run's output: files are written (and renamed into place) in ``layout.root``; on object
    storage each complete file is then published with one PUT."""

    def __init__(self, root: Path, remote_uri: str | None = None):
        self.layout = OutputLayout(Path(root))
        self._remote = RemoteOutput(remote_uri) if remote_uri else None

    @classmethod
    def for_output(cls, output: str) -> OutputStore:
        """The store of ``--output``: a local folder as an absolute path, or a URI staged in this
        user's staging folder for it (after a write test: OSError or ValueError if refused)."""
        if not is_uri(output):
            return cls(Path(output).expanduser().absolute())
        store = cls(staging_dir_for(output), output)
        assert store._remote is not None
        store._remote.check_writable()
        return store

    @property
    def remote_uri(self) -> str | None:
        """The object-storage output this store publishes to; None for a local output."""
        return self._remote.uri if self._remote else None

    @property
    def is_remote(self) -> bool:
        return self._remote is not None

    def publish_videos(self) -> None:
        """``videos.parquet``'s parts as they are here: on object storage, the new ones PUT and
        those merged away deleted."""
        if self._remote and self.layout.manifest.is_dir():
            self._remote.sync_folder(self.layout.manifest, self.layout.MANIFEST)

    def pull_videos(self) -> bool:
        """Replace the local copy of ``videos.parquet`` by the remote one (resume from what
        object storage has); False when it has none or the output is local."""
        if not self._remote:
            return False
        local = self.layout.manifest
        if local.is_dir():
            shutil.rmtree(local)
        else:
            local.unlink(missing_ok=True)
        return self._remote.pull_folder(self.layout.MANIFEST, local)

    def publish(self, path: Path) -> None:
        """``path`` (complete, in place under ``layout.root``) is what readers of the output see
        from now on: nothing more to do locally, one PUT on object storage."""
        if self._remote:
            self._remote.publish(path, self.layout.key(path))

    def publish_video(self, video_id: str, *, with_tracks: bool) -> None:
        """A committed video's files: tracks first (so a detections file with track ids always
        has its summary), or the removal of tracks an earlier run with ``--track`` left. The
        staged copies go once published: the staging folder stays small however long the backlog."""
        if not self._remote:
            return
        layout = self.layout
        if with_tracks:
            self.publish(layout.tracks(video_id))
            layout.tracks(video_id).unlink()
        else:
            self._remote.delete(layout.tracks_key(video_id))
        self.publish(layout.detections(video_id))
        layout.detections(video_id).unlink()

    # Where a worker's complete part waits on object storage for the coordinator to place it: not
    # under detections/ or tracks/, so no reader's listing or glob meets it.
    STAGED_PREFIX = ".staging"

    def stage(self, path: Path) -> str:
        """A complete file under a hidden name in ``layout.root`` (``OutputLayout.temp_beside``),
        made reachable for ``place`` from any node: its key; on object storage, uploaded (one
        PUT) under ``STAGED_PREFIX`` and its local copy removed."""
        if not self._remote:
            return self.layout.key(path)
        key = f"{self.STAGED_PREFIX}/{path.name}"
        self._remote.publish(path, key)
        path.unlink()
        return key

    def place(self, staged: str, key: str) -> None:
        """A ``stage``d file put at ``key``, whole (a rename; a server-side copy on object
        storage): readers see it from now on."""
        if not self._remote:
            final = self.layout.path(key)
            final.parent.mkdir(parents=True, exist_ok=True)
            durable_replace(self.layout.path(staged), final)
            return
        self._remote.move(staged, key)

    def remove_stale_staged(self) -> int:
        """Parts a killed run staged on object storage and never placed (locally they are
        hidden names, which ``remove_stale_temp_files`` removes); how many."""
        if not self._remote:
            return 0
        remote = self._remote
        selector = pafs.FileSelector(f"{remote.root}/{self.STAGED_PREFIX}", allow_not_found=True)
        stale = [info.path for info in remote.fs.get_file_info(selector) if info.is_file]
        for path in stale:
            remote.fs.delete_file(path)
        return len(stale)

    def discard_staged(self, staged: str) -> None:
        if self._remote:
            self._remote.delete(staged)
        else:
            self.layout.path(staged).unlink(missing_ok=True)

    def remove_video(self, video_id: str) -> None:
        """A video's detections and tracks files, here and on object storage."""
        for key in (self.layout.detections_key(video_id), self.layout.tracks_key(video_id)):
            self.layout.path(key).unlink(missing_ok=True)
            if self._remote:
                self._remote.delete(key)

    def remove_rows(self, video_id: str, places: set[str | None]) -> None:
        """A video's rows wherever they may be: its own files (None) or parts (their keys)."""
        for place in sorted(places, key=str):
            if place is None:
                self.remove_video(video_id)
            else:
                self.remove_from_part(place, {video_id})

    def remove_from_part(self, key: str, video_ids: set[str]) -> None:
        """Take videos' rows out of a part file and of its tracks part (the same name under
        tracks/), here and on object storage (a GET, then a PUT or a DELETE, per file)."""
        name = key.rsplit("/", 1)[-1]
        for part in (f"{self.layout.DETECTIONS}/{name}", f"{self.layout.TRACKS}/{name}"):
            local = self.layout.path(part)
            if self._remote and not self.pull(part):
                continue
            changed = remove_videos(local, video_ids)
            if self._remote:
                if changed and local.exists():
                    self.publish(local)
                elif changed:
                    self._remote.delete(part)
                local.unlink(missing_ok=True)

    def pull(self, key: str) -> bool:
        """Replace the local copy of ``key`` by the remote one (resume from what object storage
        has); False when it has none. A local output is its own copy: always False."""
        if not self._remote:
            return False
        local = self.layout.path(key)
        local.unlink(missing_ok=True)
        return self._remote.pull(key, local)
