"""Segment decoding, Ray-free: the split policy, the segment plan, and decoders that read a video
in segments giving exactly the frames, indices, timestamps and batches of one decoder."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from corpus import scene_frames, write_vfr

from pipeline.media.decode import VideoDecoder, iter_batches
from pipeline.media.letterbox import LetterboxGeometry
from pipeline.media.samples import read_frames, write_video
from pipeline.media.sampling import Sampling
from pipeline.media.segments import (
    WHOLE_VIDEO,
    FrameTimes,
    Segment,
    SplitPolicy,
    decode_bound,
    plan_segments,
    probe_frame_times,
)

FRAMES = 44  # 11 batches of 4
EVERY = Sampling()


@pytest.fixture(scope="module")
def awkward(tmp_path_factory, people_mp4) -> dict[str, Path]:
    """Long enough to split: B-frames with keyframes on batch boundaries and off them, VFR,
    rotation, and a video whose frame count is not a multiple of the batch."""
    folder = tmp_path_factory.mktemp("segments")
    frames = scene_frames(list(read_frames(people_mp4, limit=FRAMES)), FRAMES, size=(160, 96))
    bframes = "bframes=3:b-adapt=0:scenecut=0:keyint={k}:min-keyint={k}"
    videos = {
        "keyframes_on_boundaries.mp4": dict(options={"x264-params": bframes.format(k=8)}),
        "keyframes_off_boundaries.mp4": dict(options={"x264-params": bframes.format(k=30)}),
        "rotated.mp4": dict(rotation=90, options={"x264-params": bframes.format(k=10)}),
        "odd_length.mkv": dict(options={"x264-params": bframes.format(k=7)}),
    }
    paths = {}
    for name, settings in videos.items():
        paths[name] = folder / name
        write_video(
            paths[name], frames[: FRAMES - 3] if name == "odd_length.mkv" else frames, **settings
        )
    times = np.cumsum(np.random.default_rng(3).uniform(0.01, 0.2, FRAMES)).tolist()
    paths["vfr.mp4"] = folder / "vfr.mp4"
    write_vfr(paths["vfr.mp4"], frames, times)
    return paths


def decoded(
    path: Path, sampling: Sampling, segment: Segment = WHOLE_VIDEO, *, skip_work: bool = True
) -> list[tuple[int, float, str]]:
    decoder = VideoDecoder(str(path), sampling=sampling, segment=segment, skip_work=skip_work)
    return [(i, t, hashlib.md5(image.tobytes()).hexdigest()) for i, t, image in decoder.frames()]


def batches(
    path: Path, sampling: Sampling, segment: Segment = WHOLE_VIDEO
) -> list[tuple[int, list[int], str]]:
    decoder = VideoDecoder(str(path), sampling=sampling, segment=segment)
    geometry = LetterboxGeometry.for_source(decoder.info.height, decoder.info.width, 64)
    return [
        (b.seq, b.frame_indices.tolist(), hashlib.md5(b.frames.tobytes()).hexdigest())
        for b in iter_batches(decoder, geometry, 4, first_seq=segment.first_seq)
    ]


AWKWARD = [
    "keyframes_on_boundaries.mp4",
    "keyframes_off_boundaries.mp4",
    "rotated.mp4",
    "odd_length.mkv",
    "vfr.mp4",
]


@pytest.mark.parametrize("name", AWKWARD)
@pytest.mark.parametrize(
    "sampling, count",
    [(Sampling(), 2), (Sampling(), 3), (Sampling(stride=2), 2), (Sampling(fps=9.0), 2)],
    ids=["every-2", "every-3", "stride2-2", "fps9-2"],
)
def test_segments_give_exactly_the_frames_of_one_decoder(awkward, name, sampling, count):
    path = awkward[name]
    times = probe_frame_times(str(path))
    assert times.splittable and len(times.pts) == (
        FRAMES - 3 if name == "odd_length.mkv" else FRAMES
    )
    segments = plan_segments(times, count, sampling=sampling, batch_size=4)
    assert len(segments) == count
    whole = decoded(path, sampling)
    assert [f for s in segments for f in decoded(path, sampling, s)] == whole
    assert [b for s in segments for b in batches(path, sampling, s)] == batches(path, sampling)


@pytest.mark.parametrize("name", AWKWARD)
@pytest.mark.parametrize(
    "sampling",
    [Sampling(stride=2), Sampling(stride=5), Sampling(fps=3.0), Sampling(keyframes=True)],
    ids=["stride2", "stride5", "fps3", "keyframes"],
)
def test_frames_left_undecoded_change_no_kept_frame(awkward, name, sampling):
    """The packets a sampled decoder skips (B-frames' non-reference pictures, a GOP's tail after
    its last kept frame; all but keyframes) leave the kept frames' indices, times and pixels those
    of a decoder that decodes every packet."""
    skipping = decoded(awkward[name], sampling)
    assert skipping and skipping == decoded(awkward[name], sampling, skip_work=False)


def test_a_boundary_lands_on_a_keyframe_when_one_is_near_and_off_one_otherwise(awkward):
    on = probe_frame_times(str(awkward["keyframes_on_boundaries.mp4"]))
    off = probe_frame_times(str(awkward["keyframes_off_boundaries.mp4"]))
    assert on.keyframes.tolist() == list(range(0, FRAMES, 8)) and off.keyframes.tolist() == [0, 30]
    (_, second) = plan_segments(on, 2, sampling=EVERY, batch_size=4)
    assert second.first_frame in on.keyframes and second.first_frame % 4 == 0
    (_, second) = plan_segments(off, 2, sampling=EVERY, batch_size=4)
    assert second.first_frame not in off.keyframes and second.first_frame % 4 == 0


def plain_times(frames: int, keyframes=(0,)) -> FrameTimes:
    return FrameTimes(np.arange(frames, dtype=np.int64) * 512, np.asarray(keyframes), True)


def test_the_plan_covers_every_frame_once_on_batch_boundaries():
    segments = plan_segments(
        plain_times(1000), 3, sampling=Sampling(stride=2), batch_size=16
    )  # 32 frames per batch
    assert [s.first_frame for s in segments] == [0, 320, 672]
    assert all(s.first_frame % 32 == 0 and s.first_seq == s.first_frame // 32 for s in segments)
    assert [s.first_pts for s in segments] == [None, 320 * 512, 672 * 512]
    assert [s.end_pts for s in segments] == [320 * 512, 672 * 512, None]
    # two batches: two segments at most
    assert plan_segments(plain_times(40), 8, sampling=EVERY, batch_size=16) == [
        Segment(0, None, 16, 16 * 512, 0),
        Segment(16, 16 * 512, None, None, 1),
    ]
    # one batch: no split
    assert plan_segments(plain_times(20), 2, sampling=EVERY, batch_size=16) == [WHOLE_VIDEO]
    assert plan_segments(
        FrameTimes(np.zeros(0, np.int64), np.zeros(0), False, "no pts"),
        4,
        sampling=EVERY,
        batch_size=4,
    ) == [WHOLE_VIDEO]


@pytest.mark.parametrize(
    "policy, frames, free, bound, expected",
    [
        (SplitPolicy(), 100_000, 3, True, 4),  # decode-bound, three free decoders: four segments
        (
            SplitPolicy(),
            100_000,
            3,
            False,
            1,
        ),  # inference is the bottleneck: splitting gains nothing
        (SplitPolicy(), 100_000, 0, True, 1),  # no free decoder
        (SplitPolicy(), 2_000, 3, True, 1),  # too short for two segments of a minute
        (SplitPolicy(), 4_000, 7, True, 2),
        (SplitPolicy(segments=2), 100_000, 0, False, 2),  # asked for: always, if long enough
        (SplitPolicy(segments=2), 1_000, 0, False, 1),
        (SplitPolicy(segments=1), 100_000, 7, True, 1),
    ],
)
def test_the_split_policy(policy, frames, free, bound, expected):
    assert policy.count(frames, free_decoders=free, decode_bound=bound) == expected


def test_only_files_that_may_be_long_are_probed():
    policy = SplitPolicy()
    assert not policy.worth_probing(5 << 20) and policy.worth_probing(500 << 20)
    assert policy.worth_probing(-1)  # size unknown
    assert not SplitPolicy(segments=1).worth_probing(500 << 20)
    assert SplitPolicy(segments=2).worth_probing(5 << 20)  # asked for: every video


def test_decoding_is_the_bottleneck_when_one_decoder_is_slower_than_the_actors():
    # a core decodes 300 fps, a GPU infers 2,000
    assert decode_bound(1 / 300, 1 / 2000, 1, on_gpu=True)
    assert not decode_bound(1 / 300, 1 / 60, 1, on_gpu=False)  # a CPU infers 60 fps
    assert decode_bound(1 / 300, 1 / 120, 4, on_gpu=False)  # four actors of 120 fps
    assert decode_bound(None, None, 1, on_gpu=True) and not decode_bound(
        None, None, 1, on_gpu=False
    )
