"""Frame sampling, Ray-free: ``--fps`` keeps the frames its written rule names at every input rate
(variable rate included), ``--keyframes`` exactly the keyframes, and the packets a sampled decoder
leaves undecoded change no kept frame."""

from __future__ import annotations

import hashlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from corpus import scene_frames, write_vfr

from pipeline.config import ConfigError, RunConfig
from pipeline.media.decode import VideoDecoder
from pipeline.media.samples import read_frames, write_video
from pipeline.media.sampling import (
    Sampling,
    h264_length_size,
    h264_slice_kinds,
    needed_packets,
)

B_FRAMES = "bframes=3:b-adapt=0:b-pyramid=normal:scenecut=0:keyint={k}:min-keyint={k}"


@pytest.fixture(scope="module")
def rates(tmp_path_factory, people_mp4) -> dict[str, Path]:
    """About 3 s of people.mp4 (small) at 25, 30 and 60 fps, and at a variable rate."""
    folder = tmp_path_factory.mktemp("rates")
    source = list(read_frames(people_mp4, limit=60))
    paths = {}
    for fps in (25, 30, 60):
        frames = scene_frames(source, 3 * fps, size=(160, 96))
        paths[f"{fps}fps"] = folder / f"{fps}fps.mp4"
        write_video(
            paths[f"{fps}fps"], frames, fps=fps, options={"x264-params": B_FRAMES.format(k=fps)}
        )
    gaps = np.random.default_rng(7).uniform(0.005, 0.3, 40)
    paths["vfr"] = folder / "vfr.mp4"
    write_vfr(paths["vfr"], scene_frames(source, 40, size=(160, 96)), np.cumsum(gaps).tolist())
    return paths


