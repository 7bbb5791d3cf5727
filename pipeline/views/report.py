"""``python -m pipeline report DIR``: one self-contained HTML file about a run's output.

Plots are PNGs embedded as data URIs and the page has no scripts, fonts or links to fetch, so it
opens from disk in any browser with no server and no network, and can be mailed or archived.
"""

from __future__ import annotations

import base64
import html
import json
import time
from pathlib import Path

import pandas as pd

from pipeline.errors import UsageError
from pipeline.locations import is_uri
from pipeline.output.layout import OutputLayout
from pipeline.output.readers import read_detections, read_videos
from pipeline.views import html_parts as page
from pipeline.views.report_plots import (
    bin_size_for,
    class_counts_over_time,
    plot_classes_over_time,
    plot_confidence,
    plot_counts,
    plot_gpu,
    plot_memory,
    plot_stages,
    plot_throughput,
)

MIB = 1024 * 1024
STAGE_NOTES = {
    "decode": "decoding and letterboxing, summed over decoder tasks",
    "infer": "model time inside the actors, summed over actors",
    "batch_round_trip": "dispatch to result, per batch, summed (includes queueing)",
    "write": "Parquet writing in the coordinator",
    "track": "ByteTrack over each complete video (--track), summed over tracking tasks",
}


SAMPLE_SEARCH_FRAMES = 300  # a sample is the busiest frame among a video's first processed frames
SAMPLE_WIDTH = 640


def sample_frame(path: str, boxes: pd.DataFrame, frame_index: int) -> str | None:
    """One source frame with its stored boxes drawn, as an embedded JPEG (None when the source
    cannot be read any more: moved, remote, or cut shorter than it was)."""
    import cv2

    from pipeline.media.decode import DecodeError, VideoDecoder
    from pipeline.media.sampling import Sampling
    from pipeline.views.render import BoxPainter

    if is_uri(path) or not Path(path).is_file():
        return None
    try:
        # converts only frames 0 and frame_index
        decoder = VideoDecoder(path, sampling=Sampling(stride=max(frame_index, 1)))
        image = next((img for index, _, img in decoder.frames() if index == frame_index), None)
    except DecodeError:
        return None
    if image is None:
        return None
    BoxPainter(image.shape[1], image.shape[0]).draw(image, boxes.to_dict("records"))
    scale = SAMPLE_WIDTH / image.shape[1]
    if scale < 1:
        image = cv2.resize(
            image, (SAMPLE_WIDTH, round(image.shape[0] * scale)), interpolation=cv2.INTER_AREA
        )
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return (
        "data:image/jpeg;base64," + base64.b64encode(jpeg.tobytes()).decode("ascii") if ok else None
    )


