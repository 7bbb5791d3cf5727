"""``pipeline.analyze(OUT, spec)`` and ``python -m pipeline analyze OUT``: lines and zones counted
over a tracked run's stored boxes, written to ``OUT/analysis/<name>/`` as Parquet.

No model and no Ray: it reads ``detections/`` one video at a time, so a moved line is a new
answer in seconds. The folder is replaced as a whole (written under a hidden name, then renamed),
so a reader never sees one analysis's crossings beside another's zones.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.analysis.counting import VideoBoxes, line_crossings, zone_counts
from pipeline.analysis.spec import AnalysisError, AnalysisSpec, Line, Zone, check_name, load_spec
from pipeline.inference.model_ref import ClassesError, resolve_classes
from pipeline.locations import is_uri
from pipeline.output.layout import TEMP_PREFIX
from pipeline.output.readers import (
    check_output,
    known_classes,
    plan_scan,
    read_detections,
    read_videos,
    resolve_video_id,
)

FOLDER = "analysis"
SPEC_FILE = "analysis.json"
_I32, _I64, _F64, _STR = pa.int32(), pa.int64(), pa.float64(), pa.string()
# The tables of an analysis, each one Parquet file: the contract of OUT/analysis/<name>/.
SCHEMAS = {
    "crossings": pa.schema(
        [("video_id", _STR), ("line", _STR), ("track_id", _I32), ("class_id", _I32),
         ("class_name", _STR), ("frame_index", _I64), ("timestamp_s", _F64), ("direction", _STR)]
    ),
    "line_counts": pa.schema(
        [("line", _STR), ("video_id", _STR), ("class_id", _I32), ("class_name", _STR),
         ("direction", _STR), ("count", _I64)]
    ),
    "zone_frames": pa.schema(
        [("video_id", _STR), ("zone", _STR), ("frame_index", _I64), ("timestamp_s", _F64),
         ("class_id", _I32), ("class_name", _STR), ("inside", _I32)]
    ),
    "zone_occupancy": pa.schema(
        [("video_id", _STR), ("zone", _STR), ("bucket_s", _F64), ("start_s", _F64),
         ("class_id", _I32), ("class_name", _STR), ("mean_inside", _F64), ("max_inside", _I32),
         ("tracks", _I32), ("frames", _I64)]
    ),
    "zone_visits": pa.schema(
        [("video_id", _STR), ("zone", _STR), ("track_id", _I32), ("class_id", _I32),
         ("class_name", _STR), ("entry_frame", _I64), ("exit_frame", _I64), ("entry_s", _F64),
         ("exit_s", _F64), ("dwell_s", _F64), ("frames_inside", _I64), ("open", pa.bool_())]
    ),
    "zone_overcrowding": pa.schema(
        [("video_id", _STR), ("zone", _STR), ("start_frame", _I64), ("end_frame", _I64),
         ("start_s", _F64), ("end_s", _F64), ("peak", _I32)]
    ),
}  # fmt: skip


@dataclass
class Analysis:
    """An analysis's tables (pandas), as computed or as read back from ``OUT/analysis/<name>/``."""

    name: str
    spec: AnalysisSpec
    tables: dict[str, pd.DataFrame]
    videos: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    path: str | None = None

    @property
    def crossings(self) -> pd.DataFrame:
        return self.tables["crossings"]

    @property
    def line_counts(self) -> pd.DataFrame:
        return self.tables["line_counts"]

    @property
    def zone_frames(self) -> pd.DataFrame:
        return self.tables["zone_frames"]

    @property
    def zone_occupancy(self) -> pd.DataFrame:
        return self.tables["zone_occupancy"]

    @property
    def zone_visits(self) -> pd.DataFrame:
        return self.tables["zone_visits"]

    @property
    def zone_overcrowding(self) -> pd.DataFrame:
        return self.tables["zone_overcrowding"]

    def summary(self) -> dict:
        """What the analysis found, JSON-ready: crossings per line, class and direction; per
        zone its visits, dwell, the most objects inside at once and the overcrowded time."""
        lines = []
        for line in self.spec.lines:
            counts = self.line_counts[self.line_counts["line"] == line.name]
            by_class: dict[str, dict[str, int]] = {}
            for (c, d), n in counts.groupby(["class_name", "direction"])["count"].sum().items():
                by_class.setdefault(c, {})[d] = int(n)
            lines.append(
                {
                    "name": line.name,
                    "in": int(counts.loc[counts["direction"] == "in", "count"].sum()),
                    "out": int(counts.loc[counts["direction"] == "out", "count"].sum()),
                    "by_class": by_class,
                }
            )
        zones = []
        for zone in self.spec.zones:
            visits = self.zone_visits[self.zone_visits["zone"] == zone.name]
            every = self.zone_occupancy[
                (self.zone_occupancy["zone"] == zone.name) & (self.zone_occupancy["class_id"] == -1)
            ]
            over = self.zone_overcrowding[self.zone_overcrowding["zone"] == zone.name]
            zones.append(
                {
                    "name": zone.name,
                    "visits": len(visits),
                    "median_dwell_s": float(visits["dwell_s"].median()) if len(visits) else None,
                    "max_inside": int(every["max_inside"].max()) if len(every) else 0,
                    "max_objects": zone.max_objects,
                    "overcrowded_intervals": len(over),
                    "overcrowded_s": float((over["end_s"] - over["start_s"]).sum()),
                }
            )
        return {"name": self.name, "videos": len(self.videos), "lines": lines, "zones": zones}


