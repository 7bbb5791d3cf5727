"""The project's metrics, exported by Ray for Prometheus (Ray prefixes each name with ``ray_``)."""

from __future__ import annotations

from ray.util import metrics

from pipeline.runtime.monitoring import GpuSample

_BATCH_LATENCY_BOUNDARIES = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16]


class PipelineMetrics:
    """Created once per process that records (Ray metric objects are cheap but not free)."""

    def __init__(self) -> None:
        self.frames_decoded = metrics.Counter(
            "pipeline_frames_decoded", "Frames decoded and sent to inference"
        )
        self.frames_inferred = metrics.Counter(
            "pipeline_frames_inferred", "Frames whose detections were written"
        )
        self.batches_in_flight = metrics.Gauge(
            "pipeline_batches_in_flight", "Batches sent to actors, not yet back"
        )
        self.batch_latency = metrics.Histogram(
            "pipeline_batch_latency_s",
            "Seconds from dispatching a batch to receiving its detections",
            boundaries=_BATCH_LATENCY_BOUNDARIES,
        )
        self.videos_finished = metrics.Counter(
            "pipeline_videos_finished", "Videos finished, by status", tag_keys=("status",)
        )
        self.process_rss = metrics.Gauge(
            "pipeline_process_rss_bytes",
            "Resident memory of a pipeline process",
            tag_keys=("role",),
        )
        self.gpu_utilization = metrics.Gauge(
            "pipeline_gpu_utilization_percent", "GPU utilization from NVML", tag_keys=("gpu",)
        )
        self.gpu_memory_used = metrics.Gauge(
            "pipeline_gpu_memory_used_bytes", "GPU memory used from NVML", tag_keys=("gpu",)
        )

    def record_gpu(self, samples: list[GpuSample]) -> None:
        for s in samples:
            tags = {"gpu": str(s.gpu)}
            self.gpu_utilization.set(s.utilization_percent, tags=tags)
            self.gpu_memory_used.set(s.memory_used_bytes, tags=tags)
