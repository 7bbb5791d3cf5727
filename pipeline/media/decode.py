"""Video decoding with PyAV: exact frame indices and presentation timestamps, sampling (``--stride``,
``--fps``, ``--keyframes``: ``pipeline.media.sampling``), letterboxed batches.

What the container header claims (frame count, duration) is kept apart from what decoding
finds: the header is only used to notice that a stream ended early (a truncated file looks
like a short one otherwise).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from fractions import Fraction

import numpy as np

from pipeline import locations
from pipeline.media.letterbox import LetterboxGeometry
from pipeline.media.sampling import DecodePlan, Sampling
from pipeline.media.segments import WHOLE_VIDEO, Segment, probe_frame_times

EVERY_FRAME = Sampling()


class DecodeError(Exception):
    """The video cannot be opened or decoded; the message says why in words a user can act on."""


@dataclass(frozen=True)
class VideoInfo:
    """Metadata from the container header (before any frame is decoded)."""

    width: int  # display size, after the rotation the container asks for
    height: int
    fps: float
    codec: str
    rotation: int  # degrees counter-clockwise applied to coded frames for display
    header_frames: int | None  # what the header claims; never trusted for correctness
    header_duration_s: float | None


@dataclass
class FrameBatch:
    """Letterboxed frames of one video, ready for the model. Never mixes videos."""

    seq: int  # 0-based position of this batch in its video's stream
    frame_indices: np.ndarray  # int64 (B,)
    timestamps: np.ndarray  # float64 (B,)
    frames: np.ndarray = field(repr=False)  # uint8 (B, H, W, 3), BGR, letterboxed


@dataclass
class DecodeOutcome:
    frames_decoded: int = 0  # frames of the stream read up to its end or error, before sampling
    frames_yielded: int = 0
    error: str | None = None  # set when the stream ended in an error or early


def _open_error_message(exc: Exception, path: str) -> str:
    import av

    text = str(exc)
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, av.error.InvalidDataError):
        hint = ""
        if path.lower().endswith((".mp4", ".m4v", ".mov")):
            hint = (
                " (for MP4/MOV this usually means the index, the 'moov' atom, is missing: "
                "a file cut short or still being written)"
            )
        return f"not a readable video container: invalid data{hint}"
    return f"cannot open: {type(exc).__name__}: {text}"


def _open_video_stream(path: str):
    """The container and its first video stream, or a ``DecodeError`` that says why not."""
    import av

    try:
        container = av.open(locations.open_input(path), mode="r", metadata_errors="ignore")
    except Exception as exc:  # PyAV raises a zoo of errno-specific classes
        raise DecodeError(_open_error_message(exc, path)) from exc
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        container.close()
        raise DecodeError(f"no video stream (streams found: {', '.join(kinds)})")
    stream = container.streams.video[0]
    ctx = stream.codec_context
    if ctx is None or not ctx.name or ctx.name == "none":
        tag = getattr(ctx, "codec_tag", "") if ctx is not None else ""
        container.close()
        raise DecodeError(f"unsupported or unknown video codec{f' (tag {tag!r})' if tag else ''}")
    return container, stream


class VideoDecoder:
    """One pass over one video's frames, in presentation order.

    ``sampling`` says which frames are kept (``pipeline.media.sampling``); the others are decoded
    only where a kept frame needs them (H.264), and never converted. With a sampling other than
    every frame, a probe (one demux pass) first lists every frame's pts: it gives each frame its
    index even when frames before it were never decoded. ``segment``: only its frames, with their
    indices in the whole video (``pipeline.media.segments``): the decoder seeks to the keyframe
    at or before the segment's first frame and drops the frames before it.
    """

    def __init__(
        self,
        path: str,
        *,
        sampling: Sampling = EVERY_FRAME,
        threads: int = 0,
        segment: Segment = WHOLE_VIDEO,
        skip_work: bool = True,
    ):
        """``skip_work=False`` decodes every packet whatever the sampling (the benchmark's
        baseline of what sampling cost before the decoder skipped work)."""
        # PyAV (and FFmpeg's libraries, ~20 MB) only where videos are opened: the coordinator
        # imports this module for its message types
        import av

        self.path = path
        self.sampling = sampling
        self.segment = segment
        self._container, self._stream = _open_video_stream(path)
        ctx = self._stream.codec_context
        self._stream.thread_type = "AUTO"
        if threads:
            ctx.thread_count = threads
        self.outcome = DecodeOutcome()
        self._plan = self._plan_decoding(ctx.name) if skip_work else None
        if self._plan is not None and sampling.keyframes:
            ctx.skip_frame = "NONKEY"  # and FFmpeg treats what it is given as keyframes
        if segment.first_pts is not None:
            try:
                self._container.seek(
                    segment.first_pts, stream=self._stream, backward=True, any_frame=False
                )
            except (av.error.FFmpegError, ValueError) as exc:
                self._container.close()
                raise DecodeError(f"cannot seek to frame {segment.first_frame}: {exc}") from exc
        self._frames = self._decoded_frames()
        # Peek at the first frame: the display rotation lives in frame side data, and a file that
        # opens but cannot decode a single frame is better reported now than as an empty video.
        try:
            self._first = next(self._frames)
        except StopIteration:
            self._container.close()
            raise DecodeError(f"no decodable frames in the {ctx.name} stream") from None
        except (av.error.FFmpegError, ValueError) as exc:
            self._container.close()
            raise DecodeError(f"cannot decode the first frame ({ctx.name}): {exc}") from exc
        self.info = self._read_info(int(round((self._first.rotation or 0) / 90)) % 4 * 90)

    def _plan_decoding(self, codec: str) -> DecodePlan | None:
        """The kept frames and the packets to decode, from a probe, where that saves decoding
        (keyframes; stride and fps on H.264). None: every packet is decoded and the frames are
        counted as they come (also when the packets' pts do not allow a probe's indices)."""
        sampling = self.sampling
        if sampling.every_frame or not (sampling.keyframes or codec == "h264"):
            return None
        try:
            # keyframes need no reference flags: every other packet is left out
            times = probe_frame_times(self.path, references=not sampling.keyframes)
        except Exception:  # noqa: BLE001 - the decode itself reports what is wrong with the file
            return None
        return DecodePlan.of(times, sampling) if times.splittable else None

    def _decoded_frames(self):
        """The stream's frames, from the packets the plan needs (all without one)."""
        wanted = self._plan.decode_pts if self._plan is not None else None
        for packet in self._container.demux(self._stream):
            # a packet an edit list hides may still be a reference: decoded as FFmpeg would
            if wanted is not None and packet.size and not packet.is_discard:
                if packet.pts not in wanted:
                    continue
            yield from packet.decode()

    def close(self) -> None:
        self._container.close()

    def _read_info(self, rotation: int) -> VideoInfo:
        s = self._stream
        rate = s.average_rate or s.guessed_rate or s.base_rate
        fps = float(rate) if rate else 0.0
        duration = None
        if s.duration is not None and s.time_base:
            duration = float(s.duration * s.time_base)
        elif self._container.duration:
            duration = self._container.duration / 1_000_000
        width, height = self._first.width, self._first.height
        if rotation in (90, 270):
            width, height = height, width
        return VideoInfo(
            width=width,
            height=height,
            fps=fps,
            codec=s.codec_context.name,
            rotation=rotation,
            header_frames=s.frames or None,
            header_duration_s=duration,
        )

    def _expected_frames(self) -> int | None:
        if self.info.header_frames:
            return self.info.header_frames
        if self.info.header_duration_s and self.info.fps:
            return int(self.info.header_duration_s * self.info.fps)
        return None

    def frames(self) -> Iterator[tuple[int, float, np.ndarray]]:
        """Yield ``(frame_index, timestamp_s, bgr_frame)`` for every kept frame.

        Decoding errors do not raise: they end the stream and are recorded in ``self.outcome``
        so the frames before them are kept (a partly readable video).
        """
        import av

        s = self._stream
        time_base = Fraction(s.time_base or 1)
        start = s.start_time or 0
        fps = self.info.fps or 1.0
        segment, plan = self.segment, self._plan
        select = self.sampling.selector()
        index = segment.first_frame - 1
        try:
            for frame in itertools.chain([self._first], self._frames):
                # A segment's decoder starts at a keyframe before its first frame, and stops at
                # the next segment's (the probe made sure every frame has a pts).
                if segment.first_pts is not None and frame.pts < segment.first_pts:
                    continue
                if segment.end_pts is not None and frame.pts >= segment.end_pts:
                    break
                if plan is not None:
                    if frame.pts not in plan.kept_pts:
                        continue  # a reference a kept frame needed
                    index = plan.index(frame.pts)
                else:
                    index += 1
                self.outcome.frames_decoded = index + 1
                if frame.pts is not None:
                    seconds = (frame.pts - start) * time_base
                else:
                    seconds = Fraction(index) / Fraction(fps).limit_denominator(1_000_000)
                if plan is None and not select.keep(index, seconds, frame.key_frame):
                    continue
                image = frame.to_ndarray(format="bgr24")
                if self.info.rotation:
                    image = np.ascontiguousarray(np.rot90(image, k=self.info.rotation // 90))
                self.outcome.frames_yielded += 1
                yield index, float(seconds), image
        except (av.error.FFmpegError, ValueError) as exc:
            self.outcome.error = (
                f"decoding stopped at frame {index + 1}: {type(exc).__name__}: {exc}"
            )
        finally:
            self._container.close()
        if plan is not None and self.outcome.error is None:
            # frames after the last kept one were read (by the probe), not decoded
            self.outcome.frames_decoded = segment.end_frame or plan.frames
        self._check_complete()

    def _check_complete(self) -> None:
        segment = self.segment
        if self.outcome.error is None and segment.end_frame is not None:
            if self.outcome.frames_decoded < segment.end_frame:
                self.outcome.error = (
                    f"stream ended early: decoded up to frame {self.outcome.frames_decoded} of the "
                    f"segment that ends at frame {segment.end_frame} (file truncated?)"
                )
        elif self.outcome.error is None:
            expected = self._expected_frames()
            got = self.outcome.frames_decoded
            # A cut file decodes cleanly up to the cut; only the header shows that frames are missing.
            # 2 % slack: headers round durations and some muxers count frames loosely.
            if expected and got < expected - max(2, math.ceil(0.02 * expected)):
                self.outcome.error = (
                    f"stream ended early: decoded {got} of the {expected} frames the header "
                    "announces (file truncated?)"
                )
            elif got == 0:
                self.outcome.error = "no decodable frames"


def iter_batches(
    decoder: VideoDecoder,
    geometry: LetterboxGeometry,
    batch_size: int,
    *,
    skip_batches: int = 0,
    on_frame: Callable[[], None] | None = None,
    first_seq: int = 0,
) -> Iterator[FrameBatch]:
    """Group the decoder's frames into letterboxed batches of ``batch_size`` (the last may be shorter).

    ``skip_batches`` drops the first batches without resizing them: a retried decoder resumes
    where its previous attempt's output was already consumed. ``first_seq``: the first batch's
    number (a segment's place in its video).
    """
    seq = first_seq
    skip_batches += first_seq
    canvas = None
    indices: list[int] = []
    stamps: list[float] = []
    for index, ts, image in decoder.frames():
        if on_frame:
            on_frame()
        if seq < skip_batches:
            indices.append(index)
            if len(indices) == batch_size:
                seq, indices = seq + 1, []
            continue
        if canvas is None:
            canvas = geometry.new_canvas(batch_size)
        geometry.draw(image, canvas[len(indices)])
        indices.append(index)
        stamps.append(ts)
        if len(indices) == batch_size:
            yield FrameBatch(
                seq, np.asarray(indices, np.int64), np.asarray(stamps, np.float64), canvas
            )
            seq, canvas, indices, stamps = seq + 1, None, [], []
    if indices and seq >= skip_batches:
        assert canvas is not None  # drawn into for every frame past skip_batches
        n = len(indices)
        yield FrameBatch(
            seq, np.asarray(indices, np.int64), np.asarray(stamps, np.float64), canvas[:n].copy()
        )


@dataclass(frozen=True)
class DecodeSpec:
    """How a decoder turns one video (or one segment of it) into batches: the model's input
    (``imgsz``, and the letterbox ``model_stride`` and ``rect`` the loaded model reports), the
    run's ``sampling`` and ``batch_size``, and where this attempt starts (``segment``, and
    ``skip_batches`` already received from an earlier attempt, counted from the segment's first)."""

    imgsz: int
    model_stride: int
    rect: bool
    sampling: Sampling
    batch_size: int
    skip_batches: int = 0
    segment: Segment = WHOLE_VIDEO

    def resumed(self, segment: Segment, skip_batches: int) -> DecodeSpec:
        return replace(self, segment=segment, skip_batches=skip_batches)


@dataclass(frozen=True)
class VideoOpened:
    """First item of a decode stream."""

    info: VideoInfo
    geometry: LetterboxGeometry
    node_id: str | None = None  # the cluster node that decodes it (set by the decoder task)


@dataclass(frozen=True)
class BatchHeader:
    """Which frames a batch holds, and what decoding them cost."""

    seq: int
    frame_indices: np.ndarray
    timestamps: np.ndarray
    decode_s: float  # time spent decoding and letterboxing this batch


@dataclass(frozen=True)
class DecodedBatch:
    """A batch's header and its letterboxed frames: one stream item, so that an item that
    arrived holds real frames (a decoder that died leaves an error in the next item instead)."""

    header: BatchHeader
    frames: np.ndarray


@dataclass(frozen=True)
class VideoEnded:
    """Last item of a decode stream. ``error`` is set when the video could not be read to its end."""

    frames_decoded: int
    error: str | None
    open_failed: bool = False


def stream_video(
    path: str,
    spec: DecodeSpec,
    *,
    before_batch: Callable[[int], None] | None = None,
):
    """The decode stream protocol: ``VideoOpened``, then a ``DecodedBatch`` per batch, then
    ``VideoEnded``.

    A video that cannot be opened yields only ``VideoEnded(open_failed=True)``. With a
    ``spec.segment``, only its batches (``spec.skip_batches`` counts from its first).
    """
    import time

    try:
        decoder = VideoDecoder(path, sampling=spec.sampling, segment=spec.segment)
    except DecodeError as exc:
        yield VideoEnded(0, str(exc), open_failed=True)
        return
    info = decoder.info
    geometry = LetterboxGeometry.for_source(
        info.height, info.width, spec.imgsz, stride=spec.model_stride, rect=spec.rect
    )
    yield VideoOpened(info, geometry)
    started = time.perf_counter()
    batches = iter_batches(
        decoder,
        geometry,
        spec.batch_size,
        skip_batches=spec.skip_batches,
        first_seq=spec.segment.first_seq,
    )
    for batch in batches:
        if before_batch:
            before_batch(batch.seq)
        now = time.perf_counter()
        header = BatchHeader(batch.seq, batch.frame_indices, batch.timestamps, now - started)
        yield DecodedBatch(header, batch.frames)
        started = time.perf_counter()
    yield VideoEnded(decoder.outcome.frames_decoded, decoder.outcome.error)
