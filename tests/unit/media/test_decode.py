"""Decoding: exact indices and timestamps with stride, fixed-shape batches, clear errors."""

from pathlib import Path

import numpy as np
import pytest

from pipeline.media.decode import (
    DecodeError,
    DecodeSpec,
    VideoDecoder,
    VideoEnded,
    VideoOpened,
    iter_batches,
    stream_video,
)
from pipeline.media.letterbox import LetterboxGeometry
from pipeline.media.samples import write_video
from pipeline.media.sampling import Sampling


def numbered_frames(count, size=(96, 64)):
    """Frames whose brightness encodes their index, so the tests can tell which frame is which."""
    w, h = size
    for i in range(count):
        yield np.full((h, w, 3), (i * 7) % 256, np.uint8)


@pytest.fixture(scope="module")
def numbered_video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("dec") / "numbered.mp4"
    write_video(path, numbered_frames(50), fps=25, options={"crf": "0"})
    return path


@pytest.mark.parametrize("stride", [1, 2, 5, 7, 49, 50, 51])
def test_stride_gives_exact_indices_and_timestamps(numbered_video, stride):
    decoder = VideoDecoder(str(numbered_video), sampling=Sampling(stride=stride))
    got = [(i, ts) for i, ts, _ in decoder.frames()]
    expected = list(range(0, 50, stride))
    assert [i for i, _ in got] == expected
    np.testing.assert_allclose([ts for _, ts in got], np.array(expected) / 25, atol=1e-6)
    assert decoder.outcome.error is None and decoder.outcome.frames_decoded == 50


def test_frames_are_the_right_frames(numbered_video):
    decoder = VideoDecoder(str(numbered_video), sampling=Sampling(stride=3))
    for index, _, image in decoder.frames():
        assert abs(int(image.mean()) - (index * 7) % 256) <= 4  # YUV round trip


def test_header_info(numbered_video):
    info = VideoDecoder(str(numbered_video)).info
    assert (info.width, info.height, info.fps, info.codec, info.rotation) == (
        96,
        64,
        25.0,
        "h264",
        0,
    )
    assert info.header_frames == 50


@pytest.mark.parametrize("batch_size", [1, 7, 16, 50, 64])
def test_batches_are_fixed_shape_and_cover_every_frame_once(numbered_video, batch_size):
    geometry = LetterboxGeometry.for_source(64, 96, 320)
    batches = list(iter_batches(VideoDecoder(str(numbered_video)), geometry, batch_size))
    assert [b.seq for b in batches] == list(range(len(batches)))
    assert np.concatenate([b.frame_indices for b in batches]).tolist() == list(range(50))
    for b in batches[:-1]:
        assert b.frames.shape == (batch_size, geometry.out_h, geometry.out_w, 3)
    assert batches[-1].frames.shape[0] == 50 - batch_size * (len(batches) - 1)


def test_skip_batches_resumes_after_what_was_consumed(numbered_video):
    geometry = LetterboxGeometry.for_source(64, 96, 320)
    full = list(iter_batches(VideoDecoder(str(numbered_video)), geometry, 8))
    resumed = list(iter_batches(VideoDecoder(str(numbered_video)), geometry, 8, skip_batches=3))
    assert [b.seq for b in resumed] == [3, 4, 5, 6]
    for a, b in zip(full[3:], resumed):
        np.testing.assert_array_equal(a.frame_indices, b.frame_indices)
        np.testing.assert_array_equal(a.frames, b.frames)


def test_stream_protocol(numbered_video):
    """``VideoOpened``, a ``DecodedBatch`` per batch (its header and uint8 frames in one item),
    then ``VideoEnded``."""
    from pipeline.media.decode import DecodedBatch

    items = list(
        stream_video(
            str(numbered_video),
            DecodeSpec(
                imgsz=320, model_stride=32, rect=True, sampling=Sampling(stride=2), batch_size=10
            ),
        )
    )
    assert isinstance(items[0], VideoOpened) and isinstance(items[-1], VideoEnded)
    batches = items[1:-1]
    assert all(isinstance(b, DecodedBatch) for b in batches)
    assert all(
        b.frames.dtype == np.uint8 and len(b.frames) == len(b.header.frame_indices) for b in batches
    )
    assert [b.header.seq for b in batches] == list(range(len(batches)))
    assert sum(len(b.header.frame_indices) for b in batches) == 25
    assert items[-1].error is None and items[-1].frames_decoded == 50


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "name, make, message",
    [
        ("missing.mp4", None, "file not found"),
        ("empty.mp4", lambda p: _write(p, b""), "invalid data|no video|cannot open|no decodable"),
        (
            "random.mp4",
            lambda p: _write(p, np.random.default_rng(0).bytes(50_000)),
            "invalid data|no video|cannot open|no decodable",
        ),
        (
            "text.mp4",
            lambda p: _write(p, b"this is not a video\n" * 100),
            "invalid data|no video|cannot open|no decodable",
        ),
    ],
)
def test_unopenable_files_raise_a_clear_error(tmp_path, name, make, message):
    path = tmp_path / name
    if make:
        make(path)
    with pytest.raises(DecodeError, match=message):
        VideoDecoder(str(path))


def test_stream_of_a_bad_file_is_one_end_marker(tmp_path):
    path = _write(tmp_path / "bad.mp4", b"junk" * 10)
    items = list(
        stream_video(
            str(path),
            DecodeSpec(imgsz=320, model_stride=32, rect=True, sampling=Sampling(), batch_size=4),
        )
    )
    assert len(items) == 1 and items[0].open_failed and items[0].error


def test_audio_only_file_says_no_video_stream(tmp_path):
    from corpus import write_audio_only

    path = tmp_path / "audio.m4a"
    write_audio_only(path)
    with pytest.raises(DecodeError, match="no video stream"):
        VideoDecoder(str(path))


def test_truncated_file_keeps_frames_before_the_cut_and_says_so(tmp_path):
    """An MP4 with its index at the front ('faststart'), cut in half: the first frames decode,
    and the header's frame count shows that the rest is missing."""
    path = tmp_path / "faststart.mp4"
    rng = np.random.default_rng(0)
    # big frames: the cut lands mid-stream
    noisy = (rng.integers(0, 256, (120, 160, 3), dtype=np.uint8) for _ in range(60))
    write_video(path, noisy, container_options={"movflags": "faststart"})
    data = path.read_bytes()
    cut = _write(tmp_path / "cut.mp4", data[: len(data) // 2])
    decoder = VideoDecoder(str(cut))
    frames = [i for i, _, _ in decoder.frames()]
    assert 0 < len(frames) < 60
    assert frames == list(range(len(frames)))
    assert "ended early" in decoder.outcome.error