def _empty(table: str) -> pd.DataFrame:
    return SCHEMAS[table].empty_table().to_pandas()


def _class_ids(item: Line | Zone, names: dict[int, str]) -> frozenset[int] | None:
    if item.classes is None:
        return None
    kind = "line" if isinstance(item, Line) else "zone"
    try:
        ids = resolve_classes(item.classes, names, context=f"{kind} {item.name!r}: the run's model")
    except ClassesError as exc:
        raise AnalysisError(str(exc)) from None
    return frozenset(ids or ())


def check_geometry(spec: AnalysisSpec, width: int, height: int, video: str) -> None:
    """A zone lies inside the frame; a line crosses it somewhere (it may run past the edges)."""
    import cv2

    for zone in spec.zones:
        for x, y in zone.points:
            if not (0 <= x <= width and 0 <= y <= height):
                raise AnalysisError(
                    f"zone {zone.name!r}: point ({x:g}, {y:g}) is outside the {width}x{height} "
                    f"frame of {video} (points are in source-frame pixels)"
                )
    for line in spec.lines:
        p1 = tuple(int(round(v)) for v in line.start)
        p2 = tuple(int(round(v)) for v in line.end)
        if not cv2.clipLine((0, 0, width, height), p1, p2)[0]:
            raise AnalysisError(
                f"line {line.name!r}: it does not cross the {width}x{height} frame of {video} "
                "(points are in source-frame pixels)"
            )


def processed_videos(output, videos: pd.DataFrame, wanted=None) -> pd.DataFrame:
    """The ``ok``/``partial`` videos with processed frames; of those, ``wanted`` (ids or paths)."""
    done = videos[videos["status"].isin(["ok", "partial"]) & (videos["frames_processed"] > 0)]
    if wanted is None:
        return done
    ids = {
        resolve_video_id(str(v), output) for v in ([wanted] if isinstance(wanted, str) else wanted)
    }
    chosen = done[done["video_id"].isin(ids)]
    if len(chosen) < len(ids):
        raise AnalysisError(
            "a video asked for has no processed frames in this run (see videos.parquet)"
        )
    return chosen


def video_boxes(output, row) -> VideoBoxes:
    """One video's processed frames and its boxes, sorted by frame (unconfirmed boxes: track -1)."""
    frames = read_detections(
        output, flat=False, video_id=row.video_id, columns=["frame_index", "timestamp_s"]
    ).sort_values("frame_index", kind="stable")
    boxes = read_detections(output, video_id=row.video_id).sort_values("frame_index", kind="stable")
    boxes["track_id"] = boxes["track_id"].fillna(-1).astype("int64")
    boxes["class_id"] = boxes["class_id"].astype("int64")
    return VideoBoxes(
        video_id=row.video_id,
        width=int(row.width),
        height=int(row.height),
        frame_index=frames["frame_index"].to_numpy(np.int64),
        timestamp_s=frames["timestamp_s"].to_numpy(np.float64),
        boxes=boxes.reset_index(drop=True),
    )


def _as_spec(spec) -> AnalysisSpec:
    if isinstance(spec, AnalysisSpec):
        return spec
    if isinstance(spec, dict):
        return AnalysisSpec.from_dict(spec)
    if isinstance(spec, (str, Path)):
        return load_spec(spec)
    raise TypeError("spec: an AnalysisSpec, a dict like the YAML file, or the YAML file's path")


