"""Line crossings and zone occupancy of one video's stored, tracked boxes: pure numpy and pandas
over whole videos at once (no Python per box), so a new line costs seconds, never inference.

What was taken from supervision and what is written here:

- **Anchors and zones are supervision's.** A box's point is ``sv.Detections.get_anchors_coordinates``
  and "inside a zone" is ``sv.PolygonZone.trigger`` (stateless, so one call covers a whole video).
- **Crossings follow ``sv.LineZone``** (threshold 1): an anchor within the segment's extent is on
  one side of the line; a track crosses when an observation puts it on the other side from its
  previous one. ``LineZone`` is a streaming state machine: it is called frame by frame and forgets
  a track absent for two frames, so a person occluded while stepping over the line is lost. Over a
  stored video every track's whole history is known, so here the sides are compared along each
  track's own observations, however far apart. On tracks without gaps the two agree (a test feeds
  both the same tracks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.analysis.spec import Line, Zone

NO_TRACK = -1  # a box no track has confirmed (stored as a null track_id); supervision's convention


@dataclass
class VideoBoxes:
    """One video's stored boxes (sorted by frame) and its processed frames, as analysis reads them."""

    video_id: str
    width: int
    height: int
    frame_index: np.ndarray  # the processed frames, ascending
    timestamp_s: np.ndarray
    boxes: (
        pd.DataFrame
    )  # frame_index, timestamp_s, x1..y2, confidence, class_id, class_name, track_id

    @property
    def frame_step_s(self) -> float:
        """The time between processed frames (``--stride`` / fps): one observation's duration."""
        if len(self.timestamp_s) < 2:
            return 0.0
        return float(np.median(np.diff(self.timestamp_s)))

    def observation_end_s(self, frame_index: np.ndarray) -> np.ndarray:
        """When each of these processed frames' observation ends: at the next processed frame
        (``--fps`` and variable-rate video space them unevenly), the last one a median interval
        after it."""
        position = np.searchsorted(self.frame_index, np.asarray(frame_index, np.int64))
        following = np.append(self.timestamp_s, np.nan)[
            np.minimum(position + 1, len(self.frame_index))
        ]
        here = self.timestamp_s[np.minimum(position, len(self.frame_index) - 1)]
        return np.where(np.isnan(following), here + self.frame_step_s, following)

    def anchors(self, anchor: str) -> np.ndarray:
        import supervision as sv

        xyxy = self.boxes[["x1", "y1", "x2", "y2"]].to_numpy(np.float64)
        return sv.Detections(xyxy=xyxy).get_anchors_coordinates(sv.Position[anchor.upper()])


def class_mask(boxes: pd.DataFrame, class_ids: frozenset[int] | None) -> np.ndarray:
    if class_ids is None:
        return np.ones(len(boxes), bool)
    return boxes["class_id"].isin(class_ids).to_numpy()


def line_sides(line: Line, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each anchor: whether it lies within the segment's extent (between the perpendiculars
    through its two ends), and whether it is on the line's left (True) or right, as
    ``sv.LineZone`` decides them. An anchor exactly on the line counts as right."""
    start, end = np.asarray(line.start), np.asarray(line.end)
    direction = end - start
    rel = points - start
    along = rel @ direction
    within = (along >= 0) & (along <= direction @ direction)
    cross = direction[0] * rel[:, 1] - direction[1] * rel[:, 0]
    return within, cross < 0


def line_crossings(
    video: VideoBoxes, line: Line, anchor: str, class_ids: frozenset[int] | None
) -> pd.DataFrame:
    """One row per crossing: the observation on the new side, with its direction. ``in`` is
    ``sv.LineZone``'s in: from the line's right to its left as drawn (walking from start to
    end, from your right hand to your left)."""
    boxes = video.boxes
    within, left = line_sides(line, video.anchors(anchor))
    keep = within & (boxes["track_id"].to_numpy() != NO_TRACK) & class_mask(boxes, class_ids)
    seen = boxes.loc[keep, ["track_id", "frame_index", "timestamp_s", "class_id", "class_name"]]
    seen = seen.assign(left=left[keep]).sort_values(["track_id", "frame_index"], kind="stable")
    same_track = seen["track_id"].eq(seen["track_id"].shift())
    flipped = same_track & seen["left"].ne(seen["left"].shift())
    rows = seen[flipped]
    return pd.DataFrame(
        {
            "video_id": video.video_id,
            "line": line.name,
            "track_id": rows["track_id"].astype("int32"),
            "class_id": rows["class_id"].astype("int32"),
            "class_name": rows["class_name"],
            "frame_index": rows["frame_index"].astype("int64"),
            "timestamp_s": rows["timestamp_s"].astype("float64"),
            "direction": np.where(rows["left"], "in", "out"),
        }
    ).sort_values(["frame_index", "track_id"], kind="stable", ignore_index=True)


def zone_membership(video: VideoBoxes, zone: Zone, anchor: str) -> np.ndarray:
    """Whether each stored box's anchor is inside ``zone`` (``sv.PolygonZone``, all boxes at once)."""
    import supervision as sv

    if video.boxes.empty:
        return np.zeros(0, bool)
    polygon = sv.PolygonZone(
        np.rint(np.asarray(zone.points)).astype(np.int64),
        triggering_anchors=(sv.Position[anchor.upper()],),
    )
    xyxy = video.boxes[["x1", "y1", "x2", "y2"]].to_numpy(np.float64)
    return polygon.trigger(sv.Detections(xyxy=xyxy))


