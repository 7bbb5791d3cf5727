"""One run per output folder: the lease's decisions, without Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import psutil
import pytest

from pipeline.plan.lease import LEASE_NAME, STALE_S, Holder, Lease, OutputInUse, holder_is_gone


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.mark.parametrize(
    "holder, age_s, gone",
    [
        (Holder("here", os.getpid(), "t"), 1e6, False),  # this process runs, however old the lease
        (Holder("here", os.getpid(), "t", psutil.Process().create_time()), 0, False),
        (
            Holder("here", os.getpid(), "t", psutil.Process().create_time() - 3600),
            0,
            True,
        ),  # pid reused since
        (Holder("here", 0, "t"), 0, None),  # filled in below with a pid that has ended
        (Holder("elsewhere", 1, "t"), 5.0, False),  # another host, refreshed 5 s ago
        (Holder("elsewhere", 1, "t"), STALE_S + 1, True),  # another host, silent for too long
    ],
)
def test_when_a_holder_is_gone(holder, age_s, gone):
    if gone is None:
        holder, gone = Holder("here", dead_pid(), "t"), True
    assert holder_is_gone(holder, age_s, host="here") is gone


def test_a_second_lease_on_the_same_folder_is_refused_until_the_first_is_released(tmp_path):
    first = Lease(tmp_path).acquire()
    with pytest.raises(OutputInUse, match=f"in use by another run \\(pid {os.getpid()} on "):
        Lease(tmp_path).acquire()
    first.release()
    assert not (tmp_path / LEASE_NAME).exists()
    Lease(tmp_path).acquire().release()


def test_a_lease_left_by_a_dead_run_is_taken_over(tmp_path):
    import socket

    (tmp_path / LEASE_NAME).write_text(
        json.dumps({"host": socket.gethostname(), "pid": dead_pid(), "started_at": "t"})
    )
    lease = Lease(tmp_path).acquire()
    assert json.loads((tmp_path / LEASE_NAME).read_text())["pid"] == os.getpid()
    lease.release()


def test_a_lease_of_another_host_is_taken_over_only_once_it_went_silent(tmp_path):
    path = tmp_path / LEASE_NAME
    path.write_text(json.dumps({"host": "another-node", "pid": 1, "started_at": "t"}))
    with pytest.raises(OutputInUse, match="another-node"):
        Lease(tmp_path).acquire()
    silent_since = time.time() - STALE_S - 5
    os.utime(path, (silent_since, silent_since))
    Lease(tmp_path).acquire().release()


def test_the_lease_is_refreshed_while_held(tmp_path, monkeypatch):
    monkeypatch.setattr("pipeline.plan.lease.HEARTBEAT_S", 0.05)
    lease = Lease(tmp_path).acquire()
    long_ago = time.time() - 1000
    os.utime(tmp_path / LEASE_NAME, (long_ago, long_ago))
    time.sleep(0.3)
    assert time.time() - (tmp_path / LEASE_NAME).stat().st_mtime < 5
    lease.release()