def container_times(path: Path) -> tuple[list[Fraction], list[bool]]:
    """Each frame's time from the stream's start and its keyframe flag, read from the packets
    (presentation order), independently of the code under test."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        start = stream.start_time or 0
        packets = sorted(
            (p.pts, p.is_keyframe) for p in container.demux(stream) if p.size and not p.is_discard
        )
        return [(pts - start) * stream.time_base for pts, _ in packets], [k for _, k in packets]


def by_the_rule(times: list[Fraction], fps: Fraction) -> list[int]:
    """The written rule, literally: for each k, the first frame whose time is at least k/N."""
    kept: list[int] = []
    k = 0
    while k / fps <= times[-1]:
        first = next(i for i, t in enumerate(times) if t >= k / fps)
        if first not in kept:
            kept.append(first)
        k += 1
    return kept


def decoded(path: Path, sampling: Sampling, *, skip_work: bool = True):
    decoder = VideoDecoder(str(path), sampling=sampling, skip_work=skip_work)
    return [(i, t, hashlib.md5(image.tobytes()).hexdigest()) for i, t, image in decoder.frames()]


@pytest.mark.parametrize("name", ["25fps", "30fps", "60fps", "vfr"])
@pytest.mark.parametrize("fps", [2.0, 0.5, 7.0])
def test_fps_keeps_the_frames_the_rule_names_at_every_input_rate(rates, name, fps):
    times, _ = container_times(rates[name])
    got = decoded(rates[name], Sampling(fps=fps))
    expected = by_the_rule(times, Fraction(repr(fps)))
    assert [i for i, _, _ in got] == expected
    # frame_index and timestamp_s stay the source's
    np.testing.assert_allclose([t for _, t, _ in got], [float(times[i]) for i in expected])
    # the same frames as a decoder that decodes every packet and picks by the rule
    assert got == decoded(rates[name], Sampling(fps=fps), skip_work=False)


def test_two_frames_a_second_is_the_same_rate_in_time_at_25_30_and_60_fps(rates):
    kept = {
        n: [t for _, t, _ in decoded(rates[n], Sampling(fps=2.0))]
        for n in ("25fps", "30fps", "60fps")
    }
    assert {len(v) for v in kept.values()} == {6}  # 0, 0.5, ... 2.5 s of 3 s
    for stamps in kept.values():
        assert np.all(np.abs(np.asarray(stamps) - np.arange(6) * 0.5) < 1 / 25)


@pytest.fixture(scope="module")
def keyframe_clip(tmp_path_factory, people_mp4) -> Path:
    """4 s at 30 fps with a keyframe every 20 frames, B-frames between."""
    path = tmp_path_factory.mktemp("keys") / "keys.mp4"
    frames = scene_frames(list(read_frames(people_mp4, limit=60)), 120, size=(160, 96))
    write_video(path, frames, fps=30, options={"x264-params": B_FRAMES.format(k=20)})
    return path


def test_keyframes_keeps_exactly_the_packets_keyframes(keyframe_clip):
    times, keys = container_times(keyframe_clip)
    expected = [i for i, key in enumerate(keys) if key]
    assert expected == list(range(0, 120, 20))
    got = decoded(keyframe_clip, Sampling(keyframes=True))
    assert [i for i, _, _ in got] == expected
    assert got == decoded(keyframe_clip, Sampling(keyframes=True), skip_work=False)


def test_keyframes_with_fps_thins_them_to_that_rate(keyframe_clip):
    times, keys = container_times(keyframe_clip)
    key_times = [t for t, key in zip(times, keys) if key]  # 0, 2/3, 4/3, ... s
    got = [i for i, _, _ in decoded(keyframe_clip, Sampling(fps=1.0, keyframes=True))]
    # the rule over the keyframes: the first keyframe at or after 0, 1, 2, 3 s
    expected = [times.index(key_times[j]) for j in by_the_rule(key_times, Fraction(1))]
    assert got == expected == [0, 40, 60, 100]


def test_a_stream_start_after_zero_counts_from_the_stream_start(tmp_path, people_mp4):
    path = tmp_path / "late.mp4"
    frames = scene_frames(list(read_frames(people_mp4, limit=30)), 30, size=(160, 96))
    write_vfr(path, frames, [5.0 + i / 10 for i in range(30)])
    got = decoded(path, Sampling(fps=2.0))
    assert [i for i, _, _ in got] == list(range(0, 30, 5))
    np.testing.assert_allclose([t for _, t, _ in got], np.arange(6) * 0.5)


@pytest.mark.parametrize(
    "times, fps, expected",
    [
        ([0, 0.1, 0.2, 1.6, 1.7, 2.0], 2, [0, 3, 5]),  # a gap: a frame answers two k's once
        ([-0.2, -0.1, 0.0, 0.4, 0.5], 2, [2, 4]),  # frames before the start are never kept
        ([0, 0.2, 0.4, 0.6, 0.8, 1.0], 1000, [0, 1, 2, 3, 4, 5]),  # above the input rate: all
    ],
)
def test_the_rule_on_hand_made_times(times, fps, expected):
    seconds = [Fraction(t).limit_denominator(1000) for t in times]
    assert Sampling(fps=fps).kept_frames(seconds, [False] * len(times)).tolist() == expected


def test_a_rate_is_taken_as_typed_not_as_the_nearest_float():
    # 0.2 a second is k/0.2 = 5k s exactly: the frame at 5.0 s is kept, not the one after it
    seconds = [Fraction(t, 10) for t in range(0, 101)]
    assert Sampling(fps=0.2).kept_frames(seconds, [False] * 101).tolist() == [0, 50, 100]


def test_needed_packets_keep_references_before_a_kept_frame_up_to_the_next_idr():
    # decoding order: I0 P4 b2(nonref) B... ; pts 0..7, an IDR at pts 4 starts afresh
    order = np.asarray([0, 2, 1, 3, 4, 6, 5, 7])
    reference = np.asarray([True, True, False, True, True, True, False, False])
    idr = np.asarray([True, False, False, False, True, False, False, False])
    # keep pts 1: the IDR 0 and the reference 2 before it; nothing after in its GOP, nothing of the next
    assert needed_packets(order, reference, idr, {1}) == {0, 2, 1}
    # keep pts 6: its GOP's IDR and itself only
    assert needed_packets(order, reference, idr, {6}) == {4, 6}
    # a kept non-reference frame needs the references decoded before it
    assert needed_packets(order, reference, idr, {5}) == {4, 6, 5}


def test_h264_slice_kinds_read_nal_headers_in_both_packings():
    idr, ref_p, nonref_b = 0x65, 0x41, 0x01  # nal_ref_idc 3/2/0, types 5/1/1
    sei = 0x06

    def avcc(*headers):
        return b"".join(
            len(b"x" + bytes([h]) + b"..").to_bytes(4, "big") + bytes([h]) + b"x.." for h in headers
        )

    def annexb(*headers):
        return b"".join(b"\x00\x00\x00\x01" + bytes([h]) + b"\x88\x84" for h in headers)

    for pack, size in ((avcc, 4), (annexb, None)):
        assert h264_slice_kinds(pack(sei, idr), size) == (True, True)
        assert h264_slice_kinds(pack(ref_p), size) == (True, False)
        assert h264_slice_kinds(pack(sei, nonref_b, nonref_b), size) == (False, False)
        assert h264_slice_kinds(pack(sei), size) == (True, False)  # no slice: assumed needed
    assert h264_length_size(bytes([1, 0x64, 0, 0x28, 0xFF])) == 4
    assert h264_length_size(b"\x00\x00\x00\x01") is None


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"fps": 0}, "--fps must be positive"),
        ({"fps": -1.0}, "--fps must be positive"),
        ({"fps": float("inf")}, "--fps must be a finite number"),
        ({"fps": 2.0, "stride": 3}, "--fps and --stride are exclusive"),
    ],
)
def test_sampling_mistakes_are_refused_in_words(settings, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig(**settings)


def test_fps_and_keyframes_change_the_settings_hash_and_leave_earlier_hashes_alone():
    plain = RunConfig()
    assert "fps" not in plain.result_settings() and "keyframes" not in plain.result_settings()
    hashes = {
        RunConfig(**s).settings_hash()
        for s in (
            {},
            {"fps": 2.0},
            {"fps": 3.0},
            {"keyframes": True},
            {"fps": 2, "keyframes": True},
        )
    }
    assert len(hashes) == 5
    assert RunConfig(fps=2).settings_hash() == RunConfig(fps=2.0).settings_hash()
