"""What the parts of a role share (the coordinator's, or a video worker's): the run's settings
as the loaded model made them, the role's counters and its time per stage."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.config import RunConfig
from pipeline.media.decode import DecodeSpec
from pipeline.media.segments import SplitPolicy
from pipeline.output.outcomes import RetryPolicy, RunCounts
from pipeline.runtime.faults import FaultPlan
from pipeline.runtime.metrics import PipelineMetrics
from pipeline.runtime.monitoring import PeakRss


@dataclass
class RunContext:
    config: RunConfig
    metrics: PipelineMetrics  # Ray's metrics (a stand-in in tests)
    faults: FaultPlan | None = None
    counts: RunCounts = field(default_factory=RunCounts)
    memory: PeakRss = field(default_factory=PeakRss)
    stage_s: dict[str, float] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)  # the model's classes, once it loaded
    decode_spec: DecodeSpec | None = None  # the letterbox the loaded model asks for
    frames_decoded: int = 0  # frames whose decode time is in stage_s["decode"]
    first_batch_done_at: float | None = None  # wall clock, for the start-up figures
    node_id: str | None = None  # a video worker's node: its batches' decoders should be on it

    def __post_init__(self) -> None:
        self.stage_s = {"decode": 0.0, "infer": 0.0, "batch_round_trip": 0.0, "write": 0.0}
        if self.config.track:
            self.stage_s["track"] = 0.0
        self.set_config(self.config)

    def set_config(self, config: RunConfig) -> None:
        """The settings once the loaded model turned class names into ids (the hash depends on them)."""
        self.config = config
        self.settings_hash = config.settings_hash()
        self.retry = RetryPolicy(config.decode_retries)
        self.split_policy = SplitPolicy(
            segments=config.segments, min_segment_frames=config.segment_min_frames
        )

    def model_loaded(self, names: dict[int, str], model_stride: int, rect: bool) -> None:
        self.names = names
        self.decode_spec = DecodeSpec(
            imgsz=self.config.imgsz,
            model_stride=model_stride,
            rect=rect,
            sampling=self.config.sampling,
            batch_size=self.config.batch_size,
        )
