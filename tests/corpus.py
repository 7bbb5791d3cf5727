"""Bad and awkward videos, generated on the spot (nothing is stored in the repository)."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from pipeline.media.samples import write_video


def noisy_frames(count: int, size=(160, 120), seed=0):
    """Random frames: large when encoded, so a cut lands mid-stream, not in the header."""
    rng = np.random.default_rng(seed)
    w, h = size
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(count)]


def scene_frames(source_frames, count: int, size=(320, 240)):
    """Real content (people) at a small size, cycling through ``source_frames``."""
    import cv2

    return [
        cv2.resize(source_frames[i % len(source_frames)], size, interpolation=cv2.INTER_AREA)
        for i in range(count)
    ]


def make_bad_corpus(folder: Path) -> dict[str, tuple[str, str]]:
    """name -> (expected status, a word the error must contain)."""
    folder.mkdir(parents=True, exist_ok=True)
    frames = noisy_frames(30)
    (folder / "zero_bytes.mp4").write_bytes(b"")
    (folder / "random_bytes.mp4").write_bytes(np.random.default_rng(1).bytes(40_000))
    (folder / "text_file.mp4").write_text("this is a text file, not a video\n" * 50)

    write_video(folder / "_full.mp4", frames)  # index ('moov') at the end
    data = (folder / "_full.mp4").read_bytes()
    (folder / "no_index.mp4").write_bytes(data[: len(data) * 2 // 3])

    write_video(folder / "_faststart.mp4", frames, container_options={"movflags": "faststart"})
    data = (folder / "_faststart.mp4").read_bytes()
    (folder / "faststart_cut_in_half.mp4").write_bytes(data[: len(data) // 2])

    write_video(folder / "_full.mkv", frames)
    data = (folder / "_full.mkv").read_bytes()
    (folder / "truncated.mkv").write_bytes(data[: len(data) // 2])

    (folder / "unknown_codec.mp4").write_bytes(
        (folder / "_full.mp4").read_bytes().replace(b"avc1", b"zzzz")
    )

    write_audio_only(folder / "audio_only.m4a")
    for helper in folder.glob("_full*"):
        helper.unlink()
    (folder / "_faststart.mp4").unlink()
    return {
        "zero_bytes.mp4": ("failed", "empty file"),
        "random_bytes.mp4": ("failed", "invalid data"),
        "text_file.mp4": ("failed", "invalid data"),
        "no_index.mp4": ("failed", "moov"),
        "faststart_cut_in_half.mp4": ("partial", "ended early"),
        "truncated.mkv": ("partial", "ended early"),
        "unknown_codec.mp4": ("failed", "unknown video codec"),
        "audio_only.m4a": ("failed", "no video stream"),
        "does_not_exist.mp4": ("failed", "file not found"),
    }


def write_audio_only(path: Path) -> None:
    """An AAC file with no video stream."""
    with av.open(str(path), "w") as c:
        stream = c.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
        )
        frame.sample_rate = 16000
        for i in range(8):
            frame.pts = i * 1024
            for p in stream.encode(frame):
                c.mux(p)
        for p in stream.encode():
            c.mux(p)


def write_vfr(path: Path, frames, pts_seconds: list[float]) -> None:
    """Variable frame rate: each frame at its own presentation time (millisecond time base)."""
    with av.open(str(path), "w") as c:
        stream = c.add_stream("libx264", rate=30)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, 1000)
        stream.codec_context.time_base = Fraction(1, 1000)
        for image, t in zip(frames, pts_seconds):
            vf = av.VideoFrame.from_ndarray(image, format="bgr24")
            vf.pts = int(round(t * 1000))
            vf.time_base = Fraction(1, 1000)
            for p in stream.encode(vf):
                c.mux(p)
        for p in stream.encode():
            c.mux(p)


# A person in people.mp4's first frame (the clip's most confident box there), cut out and
# moved over a plain background on known paths: a video whose crossings and dwell are known.
PERSON_BOX = (1604, 610, 1716, 867)


@dataclass(frozen=True)
class Walker:
    """A person pasted with its top-left corner at (x0 + speed·t, y) in frame t (t from ``start``)."""

    x0: float
    y: int
    speed: float
    start: int = 0

    def left(self, t: int) -> float:
        return self.x0 + self.speed * (t - self.start)


def walkers_video(
    path: Path,
    people_mp4: Path,
    walkers: list[Walker],
    *,
    frames: int,
    size=(640, 480),
    scale: float = 0.6,
) -> tuple[int, int]:
    """Write the video; returns the pasted person's size (width, height) in it."""
    import cv2

    from pipeline.media.samples import read_frames

    first = next(read_frames(people_mp4, limit=1))
    x1, y1, x2, y2 = PERSON_BOX
    person = cv2.resize(first[y1:y2, x1:x2], None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    ph, pw = person.shape[:2]
    w, h = size
    rng = np.random.default_rng(0)
    background = np.clip(rng.normal(120, 6, (h, w, 3)), 0, 255).astype(np.uint8)
    out = []
    for t in range(frames):
        frame = background.copy()
        for walker in walkers:
            if t < walker.start:
                continue
            left = int(round(walker.left(t)))
            if 0 <= left and left + pw <= w:
                frame[walker.y : walker.y + ph, left : left + pw] = person
        out.append(frame)
    write_video(path, out)
    return pw, ph
