"""One service job at a time.

Each run plans its actors from the whole cluster, so two runs started together on a small
cluster can each hold half the CPUs and wait for ever for the other half. Service jobs therefore
take a lock first (an ``flock`` beside the head node's job drivers, released by the kernel when
the process ends, however it ends): a job submitted while another runs waits, marked ``queued``.
"""

from __future__ import annotations

import fcntl
import os
import signal
import time
from pathlib import Path
from typing import IO


def queue_dir() -> Path:
    folder = Path(
        os.environ.get("PIPELINE_JOB_QUEUE_DIR")
        or Path.home() / ".cache" / "yolo-pipeline" / "service-jobs"
    )
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def is_queued(job_id: str) -> bool:
    return (queue_dir() / f"{job_id}.queued").exists()


def _stop(signum, frame):
    raise SystemExit(128 + signum)


def wait_for_turn(job_id: str) -> IO:
    """Block until this process holds the service's run lock. The lock lasts as long as the
    returned file stays open: keep it until the job ends (the kernel drops it then, however the
    process ends)."""
    folder = queue_dir()
    lock = open(folder / "run.lock", "a")  # held until this process ends
    marker = folder / f"{job_id}.queued"
    previous = signal.signal(signal.SIGTERM, _stop)  # a job stopped while it waits leaves no marker
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            marker.touch()
            print(
                "waiting for the service's running job to finish (one job runs at a time)",
                flush=True,
            )
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    time.sleep(1)
    finally:
        marker.unlink(missing_ok=True)
        signal.signal(signal.SIGTERM, previous)
    return lock
