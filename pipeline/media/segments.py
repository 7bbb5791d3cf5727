"""Segment decoding of long videos: the decisions, Ray-free.

One decoder reads 150-400 1080p frames/s on a CPU core; a GPU infers thousands. A long video is
therefore cut into segments decoded in parallel. Each segment's decoder seeks to the keyframe at
or before the segment's first frame, decodes, and drops the frames before it; it stops at the next
segment's first frame. Frame indices and timestamps stay exactly those of one decoder reading the
whole video, because:

- a probe (one demux pass, no decoding) lists every frame's presentation timestamp (pts); sorted,
  the k-th pts is frame k, as a decoder outputs frames in pts order. A video whose packets do not
  allow that (a packet without pts, two frames with one pts) is not split;
- segments start on batch boundaries (every ``batch_size``-th kept frame, ``pipeline.media.sampling``),
  so every batch holds the same frames as in a one-decoder run, and its number (``seq``) is the
  same too.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from pipeline.media.sampling import Sampling, h264_length_size, h264_slice_kinds


@dataclass(frozen=True)
class Segment:
    """A run of frames of one video for one decoder: ``[first_frame, end_frame)``."""

    first_frame: int  # source frame index of its first frame
    first_pts: int | None  # that frame's pts (stream time base); None: the video's start
    end_frame: int | None  # the next segment's first frame; None: the video's end
    end_pts: int | None  # that frame's pts
    first_seq: int  # the seq of its first batch in the video


WHOLE_VIDEO = Segment(first_frame=0, first_pts=None, end_frame=None, end_pts=None, first_seq=0)


@dataclass(frozen=True)
class FrameTimes:
    """What a probe found: every frame's pts in presentation order, and whether the packets
    allow splitting (each frame's pts known and distinct). With ``references``, also the packets
    in decoding order and, for H.264, which are reference and IDR pictures
    (``pipeline.media.sampling.needed_packets``)."""

    pts: np.ndarray  # int64, sorted
    keyframes: np.ndarray  # frame indices of the keyframes, sorted
    splittable: bool
    reason: str | None = None  # why not, when not
    start_pts: int = 0  # the stream's start (timestamps count from it)
    time_base: Fraction = Fraction(1, 1)
    decode_order: np.ndarray | None = None  # int64 pts, as demuxed
    reference: np.ndarray | None = None  # bool per decode_order packet (True when unknown)
    idr: np.ndarray | None = None  # bool per decode_order packet

    def seconds(self) -> list[Fraction]:
        """Each frame's time from the stream's start, exactly."""
        return [(int(p) - self.start_pts) * self.time_base for p in self.pts]

    def is_keyframe(self) -> np.ndarray:
        mask = np.zeros(len(self.pts), bool)
        mask[self.keyframes] = True
        return mask


def probe_frame_times(path: str, *, references: bool = False) -> FrameTimes:
    """One demux pass over the video stream (packets are read, not decoded); ``references``:
    also the decoding order and, for H.264, each packet's reference and IDR flags (parsed from
    its NAL headers)."""
    import av

    from pipeline import locations

    pts, key_pts, reference, idr = [], [], [], []
    with av.open(locations.open_input(path), mode="r", metadata_errors="ignore") as container:
        stream = container.streams.video[0]
        time_base = stream.time_base or Fraction(1, 1)
        start = stream.start_time or 0
        is_h264 = references and stream.codec_context.name == "h264"
        length_size = h264_length_size(stream.codec_context.extradata) if is_h264 else None
        for packet in container.demux(stream):
            if packet.size == 0 or packet.is_discard:  # flush packets; frames an edit list hides
                continue
            if packet.pts is None:
                return FrameTimes(
                    np.zeros(0, np.int64), np.zeros(0, np.int64), False, "a packet has no pts"
                )
            pts.append(packet.pts)
            if packet.is_keyframe:
                key_pts.append(packet.pts)
            if is_h264:
                is_reference, is_idr = h264_slice_kinds(bytes(packet), length_size)
                reference.append(is_reference)
                idr.append(is_idr)
    order = np.sort(np.asarray(pts, np.int64))
    if len(order) and (np.diff(order) == 0).any():
        return FrameTimes(order, np.zeros(0, np.int64), False, "two frames share a pts")
    keyframes = np.searchsorted(order, np.asarray(key_pts, np.int64))
    return FrameTimes(
        order,
        np.sort(keyframes),
        True,
        start_pts=int(start),
        time_base=Fraction(time_base),
        decode_order=np.asarray(pts, np.int64) if is_h264 else None,
        reference=np.asarray(reference, bool) if is_h264 else None,
        idr=np.asarray(idr, bool) if is_h264 else None,
    )


def plan_segments(
    times: FrameTimes, count: int, *, sampling: Sampling, batch_size: int
) -> list[Segment]:
    """``count`` segments of about equal length, each starting on a batch boundary (a frame that
    starts a batch in a one-decoder run: every ``batch_size``-th kept frame), nudged onto a
    keyframe when one is that close, so that its decoder drops nothing. Fewer when the video is
    too short for ``count``."""
    if count <= 1 or not times.splittable:
        return [WHOLE_VIDEO]
    kept = sampling.kept_frames_of(times)
    boundaries = kept[::batch_size]  # boundaries[u]: the first frame of batch u
    units = len(kept) // batch_size
    if units < 2:
        return [WHOLE_VIDEO]
    count = min(count, units)
    keyframes = set(int(k) for k in times.keyframes)
    starts = []  # batch numbers
    for k in range(1, count):
        start = round(k * units / count)
        # A keyframe on a batch boundary within a quarter segment saves decoding frames only to drop them.
        reach = max(1, units // (4 * count))
        for step in range(reach + 1):
            nearby = [
                u
                for u in (start + step, start - step)
                if 0 < u < len(boundaries) and int(boundaries[u]) in keyframes
            ]
            if nearby:
                start = nearby[0]
                break
        starts.append(start)
    firsts = [0, *sorted(set(u for u in starts if 0 < u < len(boundaries)))]
    segments = []
    for i, first_seq in enumerate(firsts):
        first = int(boundaries[first_seq])
        end = int(boundaries[firsts[i + 1]]) if i + 1 < len(firsts) else None
        segments.append(
            Segment(
                first_frame=first,
                first_pts=None if first == 0 else int(times.pts[first]),
                end_frame=end,
                end_pts=None if end is None else int(times.pts[end]),
                first_seq=first_seq,
            )
        )
    return segments


@dataclass(frozen=True)
class SplitPolicy:
    """How many segments a video gets.

    ``segments``: None decides by itself; 1 never splits; N splits videos long enough into N.
    By itself, it splits only when decoding is the bottleneck (one decoder is slower than the
    actors can infer) and decoders are free, into as many segments as free decoders allow, each
    at least ``min_segment_frames`` long.
    """

    segments: int | None = None
    # a minute at 30 fps: shorter ones are not worth a seek and a probe
    min_segment_frames: int = 1800
    # by itself, smaller files are not probed (a short clip costs nothing extra)
    min_probe_bytes: int = 32 << 20

    def worth_probing(self, size_bytes: int) -> bool:
        """Whether to probe a file for its length: always when segments were asked for, never when
        splitting is off, and by itself only for files large enough to be long."""
        if self.segments is not None:
            return self.segments > 1
        return size_bytes < 0 or size_bytes >= self.min_probe_bytes

    def count(self, frames: int, *, free_decoders: int, decode_bound: bool) -> int:
        by_length = max(1, frames // max(1, self.min_segment_frames))
        if self.segments is not None:
            return max(1, min(self.segments, by_length))
        if not decode_bound:
            return 1
        return max(1, min(by_length, 1 + max(0, free_decoders)))


def decode_bound(
    decode_s_per_frame: float | None, infer_s_per_frame: float | None, actors: int, on_gpu: bool
) -> bool:
    """Whether one decoder is slower than the actors together: measured once both are known,
    else assumed on GPU nodes (a GPU infers faster than a CPU core decodes) and not on CPU ones."""
    if decode_s_per_frame and infer_s_per_frame and actors:
        return decode_s_per_frame > infer_s_per_frame / actors
    return on_gpu
