"""The decoder task, the YoloActor and the tracking task: thin Ray shells around
``pipeline.media.decode``, ``pipeline.inference.torch_detector`` and ``pipeline.analysis.tracking``."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import numpy as np
import ray

from pipeline.config import ConfigError, RunConfig, engine_traits
from pipeline.inference.detections import BatchResult
from pipeline.inference.model_ref import ModelLoadError
from pipeline.media.decode import BatchHeader, DecodeSpec, VideoOpened, stream_video
from pipeline.media.letterbox import LetterboxGeometry
from pipeline.media.segments import FrameTimes, probe_frame_times
from pipeline.plan.placement import DECODER_NUM_CPUS
from pipeline.runtime.faults import FaultPlan
from pipeline.runtime.messages import (
    ActorSample,
    ActorStartFailure,
    ActorStats,
    InferredBatch,
    ModelFacts,
    TrackingReply,
)
from pipeline.runtime.metrics import PipelineMetrics
from pipeline.runtime.monitoring import GpuSampler, PeakRss, process_rss_bytes


@ray.remote(num_returns="streaming", max_retries=0, num_cpus=DECODER_NUM_CPUS)
def decode_video(path: str, spec: DecodeSpec, faults: FaultPlan | None = None):
    """Stream one video's (or one segment's) letterboxed batches (see ``pipeline.media.decode.stream_video``).

    Ray does not retry it by itself (``max_retries=0``): the coordinator does, resuming after the
    batches it already received, so a retry never produces a batch twice.
    """
    hook = (lambda seq: faults.on_decoder_batch(path, seq)) if faults else None
    between = (
        (lambda seq: faults.on_decoder_batch(path, seq, between_header_and_frames=True))
        if faults
        else None
    )
    node_id = ray.get_runtime_context().get_node_id()
    for item in stream_video(path, spec, before_batch=hook, after_header=between):
        # the node it was decoded on: a video worker counts its batches decoded elsewhere
        yield dataclasses.replace(item, node_id=node_id) if isinstance(item, VideoOpened) else item


@ray.remote(max_retries=1, num_cpus=DECODER_NUM_CPUS)
def probe_video(path: str) -> FrameTimes:
    """Every frame's pts, for the split of a long video (``pipeline.media.segments.probe_frame_times``)."""
    return probe_frame_times(path)


@ray.remote(max_retries=0, num_cpus=DECODER_NUM_CPUS)
def warm_decoder() -> int:
    """Nothing but the decoders' imports (PyAV, OpenCV, pyarrow): run while the actors load, it
    leaves worker processes that the first videos' decoders start in at once."""
    import av  # noqa: F401
    import cv2  # noqa: F401

    return os.getpid()


