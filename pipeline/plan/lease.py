"""One run at a time per output folder: a lease file, ``OUT/.lease``.

Two runs on one output would delete each other's temporary files and the last one to write
``videos.parquet`` would drop the other's rows. The lease names its holder (host, pid, start
time) and is refreshed every ``HEARTBEAT_S`` while the run lasts. A run that finds a lease held
by a live process stops at once. A lease whose holder is gone is taken over, so a crashed run
never leaves the folder locked: on the same host, a holder whose pid no longer runs is gone; on
another host, one that has not refreshed the lease for ``STALE_S``.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import UsageError
from pipeline.output.layout import OutputLayout

LEASE_NAME = OutputLayout.LEASE_FILE
HEARTBEAT_S = 10.0
STALE_S = 60.0


class OutputInUse(UsageError):
    """Another run holds the output folder."""


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    started_at: str
    process_started: float = 0.0  # the holder process's start (epoch s): tells a reused pid apart

    @classmethod
    def me(cls) -> Holder:
        import psutil

        return cls(
            socket.gethostname(),
            os.getpid(),
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            psutil.Process().create_time(),
        )


def _holder_running(holder: Holder) -> bool:
    import psutil

    try:
        started = psutil.Process(holder.pid).create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:  # someone else's process that we may not inspect: assume it is the holder
        return True
    # A pid is reused once its process ends: a process that started later is not the holder.
    return not holder.process_started or abs(started - holder.process_started) < 1.0


def holder_is_gone(holder: Holder, age_s: float, *, host: str | None = None) -> bool:
    """Whether a lease can be taken over: its holder's process ended (same host), or it stopped
    refreshing the lease (another host, where its pid cannot be checked)."""
    if holder.host == (host or socket.gethostname()):
        return not _holder_running(holder)
    return age_s > STALE_S


class Lease:
    """Held from ``acquire()`` to ``release()``; refreshed by a daemon thread meanwhile."""

    def __init__(self, folder: Path):
        self.path = OutputLayout(folder).lease_file
        self.holder = Holder.me()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> Lease:
        for _ in range(3):  # a stale lease is moved aside, then the race to create it is fair
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self.holder.__dict__, f)
            self._thread = threading.Thread(target=self._refresh, name="output-lease", daemon=True)
            self._thread.start()
            return self
        raise OutputInUse(
            f"{self.path.parent} is being taken by another run at this moment; try again"
        )

    def _take_over_if_stale(self) -> None:
        try:
            holder = Holder(**json.loads(self.path.read_text()))
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return  # released meanwhile
        except (ValueError, TypeError):  # half-written by a run that died while creating it
            holder, age = None, time.time() - self.path.stat().st_mtime
            if age <= STALE_S:
                raise OutputInUse(
                    f"{self.path.parent} is being taken by another run at this moment; try again"
                ) from None
        if holder is not None and not holder_is_gone(holder, age):
            raise OutputInUse(
                f"{self.path.parent} is in use by another run (pid {holder.pid} on {holder.host}, started "
                f"{holder.started_at}): wait for it to end or stop it, or give another --output"
            )
        aside = self.path.with_name(f"{LEASE_NAME}-stale-{uuid.uuid4().hex[:8]}")
        try:
            # atomic: of two runs taking over, one renames, the other finds none
            os.rename(self.path, aside)
            aside.unlink()
        except FileNotFoundError:
            pass

    def _refresh(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except FileNotFoundError:
                return

    def release(self) -> None:
        self._stop.set()
        try:
            if Holder(**json.loads(self.path.read_text())) == self.holder:
                self.path.unlink()
        except (FileNotFoundError, ValueError, TypeError):
            pass
