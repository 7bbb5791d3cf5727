"""A run's stored boxes in the formats other tools read, with no inference.

- ``to_supervision(OUT, video)``: ``(frame_index, sv.Detections)`` per processed frame, with
  ``tracker_id`` (-1 for a box no track confirmed), ``class_id``, ``confidence`` and
  ``data["class_name"]``, for supervision's annotators and zones.
- ``python -m pipeline export OUT --format coco``: one COCO detection file per video
  (``<name>.json``; CVAT, Label Studio and FiftyOne import it). Its images are the processed
  frames, ``frame_<index:06d>.jpg``; ``--images`` writes those JPEGs beside it.
- ``--format mot``: a MOTChallenge sequence per video from its tracks (``<name>/gt/gt.txt`` and
  ``seqinfo.ini``), the layout TrackEval and motmetrics read.
- ``--format csv``: every box, flat, in one ``detections.csv``.

Category ids (COCO) and the MOT class column are the model's class id + 1 (COCO ids start at 1;
a COCO model's person is 1, MOTChallenge's pedestrian).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.analysis.analyze import processed_videos, video_boxes
from pipeline.config import class_keys
from pipeline.errors import UsageError
from pipeline.inference.model_ref import ClassesError, resolve_classes
from pipeline.output.layout import TEMP_PREFIX
from pipeline.output.readers import (
    NoTracks,
    check_output,
    iter_detections,
    known_classes,
    plan_scan,
    read_detections,
    read_videos,
    resolve_video_id,
)

FORMATS = ("coco", "mot", "csv")


def has_tracks(output) -> bool:
    try:
        plan_scan(output, "tracks")
    except NoTracks:
        return False
    return True


def to_supervision(
    output: str | Path,
    video: str,
    *,
    classes=None,
    min_confidence: float | None = None,
    start_s: float | None = None,
    end_s: float | None = None,
) -> Iterator[tuple[int, object]]:
    """Yield ``(frame_index, sv.Detections)`` for every processed frame of ``video`` (its id or
    path), frames without boxes included; ``tracker_id`` is None for a run made without ``--track``."""
    import supervision as sv

    video_id = resolve_video_id(video, output)
    tracked = has_tracks(output)
    frames = read_detections(
        output,
        flat=False,
        video_id=video_id,
        start_s=start_s,
        end_s=end_s,
        classes=classes,
        min_confidence=min_confidence,
    ).sort_values("frame_index", kind="stable")
    for frame_index, boxes in zip(frames["frame_index"], frames["detections"]):
        table = pd.DataFrame(
            boxes,
            columns=["class_id", "class_name", "confidence", "x1", "y1", "x2", "y2", "track_id"],
        )
        tracker_id = None
        if tracked:
            tracker_id = table["track_id"].fillna(-1).to_numpy(np.int64)
        yield (
            int(frame_index),
            sv.Detections(
                xyxy=table[["x1", "y1", "x2", "y2"]].to_numpy(np.float32).reshape(-1, 4),
                confidence=table["confidence"].to_numpy(np.float32),
                class_id=table["class_id"].to_numpy(np.int64),
                tracker_id=tracker_id,
                data={"class_name": table["class_name"].to_numpy(str)},
            ),
        )


@dataclass
class ExportSummary:
    format: str
    folder: str
    files: list[str] = field(default_factory=list)
    videos: int = 0
    boxes: int = 0
    images: int = 0


def sequence_names(videos: pd.DataFrame) -> dict[str, str]:
    """A file name per video: its file's stem (made safe), or stem-<id> where stems repeat."""
    stems = {
        v: re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(p).stem) or v
        for v, p in zip(videos["video_id"], videos["path"])
    }
    counts = pd.Series(list(stems.values())).value_counts()
    return {v: s if counts[s] == 1 else f"{s}-{v[:8]}" for v, s in stems.items()}


def frame_file(frame_index: int) -> str:
    return f"frame_{frame_index:06d}.jpg"


def _replace(path: Path, text: str) -> None:
    temp = path.with_name(f"{TEMP_PREFIX}{path.name}")
    temp.write_text(text)
    os.replace(temp, path)


def coco_document(video, names: dict[int, str], path: str) -> dict:
    """One video's processed frames and boxes as a COCO detection dataset."""
    boxes = video.boxes
    image_ids = {int(f): i + 1 for i, f in enumerate(video.frame_index)}
    images = [
        {
            "id": image_ids[int(f)],
            "file_name": frame_file(int(f)),
            "width": video.width,
            "height": video.height,
            "frame_index": int(f),
            "timestamp_s": round(float(t), 6),
        }
        for f, t in zip(video.frame_index, video.timestamp_s)
    ]
    w = (boxes["x2"] - boxes["x1"]).to_numpy(np.float64)
    h = (boxes["y2"] - boxes["y1"]).to_numpy(np.float64)
    annotations = [
        {
            "id": i + 1,
            "image_id": image_ids[int(f)],
            "category_id": int(c) + 1,
            "bbox": [round(float(x), 2), round(float(y), 2), round(float(bw), 2), round(float(bh), 2)],
            "area": round(float(bw * bh), 2),
            "iscrowd": 0,
            "score": round(float(s), 4),
            "attributes": {"track_id": int(t)} if t >= 0 else {},
        }
        for i, (f, c, x, y, bw, bh, s, t) in enumerate(
            zip(boxes["frame_index"], boxes["class_id"], boxes["x1"], boxes["y1"], w, h,
                boxes["confidence"], boxes["track_id"])
        )
    ]  # fmt: skip
    return {
        "info": {"description": f"detections of {path}", "video_id": video.video_id},
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": i + 1, "name": n, "supercategory": ""} for i, n in sorted(names.items())
        ],
    }