@dataclass
class ZoneResult:
    frames: pd.DataFrame  # per processed frame and class: objects inside (non-zero rows only)
    occupancy: pd.DataFrame  # per time bucket and class: mean and max inside, tracks seen inside
    visits: pd.DataFrame  # per track visit: entry, exit, dwell
    overcrowded: pd.DataFrame  # intervals with more than max_objects inside


def zone_counts(
    video: VideoBoxes,
    zone: Zone,
    anchor: str,
    class_ids: frozenset[int] | None,
    buckets_s: tuple[float, ...],
) -> ZoneResult:
    """Occupancy counts every box inside (as ``PolygonZone.current_count`` does); visits and the
    tracks per bucket count tracked boxes only."""
    inside = zone_membership(video, zone, anchor) & class_mask(video.boxes, class_ids)
    boxes = video.boxes[inside]
    frames = (
        boxes.groupby(["frame_index", "timestamp_s", "class_id", "class_name"], sort=True)
        .size()
        .rename("inside")
        .reset_index()
    )
    frames.insert(0, "zone", zone.name)
    frames.insert(0, "video_id", video.video_id)
    frames["inside"] = frames["inside"].astype("int32")
    return ZoneResult(
        frames=frames,
        occupancy=_occupancy(video, zone, boxes, frames, buckets_s),
        visits=_visits(video, zone, inside),
        overcrowded=_overcrowded(video, zone, frames),
    )


OCCUPANCY_COLUMNS = [
    "video_id", "zone", "bucket_s", "start_s", "class_id", "class_name",
    "mean_inside", "max_inside", "tracks", "frames",
]  # fmt: skip
ALL_CLASSES = (-1, "all")  # the occupancy rows that count every class the zone counts


def _occupancy(video, zone, boxes, frames, buckets_s) -> pd.DataFrame:
    """Per bucket of ``size`` seconds: the mean and the most objects inside over its processed
    frames, and the tracks seen inside; per class, and for all classes (every bucket, zeros too)."""
    keys = ["bucket", "class_id", "class_name"]
    every = frames.groupby("frame_index", as_index=False).agg(
        timestamp_s=("timestamp_s", "first"), inside=("inside", "sum")
    )
    every["class_id"], every["class_name"] = ALL_CLASSES
    per_frame = pd.concat([frames, every], ignore_index=True)
    tracked = boxes[boxes["track_id"] != NO_TRACK]
    tracked = pd.concat(
        [tracked, tracked.assign(class_id=ALL_CLASSES[0], class_name=ALL_CLASSES[1])]
    )
    out = []
    for size in buckets_s:
        processed = pd.Series(np.floor(video.timestamp_s / size)).value_counts()
        table = (
            per_frame.assign(bucket=np.floor(per_frame["timestamp_s"] / size))
            .groupby(keys)["inside"]
            .agg(total="sum", max_inside="max")
        )
        tracks = (
            tracked.assign(bucket=np.floor(tracked["timestamp_s"] / size))
            .groupby(keys)["track_id"]
            .nunique()
            .rename("tracks")
        )
        empty = pd.MultiIndex.from_tuples(
            [(b, *ALL_CLASSES) for b in processed.index], names=keys
        ).difference(table.index)
        table = pd.concat([table, pd.DataFrame(0, index=empty, columns=table.columns)])
        table = table.join(tracks).fillna({"tracks": 0}).sort_index().reset_index()
        table["frames"] = table["bucket"].map(processed)
        out.append(
            pd.DataFrame(
                {
                    "video_id": video.video_id,
                    "zone": zone.name,
                    "bucket_s": float(size),
                    "start_s": table["bucket"] * size,
                    "class_id": table["class_id"].astype("int32"),
                    "class_name": table["class_name"],
                    "mean_inside": table["total"] / table["frames"],
                    "max_inside": table["max_inside"].astype("int32"),
                    "tracks": table["tracks"].astype("int32"),
                    "frames": table["frames"].astype("int64"),
                }
            )
        )
    return pd.concat(out, ignore_index=True)


