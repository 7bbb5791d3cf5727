"""``videos.log`` written by its own thread: a write that waits for the disk never holds the
coordinator's loop, lines and rotations keep their order, and a caller that must follow its lines
(a rename, a removal, a grant's answer) can wait until they are written."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from pipeline.output.bookkeeping import Bookkeeping
from pipeline.output.manifest import Manifest, VideoRecord
from pipeline.output.manifest_log import ManifestLog


def record(i: int) -> VideoRecord:
    return VideoRecord(f"v{i:05d}", f"/v/{i}.mp4", "ok", frames_processed=5, settings_hash="h")


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_lines_and_rotations_keep_their_order_in_the_background(tmp_path):
    log = ManifestLog(tmp_path / "videos.log")
    log.in_background()
    log.append({"n": 1})
    log.append({"n": 2})
    rotated = log.rotate(log.rotated())
    log.append({"n": 3})
    log.written().result(timeout=10)
    assert log.rotation.done()
    assert lines(rotated) == [{"n": 1}, {"n": 2}]
    assert lines(tmp_path / "videos.log") == [{"n": 3}]
    log.append({"n": 4})
    log.close()  # what waited is written before the thread ends
    assert lines(tmp_path / "videos.log") == [{"n": 3}, {"n": 4}]
    log.append({"n": 5})  # closed: written at once, by the caller
    assert lines(tmp_path / "videos.log")[-1] == {"n": 5}


def test_a_write_that_waits_for_the_disk_holds_records_but_not_the_loop(tmp_path, monkeypatch):
    """The log's write blocks (a journal held by another thread's fsync): ``record`` returns at
    once and the loop runs on, while ``logged`` (what a rename waits for) waits for the disk."""
    disk = threading.Event()
    real_write = ManifestLog._write

    def blocked_write(self, data: bytes) -> None:
        disk.wait(timeout=0.5)  # (on the loop, each line would hold it this long)
        real_write(self, data)

    monkeypatch.setattr(ManifestLog, "_write", blocked_write)

    async def run() -> None:
        bookkeeping = Bookkeeping(Manifest(tmp_path))
        started = time.perf_counter()
        for i in range(50):
            await bookkeeping.record(record(i))
        assert time.perf_counter() - started < 1.0  # written on the loop, it would hang here
        logged = asyncio.create_task(bookkeeping.logged())
        await asyncio.sleep(0.2)
        assert not logged.done()  # the lines are not in the file yet
        disk.set()
        await asyncio.wait_for(logged, timeout=10)
        written = [row["video_id"] for row in lines(tmp_path / Manifest.LOG_NAME)]
        assert written == [f"v{i:05d}" for i in range(50)]
        await bookkeeping.finish()

    asyncio.run(asyncio.wait_for(run(), timeout=30))
    assert len(Manifest(tmp_path).records) == 50


def test_a_log_that_cannot_be_written_says_so_to_whoever_waits_and_to_the_next_line(
    tmp_path, monkeypatch
):
    def full_disk(self, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ManifestLog, "_write", full_disk)
    log = ManifestLog(tmp_path / "videos.log")
    log.in_background()
    log.append({"n": 1})
    with pytest.raises(OSError, match="No space"):
        log.written().result(timeout=10)
    with pytest.raises(OSError, match="No space"):
        log.append({"n": 2})
    log.close()
