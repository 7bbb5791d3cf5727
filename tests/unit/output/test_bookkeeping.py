"""Folds and merges off the event loop: records go on while a fold is written, and nothing
recorded meanwhile is lost or hidden from the resume decision."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest

from pipeline.media.source import VideoSource
from pipeline.output.bookkeeping import Bookkeeping
from pipeline.output.manifest import Manifest, VideoRecord
from pipeline.output.videos_table import VideosTable
from pipeline.runtime.pauses import PauseWatch


def record(i: int) -> VideoRecord:
    return VideoRecord(
        f"v{i:05d}", f"/v/{i}.mp4", "ok", frames_processed=5, size_bytes=1, settings_hash="h"
    )


def source(i: int) -> VideoSource:
    return VideoSource(f"/v/{i}.mp4", f"v{i:05d}", size_bytes=1, mtime_ns=-1)


def test_records_go_on_while_a_slow_fold_is_written(tmp_path, monkeypatch):
    """A fold that takes 0.6 s (a big part, a slow disk) holds the loop for none of it: records,
    resume decisions and a timer carry on; every record is stored at the end."""
    monkeypatch.setattr(Manifest, "PENDING_MAX", 100)
    real_write = VideosTable.write_part

    def slow_write(self, *args, **kwargs):
        time.sleep(0.6)  # (in the fold's thread)
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(VideosTable, "write_part", slow_write)

    async def run() -> tuple[float, float]:
        bookkeeping = Bookkeeping(Manifest(tmp_path))
        pauses = PauseWatch(interval_s=0.01)
        timer = asyncio.create_task(pauses.run())
        slowest = 0.0
        for i in range(400):
            started = time.perf_counter()
            await bookkeeping.record(record(i))
            slowest = max(slowest, time.perf_counter() - started)
            # what was recorded, before and during the fold, is complete
            assert bookkeeping.manifest.is_complete(source(i // 2), "h")
            # the coordinator's other work: 100 records (a fold's worth) take longer than the
            # fold's 0.6 s, so record never has to wait for a fold (that would be backpressure)
            await asyncio.sleep(0.008)
        folded_during_the_run = len(VideosTable(tmp_path / Manifest.FILE_NAME).parts())
        await bookkeeping.finish()
        timer.cancel()
        assert folded_during_the_run >= 1
        return slowest, pauses.longest_s

    slowest, longest_pause = asyncio.run(run())
    assert slowest < 0.3 and longest_pause < 0.3  # a fold on the loop would hold it 0.6 s
    records = Manifest(tmp_path).records
    assert sorted(records) == [f"v{i:05d}" for i in range(400)]


def test_a_failed_fold_keeps_every_record_and_the_next_record_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(Manifest, "PENDING_MAX", 10)

    def full(self, *args, **kwargs):
        raise OSError("No space left on device")

    async def run() -> None:
        bookkeeping = Bookkeeping(Manifest(tmp_path))
        with monkeypatch.context() as disk:
            disk.setattr(VideosTable, "write_part", full)
            for i in range(10):
                await bookkeeping.record(record(i))
            while bookkeeping._fold is not None:
                await asyncio.sleep(0.01)
            with pytest.raises(OSError, match="No space"):
                await bookkeeping.record(record(10))
            assert bookkeeping.manifest.is_complete(source(3), "h")  # held again

    asyncio.run(run())
    assert sorted(Manifest(tmp_path).records) == [f"v{i:05d}" for i in range(10)]  # the log


def test_a_slow_log_makes_record_wait_so_the_lines_held_stay_bounded(tmp_path, monkeypatch):
    """A log whose writes take 20 ms each (a disk behind its journal): without the bound,
    every line recorded meanwhile would wait in memory; with it, at most about the bound."""
    from pipeline.output.manifest_log import ManifestLog

    monkeypatch.setattr(Bookkeeping, "LOG_WAITING_MAX", 50)
    monkeypatch.setattr("pipeline.output.manifest_log.WRITE_LINES_MAX", 10)
    real_write = ManifestLog._write

    def slow_write(self, data):
        time.sleep(0.02)
        return real_write(self, data)

    monkeypatch.setattr(ManifestLog, "_write", slow_write)

    async def run() -> int:
        bookkeeping = Bookkeeping(Manifest(tmp_path))
        most = 0
        for i in range(600):
            await bookkeeping.record(record(i))
            most = max(most, bookkeeping.manifest.log.waiting())
        await bookkeeping.finish()
        return most

    most = asyncio.run(run())
    assert most <= 50  # without the bound: about 590 (600 lines, 10 a write, 20 ms a write)
    assert len(Manifest(tmp_path).records) == 600


def test_the_control_plane_collects_its_oldest_objects_rarely():
    """In a fresh process (the collector's settings are the process's): what lives at the start
    is frozen, and full collections come FULL_COLLECTION_EVERY middle ones apart; the younger
    generations keep the interpreter's own thresholds."""
    probe = (
        "import gc\n"
        "from pipeline.output.bookkeeping import FULL_COLLECTION_EVERY, tune_garbage_collection\n"
        "young, middle, full = gc.get_threshold()\n"
        "tune_garbage_collection()\n"
        "print(full, gc.get_threshold() == (young, middle, FULL_COLLECTION_EVERY), "
        "FULL_COLLECTION_EVERY, gc.get_freeze_count() > 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    full_before, changed, every, frozen = done.stdout.split()
    assert changed == "True" and frozen == "True"
    assert int(every) >= 100 * int(full_before)  # full collections 100x rarer than by default
