"""An analysis drawn on a video's frames (``render --analysis NAME``): its zones shaded with the
objects inside now, its lines with the crossings so far by direction, an arrow pointing the way
``in`` goes."""

from __future__ import annotations

import cv2
import numpy as np

from pipeline.analysis.analyze import Analysis

LINE_COLOR = (0, 215, 255)  # BGR amber
ZONE_COLOR = (255, 160, 40)  # BGR azure
ZONE_ALPHA = 0.22


class AnalysisOverlay:
    """Draws one video's lines and zones; counts are those up to the frame being drawn."""

    def __init__(self, analysis: Analysis, video_id: str, width: int, height: int):
        self.spec = analysis.spec
        short = min(width, height)
        self.thickness = max(2, round(short / 300))
        self.font_scale = max(0.5, short / 1400)
        crossings = analysis.crossings[analysis.crossings["video_id"] == video_id]
        # per line and direction: the frames of its crossings, sorted, for a count by bisection
        self.crossing_frames = {
            (line.name, d): np.sort(
                crossings.loc[
                    (crossings["line"] == line.name) & (crossings["direction"] == d), "frame_index"
                ].to_numpy()
            )
            for line in self.spec.lines
            for d in ("in", "out")
        }
        frames = analysis.zone_frames[analysis.zone_frames["video_id"] == video_id]
        self.inside = {
            zone.name: frames[frames["zone"] == zone.name].groupby("frame_index")["inside"].sum()
            for zone in self.spec.zones
        }
        self.polygons = {
            zone.name: np.rint(np.asarray(zone.points)).astype(np.int32) for zone in self.spec.zones
        }

    def crossed(self, line: str, direction: str, frame_index: int) -> int:
        return int(np.searchsorted(self.crossing_frames[(line, direction)], frame_index, "right"))

    def inside_at(self, zone: str, processed_frame: int) -> int:
        """Objects inside at a processed frame (frames without a row had none inside)."""
        return int(self.inside[zone].get(processed_frame, 0))

    def _text(self, frame: np.ndarray, text: str, origin: tuple[int, int], color) -> None:
        font = cv2.FONT_HERSHEY_SIMPLEX
        (tw, th), base = cv2.getTextSize(text, font, self.font_scale, 1 + self.thickness // 2)
        h, w = frame.shape[:2]
        x = min(max(origin[0], 0), max(w - tw - 4, 0))
        y = min(max(origin[1], th + 4), h - base - 2)
        cv2.rectangle(frame, (x, y - th - 4), (x + tw + 4, y + base), (0, 0, 0), -1)
        cv2.putText(
            frame,
            text,
            (x + 2, y - 2),
            font,
            self.font_scale,
            color,
            1 + self.thickness // 2,
            cv2.LINE_AA,
        )

    def draw(self, frame: np.ndarray, frame_index: int, processed_frame: int) -> None:
        """``processed_frame``: the last processed frame at or before ``frame_index`` (with
        ``--stride`` the frames between show the counts of the one before them)."""
        if self.polygons:
            shaded = frame.copy()
            for polygon in self.polygons.values():
                cv2.fillPoly(shaded, [polygon], ZONE_COLOR)
            cv2.addWeighted(shaded, ZONE_ALPHA, frame, 1 - ZONE_ALPHA, 0, dst=frame)
        for zone in self.spec.zones:
            polygon = self.polygons[zone.name]
            cv2.polylines(frame, [polygon], True, ZONE_COLOR, self.thickness, cv2.LINE_AA)
            top = polygon[np.argmin(polygon[:, 1])]
            count = self.inside_at(zone.name, processed_frame)
            limit = f" / max {zone.max_objects}" if zone.max_objects is not None else ""
            self._text(
                frame,
                f"{zone.name}: {count} inside{limit}",
                (int(top[0]), int(top[1]) + 4),
                ZONE_COLOR,
            )
        for line in self.spec.lines:
            start = tuple(int(round(v)) for v in line.start)
            end = tuple(int(round(v)) for v in line.end)
            cv2.line(frame, start, end, LINE_COLOR, self.thickness, cv2.LINE_AA)
            self._arrow(frame, np.asarray(line.start), np.asarray(line.end))
            now_in = self.crossed(line.name, "in", frame_index)
            now_out = self.crossed(line.name, "out", frame_index)
            counts = f"{line.name}: in {now_in}  out {now_out}"
            mid = ((start[0] + end[0]) // 2, (start[1] + end[1]) // 2)
            self._text(frame, counts, (mid[0] + 8, mid[1] - 8), LINE_COLOR)

    def _arrow(self, frame, start: np.ndarray, end: np.ndarray) -> None:
        """From the line's middle toward its left (as drawn): the side an ``in`` crossing ends on."""
        direction = end - start
        left = np.array([direction[1], -direction[0]]) / np.linalg.norm(direction)
        mid = (start + end) / 2
        length = 6 * self.thickness + 20
        tip = mid + left * length
        cv2.arrowedLine(
            frame,
            tuple(int(v) for v in mid),
            tuple(int(v) for v in tip),
            LINE_COLOR,
            self.thickness,
            cv2.LINE_AA,
            tipLength=0.35,
        )
