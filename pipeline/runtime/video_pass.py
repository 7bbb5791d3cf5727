"""One video's pass through decoding and inference, inside its video worker: its decoder streams
(one per segment, each started again on its own after a death, resuming after the last batch
it delivered), each batch inferred by the worker's engine as it arrives, the boxes put in the
video's writer in frame order. What happens once the pass is over (tracking, the commit, the
record) is the worker's (``video_worker``)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import ray

from pipeline.locations import redact
from pipeline.media.decode import BatchHeader, DecodedBatch, VideoEnded, VideoInfo, VideoOpened
from pipeline.media.letterbox import LetterboxGeometry
from pipeline.media.segments import WHOLE_VIDEO, Segment, decode_bound, plan_segments
from pipeline.media.source import VideoSource
from pipeline.output.writer import VideoResultWriter
from pipeline.runtime.context import RunContext
from pipeline.runtime.local_engine import InferredBatch, LocalEngine
from pipeline.runtime.ray_calls import RayCalls, error_cause

log = logging.getLogger(__name__)


class DecoderLost(Exception):
    """The decoder process died or stopped producing; the video may be retried."""


@dataclass
class SegmentStream:
    """One decoder's share of a video (the whole video, unless it is split)."""

    segment: Segment
    received: int = 0  # batches of this segment taken from its decoder streams, over all attempts
    attempts: int = 0
    decoded_on: str | None = None  # the node of its latest decoder


@dataclass
class VideoState:
    source: VideoSource
    info: VideoInfo | None = None
    geometry: LetterboxGeometry | None = None
    writer: VideoResultWriter | None = None
    tasks: set = field(default_factory=set)
    error: str | None = None
    frames_decoded: int = 0
    attempts: int = 0  # decoder streams started, over all segments
    started: float = field(default_factory=time.perf_counter)


async def plan_video_segments(
    ctx: RunContext, calls: RayCalls, source: VideoSource
) -> list[Segment]:
    """The segments this video is decoded in: the whole video, unless the split policy says
    otherwise for its length (which a probe finds), the free decoders and the bottleneck."""
    policy = ctx.split_policy
    if not policy.worth_probing(source.size_bytes):
        return [WHOLE_VIDEO]
    # less this video's own
    free = (ctx.config.max_open_videos or 1) - ctx.counts.open_decoders - 1
    frames = ctx.counts.frames_done
    bound = decode_bound(
        ctx.stage_s["decode"] / ctx.frames_decoded if ctx.frames_decoded else None,
        ctx.stage_s["infer"] / frames if frames else None,
        1,  # the worker's own engine infers every segment
        on_gpu=ctx.config.resolved_device == "cuda",
    )
    if policy.segments is None and (not bound or free <= 0):
        return [WHOLE_VIDEO]  # no probe: nothing it finds would split this video
    try:
        times = await calls.probe(source.path)
    except ray.exceptions.RayError as exc:  # the decoder will say what is wrong with the file
        log.info("not splitting %s: its probe failed (%s)", redact(source.path), type(exc).__name__)
        return [WHOLE_VIDEO]
    count = policy.count(len(times.pts), free_decoders=free, decode_bound=bound)
    segments = plan_segments(
        times, count, sampling=ctx.config.sampling, batch_size=ctx.config.batch_size
    )
    if len(segments) > 1:
        ctx.counts.videos_split += 1
        ctx.counts.segments += len(segments)
    return segments


