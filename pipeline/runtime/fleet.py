"""The run's video workers over time, Ray-free: which are in the run now, when each joined (the
first ones, and those the cluster could place only later), which were lost with their node, and
which left idle at the tail of the backlog; the worker-seconds (GPU-seconds) held against those
busy, for ``run.json``.

A worker's *spell* is one process of it in the run: from its model ready (``joined``) to its
loss (``lost``: Ray starts it again where there is room, and it joins again as a new spell), its
release (``released``: idle, its resources given back) or the run's end. Elastic runs on spot
capacity have many spells per worker; none of this is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Spell:
    worker: int
    node_id: str
    pid: int
    started_s: float  # seconds since the run's start
    late: bool  # not ready when the run started, or back after a loss
    videos: int = 0  # recorded from this spell
    ended_s: float | None = None
    end: str | None = None  # "lost", "released", "run ended"

    def held_s(self, now_s: float) -> float:
        return (self.ended_s if self.ended_s is not None else now_s) - self.started_s


@dataclass
class Fleet:
    wanted: int
    gpus_each: float  # what each worker reserves (0 on CPU workers)
    idle_release_s: float  # 0: never released
    started: float  # the run's start (the clock of ``now`` arguments)
    at_start: frozenset[int] = frozenset()  # the workers ready when the run started
    spells: list[Spell] = field(default_factory=list)
    current: dict[int, Spell] = field(default_factory=dict)  # by worker: in the run now
    released: set[int] = field(default_factory=set)
    refused: dict[int, str] = field(default_factory=dict)  # never in the run, and why
    ready_over_time: list[tuple[float, int]] = field(default_factory=list)
    _idle_since: dict[int, float] = field(default_factory=dict)
    _last: dict[int, Spell] = field(default_factory=dict)  # each worker's latest spell

    @property
    def ready(self) -> int:
        return len(self.current)

    @property
    def pending(self) -> int:
        """Workers asked for that are not in the run yet (being placed, loading, or restarting
        after a loss); released and refused ones are not waited for."""
        return self.wanted - self.ready - len(self.released) - len(self.refused)

    def joined(self, worker: int, node_id: str, pid: int, now: float) -> Spell:
        late = worker in self._last or worker not in self.at_start
        spell = Spell(worker, node_id, pid, now - self.started, late=late)
        self.spells.append(spell)
        self.current[worker] = self._last[worker] = spell
        self._changed(now)
        return spell

    def video_done(self, worker: int) -> None:
        """A video of ``worker``'s was recorded (its latest spell's: rows it had put in place
        are recorded after its loss too)."""
        if worker in self._last:
            self._last[worker].videos += 1

    def lost(self, worker: int, now: float) -> None:
        self._end(worker, now, "lost")

    def release(self, worker: int, now: float) -> None:
        self._end(worker, now, "released")
        self.released.add(worker)

    def refuse(self, worker: int, reason: str) -> None:
        """A worker that cannot take part (its model did not load, its node cannot see the
        output): never waited for again."""
        self.refused[worker] = reason

    def _end(self, worker: int, now: float, how: str) -> None:
        spell = self.current.pop(worker, None)
        self._idle_since.pop(worker, None)
        if spell is not None:
            spell.ended_s, spell.end = now - self.started, how
            self._changed(now)

    def _changed(self, now: float) -> None:
        self.ready_over_time.append((round(now - self.started, 3), self.ready))

    def to_release(self, now: float, open_videos: dict[int, int], nothing_left: bool) -> list[int]:
        """The workers in the run that have had no open video for ``idle_release_s`` while nothing
        was left to hand out (``open_videos``: each worker's open attempts, missing: none).
        Called about once a second; a worker that gets a video again starts its clock over."""
        if not self.idle_release_s:
            return []
        due = []
        for worker in self.current:
            if nothing_left and not open_videos.get(worker):
                since = self._idle_since.setdefault(worker, now)
                if now - since >= self.idle_release_s:
                    due.append(worker)
            else:
                self._idle_since.pop(worker, None)
        return due

    def record(self, now: float, by_process: dict[tuple[int, int], tuple[float, int]]) -> dict:
        """``run.json``'s ``workers``: ``by_process[(worker, pid)]`` is that process's
        (busy seconds in forward passes, frames inferred), from its last report."""
        now_s = now - self.started
        spells = []
        held = busy = 0.0
        # a process's figures go to its latest spell (one cut off that came back has two)
        latest = {(s.worker, s.pid): s for s in self.spells}
        for s in self.spells:
            mine = latest[(s.worker, s.pid)] is s
            busy_s, frames = by_process.get((s.worker, s.pid), (0.0, 0)) if mine else (0.0, 0)
            held_s = s.held_s(now_s)  # a spell still on: to now, the run's end
            held, busy = held + held_s, busy + busy_s
            spells.append(
                {
                    "worker": s.worker,
                    "node_id": s.node_id,
                    "pid": s.pid,
                    "started_s": round(s.started_s, 3),
                    "ended_s": round(now_s if s.ended_s is None else s.ended_s, 3),
                    "end": s.end or "run ended",
                    "joined_late": s.late,
                    "videos": s.videos,
                    "frames": frames,
                    "busy_s": round(busy_s, 3),
                    "busy_share": round(busy_s / held_s, 4) if held_s > 0 else None,
                }
            )
        return {
            "wanted": self.wanted,
            "joined": len(self.spells),
            "joined_late": sum(s.late for s in self.spells),
            "lost": sum(s.end == "lost" for s in self.spells),
            "released": len(self.released),
            "refused": {str(w): why for w, why in self.refused.items()},
            "peak_ready": max((n for _, n in self.ready_over_time), default=0),
            "ready_over_time": [list(p) for p in self.ready_over_time],
            "worker_s_held": round(held, 3),
            "worker_s_busy": round(busy, 3),
            "gpu_s_held": round(held * self.gpus_each, 3),
            "gpu_s_busy": round(busy * self.gpus_each, 3),
            "spells": spells,
        }


def pending_line(
    pending: int, wanted: int, ready: int, demand: dict[str, float], free: dict[str, float]
) -> str:
    """One line on the workers the run waits for: what each asks for, and whether the cluster
    has that free now (if not, only a new node, say from the autoscaler, will place them)."""
    asked = {name: amount for name, amount in demand.items() if amount}
    need = ", ".join(f"{name}: {amount:g}" for name, amount in asked.items())
    have = ", ".join(f"{name}: {free.get(name, 0.0):g}" for name in asked)
    if any(free.get(name, 0.0) < amount for name, amount in asked.items()):
        why = f"{{{need}}} each fits no node now (the cluster has {{{have}}} free)"
    else:
        why = f"{{{need}}} each is free: being placed, loading the model, or restarting"
    running = f"running with {ready}" if ready else "no video starts until one is ready"
    return f"waiting for {pending} of {wanted} video workers: {why}; {running}"


@dataclass
class PendingNotice:
    """When to print ``pending_line``: once workers have been pending ``after_s``, and again
    only when the numbers change (a run on spot capacity loses and regains workers for days)."""

    after_s: float = 20.0
    _since: float | None = None
    _told: tuple[int, int] | None = None

    def due(self, now: float, pending: int, ready: int) -> bool:
        if pending <= 0:
            self._since = self._told = None
            return False
        if self._since is None:
            self._since = now
        if now - self._since < self.after_s or self._told == (pending, ready):
            return False
        self._told = (pending, ready)
        return True
