"""``python -m pipeline render VIDEO --results DIR --output out.mp4``: the stored boxes drawn on
the source video. No inference: only what the run wrote is drawn, so the video shows exactly
what the Parquet files say.

Frames the run did not process (``--stride``) show the boxes of the most recent processed frame,
dashed and labelled "held", so a viewer can tell measured boxes from carried-over ones.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from pipeline.analysis.analyze import read_analysis
from pipeline.errors import UsageError
from pipeline.media.decode import DecodeError, VideoDecoder
from pipeline.output.layout import TEMP_PREFIX
from pipeline.output.readers import read_detections, resolve_video_id
from pipeline.views.overlay import AnalysisOverlay

log = logging.getLogger(__name__)

# 20 well-separated colours (BGR); a box takes one by its track id, or by its class without one.
PALETTE = [
    (56, 56, 255),
    (151, 157, 255),
    (31, 112, 255),
    (29, 178, 255),
    (49, 210, 207),
    (10, 249, 72),
    (23, 204, 146),
    (134, 219, 61),
    (52, 147, 26),
    (187, 212, 0),
    (168, 153, 44),
    (255, 194, 0),
    (147, 69, 52),
    (255, 115, 100),
    (236, 24, 0),
    (255, 56, 132),
    (133, 0, 82),
    (255, 56, 203),
    (200, 149, 255),
    (199, 55, 255),
]
# How far before --start the boxes are read, so the first frames of a range can show held boxes.
HELD_LOOKBACK_S = 10.0


@dataclass
class RenderSummary:
    output: str
    frames: int
    frames_with_results: int  # frames the run processed (boxes drawn as measured)
    frames_held: int  # frames drawn with the boxes of an earlier processed frame
    boxes_drawn: int
    codec: str
    width: int
    height: int


def pick_encoder() -> str:
    """libx264 (H.264) when this PyAV build has it, else MPEG-4 Part 2 (with a warning)."""
    for name in ("libx264", "mpeg4"):
        try:
            av.codec.Codec(name, "w")
        except Exception:
            continue
        if name != "libx264":
            log.warning(
                "H.264 encoder (libx264) is not available in this PyAV build; writing MPEG-4 Part 2 instead"
            )
        return name
    raise UsageError("no usable video encoder (libx264 or mpeg4) in this PyAV build")


Tab = tuple[
    int, int, int, int
]  # x1, y1, x2, y2 of a label's filled tab, in pixels (x2, y2 exclusive)


def _overlaps(a: Tab, b: Tab) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_labels(
    boxes: list[Tab], sizes: list[tuple[int, int]], width: int, height: int
) -> list[Tab | None]:
    """Where each box's label tab goes, so that every tab lies inside the frame and no two overlap.

    Boxes are placed in the order given (put the most confident first: they get the best spots).
    A tab prefers the box's top edge, above the box, then inside it, then the bottom edge; when
    those are taken it slides up or down the box's side a tab height at a time, nearest first.
    A label that finds no free spot anywhere along its column is left out (None), never drawn
    over another one: in a frame too crowded for every label, the boxes are still all drawn.
    """
    placed: list[Tab] = []
    tabs: list[Tab | None] = []
    for (x1, y1, _x2, y2), (tw, th) in zip(boxes, sizes):
        if tw > width or th > height:
            tabs.append(None)
            continue
        left = min(max(x1, 0), width - tw)
        anchors = [
            y1 - th,
            y1,
            y2,
            y2 - th,
        ]  # above the top edge, inside it, below the bottom, inside it
        candidates = [(0, k, y) for k, y in enumerate(anchors)]
        for step in range(1, height // th + 1):  # then slide away from the top edge, nearest first
            candidates += [(step, 4, y1 - th - step * th), (step, 5, y1 + step * th)]
        found = None
        for _, _, y in sorted(candidates):
            y = min(max(y, 0), height - th)
            tab = (left, y, left + tw, y + th)
            if not any(_overlaps(tab, other) for other in placed):
                found = tab
                break
        if found is not None:
            placed.append(found)
        tabs.append(found)
    return tabs


def text_color(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light tabs (yellow, lime), white on dark ones: by the tab's luminance (BGR)."""
    b, g, r = background
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 150 else (255, 255, 255)