class VideoPass:
    """Decodes and infers videos, one ``run`` per video (several run at once)."""

    def __init__(self, ctx: RunContext, engine: LocalEngine, calls: RayCalls, output):
        self.ctx, self.engine, self.calls, self.output = ctx, engine, calls, output

    async def run(self, source: VideoSource) -> tuple[VideoState, VideoEnded]:
        """Every batch of ``source`` inferred and in its writer (or the video's error)."""
        state = VideoState(source)
        try:
            segments = await plan_video_segments(self.ctx, self.calls, source)
            parts = [SegmentStream(segment) for segment in segments]
            ends = await asyncio.gather(*(self._decode_with_retries(state, part) for part in parts))
            # The last segment's end speaks for the video's length; any segment's error for the video.
            ended = VideoEnded(
                ends[-1].frames_decoded, next((e.error for e in ends if e.error), None)
            )
            if state.tasks:
                await asyncio.gather(*list(state.tasks))
        except BaseException:
            if state.writer:
                state.writer.abort()
            raise
        return state, ended

    # ---- one decoder stream --------------------------------------------------------------

    async def _decode_with_retries(self, state: VideoState, part: SegmentStream) -> VideoEnded:
        ctx = self.ctx
        assert ctx.decode_spec is not None  # the model loaded before any video starts
        # Deaths of this segment's decoders since one last delivered a batch: a decoder killed
        # while making progress (a node's OOM killer, a preemption) is not stuck on this video,
        # and its successor resumes after the last batch delivered; only a video on which
        # decoders keep dying without a batch is given up on.
        deaths = 0
        while True:
            state.attempts += 1
            received_at_start = part.received
            stream = self.calls.start_decoder(
                state.source.path,
                ctx.decode_spec.resumed(part.segment, part.received),
                ctx.config.decoder_buffer,
            )
            ctx.counts.decoder_opened()
            try:
                ended = await self._consume(stream, state, part)
                if state.error:  # the decoder must not run on alone
                    self.calls.cancel(stream)
                return ended
            except DecoderLost as exc:
                self.calls.cancel(stream)
                deaths = 1 if part.received > received_at_start else deaths + 1
                if not ctx.retry.retry_decoder(deaths):
                    return VideoEnded(
                        state.frames_decoded,
                        f"{exc} (gave up after {deaths} attempts that delivered no batch)",
                    )
                ctx.counts.decoder_retries += 1
                log.warning(
                    "retrying decoder of %s after: %s", redact(state.source.path), redact(str(exc))
                )
            finally:
                ctx.counts.decoder_closed()
                part.attempts += 1

    async def _next(self, stream):
        stall_s = self.ctx.config.stall_timeout_s
        try:
            return await asyncio.wait_for(stream.__anext__(), timeout=stall_s)
        except asyncio.TimeoutError:
            raise DecoderLost(f"decoder stalled: nothing for {stall_s:.0f} s") from None
        except StopAsyncIteration:
            raise DecoderLost("decoder stream ended without its end marker") from None
        except ray.exceptions.RayError as exc:
            raise DecoderLost(f"decoder process died ({type(exc).__name__})") from exc

    @staticmethod
    async def _fetch(ref):
        try:
            return await ref
        except ray.exceptions.RayTaskError as exc:
            cause = error_cause(exc)
            raise DecoderLost(f"decoder raised {type(cause).__name__}: {cause}") from exc
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.RayError) as exc:
            raise DecoderLost(f"decoder process died ({type(exc).__name__})") from exc

    async def _consume(self, stream, state: VideoState, part: SegmentStream) -> VideoEnded:
        """Infer the stream's batches as they arrive. Each item holds a batch's frames, so one
        that arrived is real: a decoder that dies leaves an error in the item after its last
        batch (Ray's streaming generators do not raise for it), which ``_fetch`` raises."""
        while True:
            item = await self._fetch(await self._next(stream))
            if isinstance(item, VideoOpened):
                part.decoded_on = item.node_id
                self._opened(state, item)
            elif isinstance(item, DecodedBatch):
                await self._dispatch(item.header, item.frames, state, part)
            elif isinstance(item, VideoEnded):
                return item
            if state.error:  # a batch failed for good: no point decoding the rest
                return VideoEnded(state.frames_decoded, state.error)

    def _opened(self, state: VideoState, opened: VideoOpened) -> None:
        if state.info is not None:  # a retried decoder, or another segment: opened already
            return
        state.info, state.geometry = opened.info, opened.geometry
        state.writer = VideoResultWriter(self.output, state.source.video_id, self.ctx.names)
        self.ctx.counts.videos_opened += 1
        expected = self.ctx.config.sampling.expected_frames(
            opened.info.header_frames or 0, opened.info.header_duration_s
        )
        if opened.info.header_frames and expected is not None:
            self.ctx.counts.videos_with_header_frames += 1
            self.ctx.counts.frames_expected += expected

    async def _dispatch(
        self, header: BatchHeader, frames, state: VideoState, part: SegmentStream
    ) -> None:
        """Hand one batch to the engine (waits while the worker's window is full)."""
        part.received = header.seq - part.segment.first_seq + 1
        ctx = self.ctx
        ctx.stage_s["decode"] += header.decode_s
        ctx.frames_decoded += len(header.frame_indices)
        if part.decoded_on == ctx.node_id:
            ctx.counts.batches_decoded_here += 1
        else:
            ctx.counts.batches_decoded_elsewhere += 1
        await self.engine.acquire()  # backpressure: the decoder's stream waits meanwhile
        # kept if the decoder dies
        state.frames_decoded = max(state.frames_decoded, int(header.frame_indices[-1]) + 1)
        ctx.metrics.frames_decoded.inc(len(header.frame_indices))
        task = asyncio.create_task(self._infer(header, frames, state))
        state.tasks.add(task)
        task.add_done_callback(state.tasks.discard)

    # ---- one batch -----------------------------------------------------------------------

    async def _infer(self, header: BatchHeader, frames, state: VideoState) -> None:
        assert state.geometry is not None  # set when the stream opened, before any batch
        sent = time.perf_counter()
        try:
            out = await self.engine.infer(frames, state.geometry, state.source.video_id, header)
        except Exception as exc:  # the detector's error: the video fails with it
            state.error = (
                state.error
                or f"inference failed on batch {header.seq}: {type(exc).__name__}: {exc}"
            )
            return
        finally:
            del frames  # the batch's frames can leave the object store now
        self._received(out, time.perf_counter() - sent, state)

    def _received(self, out: InferredBatch, latency: float, state: VideoState) -> None:
        """A batch's boxes are back: into the video's writer (in frame order), and the figures."""
        ctx = self.ctx
        if ctx.first_batch_done_at is None:
            ctx.first_batch_done_at = time.time()
        ctx.metrics.batch_latency.observe(latency)
        ctx.stage_s["batch_round_trip"] += latency
        ctx.stage_s["infer"] += out.infer_s
        result = out.result
        t0 = time.perf_counter()
        assert state.writer is not None  # made when the stream opened, before any batch
        if state.writer.add(result):
            ctx.counts.batches_done += 1
            ctx.counts.frames_done += result.num_frames
            ctx.counts.boxes += len(result.detections)
            ctx.metrics.frames_inferred.inc(result.num_frames)
            if state.writer.row_groups_written:
                # Warm once rows have reached the disk: the Parquet writer's buffers and codecs
                # are allocated then, so growth after this point is what a leak would look like.
                ctx.memory.mark_warm()
        else:
            ctx.counts.duplicate_batches_dropped += 1
        ctx.stage_s["write"] += time.perf_counter() - t0
