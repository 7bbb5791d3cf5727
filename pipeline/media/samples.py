"""Sample videos made on the spot: for the demo, the tests and the benchmark.

Nothing is downloaded: frames come from the images that ship inside the ultralytics package,
or from an existing video, and are encoded with PyAV.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import cv2
import numpy as np


def ultralytics_asset(name: str) -> np.ndarray:
    import ultralytics

    path = Path(ultralytics.__file__).parent / "assets" / name
    image = cv2.imread(str(path))
    if image is None:
        raise FileNotFoundError(f"ultralytics asset {name} not found at {path}")
    return image


def panning_frames(
    image: np.ndarray, count: int, size: tuple[int, int] = (640, 480)
) -> Iterator[np.ndarray]:
    """A slow pan and zoom over ``image`` (BGR): real objects that move a little every frame."""
    h, w = image.shape[:2]
    out_w, out_h = size
    for i in range(count):
        t = i / max(count - 1, 1)
        scale = 0.85 + 0.15 * t
        cw, ch = int(w * scale), int(h * scale)
        x0, y0 = int((w - cw) * t), int((h - ch) * (1 - t) / 2)
        yield cv2.resize(
            image[y0 : y0 + ch, x0 : x0 + cw], (out_w, out_h), interpolation=cv2.INTER_AREA
        )


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    *,
    fps: int = 30,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    options: dict | None = None,
    rotation: int | None = None,
    container_options: dict | None = None,
) -> int:
    """Encode BGR frames to ``path``; returns the number of frames written."""
    count = 0
    with av.open(str(path), mode="w", options=container_options or {}) as container:
        stream: av.VideoStream | None = None
        for frame in frames:
            if stream is None:
                stream = cast(
                    av.VideoStream, container.add_stream(codec, rate=fps, options=options or {})
                )
                stream.height, stream.width = frame.shape[:2]
                stream.pix_fmt = pix_fmt
                stream.time_base = Fraction(1, fps)
                if rotation is not None:
                    stream.set_display_rotation(rotation)
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="bgr24")
            video_frame.pts = count
            for packet in stream.encode(video_frame):
                container.mux(packet)
            count += 1
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    return count


def gradient_clips(
    folder: str | Path,
    videos: int,
    frames: int,
    size: tuple[int, int] = (96, 160),
    names: str = "synthetic{}.mp4",
) -> list[str]:
    """Small synthetic videos (a moving gradient, one tint per video): cheap to decode, so that
    decoders feed their workers as fast as they can (the benchmarks of the control plane)."""
    ramp = np.add.outer(np.arange(size[0]), np.arange(size[1]))
    paths = []
    for v in range(videos):
        path = str(Path(folder) / names.format(v))
        tinted = (np.dstack([ramp + i, ramp + 2 * i, ramp + 40 * v]) % 256 for i in range(frames))
        write_video(path, (f.astype(np.uint8) for f in tinted), options={"preset": "ultrafast"})
        paths.append(path)
    return paths


def read_frames(path: str | Path, limit: int | None = None) -> Iterator[np.ndarray]:
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if limit is not None and i >= limit:
                return
            yield frame.to_ndarray(format="bgr24")


def make_demo_video(path: str | Path, frames_per_image: int = 45) -> int:
    """The demo sample: a pan over bus.jpg, then over zidane.jpg, 640x480 H.264."""

    def frames():
        for name in ("bus.jpg", "zidane.jpg"):
            yield from panning_frames(ultralytics_asset(name), frames_per_image)

    return write_video(path, frames())


def concat_copies(source: str | Path, dest: str | Path, copies: int) -> int:
    """``source`` repeated ``copies`` times, without re-encoding (packets remuxed with shifted times)."""
    return concat_videos([source] * copies, dest)


def concat_videos(sources: Iterable[str | Path], dest: str | Path) -> int:
    """``sources`` one after the other, without re-encoding (packets remuxed with shifted times):
    they must share their codec and its parameters (encoded with the same settings)."""
    written = 0
    with av.open(str(dest), mode="w") as out:
        out_stream = None
        offset = 0
        for source in sources:
            with av.open(str(source)) as src:
                in_stream = src.streams.video[0]
                if out_stream is None:
                    out_stream = out.add_stream_from_template(in_stream)
                last_end = offset
                for packet in src.demux(in_stream):
                    if packet.dts is None:
                        continue
                    duration = packet.duration or 0
                    packet.pts = (packet.pts if packet.pts is not None else packet.dts) + offset
                    packet.dts += offset
                    last_end = max(last_end, packet.pts + duration)
                    packet.stream = out_stream
                    out.mux(packet)
                    written += 1
                offset = last_end
    return written
