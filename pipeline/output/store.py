"""Publishing an output on object storage.

The output on object storage is staged: the coordinator writes each file locally, exactly as
for a local output, and then publishes it with one PUT. A PUT is atomic (readers see the old
object or the new one, never a part), so a video's rows appear at once and ``videos.parquet``
is replaced whole, as with the local rename.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pyarrow.fs as pafs

from pipeline.locations import RemoteLocation, redact


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

    def publish(self, local: Path, relative: str) -> None:
        """One PUT of a complete local file: atomic for readers of the remote folder."""
        pafs.copy_files(
            str(local),
            f"{self.root}/{relative}",
            source_filesystem=pafs.LocalFileSystem(),
            destination_filesystem=self.fs,
        )

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
