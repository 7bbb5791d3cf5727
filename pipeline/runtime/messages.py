"""What crosses Ray between the driver, the coordinator and the workers: typed, never loose dicts.

Each is a frozen dataclass that pickles as it is; the JSON of ``run.json`` is made from them at
the driver, in one place (``pipeline.output.run_record``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipeline.output.manifest import VideoRecord
from pipeline.output.outcomes import RunCounts
from pipeline.output.run_record import ActorStats, CoordinatorSummary  # noqa: F401 - they cross Ray
from pipeline.runtime.monitoring import GpuSample


@dataclass(frozen=True)
class ModelFacts:
    """A ``YoloActor``'s answer to ``ready()``: what the decoders need (the letterbox shape) and
    what ``run.json`` records about the model."""

    names: dict[int, str]
    model_stride: int
    rect: bool
    device: str
    half: bool
    engine: str
    engine_export_s: dict[str, float]  # engines this actor built (empty: all from the cache)
    engine_fallback: str | None  # why the asked-for engine could not be used, if it could not
    node_id: str
    pid: int

    def model_record(self) -> dict:
        """The ``model`` part of ``run.json`` (less ``engine_export_s``, merged over actors)."""
        return {
            "device": self.device,
            "half": self.half,
            "engine": self.engine,
            "rect": self.rect,
            "model_stride": self.model_stride,
            "engine_fallback": self.engine_fallback,
        }


@dataclass(frozen=True)
class ActorStartFailure:
    """What a ``YoloActor`` answers instead of its model facts when its model did not load: the
    driver reports it as one line, instead of Ray printing the actor's traceback."""

    message: str
    usage: bool  # a mistake in the command (a model that is not there or not a detector, unknown classes)


@dataclass(frozen=True)
class ActorSample:
    """An actor's latest memory and GPU figures, as its last batch brought them back."""

    rss: int
    gpu: list[GpuSample] | None  # NVML samples (monitoring.GpuSampler), at most one a second


@dataclass(frozen=True)
class TrackingReply:
    """A tracking task's answer: the video's track count, its time and its process's memory."""

    num_tracks: int
    track_s: float
    rss: int


@dataclass(frozen=True)
class WorkerOutcome:
    """A video worker's answer for one attempt of one video: its record, or nothing when the
    commit was refused (the attempt was no longer the video's)."""

    attempt_id: int
    record: VideoRecord | None
    committed: bool


@dataclass(frozen=True)
class WorkerReport:
    """A video worker's running figures, polled by the coordinator about once a second."""

    pid: int
    counts: RunCounts
    stage_s: dict[str, float]
    in_flight: int
    peak_in_flight: int
    sample: ActorSample | None
    first_batch_done_at: float | None
    tracker_peak_bytes: int
    pass_running_s: float | None = None  # how long the forward pass running now has taken
    slowest_pass_s: float | None = None
    commit_running_s: float | None = None  # the oldest commit step running now: how long
    busy_s: float = 0.0  # in forward passes, this process


@dataclass(frozen=True)
class CommitRequest:
    """A worker asks to put one video's own files in place (its attempt's)."""

    video_id: str
    attempt_id: int


@dataclass(frozen=True)
class PartEntry:
    """One video of a part file: its attempt, and its record as placed (where its rows are)."""

    video_id: str
    attempt_id: int
    record: VideoRecord
    fresh: bool  # never recorded in this output: no files of an earlier version to remove


# The coordinator's answer per video of a part: its rows are in place and recorded; refused (the
# attempt is no longer the video's); or again (the part was not placed because of another
# video's refusal: the worker puts this one in its next part).
Placed = Literal["placed", "refused", "again"]


@dataclass(frozen=True)
class PartPlacement:
    """A worker's part file, complete under a hidden name (``staged``: beside its place, or on
    object storage under ``.staging/``), for the coordinator to put in place and record. The
    coordinator, which decides who holds a video, makes the rows visible: a worker cut off
    after asking can never land them later, after its videos went to another."""

    key: str  # where it goes: detections/part-....parquet
    staged: str
    tracks_key: str | None  # its tracks part (tracks/<same name>), when tracking
    tracks_staged: str | None
    entries: tuple[PartEntry, ...]
