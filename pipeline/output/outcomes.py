"""The run's bookkeeping, Ray-free: what a finished video's record says, when a decoder is
started again, and the run's counters. The runtime (``pipeline.runtime``) only gathers the facts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from pipeline.locations import redact
from pipeline.media.decode import VideoInfo
from pipeline.media.source import VideoSource
from pipeline.output.manifest import Status, VideoRecord


@dataclass(frozen=True)
class VideoOutcome:
    """What happened to one video, as the coordinator saw it."""

    source: VideoSource
    info: VideoInfo | None  # None: it never opened
    error: str | None  # the first error: opening, decoding, a batch, tracking
    committed: bool  # its rows were put in place (else any were removed)
    frames: int  # rows written
    boxes: int = 0
    class_counts: list[dict] = field(default_factory=list)
    num_tracks: int | None = None
    frames_decoded: int = 0
    attempts: int = 0  # decoder streams started
    processing_s: float = 0.0

    @property
    def status(self) -> Status:
        """``ok``: every frame, no error; ``partial``: rows up to an error; ``failed``: no rows."""
        if not self.committed:
            return "failed"
        return "ok" if not self.error else "partial"

    def record(self, settings_hash: str) -> VideoRecord:
        kept = self.committed
        info = self.info
        return VideoRecord(
            video_id=self.source.video_id,
            path=redact(self.source.path),
            status=self.status,
            frames_processed=self.frames if kept else 0,
            width=info.width if info else None,
            height=info.height if info else None,
            fps=info.fps if info else None,
            # Nothing kept and nothing said why: the decoder found no frame at all.
            error=self.error or (None if kept else "no frames decoded"),
            frames_decoded=self.frames_decoded,
            num_detections=self.boxes if kept else 0,
            class_counts=self.class_counts if kept else [],
            num_tracks=self.num_tracks if kept else None,
            codec=info.codec if info else None,
            rotation=info.rotation if info else 0,
            size_bytes=self.source.size_bytes,
            mtime_ns=self.source.mtime_ns,
            settings_hash=settings_hash,
            processing_s=self.processing_s,
            decode_attempts=self.attempts,
        )


def should_commit(rows_written: int, batches_pending: int) -> bool:
    """A video's rows are put in place only when it has some and no batch is missing from the
    middle (a batch that arrived after one that never did is not a video)."""
    return rows_written > 0 and batches_pending == 0


@dataclass(frozen=True)
class RetryPolicy:
    """When a video worker starts a video's decoder again, and when it gives up on the video."""

    decode_retries: int = 2  # decoder streams started again after one died or stalled ...

    def retry_decoder(self, deaths: int) -> bool:
        """After ``deaths`` streams of one segment died in a row, none of which delivered a
        batch (... without a batch: one that made progress starts the count again): another?"""
        return deaths <= self.decode_retries


@dataclass
class RunCounts:
    """The run's counters (the coordinator's ``progress`` and ``summary``)."""

    videos_total: int = 0  # handed to the coordinator so far
    videos_done: int = 0
    videos_skipped: int = 0  # found complete by the coordinator
    videos_ok: int = 0
    videos_failed: int = 0
    videos_partial: int = 0
    frames_done: int = 0  # inferred, by every attempt (live progress)
    frames_recorded: int = 0  # in the records of this run: the rows it wrote
    boxes_recorded: int = 0
    batches_done: int = 0
    frames_expected: int = 0  # what the headers of the opened videos announce, after stride
    videos_opened: int = 0  # videos whose decoder opened them ...
    videos_with_header_frames: int = 0  # ... of which the header says how many frames they have
    videos_never_opened: int = 0  # finished without opening (unreadable, or no decoder could)
    boxes: int = 0
    tracks: int = 0
    decoder_retries: int = 0
    duplicate_batches_dropped: int = 0
    actors_hung: int = 0
    open_decoders: int = 0
    peak_open_decoders: int = 0
    videos_split: int = 0  # videos decoded in segments ...
    segments: int = 0  # ... and their segments
    # where each batch was decoded, against its video worker's node
    batches_decoded_here: int = 0
    batches_decoded_elsewhere: int = 0
    mixed_batches: int = 0  # forward passes with frames of more than one video
    videos_reassigned: int = 0  # handed to another worker after theirs died
    commits_refused: int = 0  # asked for by an attempt that was no longer the video's
    handouts: int = 0  # messages that gave videos to workers (one video, or a chunk of clips)

    def merged(self, others: list[RunCounts]) -> RunCounts:
        """These counts plus others' (each counter is kept by one side: the coordinator or a worker)."""
        total = RunCounts(**vars(self))
        for other in others:
            for name, value in vars(other).items():
                setattr(total, name, getattr(total, name) + value)
        return total

    def video_finished(self, record: VideoRecord) -> None:
        """``record`` logged: an attempt whose worker died before its commit inferred frames
        that no row holds, so the run's totals are the records'."""
        self.videos_done += 1
        setattr(self, f"videos_{record.status}", getattr(self, f"videos_{record.status}") + 1)
        self.frames_recorded += record.frames_processed
        self.boxes_recorded += record.num_detections

    @property
    def videos_not_yet_opened(self) -> int:
        """Videos handed to the run that will be decoded but have not been opened yet."""
        return max(
            0,
            self.videos_total - self.videos_skipped - self.videos_opened - self.videos_never_opened,
        )

    def estimated_frames(self) -> tuple[int, bool]:
        """The frames the run will process: the opened videos' headers, plus, for the videos
        not opened yet, the mean of the headers so far (so an ETA does not reach 0 while videos
        wait); and whether that is an estimate."""
        known = max(self.frames_expected, self.frames_done)
        waiting = self.videos_not_yet_opened
        if not waiting or not self.videos_with_header_frames:  # nothing to estimate from
            return known, False
        mean = self.frames_expected / self.videos_with_header_frames
        return max(known, round(self.frames_expected + waiting * mean)), True

    def video_skipped(self) -> None:
        self.videos_skipped += 1
        self.videos_done += 1

    def decoder_opened(self) -> None:
        self.open_decoders += 1
        self.peak_open_decoders = max(self.peak_open_decoders, self.open_decoders)

    def decoder_closed(self) -> None:
        self.open_decoders -= 1

    def as_dict(self) -> dict[str, int]:
        return asdict(self)