class BoxPainter:
    """Draws boxes with their label (class, confidence, track id) on BGR frames, in place."""

    def __init__(self, width: int, height: int):
        short = min(width, height)
        self.thickness = max(2, round(short / 400))
        self.font_scale = max(0.4, short / 1800)
        self.font_thickness = max(1, round(short / 900))
        self.last_tabs: list[
            Tab | None
        ] = []  # the label tabs of the last frame drawn, per box (tests read them)

    @staticmethod
    def color(class_id: int, track_id) -> tuple[int, int, int]:
        key = int(track_id) if track_id is not None and track_id == track_id else int(class_id)
        return PALETTE[key % len(PALETTE)]

    def _dashed_rectangle(
        self, frame: np.ndarray, p1: tuple[int, int], p2: tuple[int, int], color
    ) -> None:
        (x1, y1), (x2, y2) = p1, p2
        dash = 4 * self.thickness + 4
        for a, b in (
            ((x1, y1), (x2, y1)),
            ((x2, y1), (x2, y2)),
            ((x2, y2), (x1, y2)),
            ((x1, y2), (x1, y1)),
        ):
            length = max(abs(b[0] - a[0]), abs(b[1] - a[1]))
            for start in range(0, length, 2 * dash):
                end = min(start + dash, length)
                s = (
                    a[0] + (b[0] - a[0]) * start // max(length, 1),
                    a[1] + (b[1] - a[1]) * start // max(length, 1),
                )
                e = (
                    a[0] + (b[0] - a[0]) * end // max(length, 1),
                    a[1] + (b[1] - a[1]) * end // max(length, 1),
                )
                cv2.line(frame, s, e, color, self.thickness, cv2.LINE_AA)

    @staticmethod
    def label(box: dict, *, held: bool) -> str:
        text = f"{box['class_name']} {box['confidence']:.2f}"
        track_id = box.get("track_id")
        if track_id is not None and track_id == track_id:
            text += f" #{int(track_id)}"
        return text + (" held" if held else "")

    def draw(self, frame: np.ndarray, boxes: list[dict], *, held: bool = False) -> None:
        """Measured boxes in solid lines; ``held`` ones (carried over from an earlier processed
        frame) dashed, their label ending in "held". Boxes first, then the labels on top, placed
        so that they stay inside the frame and do not cover each other."""
        h, w = frame.shape[:2]
        rects, colors, labels, sizes = [], [], [], []
        for box in boxes:
            rect = tuple(int(round(box[k])) for k in ("x1", "y1", "x2", "y2"))
            color = self.color(box["class_id"], box.get("track_id"))
            if held:
                self._dashed_rectangle(frame, rect[:2], rect[2:], color)
            else:
                cv2.rectangle(frame, rect[:2], rect[2:], color, self.thickness, cv2.LINE_AA)
            text = self.label(box, held=held)
            (tw, th), base = cv2.getTextSize(
                text, cv2.FONT_HERSHEY_SIMPLEX, self.font_scale, self.font_thickness
            )
            rects.append(rect)
            colors.append(color)
            labels.append((text, th))
            sizes.append((tw + 2, th + base + 2))
        # The most confident boxes choose their label spot first.
        order = sorted(range(len(boxes)), key=lambda i: -boxes[i]["confidence"])
        placed = place_labels([rects[i] for i in order], [sizes[i] for i in order], w, h)
        self.last_tabs = [None] * len(boxes)
        for i, tab in zip(order, placed):
            self.last_tabs[i] = tab
            if tab is None:
                continue
            (text, th), color = labels[i], colors[i]
            cv2.rectangle(frame, tab[:2], (tab[2] - 1, tab[3] - 1), color, -1)
            cv2.putText(
                frame,
                text,
                (tab[0] + 1, tab[1] + th + 1),
                cv2.FONT_HERSHEY_SIMPLEX,
                self.font_scale,
                text_color(color),
                self.font_thickness,
                cv2.LINE_AA,
            )


def render(
    video: str,
    results: str | Path,
    output: str | Path,
    *,
    start_s: float | None = None,
    end_s: float | None = None,
    classes: list | None = None,
    min_confidence: float | None = None,
    analysis: str | None = None,
    progress: bool = True,
) -> RenderSummary:
    """``analysis``: the name of a stored analysis whose lines and zones are drawn too."""
    by_frame, processed = _stored_boxes(video, results, start_s, end_s, classes, min_confidence)
    stored = None if analysis is None else read_analysis(results, analysis)  # AnalysisError
    try:
        decoder = VideoDecoder(str(video))
    except DecodeError as exc:
        raise UsageError(f"cannot read {video}: {exc}") from None
    info = decoder.info
    codec = pick_encoder()
    pix_fmt = _pixel_format(video, info, codec)
    summary = RenderSummary(str(output), 0, 0, 0, 0, codec, info.width, info.height)
    overlay = stored and AnalysisOverlay(
        stored, resolve_video_id(video, results), info.width, info.height
    )
    bar = _progress_bar(info) if progress and sys.stderr.isatty() else None
    # Written under a hidden name and renamed when complete: an interrupted or failed render
    # leaves no half video where the output should be (nor replaces an older one).
    temp = Path(output).with_name(f"{TEMP_PREFIX}{Path(output).name}")
    try:
        frames = _drawn_frames(
            decoder,
            BoxPainter(info.width, info.height),
            by_frame,
            processed,
            start_s,
            end_s,
            summary,
            bar,
            overlay,
        )
        _encode(temp, frames, codec, info, pix_fmt, summary)
        if summary.frames == 0:
            raise UsageError(f"no frames of {video} in the time range asked for")
        os.replace(temp, output)
    finally:
        temp.unlink(missing_ok=True)
        if bar is not None:
            bar.close()
    return summary