def _visits(video: VideoBoxes, zone: Zone, inside: np.ndarray) -> pd.DataFrame:
    """A visit is a run of a track's observations inside the zone; an observation outside ends
    it (frames where the track is not seen do not)."""
    tracked = video.boxes.assign(inside=inside)
    tracked = tracked[tracked["track_id"] != NO_TRACK].sort_values(
        ["track_id", "frame_index"], kind="stable"
    )
    new_run = tracked["track_id"].ne(tracked["track_id"].shift()) | tracked["inside"].ne(
        tracked["inside"].shift()
    )
    tracked = tracked.assign(run=new_run.cumsum())
    last_seen = tracked.groupby("track_id")["frame_index"].max()
    runs = (
        tracked[tracked["inside"]]
        .groupby("run")
        .agg(
            track_id=("track_id", "first"),
            class_id=("class_id", lambda c: c.mode().iloc[0]),
            class_name=("class_name", lambda c: c.mode().iloc[0]),
            entry_frame=("frame_index", "min"),
            exit_frame=("frame_index", "max"),
            entry_s=("timestamp_s", "min"),
            exit_s=("timestamp_s", "max"),
            frames_inside=("frame_index", "size"),
        )
    )
    return pd.DataFrame(
        {
            "video_id": video.video_id,
            "zone": zone.name,
            "track_id": runs["track_id"].astype("int32"),
            "class_id": runs["class_id"].astype("int32"),
            "class_name": runs["class_name"],
            "entry_frame": runs["entry_frame"].astype("int64"),
            "exit_frame": runs["exit_frame"].astype("int64"),
            "entry_s": runs["entry_s"],
            "exit_s": runs["exit_s"],
            # the last observation inside lasts until the next processed frame
            "dwell_s": video.observation_end_s(runs["exit_frame"].to_numpy()) - runs["entry_s"],
            "frames_inside": runs["frames_inside"].astype("int64"),
            # still inside when its track was last seen (the video ended, or the track was lost)
            "open": (runs["exit_frame"].to_numpy() == last_seen[runs["track_id"]].to_numpy()),
        }
    ).sort_values(["entry_frame", "track_id"], kind="stable", ignore_index=True)


def _overcrowded(video: VideoBoxes, zone: Zone, frames: pd.DataFrame) -> pd.DataFrame:
    """Runs of consecutive processed frames with more than ``max_objects`` inside."""
    columns = ["video_id", "zone", "start_frame", "end_frame", "start_s", "end_s", "peak"]
    if zone.max_objects is None:
        return pd.DataFrame(columns=columns)
    per_frame = (
        frames.groupby("frame_index")["inside"].sum().reindex(video.frame_index, fill_value=0)
    )
    over = per_frame.to_numpy() > zone.max_objects
    starts = np.flatnonzero(over & ~np.r_[False, over[:-1]])
    ends = np.flatnonzero(over & ~np.r_[over[1:], False])
    peaks = [int(per_frame.iloc[s : e + 1].max()) for s, e in zip(starts, ends)]
    return pd.DataFrame(
        {
            "video_id": video.video_id,
            "zone": zone.name,
            "start_frame": video.frame_index[starts].astype("int64"),
            "end_frame": video.frame_index[ends].astype("int64"),
            "start_s": video.timestamp_s[starts],
            "end_s": video.observation_end_s(video.frame_index[ends]),
            "peak": np.asarray(peaks, dtype="int32"),
        },
        columns=columns,
    )
