"""The record of a run: ``runs/<UTC start time>.json`` for every run, and ``run.json`` for the
latest run that processed videos (a rerun with nothing to do never wipes the figures of the one
that did). One type for both kinds of run; the readers of ``run.json`` read what it writes.

A run that processed videos is assembled here (``processed_run_record``) from typed parts: the
coordinator's ``CoordinatorSummary`` (with each worker's ``ActorStats``), the run's counts, and
the placement and model facts the driver had."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config import RunConfig
from pipeline.errors import EXIT_OK, EXIT_VIDEOS_FAILED
from pipeline.output.layout import OutputLayout, process_unique
from pipeline.output.outcomes import RunCounts
from pipeline.output.store import OutputStore
from pipeline.output.writer import durable_replace


def utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


@dataclass
class RunRecord:
    """What every run records. ``details`` holds what a run that processed videos adds
    (placement, model, throughput, time per stage, memory, GPU figures, the timeline, …)."""

    started: float  # wall clock at the command's start
    settings: dict
    settings_hash: str
    totals: dict
    did_work: bool
    details: dict = field(default_factory=dict)
    stopped_by: int | None = None  # the signal that stopped the run (SIGINT, SIGTERM), if one did

    @property
    def exit_code(self) -> int:
        """The command's exit status: 128 + the signal for a stopped run, else 3 when any video
        failed or was only partly readable."""
        if self.stopped_by is not None:
            return 128 + self.stopped_by
        bad = self.totals.get("videos_failed", 0) + self.totals.get("videos_partial", 0)
        return EXIT_VIDEOS_FAILED if bad else EXIT_OK

    # Where a run that processed videos puts these: before the totals, as run.json always had them.
    _BEFORE_TOTALS = ("placement", "model", "ray", "host")

    def as_json(self) -> dict:
        before = {k: self.details[k] for k in self._BEFORE_TOTALS if k in self.details}
        after = {k: v for k, v in self.details.items() if k not in self._BEFORE_TOTALS}
        return {
            "exit_code": self.exit_code,
            "did_work": self.did_work,
            "started_at": utc(self.started),
            "elapsed_s": time.time() - self.started,
            "settings": self.settings,
            "settings_hash": self.settings_hash,
            **({"stopped_by": signal.Signals(self.stopped_by).name} if self.stopped_by else {}),
            **before,
            "totals": self.totals,
            **after,
        }

    def save(self, store: OutputStore) -> tuple[dict, Path]:
        """Write (and publish) the run's own record, and ``run.json`` when it processed videos to
        the end (a stopped run's figures are partial). Returns the record as written, and the
        path of the run's own record."""
        record = self.as_json()
        layout = store.layout
        path = process_unique(layout.path(OutputLayout.run_record_key(self.started)))
        path.parent.mkdir(exist_ok=True)
        text = json.dumps(record, indent=2, default=str)
        latest = self.did_work and self.stopped_by is None
        for target in [path, layout.run_file] if latest else [path]:
            temp = OutputLayout.temp_for(target)
            temp.write_text(text)
            durable_replace(temp, target)
            store.publish(target)
        return record, path


@dataclass(frozen=True)
class ActorStats:
    """A video worker's answer to ``stats()`` at the end of a run (``run.json``'s ``actors``)."""

    pid: int
    device: str
    batches: int
    busy_s: float
    memory: dict  # pipeline.runtime.monitoring.PeakRss.as_dict()
    gpu: dict | None

    def as_dict(self) -> dict:
        return {
            "pid": self.pid,
            "device": self.device,
            "batches": self.batches,
            "busy_s": self.busy_s,
            "memory": self.memory,
            "gpu": self.gpu,
        }


@dataclass(frozen=True)
class CoordinatorSummary:
    """The coordinator's answer to ``run()``: the figures ``run.json`` is made of."""

    elapsed_s: float
    cpu_s: float  # the coordinator process's CPU time, all its threads
    first_batch_done_at: float | None  # wall clock
    counts: RunCounts
    stage_s: dict[str, float]
    peak_batches_in_flight: int
    window_limit: int
    coordinator_memory: dict
    tracker_peak_bytes: int | None
    actors: list[ActorStats | None] = field(default_factory=list)  # None: it did not answer
    longest_pause_s: float | None = None  # the event loop's (pipeline.runtime.pauses)
    nodes: list[str | None] = field(default_factory=list)  # each worker's latest node
    workers: dict = field(default_factory=dict)  # pipeline.runtime.fleet.Fleet.record


def startup_figures(
    started: float, ray_ready: float, actors_ready: float, summary: CoordinatorSummary
) -> dict:
    """Seconds from the command (planning's start) to Ray up, to the actors ready, to the first
    batch done; and from the actors ready to the first batch done."""
    first = summary.first_batch_done_at
    return {
        "ray_ready_s": ray_ready - started,
        "actors_ready_s": actors_ready - started,
        "first_batch_done_s": first - started if first else None,
        "actors_ready_to_first_batch_s": first - actors_ready if first else None,
    }


def run_totals(videos: int, skipped: int, counts: RunCounts, track: bool) -> dict:
    """``totals``: ``videos`` walked, ``skipped`` by the plan (complete already) and the run's
    counts (its frames and boxes are its records': rows written)."""
    return {
        "videos": videos,
        "videos_ok": counts.videos_ok,
        "videos_partial": counts.videos_partial,
        "videos_failed": counts.videos_failed,
        "videos_skipped": skipped + counts.videos_skipped,
        "frames": counts.frames_recorded,
        "detections": counts.boxes_recorded,
        "tracks": counts.tracks if track else None,
        "decoder_retries": counts.decoder_retries,
        "duplicate_batches_dropped": counts.duplicate_batches_dropped,
        "actors_hung": counts.actors_hung,
        "videos_split": counts.videos_split,  # long videos decoded in parallel segments
        "segments": counts.segments,
        # where batches were decoded against their worker's node, the forward passes that
        # mixed videos, videos handed on after their worker died
        "batches_decoded_on_worker_node": counts.batches_decoded_here,
        "batches_decoded_elsewhere": counts.batches_decoded_elsewhere,
        "mixed_batches": counts.mixed_batches,
        "videos_reassigned": counts.videos_reassigned,
        "commits_refused": counts.commits_refused,
    }


def _per(cpu_s: float, count: int) -> float | None:
    return 1000 * cpu_s / count if count else None


def _coordinator_figures(summary: CoordinatorSummary) -> dict:
    """The control plane's CPU per video and per hand-out: what sets the ceiling of a run
    (``python -m pipeline bench --contenders control-plane``)."""
    counts = summary.counts
    return {
        "cpu_s": summary.cpu_s,
        "batches": counts.batches_done,
        "handouts": counts.handouts,
        "cpu_ms_per_batch": _per(summary.cpu_s, counts.batches_done),
        "cpu_ms_per_video": _per(summary.cpu_s, counts.videos_done),
        "cpu_ms_per_handout": _per(summary.cpu_s, counts.handouts),
        # the longest its event loop was held (bookkeeping included): hand-outs and grants wait
        "longest_pause_ms": (
            None if summary.longest_pause_s is None else 1000 * summary.longest_pause_s
        ),
    }


def _roles_memory(summary: CoordinatorSummary, driver_memory: dict) -> dict:
    actors = [a.memory for a in summary.actors if a]
    return {
        "driver": driver_memory,
        "coordinator": summary.coordinator_memory,
        "actors": actors,
        "actor_peak_bytes": max((a["peak_bytes"] for a in actors), default=None),
        # tracking tasks (--track), at their end
        "tracker_peak_bytes": summary.tracker_peak_bytes,
    }


def _actor_records(summary: CoordinatorSummary, nodes: list[str | None]) -> list[dict]:
    processing = summary.elapsed_s
    return [
        dict(
            stats.as_dict() if stats else {},
            node_id=node,
            # time in the engine over the run's wall time: how busy it was kept
            busy_share=stats.busy_s / processing if stats and processing > 0 else None,
        )
        for stats, node in zip(summary.actors, nodes)
    ]


def processed_run_record(
    config: RunConfig,
    *,
    started: float,
    totals: dict,
    placement,
    model: dict,
    ray: dict,
    nodes: list[str | None],
    summary: CoordinatorSummary,
    driver_memory: dict,
) -> RunRecord:
    """The record of a run that processed videos. ``placement``: the plan's ``Placement`` (a
    dataclass); ``model``: the loaded model's facts; ``ray``: its version and address;
    ``nodes``: each worker's node, in ``summary.actors``' order."""
    counts = summary.counts
    processing = summary.elapsed_s
    gpus = [a.gpu for a in summary.actors if a and a.gpu]
    details = {
        "placement": dataclasses.asdict(placement),
        "model": model,
        "ray": ray,
        "host": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
        },
        "throughput": {
            "frames_per_s": counts.frames_done / processing if processing > 0 else 0.0,
            "processing_s": processing,
        },
        "stage_s": summary.stage_s,
        "coordinator": _coordinator_figures(summary),
        "backpressure": {
            "peak_batches_in_flight": summary.peak_batches_in_flight,
            "limit": summary.window_limit,
            "peak_open_decoders": counts.peak_open_decoders,
            "max_open_videos": placement.max_open_videos,
        },
        "memory": _roles_memory(summary, driver_memory),
        "gpu": gpus or None,
        "actors": _actor_records(summary, nodes),
        # each worker's spells in the run (joined, lost, released), ready over time, and the
        # worker- and GPU-seconds held against those busy (pipeline.runtime.fleet)
        "workers": summary.workers,
    }
    return RunRecord(
        started, config.to_dict(), config.settings_hash(), totals, did_work=True, details=details
    )