def _encode(path: Path, frames, codec: str, info, pix_fmt: str, summary: RenderSummary) -> None:
    # the container from the extension, which the name keeps
    with av.open(str(path), mode="w") as container:
        stream = _video_stream(container, codec, info, pix_fmt)
        for frame in frames:
            out = av.VideoFrame.from_ndarray(frame, format="bgr24")
            out.pts = summary.frames
            for packet in stream.encode(out):
                container.mux(packet)
            summary.frames += 1
        for packet in stream.encode():
            container.mux(packet)


def _progress_bar(info):
    from tqdm import tqdm

    return tqdm(total=info.header_frames or None, unit="frame", file=sys.stderr, desc="render")


def _stored_boxes(video, results, start_s, end_s, classes, min_confidence):
    """The stored boxes of ``video`` by frame index, and the frames the run processed, from a
    little before ``start_s`` (so the first frames can show the boxes they hold)."""
    video_id = resolve_video_id(video, results)
    lookback = None if start_s is None else max(0.0, start_s - HELD_LOOKBACK_S)
    boxes = read_detections(
        results,
        video_id=video_id,
        start_s=lookback,
        end_s=end_s,
        classes=classes,
        min_confidence=min_confidence,
    )
    boxes = boxes.sort_values("frame_index", kind="stable")
    by_frame: dict[int, list[dict]] = {
        int(f): g.to_dict("records") for f, g in boxes.groupby("frame_index")
    }
    processed = set(
        read_detections(
            results,
            flat=False,
            video_id=video_id,
            start_s=lookback,
            end_s=end_s,
            columns=["frame_index"],
        )["frame_index"].tolist()
    )
    if not processed:
        raise UsageError(
            f"the results in {results} have no processed frames of {video} in that time range"
        )
    return by_frame, processed


def _pixel_format(video: str, info, codec: str) -> str:
    """4:2:0 needs even sizes; an odd-sized source keeps its size in 4:4:4 instead."""
    even = info.width % 2 == 0 and info.height % 2 == 0
    if not even and codec != "libx264":
        raise UsageError(
            f"{video} is {info.width}x{info.height}; MPEG-4 Part 2 needs even sizes (install a PyAV with libx264)"
        )
    return "yuv420p" if even or codec != "libx264" else "yuv444p"


def _video_stream(container, codec: str, info, pix_fmt: str):
    rate = Fraction(info.fps).limit_denominator(1001) if info.fps else Fraction(30)
    stream = container.add_stream(
        codec,
        rate=rate,
        options={"crf": "18", "preset": "veryfast"} if codec == "libx264" else {},
    )
    stream.width, stream.height, stream.pix_fmt = info.width, info.height, pix_fmt
    stream.time_base = 1 / rate
    if codec != "libx264":
        stream.bit_rate = 8_000_000
    return stream


def _drawn_frames(decoder, painter, by_frame, processed, start_s, end_s, summary, bar, overlay):
    """The source's frames in the time range with the stored boxes drawn: a processed frame's
    own, or (dashed, ``held``) those of the last processed frame before it; under them, an
    analysis's lines and zones when ``overlay`` is given."""
    held: list[dict] = []
    last_processed = -1
    for index, timestamp, frame in decoder.frames():
        if bar is not None:
            bar.update(1)
        if end_s is not None and timestamp > end_s:
            break
        if index in processed:
            held = by_frame.get(index, [])
            last_processed = index
        if start_s is not None and timestamp < start_s:
            continue
        if overlay is not None:
            overlay.draw(frame, index, last_processed)
        if index in processed:
            painter.draw(frame, held)
            summary.frames_with_results += 1
        else:
            painter.draw(frame, held, held=True)
            summary.frames_held += 1
        summary.boxes_drawn += len(held)
        yield frame