class DetectorHost:
    """A warmed detector for the life of an actor: ``YoloActor`` (the coordinator sends it
    batches) and ``VideoWorker`` (it decodes its own videos) are both one."""

    def __init__(self, config: RunConfig, faults: FaultPlan | None = None, warm_shapes: tuple = ()):
        # A model that cannot load is answered by ready() as one line for the driver to report;
        # raised from here, Ray would print the actor's whole traceback on the user's terminal.
        self.start_failure: ActorStartFailure | None = None
        try:
            self._start(config, faults, tuple(warm_shapes))
        except (ModelLoadError, ConfigError) as exc:
            self.start_failure = ActorStartFailure(str(exc), usage=True)
        except Exception as exc:
            self.start_failure = ActorStartFailure(f"{type(exc).__name__}: {exc}", usage=False)

    def _start(self, config: RunConfig, faults: FaultPlan | None, warm_shapes: tuple) -> None:
        from pipeline.inference.open import open_detector

        gpu_ids = ray.get_gpu_ids()
        # A GPU the scheduler granted is only used if CUDA really sees one: fake GPUs in tests (and
        # a mis-set cluster) must not make us touch CUDA. OpenVINO and ONNX actors never import
        # torch (their memory stays lean), so they do not ask.
        use_cuda = False
        if engine_traits(config.effective_engine).needs_torch:
            import torch

            use_cuda = config.device == "cuda" or (config.device == "auto" and bool(gpu_ids))
            if use_cuda and not torch.cuda.is_available():
                if config.device == "cuda":
                    raise ConfigError(
                        "--device cuda was asked for, but CUDA is not available on this node "
                        "(use --device auto or cpu)"
                    )
                use_cuda = False
            if not use_cuda:
                torch.set_num_threads(config.cpu_threads or os.cpu_count() or 1)
        opened = open_detector(config, "cuda" if use_cuda else "cpu", warm_shapes=warm_shapes)
        self.detector, self.engine = opened.detector, opened.engine
        self.engine_export_s, self.engine_fallback = opened.export_s, opened.fallback
        self.faults = faults
        self.memory = PeakRss()
        self.gpu = GpuSampler() if use_cuda else None
        self.device = "cuda" if use_cuda else "cpu"
        self.busy_s = 0.0
        self.gpu_util_sum, self.gpu_util_n, self.gpu_mem_peak = 0.0, 0, 0
        self.metrics = PipelineMetrics()
        self._last_report = 0.0
        self._last_gpu: list[dict] | None = None

    def ready(self) -> ModelFacts | ActorStartFailure:
        """Model facts the decoders need (letterbox shape), and a liveness answer for the coordinator;
        why the model did not load, if it did not."""
        if self.start_failure:
            return self.start_failure
        if self.faults:
            self.faults.on_actor_call("ready")
        d = self.detector
        return ModelFacts(
            names=d.names,
            model_stride=d.model_stride,
            rect=d.rect,
            device=self.device,
            half=d.half,
            engine=self.engine,
            engine_export_s=self.engine_export_s,
            engine_fallback=self.engine_fallback,
            node_id=ray.get_runtime_context().get_node_id(),
            pid=os.getpid(),
        )

    def infer(
        self, frames: np.ndarray, geometry: LetterboxGeometry, video_id: str, header: BatchHeader
    ) -> InferredBatch:
        """The boxes of one batch of ``video_id`` (``header`` says which frames it holds)."""
        started = time.perf_counter()
        counts, detections = self.detector.detect(frames, geometry)
        self.busy_s += time.perf_counter() - started
        self.memory.mark_warm()
        if started - self._last_report > 1.0:
            self._report()
            self._last_report = started
        if self.faults:
            self.faults.on_actor_batch(self.detector.batches_done)
        infer_s = time.perf_counter() - started
        result = BatchResult(
            video_id, header.seq, header.frame_indices, header.timestamps, counts, detections
        )
        # The latest NVML sample: taken at most once a second.
        sample = ActorSample(rss=self.memory.sample(), gpu=self._last_gpu)
        return InferredBatch(result, infer_s=infer_s, sample=sample)

    def _report(self) -> None:
        self.metrics.process_rss.set(self.memory.sample(), tags={"role": "actor"})
        if self.gpu and self.gpu.available:
            samples = self.gpu.sample()
            self._last_gpu = samples
            self.metrics.record_gpu(samples)
            for s in samples:
                self.gpu_util_sum += s["utilization_percent"]
                self.gpu_util_n += 1
                self.gpu_mem_peak = max(self.gpu_mem_peak, s["memory_used_bytes"])

    def stats(self) -> ActorStats:
        self._report()
        gpu = None
        if self.gpu_util_n:
            gpu = {
                "mean_utilization_percent": self.gpu_util_sum / self.gpu_util_n,
                "peak_memory_used_bytes": self.gpu_mem_peak,
            }
        if self.device == "cuda":
            import torch

            gpu = dict(gpu or {}, torch_memory_allocated_bytes=torch.cuda.memory_allocated())
        return ActorStats(
            pid=os.getpid(),
            device=self.device,
            batches=self.detector.batches_done,
            busy_s=self.busy_s,
            memory=self.memory.as_dict(),
            gpu=gpu,
        )


@ray.remote(max_restarts=-1, max_task_retries=0)
class YoloActor(DetectorHost):
    """Holds one warmed detector for the life of the actor.

    Restarts are unlimited (a restarted actor loads the model again); its failed calls are not
    retried by Ray but re-dispatched by the coordinator to whichever actor is least loaded.
    """


# num_cpus=0: it must run on the coordinator's node (the files it reads and writes are there),
# and a cluster's head node may offer no CPUs to tasks (cluster.yaml's does not); the
# coordinator bounds how many run at once instead. Ray retries it if its process dies: it only
# writes hidden files that the coordinator renames, so a rerun is harmless.
@ray.remote(num_cpus=0, max_retries=2)
def track_video(
    untracked: str,
    tracked: str,
    tracks: str,
    video_id: str,
    names: dict[int, str],
    faults: FaultPlan | None = None,
) -> TrackingReply:
    """Track one finished video (see ``pipeline.analysis.tracking.track_detections_file``)."""
    from pipeline.analysis.tracking import track_detections_file

    if faults:
        faults.on_tracking(video_id)
    started = time.perf_counter()
    num_tracks = track_detections_file(
        Path(untracked), Path(tracked), Path(tracks), video_id=video_id, names=names
    )
    return TrackingReply(num_tracks, time.perf_counter() - started, process_rss_bytes())