def _samples_section(videos: pd.DataFrame, boxes: pd.DataFrame, count: int = 3) -> str | None:
    """The busiest early frame of each of the ``count`` videos with the most detections."""
    if boxes.empty:
        return None
    paths = videos.set_index("video_id")["path"].to_dict()
    figures, unreadable = [], []
    for video_id in boxes["video_id"].value_counts().index[:count]:
        mine = boxes[boxes["video_id"] == video_id]
        early = mine[mine["frame_index"] < mine["frame_index"].min() + SAMPLE_SEARCH_FRAMES]
        frame_index = int(early.groupby("frame_index").size().idxmax())
        frame_boxes = early[early["frame_index"] == frame_index]
        uri = sample_frame(paths.get(video_id, ""), frame_boxes, frame_index)
        name = Path(paths.get(video_id, video_id)).name
        if uri is None:
            unreadable.append(name)
            continue
        caption = (
            f"{name}, frame {frame_index} ({frame_boxes['timestamp_s'].iloc[0]:.2f} s): "
            f"{len(frame_boxes)} boxes"
        )
        figures.append(
            f"<figure>{page.img(uri, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    note = ""
    if unreadable:
        note = (
            f'<p class="note">Source video not readable here, so no sample: '
            f"{html.escape(', '.join(unreadable))}.</p>"
        )
    if not figures and not note:
        return None
    return "".join(figures) + note


# ---- tables ----------------------------------------------------------------------------------


def _duration(frames: int, fps: float) -> str:
    return f"{frames / fps:.1f}" if frames and not page.missing(fps) and fps > 0 else ""


def known_classes_of(root: Path) -> dict[int, str] | None:
    from pipeline.output.readers import filesystem_for, known_classes

    return known_classes(*filesystem_for(root))


def _settings(run: dict, names: dict[int, str] | None) -> str:
    """What shaped the results and the run: the model, engine, thresholds, classes, placement."""
    settings, model = run["settings"], run.get("model", {})
    classes = settings.get("classes")
    if classes and names:
        classes = ", ".join(f"{names.get(c, c)} ({c})" for c in classes)
    engine = model.get("engine") or _engine_from_path(str(settings["model"]))
    pairs = [
        ("model", settings["model"]),
        ("engine", engine),
        ("device", f"{model.get('device', '?')}{' fp16' if model.get('half') else ''}"),
        ("confidence threshold (--conf)", settings["conf"]),
        ("NMS IoU threshold (--iou)", settings["iou"]),
        ("classes (--classes)", classes or "all"),
        ("input size (--imgsz)", settings["imgsz"]),
        ("frames processed", _sampling_words(settings)),
        ("boxes per frame at most (--max-det)", settings.get("max_det")),
        ("tracking (--track)", "on" if settings.get("track") else "off"),
        ("batch size", settings["batch_size"]),
        ("actors", run.get("placement", {}).get("num_actors")),
        ("settings hash", run.get("settings_hash")),
    ]
    return page.key_values(pairs)


def _sampling_words(settings: dict) -> str:
    """--stride, --fps and --keyframes in words (a run.json from before --fps has only stride)."""
    fps, stride = settings.get("fps"), settings.get("stride", 1)
    if settings.get("keyframes"):
        if fps:
            return f"keyframes, at most {fps:g} a second (--keyframes --fps)"
        return "keyframes only (--keyframes)"
    if fps:
        return f"{fps:g} frames a second (--fps)"
    return f"1 frame in {stride} (--stride)" if stride > 1 else "every frame"


def _engine_from_path(model: str) -> str:
    if model.endswith("_openvino_model") or model.endswith("_openvino_model/"):
        return "openvino"
    return {".onnx": "onnx", ".engine": "tensorrt", ".pt": "torch"}.get(Path(model).suffix, "?")


def _tracks_section(root: Path, names: dict[str, str], longest: int = 10) -> str | None:
    """Tracks per class and the longest tracks (runs with --track); None without tracks."""
    from pipeline.output.readers import NoTracks, read_tracks

    try:
        tracks = read_tracks(root)
    except NoTracks:
        return None
    if tracks.empty:
        return None
    per_class = tracks["class_name"].value_counts()
    top = tracks.sort_values(["num_frames", "mean_confidence"], ascending=False).head(longest)
    table = pd.DataFrame(
        {
            "video": top["video_id"].map(lambda v: names.get(v, v)),
            "track": top["track_id"],
            "class": top["class_name"],
            "frames seen": top["num_frames"],
            "from (s)": top["first_timestamp_s"].map(lambda t: f"{t:.2f}"),
            "to (s)": top["last_timestamp_s"].map(lambda t: f"{t:.2f}"),
            "mean confidence": top["mean_confidence"].map(lambda c: f"{c:.2f}"),
        }
    )
    return (
        page.img(
            plot_counts(
                per_class.head(15),
                xlabel="tracks (all videos)",
                title="Tracks per class",
                color="#2a9d8f",
            ),
            "tracks per class",
        )
        + f"<h3>The {len(top)} longest tracks</h3>"
        + page.table(table)
    )


# ---- the page ----------------------------------------------------------------------------


def _status_cell(status: str) -> str:
    css = {"ok": "ok", "partial": "partial", "failed": "failedst"}.get(status, "")
    return f'<span class="{css}">{html.escape(status)}</span>'


def build_report(
    results: str | Path, *, top_classes: int = 5, max_videos: int = 12, bin_s: float | None = None
) -> str:
    """The report's HTML for one output directory."""
    if is_uri(str(results)):
        raise UsageError(
            "report reads a local output directory; copy the output from object storage first"
        )
    root = Path(results)
    videos = read_videos(root)  # NotARunOutput (a UsageError) when it is not a run's output
    run_file = OutputLayout(root).run_file
    run = json.loads(run_file.read_text()) if run_file.exists() else None
    boxes = read_detections(root)
    names = videos.set_index("video_id")["path"].map(lambda p: Path(p).name).to_dict()

    parts = [f"<h1>Detection run report: {html.escape(root.absolute().name)}</h1>"]
    generated = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    parts.append(
        f'<p class="note">Output directory {html.escape(str(root.absolute()))}; report made {generated}.</p>'
    )
    parts.append(
        '<p class="note">Sections: <a href="#summary">summary</a> · <a href="#settings">settings</a> · '
        '<a href="#videos">videos</a> · <a href="#samples">sample frames</a> · '
        '<a href="#classes">classes</a> · <a href="#tracks">tracks</a> · <a href="#analyses">analyses</a> · '
        '<a href="#run">throughput, stages, memory, GPU</a> · <a href="#failures">failures</a></p>'
    )

    parts += _summary_sections(root, videos, run)
    parts.append(_videos_section(videos))
    samples = _samples_section(videos, boxes)
    if samples:
        parts.append(
            page.section(
                "Sample frames",
                "samples",
                '<p class="note">The frame with the most boxes early in each of the busiest videos, '
                "drawn from the stored boxes.</p>" + samples,
            )
        )

    parts.append(_classes_section(root, boxes, names, run, top_classes, max_videos, bin_s))
    tracks = _tracks_section(root, names)
    if tracks:
        parts.append(page.section("Tracks", "tracks", tracks))
    from pipeline.views.report_analysis import analysis_section

    analyses = analysis_section(root, names)
    if analyses:
        parts.append(analyses)

    parts.append(_run_section(run))
    parts.append(_failures_section(videos))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Run report: {html.escape(root.absolute().name)}</title><style>{page.CSS}</style></head><body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )


def _summary_sections(root: Path, videos: pd.DataFrame, run: dict | None) -> list[str]:
    parts: list[str] = []
    counts = videos["status"].value_counts()
    summary = [
        ("videos", len(videos)),
        ("ok", int(counts.get("ok", 0))),
        ("partial", int(counts.get("partial", 0))),
        ("failed", int(counts.get("failed", 0))),
        ("frames processed", int(videos["frames_processed"].sum())),
        ("detections", int(videos["num_detections"].sum())),
    ]
    if "num_tracks" in videos and videos["num_tracks"].notna().any():
        summary.append(("tracks", int(videos["num_tracks"].fillna(0).sum())))
    if run:
        summary += [
            ("started", run.get("started_at")),
            ("elapsed (s)", f"{run.get('elapsed_s', 0):.1f}"),
            ("throughput (frames/s)", f"{run['throughput']['frames_per_s']:.1f}"),
        ]
    parts.append(page.section("Summary", "summary", page.key_values(summary)))
    if run:
        parts.append(page.section("Settings", "settings", _settings(run, known_classes_of(root))))
    return parts


def _videos_section(videos: pd.DataFrame) -> str:
    parts: list[str] = []
    shown = pd.DataFrame(
        {
            "path": videos["path"],
            "status": videos["status"],
            "duration (s)": [_duration(r.frames_decoded, r.fps) for r in videos.itertuples()],
            "frames processed": videos["frames_processed"],
            "detections": videos["num_detections"],
            "size": [
                f"{r.width}x{r.height}" if not page.missing(r.width) else ""
                for r in videos.itertuples()
            ],
            "fps": videos["fps"].map(lambda v: "" if page.missing(v) else f"{v:.2f}"),
        }
    )
    if "num_tracks" in videos and videos["num_tracks"].notna().any():
        shown["tracks"] = videos["num_tracks"]
    body = page.table(shown)
    for status in ("ok", "partial", "failed"):  # colour the status column
        body = body.replace(f"<td>{status}</td>", f"<td>{_status_cell(status)}</td>")
    parts.append(
        page.section(
            "Videos", "videos", body + '<p class="note">Duration: frames decoded / frame rate.</p>'
        )
    )
    return parts[0]