def analyze(
    output: str | Path,
    spec: AnalysisSpec | dict | str | Path,
    *,
    name: str = "default",
    video_id: str | list[str] | None = None,
    write: bool = True,
) -> Analysis:
    """Count ``spec``'s lines and zones over the stored tracks of a run made with ``--track``;
    with ``write``, replace ``OUT/analysis/<name>/``. Raises ``AnalysisError`` (bad lines, zones
    or classes), ``NoTracks`` (a run without ``--track``), ``NotARunOutput``."""
    started = time.perf_counter()
    spec, name = _as_spec(spec), check_name(name, "analysis")
    if write and is_uri(str(output)):
        raise AnalysisError("analyze writes under OUT/analysis/: give a local output folder")
    fs, root = check_output(output)
    plan_scan(output, "tracks")  # NoTracks: one line, before any work
    names = known_classes(fs, root) or {}
    class_ids = {item.name: _class_ids(item, names) for item in spec.items}
    chosen = processed_videos(output, read_videos(output), video_id)
    for row in chosen.itertuples():
        check_geometry(spec, int(row.width), int(row.height), Path(row.path).name)
    parts: dict[str, list[pd.DataFrame]] = {t: [] for t in SCHEMAS}
    for row in chosen.itertuples():
        video = video_boxes(output, row)
        for line in spec.lines:
            parts["crossings"].append(
                line_crossings(video, line, spec.anchor, class_ids[line.name])
            )
        for zone in spec.zones:
            result = zone_counts(video, zone, spec.anchor, class_ids[zone.name], spec.buckets_s)
            parts["zone_frames"].append(result.frames)
            parts["zone_occupancy"].append(result.occupancy)
            parts["zone_visits"].append(result.visits)
            parts["zone_overcrowding"].append(result.overcrowded)
    tables = {t: _concat(t, frames) for t, frames in parts.items()}
    tables["line_counts"] = _line_counts(tables["crossings"])
    analysis = Analysis(name, spec, tables, list(chosen["video_id"]))
    analysis.elapsed_s = time.perf_counter() - started
    if write:
        analysis.path = _write(Path(root), analysis)
    return analysis


def _concat(table: str, frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if not f.empty]
    if not frames:
        return _empty(table)
    return pd.concat(frames, ignore_index=True)[SCHEMAS[table].names]


def _line_counts(crossings: pd.DataFrame) -> pd.DataFrame:
    if crossings.empty:
        return _empty("line_counts")
    keys = ["line", "video_id", "class_id", "class_name", "direction"]
    return crossings.groupby(keys, sort=True).size().rename("count").reset_index()


def _write(root: Path, analysis: Analysis) -> str:
    folder = root / FOLDER
    folder.mkdir(exist_ok=True)
    final = folder / analysis.name
    temp = folder / f"{TEMP_PREFIX}{analysis.name}-{os.getpid()}"
    old = folder / f"{TEMP_PREFIX}old-{analysis.name}-{os.getpid()}"
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir()
    for table, frame in analysis.tables.items():
        arrow = pa.Table.from_pandas(frame, schema=SCHEMAS[table], preserve_index=False)
        pq.write_table(arrow, temp / f"{table}.parquet")
    about = {
        "name": analysis.name,
        "spec": analysis.spec.to_dict(),
        "videos": analysis.videos,
        "elapsed_s": round(analysis.elapsed_s, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (temp / SPEC_FILE).write_text(json.dumps(about, indent=2) + "\n")
    if final.exists():
        final.rename(old)
    temp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return str(final)


def list_analyses(output: str | Path) -> list[str]:
    """The names of the analyses stored in ``OUT/analysis/``."""
    folder = Path(output) / FOLDER
    if is_uri(str(output)) or not folder.is_dir():
        return []
    return sorted(
        p.name for p in folder.iterdir() if (p / SPEC_FILE).is_file() and not p.name.startswith(".")
    )


def read_analysis(output: str | Path, name: str = "default") -> Analysis:
    """An analysis stored by ``analyze``; ``AnalysisError`` naming those there when it is not."""
    check_output(output)
    folder = Path(output) / FOLDER / check_name(name, "analysis")
    if not (folder / SPEC_FILE).is_file():
        there = ", ".join(list_analyses(output)) or "none"
        raise AnalysisError(f"no analysis {name!r} in {output} (analyses there: {there})")
    about = json.loads((folder / SPEC_FILE).read_text())
    tables = {}
    for table in SCHEMAS:
        path = folder / f"{table}.parquet"
        tables[table] = pq.read_table(path).to_pandas() if path.exists() else _empty(table)
    return Analysis(
        name,
        AnalysisSpec.from_dict(about["spec"]),
        tables,
        about["videos"],
        about["elapsed_s"],
        str(folder),
    )
