"""Every name in a run's output folder, in one place.

```
OUT/detections/<video_id>.parquet   one file per video, one row per processed frame
OUT/tracks/<video_id>.parquet       with --track: one row per object track
OUT/videos.parquet/part-*.parquet   one record per input video, its latest (the manifest)
OUT/videos.log                      videos finished since the last part was written
OUT/run.json                        the latest run that processed videos
OUT/runs/<UTC start time>.json      one record per run
OUT/progress.json                   a running run's progress (local outputs)
OUT/.lease                          the run that holds the folder
```

Files are written under hidden names (``TEMP_PREFIX``) that end in ``.tmp`` and renamed into
place when complete: pyarrow, pandas and Ray Data skip hidden files, and no ``*.parquet`` glob
(DuckDB's reads hidden files) matches a file being written. ``relative`` names are the same
paths from the output's root: the keys of an output on object storage.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

TEMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class OutputLayout:
    root: Path  # the local folder: the output itself, or the staging folder of a remote one

    DETECTIONS = "detections"
    TRACKS = "tracks"
    RUNS = "runs"
    MANIFEST = "videos.parquet"
    MANIFEST_LOG = "videos.log"
    RUN_FILE = "run.json"
    PROGRESS_FILE = "progress.json"
    LEASE_FILE = ".lease"

    @staticmethod
    def detections_key(video_id: str) -> str:
        return f"{OutputLayout.DETECTIONS}/{video_id}.parquet"

    @staticmethod
    def tracks_key(video_id: str) -> str:
        return f"{OutputLayout.TRACKS}/{video_id}.parquet"

    @staticmethod
    def run_record_key(started: float) -> str:
        """``runs/<UTC start time, to the millisecond>.json``."""
        stamp = (
            time.strftime("%Y%m%dT%H%M%S", time.gmtime(started)) + f"{started % 1:.3f}"[1:] + "Z"
        )
        return f"{OutputLayout.RUNS}/{stamp}.json"

    def path(self, key: str) -> Path:
        return self.root / key

    def key(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def detections(self, video_id: str) -> Path:
        return self.path(self.detections_key(video_id))

    def tracks(self, video_id: str) -> Path:
        return self.path(self.tracks_key(video_id))

    @property
    def detections_folder(self) -> Path:
        return self.root / self.DETECTIONS

    @property
    def manifest(self) -> Path:
        return self.root / self.MANIFEST

    @property
    def manifest_log(self) -> Path:
        return self.root / self.MANIFEST_LOG

    @property
    def run_file(self) -> Path:
        return self.root / self.RUN_FILE

    @property
    def progress_file(self) -> Path:
        return self.root / self.PROGRESS_FILE

    @property
    def lease_file(self) -> Path:
        return self.root / self.LEASE_FILE

    @staticmethod
    def temp_beside(final: Path, stem: str | None = None) -> Path:
        """A hidden name in ``final``'s folder, unique to this writer, not ending in ``.parquet``
        (readers skip it), and a stale one is removed by ``stale_temp_files``."""
        return final.with_name(
            f"{TEMP_PREFIX}{stem or final.stem}-{uuid.uuid4().hex[:8]}{final.suffix}.tmp"
        )

    @staticmethod
    def temp_for(final: Path) -> Path:
        """The one hidden name of a file replaced whole by its only writer (run records)."""
        return final.with_name(f"{TEMP_PREFIX}{final.name}")

    def stale_temp_files(self) -> list[Path]:
        """Hidden files a killed run left in the folders the pipeline writes (not folders:
        the pipeline writes only files, so a folder with the prefix is not one of ours)."""
        found = []
        for folder in (
            self.root,
            self.root / self.DETECTIONS,
            self.root / self.TRACKS,
            self.root / self.RUNS,
        ):
            if folder.is_dir():
                found += [p for p in folder.glob(f"{TEMP_PREFIX}*") if not p.is_dir()]
        return found


def process_unique(path: Path) -> Path:
    """``path``, or the same name with this process's id when it exists already (two run records
    started within the same millisecond)."""
    return path if not path.exists() else path.with_name(f"{path.stem}-{os.getpid()}{path.suffix}")