def mot_lines(video) -> str:
    """MOTChallenge gt rows: frame (1-based), id, left, top, width, height, 1 (counted), class
    (id + 1), visibility 1. Boxes no track confirmed are left out."""
    b = video.boxes[video.boxes["track_id"] >= 0].sort_values(["frame_index", "track_id"])
    width, height = b["x2"] - b["x1"], b["y2"] - b["y1"]
    rows = zip(
        b["frame_index"] + 1, b["track_id"], b["x1"], b["y1"], width, height, b["class_id"] + 1
    )
    return "".join(
        f"{f},{t},{x:.2f},{y:.2f},{w:.2f},{h:.2f},1,{c},1\n" for f, t, x, y, w, h, c in rows
    )


def seqinfo(name: str, video, fps: float) -> str:
    last = int(video.frame_index[-1]) + 1 if len(video.frame_index) else 0
    return (
        f"[Sequence]\nname={name}\nimDir=img1\nframeRate={fps:g}\nseqLength={last}\n"
        f"imWidth={video.width}\nimHeight={video.height}\nimExt=.jpg\n"
    )


def write_images(path: str, frames: Iterable[int], folder: Path) -> int:
    """The processed frames of ``path`` as JPEGs named as the COCO file names them, decoded the
    way the run decoded them (so frame numbers agree)."""
    import cv2

    from pipeline.media.decode import DecodeError, VideoDecoder

    wanted = set(frames)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        decoder = VideoDecoder(path)
    except DecodeError as exc:
        raise UsageError(f"--images: cannot read {path}: {exc}") from None
    written = 0
    for index, _timestamp, frame in decoder.frames():
        if index in wanted:
            cv2.imwrite(str(folder / frame_file(index)), frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
            written += 1
            if written == len(wanted):
                break
    return written


def export(
    output: str | Path,
    folder: str | Path,
    fmt: str,
    *,
    videos: list[str] | None = None,
    classes=None,
    images: bool = False,
) -> ExportSummary:
    """Write the run's boxes (of ``classes``, names or ids; default all) under ``folder`` in
    ``fmt`` (``coco``, ``mot`` or ``csv``)."""
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt}: one of {', '.join(FORMATS)}")
    fs, root = check_output(output)
    if fmt == "mot" and not has_tracks(output):
        raise NoTracks(f"{output} has no tracks: MOT files hold tracks (run it again with --track)")
    if images and fmt != "coco":
        raise UsageError("--images goes with --format coco")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chosen = processed_videos(output, read_videos(output), videos)
    summary = ExportSummary(fmt, str(folder), videos=len(chosen))
    names, seq = known_classes(fs, root) or {}, sequence_names(chosen)
    wanted = None
    if classes is not None:
        try:
            wanted = set(
                resolve_classes(class_keys(classes), names, context="--classes: the run's model")
                or ()
            )
        except ClassesError as exc:
            raise UsageError(str(exc)) from None
    if fmt == "csv":
        return _export_csv(output, folder, list(chosen["video_id"]), wanted, summary)
    for row in chosen.itertuples():
        video = video_boxes(output, row)
        if wanted is not None:
            video.boxes = video.boxes[video.boxes["class_id"].isin(wanted)].reset_index(drop=True)
        summary.boxes += len(video.boxes)
        name = seq[row.video_id]
        if fmt == "coco":
            target = folder / f"{name}.json"
            _replace(target, json.dumps(coco_document(video, names, row.path)))
            if images:
                summary.images += write_images(row.path, video.frame_index, folder / name)
        else:
            (folder / name / "gt").mkdir(parents=True, exist_ok=True)
            target = folder / name / "gt" / "gt.txt"
            _replace(target, mot_lines(video))
            _replace(folder / name / "seqinfo.ini", seqinfo(name, video, float(row.fps or 0)))
        summary.files.append(str(target))
    return summary


def _export_csv(
    output, folder: Path, video_ids: list[str], classes: set[int] | None, summary: ExportSummary
) -> ExportSummary:
    import pyarrow.csv as pacsv

    target = folder / "detections.csv"
    temp = target.with_name(f"{TEMP_PREFIX}{target.name}")
    writer = None
    try:
        batches = (
            iter_detections(output, video_id=video_ids, classes=classes) if video_ids else iter(())
        )
        for _vid, _first, table in batches:
            if writer is None:
                writer = pacsv.CSVWriter(str(temp), table.schema)
            writer.write_table(table)
            summary.boxes += table.num_rows
    finally:
        if writer is not None:
            writer.close()
    if writer is None:  # no boxes at all: the header alone
        temp.write_text(
            "video_id,frame_index,timestamp_s,class_id,class_name,confidence,x1,y1,x2,y2,track_id\n"
        )
    os.replace(temp, target)
    summary.files.append(str(target))
    return summary
