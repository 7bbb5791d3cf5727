"""Fault injection and tracing for the tests: kill an actor, a decoder or a tracking task at a chosen moment,
slow actors down, and log when batches are produced and consumed.

Kills are counted with marker files, so a restarted process knows what already happened.
Nothing here is active unless a ``FaultPlan`` is passed to the run explicitly.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FaultPlan:
    marker_dir: str
    # the first actor to reach this many batches dies, once
    actor_exit_after_batches: int | None = None
    actor_delay_s: float = 0.0  # slow every batch down (backpressure tests)
    decoder_exit_video: str | None = None  # substring of the path whose decoder dies
    decoder_exit_times: int = 1  # how many times it dies (a large number: always)
    decoder_exit_after_batches: int = 0
    decoder_stalls: bool = False  # instead of dying, the decoder hangs (sleeps for an hour)
    # the first actor to reach this many batches hangs, once
    actor_hang_after_batches: int | None = None
    tracker_exit_video_id: str | None = None  # the tracking task of this video dies ...
    tracker_exit_times: int = 1  # ... this many times (a large number: always)
    # the coordinator dies once, between a video's files and its record
    coordinator_exit_after_commit: bool = False
    # the first actor to answer this call ("ready", "start_run") dies in it, once: between its
    # model loaded and the run started
    actor_exit_in: str | None = None
    trace: bool = False  # append "produced"/"inferred" events with times to marker_dir/trace.log
    # the coordinator's bookkeeping at a tiny scale: a fold every this many records, parts merged
    # three at a time from this size, so that folds and merges run all through a short run
    fold_every_records: int | None = None

    def _trace(self, event: str) -> None:
        if self.trace:
            # One small O_APPEND write per event: atomic between processes on a local disk.
            with open(Path(self.marker_dir, "trace.log"), "a") as f:
                f.write(f"{time.time():.6f} {event}\n")

    def read_trace(self) -> list[tuple[float, str]]:
        path = Path(self.marker_dir, "trace.log")
        if not path.exists():
            return []
        return sorted(
            (float(t), e) for t, e in (line.split() for line in path.read_text().splitlines())
        )

    def _count(self, kind: str) -> int:
        return len(list(Path(self.marker_dir).glob(f"{kind}-*")))

    def _mark(self, kind: str) -> None:
        Path(self.marker_dir, f"{kind}-{uuid.uuid4().hex}").touch()

    def _claim_once(self, kind: str) -> bool:
        """True for exactly one caller across processes: the one whose exclusive create of the
        marker succeeds (two actors checking a count, then marking, could both fire)."""
        try:
            os.close(
                os.open(Path(self.marker_dir, f"{kind}-once"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            )
        except FileExistsError:
            return False
        return True

    def on_actor_batch(self, batches_done: int) -> None:
        if self.actor_delay_s:
            time.sleep(self.actor_delay_s)
        self._trace("inferred")
        if (
            self.actor_hang_after_batches is not None
            and batches_done >= self.actor_hang_after_batches
        ):
            if self._claim_once("hang"):
                time.sleep(3600)  # a stuck kernel: alive, answering nothing
        if (
            self.actor_exit_after_batches is not None
            and batches_done >= self.actor_exit_after_batches
        ):
            if self._claim_once("actor"):
                os._exit(1)

    def on_decoder_batch(self, path: str, seq: int) -> None:
        """Called before each batch is yielded."""
        self._trace("produced")
        if (
            self.decoder_exit_video
            and self.decoder_exit_video in path
            and seq >= self.decoder_exit_after_batches
        ):
            if self._count("decoder") < self.decoder_exit_times:
                self._mark("decoder")
                if self.decoder_stalls:
                    time.sleep(3600)
                os._exit(1)

    def on_actor_call(self, name: str) -> None:
        if self.actor_exit_in == name and self._claim_once(f"exit-in-{name}"):
            os._exit(1)

    def bookkeeping_scale(self) -> None:
        """In the coordinator's process, before its manifest is loaded."""
        if self.fold_every_records is not None:
            from pipeline.output.manifest import Manifest
            from pipeline.output.videos_table import VideosTable

            Manifest.PENDING_MAX = self.fold_every_records
            VideosTable.TIER_ROWS = 2 * self.fold_every_records
            VideosTable.FANIN = 3

    def on_commit(self) -> None:
        """Called in the coordinator as it records a video whose files are in place, before the
        record is logged."""
        if self.coordinator_exit_after_commit and self._claim_once("commit"):
            os._exit(1)

    def on_tracking(self, video_id: str) -> None:
        if (
            self.tracker_exit_video_id == video_id
            and self._count("tracker") < self.tracker_exit_times
        ):
            self._mark("tracker")
            os._exit(1)
