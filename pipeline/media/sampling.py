"""Which frames a run keeps (``--stride``, ``--fps``, ``--keyframes``), and which packets a decoder
may leave undecoded without changing the kept frames' pixels: the decisions, Ray-free.

The rules (``frame_index`` and ``timestamp_s`` stay the source's):

- ``stride N``: frames 0, N, 2N, … by index.
- ``fps N``: by presentation time ``t`` (seconds from the stream's start): for each k = 0, 1, 2, …
  the first frame whose ``t`` is at least k/N. Equivalently a frame is kept when ⌊N·t⌋ is larger
  than its predecessor's (the first frame: when t ≥ 0). The same rule for every input rate,
  variable rate included; computed exactly, in fractions of the container's time base.
- ``keyframes``: only the frames the container marks as keyframes; with ``fps``, the fps rule
  applied to the keyframes (at most N a second).

Cheaper decoding where it is exact (H.264): a frame that is not kept need not be decoded when no
kept frame depends on it, i.e. a non-reference picture (``nal_ref_idc`` 0), or a reference picture
with no kept frame after it (in decoding order) before the next IDR picture, which starts afresh.
Other codecs decode every frame for stride and fps. With keyframes, any codec: only the kept
keyframes' packets reach the decoder (a keyframe decodes alone).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from fractions import Fraction

import numpy as np


@dataclass(frozen=True)
class Sampling:
    """A run's frame sampling: ``stride`` and ``fps`` are exclusive (``RunConfig`` says so in
    words); ``keyframes`` combines with ``fps``."""

    stride: int = 1
    fps: float | None = None
    keyframes: bool = False

    def __post_init__(self) -> None:
        if self.stride < 1:
            raise ValueError("stride must be at least 1")
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError("fps must be a positive number")
        if self.fps is not None and self.stride > 1:
            raise ValueError("stride and fps are exclusive")

    @property
    def every_frame(self) -> bool:
        return self.stride == 1 and self.fps is None and not self.keyframes

    @property
    def rate(self) -> Fraction | None:
        """``fps`` as the fraction a user typed (0.2 is 1/5, not the float nearest it)."""
        return None if self.fps is None else Fraction(repr(self.fps))

    def selector(self) -> FrameSelector:
        return FrameSelector(self)

    def kept_frames(self, seconds: Iterable[Fraction], keyframe: Iterable[bool]) -> np.ndarray:
        """The indices of the kept frames of a stream whose frames (in presentation order) are at
        ``seconds`` from its start, ``keyframe`` saying which are keyframes."""
        select = self.selector()
        kept = [i for i, (t, key) in enumerate(zip(seconds, keyframe)) if select.keep(i, t, key)]
        return np.asarray(kept, np.int64)

    def kept_frames_of(self, times) -> np.ndarray:
        """The kept frames of a probed video (``pipeline.media.segments.FrameTimes``)."""
        if self.fps is None and not self.keyframes:
            return np.arange(0, len(times.pts), self.stride)  # no times needed
        return self.kept_frames(times.seconds(), times.is_keyframe())

    def expected_frames(self, frames: int, duration_s: float | None) -> int | None:
        """About how many frames a video of ``frames`` frames (``duration_s`` long) keeps; None
        when that is not known before decoding (keyframes)."""
        if self.keyframes:
            return None
        if self.fps is not None:
            return math.ceil(duration_s * self.fps) if duration_s else None
        return -(-frames // self.stride)


class FrameSelector:
    """The sampling rule over one stream's frames in presentation order (stateful for ``fps``)."""

    def __init__(self, sampling: Sampling):
        self.sampling = sampling
        self._rate = sampling.rate
        self._last_slot = -1  # ⌊N·t⌋ of the previous candidate frame

    def keep(self, index: int, seconds: Fraction, keyframe: bool) -> bool:
        sampling = self.sampling
        if sampling.keyframes and not keyframe:
            return False
        if self._rate is None:
            return index % sampling.stride == 0
        slot = math.floor(self._rate * seconds)
        keep = slot > self._last_slot
        self._last_slot = max(self._last_slot, slot)
        return keep


# H.264 NAL unit types of coded slices: 1 (non-IDR), 5 (IDR).
_H264_SLICE, _H264_IDR = 1, 5


def h264_slice_kinds(data: bytes, length_size: int | None) -> tuple[bool, bool]:
    """``(is_reference, is_idr)`` of one H.264 access unit: reference when any of its slices has
    a non-zero ``nal_ref_idc``. ``length_size``: the NAL length field of an MP4/MKV stream (from
    its ``avcC`` extradata); None: Annex B start codes (MPEG-TS, raw .h264)."""
    headers: list[int] = []
    if length_size:
        i = 0
        while i + length_size < len(data):
            size = int.from_bytes(data[i : i + length_size], "big")
            headers.append(data[i + length_size])
            i += length_size + size
    else:
        i = data.find(b"\x00\x00\x01")
        while i >= 0 and i + 3 < len(data):
            headers.append(data[i + 3])
            i = data.find(b"\x00\x00\x01", i + 3)
    slices = [h for h in headers if h & 0x1F in (_H264_SLICE, _H264_IDR)]
    if not slices:  # no slice found (an unexpected packing): assume it is needed
        return True, False
    return any(h >> 5 & 3 for h in slices), any(h & 0x1F == _H264_IDR for h in slices)


def h264_length_size(extradata: bytes | None) -> int | None:
    """The NAL length field's size of an ``avcC`` record (MP4, MKV); None for Annex B."""
    if extradata and len(extradata) > 4 and extradata[0] == 1:
        return (extradata[4] & 3) + 1
    return None


def needed_packets(
    decode_order: np.ndarray, reference: np.ndarray, idr: np.ndarray, kept_pts: AbstractSet[int]
) -> set[int]:
    """The pts of the packets to decode so that every kept frame decodes as in a full decode:
    the kept ones, and every reference picture with a kept frame after it (in decoding order)
    before the next IDR picture. ``decode_order``: the packets' pts as demuxed; ``reference``,
    ``idr``: per packet."""
    needed: set[int] = set()
    kept_ahead = False  # a kept frame later in decoding order, before the next IDR
    for j in range(len(decode_order) - 1, -1, -1):
        pts = int(decode_order[j])
        kept = pts in kept_pts
        if kept or (reference[j] and kept_ahead):
            needed.add(pts)
        kept_ahead = (kept_ahead or kept) and not idr[j]
    return needed


@dataclass(frozen=True)
class DecodePlan:
    """What a decoder keeps and decodes, from a probe of the whole video: indices by pts, so
    that frames never decoded still count."""

    pts: np.ndarray  # every frame's, sorted: the k-th is frame k
    kept_pts: frozenset[int]
    decode_pts: frozenset[int] | None  # the packets to decode; None: every one

    @classmethod
    def of(cls, times, sampling: Sampling) -> DecodePlan:
        """``times``: a splittable ``pipeline.media.segments.FrameTimes`` with references."""
        kept = sampling.kept_frames_of(times)
        kept_pts = frozenset(int(p) for p in times.pts[kept])
        decode_pts = None
        if sampling.keyframes:  # a keyframe decodes alone: only the kept ones reach the decoder
            decode_pts = kept_pts
        elif times.reference is not None:
            decode_pts = frozenset(
                needed_packets(times.decode_order, times.reference, times.idr, kept_pts)
            )
        return cls(times.pts, kept_pts, decode_pts)

    @property
    def frames(self) -> int:
        return len(self.pts)

    def index(self, pts: int) -> int:
        return int(np.searchsorted(self.pts, pts))
