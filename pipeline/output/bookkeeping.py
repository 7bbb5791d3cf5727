"""The manifest of a running run, kept off its event loop: records are held on the loop and their
lines written by the log's thread (``manifest_log``), folds and merges run in threads, so
hand-outs and grants never wait for the disk.

Ray-free and asyncio-only: the coordinator (``VideoCommitter``) and the bookkeeping benchmark
(``docs/bench/bookkeeping.py``) drive the same object.

- A fold is started when ``compaction_due()`` says so and none is running: the log is rotated on
  the log's thread (a rename after the lines before it), the part written in a thread, and the
  fold ended on the loop (the rotated log removed). Only when another ``PENDING_MAX`` records
  came while a fold is written does ``record`` wait for it (so at most two folds' worth of
  records are held).
- Merges run in their own thread, one at a time, after a fold: a merge of big parts does not hold
  the next fold.
- ``publish`` (object storage: the new parts up, the merged ones deleted) runs after each, one at
  a time.
- Only when ``LOG_WAITING_MAX`` lines wait for the log's thread does ``record`` wait for it (so
  the lines held stay bounded when the disk is slow).
- A fold or merge that fails makes the next ``record`` (or ``finish``) raise: the log still holds
  every record, and the next run folds it. A log that cannot be written fails ``logged``.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
from collections.abc import Callable

import pyarrow as pa

from pipeline.output.manifest import Manifest, VideoRecord
from pipeline.output.unfolded import Fold


def return_freed_memory() -> None:
    """Memory that a long run's bookkeeping frees given back to the system, for the process that
    does it (the coordinator's; the driver's, which reads the table at the end):

    - Arrow's allocations from the system's allocator (mimalloc, Arrow's default, keeps the
      pages that folds and merges freed). Arrow's C++ readers and writers keep the pool the
      process started with: ``ARROW_DEFAULT_MEMORY_POOL=system`` in the environment covers them
      too, which ``python -m pipeline`` sets for itself and the Ray it starts, and cluster.yaml
      for its nodes (``docs/BENCHMARKS.md``, "Bookkeeping for a hundred million videos").
    - glibc's threshold for serving an allocation by its own ``mmap`` fixed at 64 KiB: left to
      itself it rises to 32 MiB after the first such block is freed, and from then on Arrow's
      buffers come from the heap, whose free chunks between live ones stay resident (a million
      records' bookkeeping peaked at 298 and 334 MiB that way, at 284 to 286 MiB in four runs
      with it). An Arrow buffer is now unmapped when freed."""
    pa.set_memory_pool(pa.system_memory_pool())
    _mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD_BYTES = 64 * 1024


def _libc_function(name: str) -> Callable | None:
    """A function of the C library (glibc's allocator tuning), None where there is none."""
    library = ctypes.util.find_library("c")
    return getattr(ctypes.CDLL(library), name, None) if library else None


def _mallopt(param: int, value: int) -> None:
    """glibc's ``mallopt`` (a no-op elsewhere)."""
    mallopt = _libc_function("mallopt")
    if mallopt is not None:
        mallopt(param, value)


def tune_garbage_collection() -> None:
    """The garbage collector of a process that runs a long run's control plane, once it has
    started. Each full collection holds the event loop while it walks every tracked object:

    - the objects alive now (the imports of Ray, Arrow and pandas, the actor's own state) are
      put out of its sight (``gc.freeze``): they live as long as the process. The longest pause
      of a million-video bookkeeping run went from 84 to 49 ms (docs/BENCHMARKS.md);
    - full collections come a hundred times more rarely (``FULL_COLLECTION_EVERY``): the
      records waiting for a fold and the videos in the backlog, about 150,000 objects at
      cluster size, took 66 to 180 ms a walk, every second or two, and found nothing to free.
      The control plane's simulation of 400 workers, a million clips: 8,085 clips/s against
      6,913, longest pause 122 ms against 230, the same peak memory. Younger generations are
      still collected as often as before."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)


# Collections of the middle generation between two full ones (Python's default: 10).
FULL_COLLECTION_EVERY = 1000


def _malloc_trim() -> Callable[[], None]:
    """glibc's ``malloc_trim``: the heap pages that a fold or merge freed, in the arena of the
    thread that ran it, given back to the system (glibc keeps them otherwise, and each thread
    has its own arena: 37 MiB of a million-video run's peak). A no-op elsewhere."""
    trim = _libc_function("malloc_trim")
    return (lambda: trim(0)) if trim is not None else (lambda: None)


trim_heap = _malloc_trim()


class Bookkeeping:
    LOG_WAITING_MAX = 16_384  # lines not yet written that ``record`` lets pile up

    def __init__(self, manifest: Manifest, publish: Callable[[], None] = lambda: None):
        self.manifest = manifest
        manifest.log.in_background()  # a line's write never holds the loop (manifest_log.py)
        self._publish_fn = publish
        self._publish_lock = asyncio.Lock()
        self._fold: asyncio.Task | None = None
        self._merge: asyncio.Task | None = None
        self._error: BaseException | None = None
        self.folds = 0
        self.merges = 0

    async def record(self, record: VideoRecord) -> None:
        """The record held and its line on its way to the log (``logged``: in it); a fold
        started when one is due."""
        if self._error is not None:
            raise self._error
        self.manifest.record(record)
        if self._fold is None:
            if self.manifest.compaction_due():
                self._fold = asyncio.create_task(self._write_fold())
        elif self.manifest.logged >= self.manifest.PENDING_MAX:
            await asyncio.shield(self._fold)  # folds fall behind: the held records stay bounded
        if self.manifest.log.waiting() >= self.LOG_WAITING_MAX:
            await self.logged()  # the log's thread falls behind: the lines held stay bounded

    async def logged(self) -> None:
        """Every line so far is in the log: wait for it before a step that the line must
        precede (files put in place or removed, a grant answered)."""
        await asyncio.wrap_future(self.manifest.log.written())

    async def _write_fold(self) -> None:
        try:
            fold = self.manifest.begin_fold()
            try:
                # the log renamed first (the next fold numbers its rename from what is on disk)
                await asyncio.wrap_future(self.manifest.log.rotation)
                await asyncio.to_thread(self._write, fold)
            except BaseException:
                self.manifest.abort_fold(fold)
                raise
            self.manifest.end_fold(fold)
            self.folds += 1
            if self._merge is None:
                self._merge = asyncio.create_task(self._merge_parts())
            await self._publish()
        except Exception as exc:
            self._error = exc
        finally:
            self._fold = None

    async def _merge_parts(self) -> None:
        try:
            self.merges += await asyncio.to_thread(self._merge_due)
            await self._publish()
        except Exception as exc:
            self._error = exc
        finally:
            self._merge = None

    def _write(self, fold: Fold) -> None:
        self.manifest.write_fold(fold)
        trim_heap()

    def _merge_due(self) -> int:
        merges = self.manifest.merge_due()
        trim_heap()
        return merges

    async def _publish(self) -> None:
        async with self._publish_lock:  # one at a time: each makes the remote folder the local one
            await asyncio.to_thread(self._publish_fn)

    async def finish(self) -> None:
        """The run's last fold and the merges due, in a thread, then published (nothing else
        records meanwhile)."""
        for task in (self._fold, self._merge):
            if task is not None:
                await asyncio.shield(task)
        if self._error is not None:
            raise self._error
        await asyncio.to_thread(self.manifest.save)
        await asyncio.to_thread(self.manifest.log.close)  # the log's thread ends with the run
        await self._publish()
