"""The coordinator's decisions, Ray-free: a finished video's outcome becomes its record; the
run's counters."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pipeline.media.decode import VideoInfo
from pipeline.media.source import VideoSource
from pipeline.output.outcomes import RunCounts, VideoOutcome, should_commit

SOURCE = VideoSource("/v/a.mp4", "abc", size_bytes=100, mtime_ns=5)
INFO = VideoInfo(
    width=1920,
    height=1080,
    fps=30.0,
    codec="h264",
    rotation=90,
    header_frames=300,
    header_duration_s=10.0,
)
CLASSES = [{"class_id": 0, "class_name": "person", "count": 7}]


def outcome(**changes) -> VideoOutcome:
    base = dict(
        source=SOURCE,
        info=INFO,
        error=None,
        committed=True,
        frames=300,
        boxes=7,
        class_counts=CLASSES,
        num_tracks=2,
        frames_decoded=300,
        attempts=1,
        processing_s=1.5,
    )
    return VideoOutcome(**{**base, **changes})


@pytest.mark.parametrize(
    "changes, status, frames, error",
    [
        ({}, "ok", 300, None),
        (
            {"error": "stream ended early", "frames": 120},
            "partial",
            120,
            "stream ended early",
        ),  # rows up to the error
        ({"error": "tracking failed: X", "committed": False}, "failed", 0, "tracking failed: X"),
        ({"error": None, "committed": False, "frames": 0}, "failed", 0, "no frames decoded"),
        (
            {"error": "cannot open", "committed": False, "frames": 0, "info": None},
            "failed",
            0,
            "cannot open",
        ),
    ],
)
def test_an_outcome_becomes_its_record(changes, status, frames, error):
    record = outcome(**changes).record("hash1")
    assert (record.status, record.frames_processed, record.error) == (status, frames, error)
    assert (record.video_id, record.size_bytes, record.mtime_ns, record.settings_hash) == (
        "abc",
        100,
        5,
        "hash1",
    )
    kept = status != "failed"
    assert record.num_detections == (7 if kept else 0) and record.class_counts == (
        CLASSES if kept else []
    )
    assert record.num_tracks == (2 if kept else None)
    if changes.get("info", INFO) is None:
        assert (record.width, record.height, record.fps, record.codec, record.rotation) == (
            None,
            None,
            None,
            None,
            0,
        )
    else:
        assert (record.width, record.height, record.codec, record.rotation) == (
            1920,
            1080,
            "h264",
            90,
        )


def test_the_record_never_carries_credentials():
    source = VideoSource("s3://KEY:SECRET@bucket/v.mp4?secret_key=S", "abc")
    assert outcome(source=source).record("h").path == "s3://bucket/v.mp4"


@pytest.mark.parametrize("rows, pending, commit", [(10, 0, True), (0, 0, False), (10, 1, False)])
def test_a_video_is_committed_only_with_rows_and_no_batch_missing(rows, pending, commit):
    assert should_commit(rows, pending) is commit


def test_the_counters():
    counts = RunCounts()
    for finished in (
        outcome(frames=10),
        outcome(frames=5),
        outcome(frames=3, error="cut short"),
        outcome(committed=False),
    ):
        counts.video_finished(finished.record("h"))
    counts.video_skipped()
    (
        counts.decoder_opened(),
        counts.decoder_opened(),
        counts.decoder_closed(),
        counts.decoder_opened(),
    )
    assert (
        counts.videos_done,
        counts.videos_ok,
        counts.videos_partial,
        counts.videos_failed,
        counts.videos_skipped,
    ) == (5, 2, 1, 1, 1)
    assert counts.frames_recorded == 18  # the records' frames, not what attempts inferred
    assert (counts.open_decoders, counts.peak_open_decoders) == (2, 2)
    assert counts.as_dict()["videos_ok"] == 2 and set(counts.as_dict()) >= {
        "frames_done",
        "segments",
    }
    with pytest.raises(AttributeError):
        counts.video_finished(SimpleNamespace(status="bogus", frames_processed=0, num_detections=0))


def test_the_retry_policy_counts_deaths_in_a_row_without_a_batch():
    from pipeline.output.outcomes import RetryPolicy

    policy = RetryPolicy(decode_retries=2)
    # decode_retries=2: three streams in a row that delivered nothing, then the video is given up
    assert [policy.retry_decoder(n) for n in (1, 2, 3)] == [True, True, False]
    assert not RetryPolicy(decode_retries=0).retry_decoder(1)
