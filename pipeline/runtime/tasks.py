"""The Ray tasks a video worker starts: its decoders (and their probe and warm-up), and its
videos' tracking: thin Ray shells around ``pipeline.media.decode``, ``pipeline.media.segments``
and ``pipeline.analysis.tracking``."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import ray

from pipeline.media.decode import DecodeSpec, VideoOpened, stream_video
from pipeline.media.segments import FrameTimes, probe_frame_times
from pipeline.plan.placement import DECODER_NUM_CPUS
from pipeline.runtime.faults import FaultPlan
from pipeline.runtime.messages import TrackingReply
from pipeline.runtime.monitoring import process_rss_bytes


@ray.remote(num_returns="streaming", max_retries=0, num_cpus=DECODER_NUM_CPUS)
def decode_video(path: str, spec: DecodeSpec, faults: FaultPlan | None = None):
    """Stream one video's (or one segment's) letterboxed batches (see ``pipeline.media.decode.stream_video``).

    Ray does not retry it by itself (``max_retries=0``): its video worker does, resuming after
    the batches it already received, so a retry never produces a batch twice.
    """
    hook = (lambda seq: faults.on_decoder_batch(path, seq)) if faults else None
    node_id = ray.get_runtime_context().get_node_id()
    for item in stream_video(path, spec, before_batch=hook):
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


# num_cpus=0: it runs on its video worker's node (the files it reads and writes are there),
# whose CPUs the worker and its decoders hold; the worker bounds how many run at once instead.
# Ray retries it if its process dies: it only writes hidden files that the worker renames, so a
# rerun is harmless.
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
