"""Process memory (psutil) and GPU figures (NVML). NVML is optional: without an NVIDIA driver
the sampler says so once and reports nothing."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import psutil

log = logging.getLogger(__name__)


def process_rss_bytes(pid: int | None = None) -> int:
    return psutil.Process(pid or os.getpid()).memory_info().rss


def tree_rss_bytes(pid: int | None = None) -> int:
    """RSS of a process and all its children (what a benchmark contender costs in all)."""
    root = psutil.Process(pid or os.getpid())
    total = root.memory_info().rss
    for child in root.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            pass
    return total


class PeakRss:
    """RSS of this process at start, once warm, at its peak and last, sampled on ``sample()``.

    "Warm" is after the first unit of real work: imports, allocator pools and caches have filled
    by then, so growth after it is what a leak would look like.
    """

    def __init__(self) -> None:
        # One psutil handle: making one reads /proc twice, and a coordinator samples per video.
        self._process = psutil.Process(os.getpid())
        self.start = self._process.memory_info().rss
        self.peak = self.start
        self.last = self.start
        self.warm: int | None = None
        self._sampled_at = 0.0

    def mark_warm(self) -> None:
        if self.warm is None:
            self.warm = self.sample()

    def sample(self) -> int:
        self.last = self._process.memory_info().rss
        self.peak = max(self.peak, self.last)
        self._sampled_at = time.monotonic()
        return self.last

    def sample_now_and_then(self, every_s: float = 0.1) -> None:
        """``sample`` unless one was taken in the last ``every_s``: for a caller that runs per
        video (reading /proc costs about 25 µs: 1.2 of 23.6 s when 400 simulated workers recorded
        50,000 clips, ``docs/bench/cluster_sim.py``)."""
        if time.monotonic() - self._sampled_at >= every_s:
            self.sample()

    def as_dict(self) -> dict:
        return {
            "start_bytes": self.start,
            "warm_bytes": self.warm,
            "peak_bytes": self.peak,
            "last_bytes": self.last,
        }


@dataclass(frozen=True)
class GpuSample:
    """One GPU's NVML reading."""

    gpu: int  # its NVML index
    utilization_percent: float
    memory_used_bytes: int


class GpuSampler:
    """Utilization and memory of the GPUs this process can see, from NVML."""

    def __init__(self, indices: list[int] | None = None) -> None:
        self.handles: list[tuple[int, object]] = []
        try:
            import pynvml

            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            wanted = indices if indices is not None else list(range(count))
            self.handles = [(i, pynvml.nvmlDeviceGetHandleByIndex(i)) for i in wanted if i < count]
            self._nvml = pynvml
        except Exception as exc:  # no driver, no library, no permission: all mean "no GPU figures"
            log.info("NVML not available (%s); GPU metrics are off", type(exc).__name__)
            self._nvml = None

    @property
    def available(self) -> bool:
        return bool(self.handles)

    def sample(self) -> list[GpuSample]:
        out = []
        for index, handle in self.handles:
            try:
                util = self._nvml.nvmlDeviceGetUtilizationRates(handle)
                mem = self._nvml.nvmlDeviceGetMemoryInfo(handle)
                out.append(GpuSample(index, float(util.gpu), int(mem.used)))
            except Exception as exc:
                log.debug("NVML sample failed on GPU %s: %s", index, exc)
        return out


class Timeline:
    """Samples of a run over time for run.json (and the report's plots), bounded in size.

    One sample per ``interval_s``; when ``max_points`` is reached, every other sample is dropped
    and the interval doubles, so a run of any length keeps an even, bounded record.
    """

    def __init__(self, interval_s: float = 1.0, max_points: int = 2000):
        if max_points < 2:
            raise ValueError("max_points must be at least 2")
        self.interval_s = interval_s
        self.max_points = max_points
        self.points: list[dict] = []
        self._last_t: float | None = None

    def add(self, t_s: float, **values) -> bool:
        """Record a sample at ``t_s`` seconds into the run, unless the last one is too recent."""
        if self._last_t is not None and t_s - self._last_t < self.interval_s:
            return False
        self.points.append({"t_s": round(t_s, 3), **values})
        self._last_t = t_s
        if len(self.points) >= self.max_points:
            self.points = self.points[::2]
            self.interval_s *= 2
            self._last_t = self.points[-1]["t_s"]
        return True
