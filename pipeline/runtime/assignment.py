"""Which worker has which video, and who may commit it: the control plane's decisions, Ray-free.

The coordinator hands whole videos to workers (a worker owns a video's decoders, inference and
writer), at most ``open_per_worker`` at a time each, least loaded first. Every hand-out is a new
*attempt* with its own id. A worker asks before it puts a video's files in place; the grant goes
to the video's current attempt only, once, so a worker that was presumed dead and comes back
(its video handed to another since) is refused and its files never land. A worker that dies
loses its open attempts; their videos go to another worker, up to ``max_attempts`` in all.

    assigned ──grant──► granted ──finish──► (gone: the outcome is recorded)
       │  └────place──► placing ──finish──┘
       │                   │
       └──── worker lost ──┴──► to reassign (a new attempt), or failed after max_attempts

``place`` is the grant of a video in a part file, which the coordinator puts in place itself:
such an attempt stays open when its worker dies meanwhile (the coordinator records it as it
places it), so it is never handed out again while its rows land.

A short video's commit may wait for the worker's next part file after its pass has ended
(``ended``): it then no longer counts in the worker's load, but it can still be granted, lost
or reassigned like any open attempt.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

# Videos a worker has open at once unless --max-open-videos says otherwise: short clips' batches
# then wait together for the engine and share its passes; decoders beyond the node's CPUs wait
# in Ray's queue.
MIN_OPEN_PER_WORKER = 16


# Files this small (a few seconds of video) are handed out in chunks, several to one worker in
# one message, and commit grants are asked for together: a per-video message costs the
# coordinator about a millisecond, which a backlog of short clips would otherwise pay per clip.
SHORT_CLIP_BYTES = 8 * 1024 * 1024


# The longest a short clip waits for others to fill its chunk: in a backlog of mostly missing or
# complete files, a clip would otherwise wait for the end of the walk.
CLIP_WAIT_S = 0.5


def videos_per_worker(max_open_videos: int | None, workers: int) -> int:
    """Videos each worker has open at once: the user's ``--max-open-videos`` shared out (at
    least one each); without it, ``MIN_OPEN_PER_WORKER``."""
    if max_open_videos is None:
        return MIN_OPEN_PER_WORKER
    return max(1, max_open_videos // max(1, workers))


def chunk_size(open_per_worker: int) -> int:
    """Short clips per hand-out: half a worker's room, so a chunk finishing overlaps the next."""
    return max(1, open_per_worker // 2)


def is_short_clip(size_bytes: int) -> bool:
    return 0 <= size_bytes <= SHORT_CLIP_BYTES


@dataclass
class ClipChunks:
    """Short clips gathered into hand-outs of ``chunk``: a short backlog is spread over the
    workers instead of handed to one, and no clip waits more than ``CLIP_WAIT_S``."""

    chunk: int
    workers: int
    clips: list = field(default_factory=list)
    waiting_since: float = 0.0

    def add(self, clip, backlog_left: int, now: float) -> list | None:
        """``clip`` joins the chunk being filled; returns the chunk when it is due now."""
        if not self.clips:
            self.waiting_since = now
        self.clips.append(clip)
        return self.due(backlog_left, now)

    def due(self, backlog_left: int, now: float) -> list | None:
        """The chunk, if it is full, the backlog is walked, or its first clip waited long enough."""
        if not self.clips:
            return None
        size = min(self.chunk, max(1, (backlog_left + len(self.clips)) // self.workers))
        if len(self.clips) >= size or backlog_left == 0 or now - self.waiting_since >= CLIP_WAIT_S:
            return self.take()
        return None

    def take(self) -> list:
        clips, self.clips = self.clips, []
        return clips


@dataclass
class Attempt:
    video_id: str
    attempt_id: int
    worker: int
    granted: bool = False
    placing: bool = False  # the coordinator is putting its rows in place (a part): not lost
    running: bool = True  # in its pass (counts in the worker's load); False: its commit waits


@dataclass
class Assignments:
    workers: int
    open_per_worker: int
    max_attempts: int = 3
    # False: no worker takes videos until ``worker_back`` (each joins the run once it is ready)
    start_live: bool = True
    live: list[bool] = field(init=False)
    open: dict[str, Attempt] = field(init=False, default_factory=dict)  # by video id
    attempts: dict[str, int] = field(init=False, default_factory=dict)  # hand-outs per open video
    _ids: itertools.count = field(init=False, default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        if self.workers < 1 or self.open_per_worker < 1:
            raise ValueError("at least one worker with room for one video")
        self.live = [self.start_live] * self.workers
        self._load = [0] * self.workers
        self._open_on = [0] * self.workers  # open attempts per worker, ended passes too
        # (load, worker) of every live worker at its current load, and stale pairs dropped as
        # they come to the top: the least loaded worker in O(log workers), not a scan of all
        # (hundreds on a cluster, per hand-out)
        self._by_load = [(0, w) for w in range(self.workers)] if self.start_live else []

    def _change_load(self, worker: int, change: int) -> None:
        self._load[worker] += change
        if len(self._by_load) > 4 * self.workers + 64:  # stale pairs piled up below the top
            self._by_load = [(self._load[w], w) for w in range(self.workers) if self.live[w]]
            heapq.heapify(self._by_load)
        else:
            heapq.heappush(self._by_load, (self._load[worker], worker))

    def load(self, worker: int) -> int:
        return self._load[worker]

    def free_worker(self, room: int = 1) -> int | None:
        """The live worker with the fewest open videos that has room for ``room`` more (None:
        none has)."""
        room = min(room, self.open_per_worker)
        while self._by_load:
            load, worker = self._by_load[0]
            if self.live[worker] and self._load[worker] == load:
                return worker if load + room <= self.open_per_worker else None
            heapq.heappop(self._by_load)  # stale: the worker's load changed, or it died
        return None

    def assign(self, video_id: str, worker: int) -> Attempt:
        """A new attempt of ``video_id`` on ``worker`` (which must have room)."""
        if video_id in self.open:
            raise ValueError(
                f"{video_id} is open already (attempt {self.open[video_id].attempt_id})"
            )
        if not self.live[worker] or self._load[worker] >= self.open_per_worker:
            raise ValueError(f"worker {worker} has no room")
        attempt = Attempt(video_id, next(self._ids), worker)
        self.open[video_id] = attempt
        self.attempts[video_id] = self.attempts.get(video_id, 0) + 1
        self._change_load(worker, +1)
        self._open_on[worker] += 1
        return attempt

    def is_current(self, video_id: str, attempt_id: int) -> bool:
        current = self.open.get(video_id)
        return current is not None and current.attempt_id == attempt_id

    def grant(self, video_id: str, attempt_id: int) -> bool:
        """May this attempt put its files in place? Only the current one, and only once."""
        current = self.open.get(video_id)
        if current is None or current.attempt_id != attempt_id or current.granted:
            return False
        current.granted = True
        return True

    def place(self, video_id: str, attempt_id: int) -> bool:
        """``grant``, for rows the coordinator puts in place itself: until ``finish`` the
        attempt is not lost with its worker (``lost_with_worker``)."""
        if not self.grant(video_id, attempt_id):
            return False
        self.open[video_id].placing = True
        return True

    def lost_with_worker(self, video_id: str, attempt_id: int) -> bool:
        """Whether the attempt, whose worker died, is over without an outcome: it is current
        and not being placed by the coordinator (then its record is coming)."""
        current = self.open.get(video_id)
        return current is not None and current.attempt_id == attempt_id and not current.placing

    def ended(self, video_id: str, attempt_id: int) -> bool:
        """The attempt's pass is over and its commit waits (for a part file): it no longer
        counts in its worker's load, so the worker gets more videos meanwhile."""
        attempt = self.open.get(video_id)
        if attempt is None or attempt.attempt_id != attempt_id or not attempt.running:
            return False
        attempt.running = False
        self._change_load(attempt.worker, -1)
        return True

    def finish(self, video_id: str, attempt_id: int) -> bool:
        """The attempt's outcome came back; False (and nothing changes) for a stale attempt."""
        if not self.is_current(video_id, attempt_id):
            return False
        attempt = self.open.pop(video_id)
        self.attempts.pop(video_id, None)
        self._open_on[attempt.worker] -= 1
        if attempt.running:
            self._change_load(attempt.worker, -1)
        return True

    def abandon(self, video_id: str, attempt_id: int) -> bool:
        """The attempt is over without an outcome (its worker died or was given up on): the video
        may be handed out again. True when it may (attempts left), False when it has had its
        ``max_attempts`` (record it failed, then ``finish``-free: it is closed here)."""
        if not self.is_current(video_id, attempt_id):
            return False
        attempt = self.open.pop(video_id)
        self._open_on[attempt.worker] -= 1
        if attempt.running:
            self._change_load(attempt.worker, -1)
        if self.attempts[video_id] >= self.max_attempts:
            self.attempts.pop(video_id)
            return False
        return True

    def worker_lost(self, worker: int) -> list[Attempt]:
        """A worker died: its open attempts (each to ``abandon``). It takes no videos until
        ``worker_back``."""
        self.live[worker] = False
        return [a for a in self.open.values() if a.worker == worker]

    def worker_back(self, worker: int) -> None:
        if not self.live[worker]:
            self.live[worker] = True
            heapq.heappush(self._by_load, (self._load[worker], worker))

    def open_on(self, worker: int) -> int:
        """The worker's open attempts, those whose commits wait for a part included."""
        return self._open_on[worker]

    @property
    def open_videos(self) -> int:
        return len(self.open)