def _classes_section(
    root: Path,
    boxes: pd.DataFrame,
    names: dict,
    run: dict | None,
    top_classes: int,
    max_videos: int,
    bin_s: float | None,
) -> str:
    parts: list[str] = []
    if boxes.empty:
        parts.append(page.section("Classes", "classes", "<p>No detections.</p>"))
    else:
        totals = boxes["class_name"].value_counts()
        busiest = list(totals.index[:top_classes])
        busiest_videos = list(boxes["video_id"].value_counts().index[:max_videos])
        frame_times = read_detections(
            root, flat=False, video_id=busiest_videos, columns=["video_id", "timestamp_s"]
        )
        per_video = []
        for v in busiest_videos:
            times = frame_times.loc[frame_times["video_id"] == v, "timestamp_s"]
            step = bin_s or bin_size_for(float(times.max()))
            per_video.append(
                (
                    names.get(v, v),
                    class_counts_over_time(boxes[boxes["video_id"] == v], times, busiest, step),
                    step,
                )
            )
        note = (
            f'<p class="note">The {len(busiest)} busiest classes: mean boxes per processed frame over video '
            f"time, for the {len(per_video)} videos with the most detections.</p>"
        )
        threshold = run["settings"].get("conf") if run else None
        parts.append(
            page.section(
                "Classes",
                "classes",
                page.img(
                    plot_counts(
                        totals.head(max(top_classes, 10)),
                        xlabel="boxes (all videos)",
                        title="Detections per class",
                        color="#3b7dd8",
                    ),
                    "detections per class",
                )
                + page.img(plot_confidence(boxes, busiest[:3], threshold), "confidence histogram")
                + "<h3>Classes over time</h3>"
                + note
                + page.img(plot_classes_over_time(per_video), "classes over time"),
            )
        )
    return parts[0]


def _run_section(run: dict | None) -> str:
    parts: list[str] = []
    if run is None:
        parts.append(
            page.section(
                "Run", "run", "<p>No run.json: the run was interrupted before its summary.</p>"
            )
        )
    else:
        points = (run.get("timeline") or {}).get("points") or []
        run_parts = []
        if len(points) >= 2:
            run_parts.append(page.img(plot_throughput(points), "throughput over time"))
        else:
            run_parts.append('<p class="note">The run was too short for a throughput timeline.</p>')
        stage_rows = pd.DataFrame(
            [
                {"stage": k, "seconds": f"{v:.2f}", "what": STAGE_NOTES.get(k, "")}
                for k, v in run["stage_s"].items()
            ]
        )
        stages_plot = plot_stages(run["stage_s"])
        run_parts.append(
            "<h3>Time per stage</h3>"
            + (page.img(stages_plot, "time per stage") if stages_plot else "")
            + page.table(stage_rows)
        )
        memory_plot = plot_memory(run["memory"], points)
        if memory_plot:
            run_parts.append("<h3>Memory per role</h3>" + page.img(memory_plot, "memory per role"))
        gpu_plot = plot_gpu(points)
        gpus = run.get("gpu") or []
        if gpu_plot or gpus:
            rows = "".join(
                f"<tr><td>actor {i}</td><td>{g.get('mean_utilization_percent', float('nan')):.0f}%</td>"
                f"<td>{(g.get('peak_memory_used_bytes') or 0) / MIB:.0f} MiB</td></tr>"
                for i, g in enumerate(gpus)
            )
            run_parts.append(
                "<h3>GPU</h3>"
                + (page.img(gpu_plot, "GPU utilization") if gpu_plot else "")
                + f"<table><tr><th>actor</th><th>mean utilization</th><th>peak memory</th></tr>{rows}</table>"
            )
        else:
            run_parts.append(
                '<h3>GPU</h3><p class="note">No GPU in this run (device '
                f"{html.escape(str(run['model']['device']))}).</p>"
            )
        parts.append(page.section("Throughput, stages, memory, GPU", "run", "\n".join(run_parts)))
    return parts[0]


def _failures_section(videos: pd.DataFrame) -> str:
    parts: list[str] = []
    bad = videos[videos["status"] != "ok"]
    if bad.empty:
        parts.append(page.section("Failures", "failures", "<p>None: every video is complete.</p>"))
    else:
        parts.append(
            page.section(
                "Failures",
                "failures",
                page.table(bad[["path", "status", "frames_processed", "error"]], css="failed"),
            )
        )
    return parts[0]


def write_report(results: str | Path, output: str | Path | None = None, **options) -> Path:
    path = Path(output) if output else Path(results) / "report.html"
    page = build_report(results, **options)
    temp = OutputLayout.temp_for(path)
    temp.write_text(page, encoding="utf-8")
    temp.replace(path)
    return path
