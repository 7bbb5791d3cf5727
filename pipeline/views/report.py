"""``python -m pipeline report DIR``: one self-contained HTML file about a run's output.

Plots are PNGs embedded as data URIs and the page has no scripts, fonts or links to fetch, so it
opens from disk in any browser with no server and no network, and can be mailed or archived.
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import UsageError
from pipeline.locations import is_uri
from pipeline.output.layout import OutputLayout
from pipeline.output.readers import read_detections, read_videos

MIB = 1024 * 1024
STAGE_NOTES = {
    "decode": "decoding and letterboxing, summed over decoder tasks",
    "infer": "model time inside the actors, summed over actors",
    "batch_round_trip": "dispatch to result, per batch, summed (includes queueing)",
    "write": "Parquet writing in the coordinator",
    "track": "ByteTrack over each complete video (--track), summed over tracking tasks",
}


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # no display: render to memory
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    _plt().close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{html.escape(alt)}">'


def _table(frame: pd.DataFrame, css: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for row in frame.itertuples(index=False):
        cells = "".join(f"<td>{html.escape('' if _missing(v) else str(v))}</td>" for v in row)
        rows.append(f"<tr>{cells}</tr>")
    return (
        f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


# ---- data --------------------------------------------------------------------------------


BIN_STEPS_S = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600)


def bin_size_for(duration_s: float, bins: int = 60) -> float:
    """A round bin width that cuts ``duration_s`` into at most about ``bins`` bins."""
    return next((step for step in BIN_STEPS_S if step * bins >= duration_s), BIN_STEPS_S[-1])


def class_counts_over_time(
    boxes: pd.DataFrame, frame_times: pd.Series, classes: list[str], bin_s: float
) -> pd.DataFrame:
    """Mean boxes per processed frame, per class and time bin (index: bin start in seconds;
    columns: classes). ``frame_times`` are the timestamps of every processed frame, boxes or not,
    so a bin's mean does not depend on the stride or the bin width."""
    frames_per_bin = (frame_times // bin_s).astype(int).value_counts()
    index = np.arange(int(frame_times.max() // bin_s) + 1) if len(frame_times) else np.zeros(0, int)
    chosen = boxes[boxes["class_name"].isin(classes)]
    counts = (
        chosen.groupby([(chosen["timestamp_s"] // bin_s).astype(int), "class_name"])
        .size()
        .unstack(fill_value=0)
    )
    counts = counts.reindex(index=index, columns=classes, fill_value=0)
    frames = frames_per_bin.reindex(index, fill_value=0).to_numpy()
    means = counts.div(np.where(frames > 0, frames, np.nan), axis=0)
    means.index = index * bin_s
    return means


def throughput_series(points: list[dict], window_s: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """Frames per second over the last ``window_s`` at each timeline sample: (times, rates).
    Frames finish a batch at a time, so a rate between neighbouring samples would saw-tooth."""
    if len(points) < 2:
        return np.zeros(0), np.zeros(0)
    t = np.array([p["t_s"] for p in points], float)
    frames = np.array([p["frames_done"] for p in points], float)
    earlier = np.searchsorted(t, t - window_s, side="left")
    earlier = np.minimum(earlier, np.arange(len(t)) - 1)[1:]
    dt = t[1:] - t[earlier]
    rates = np.divide(frames[1:] - frames[earlier], dt, out=np.zeros_like(dt), where=dt > 0)
    return t[1:], rates


# ---- plots -------------------------------------------------------------------------------


def _plot_counts(counts: pd.Series, *, xlabel: str, title: str, color: str) -> str:
    """Horizontal bars, busiest on top, each labelled with its count."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(counts) + 1))
    bars = ax.barh([str(n) for n in counts.index[::-1]], counts.values[::-1], color=color)
    ax.bar_label(bars, labels=[f"{int(v):,}" for v in counts.values[::-1]], padding=3, fontsize=8)
    ax.set_xlim(0, counts.max() * 1.15)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    return _png(fig)


def _plot_confidence(boxes: pd.DataFrame, classes: list[str], threshold: float | None) -> str:
    """Distribution of the stored boxes' confidences, overall and for the busiest classes."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3))
    bins = np.linspace(0, 1, 41)
    ax.hist(boxes["confidence"], bins=bins, color="#bbb", label="all classes")
    for name in classes:
        ax.hist(
            boxes.loc[boxes["class_name"] == name, "confidence"],
            bins=bins,
            histtype="step",
            linewidth=1.4,
            label=name,
        )
    if threshold is not None:
        ax.axvline(
            threshold, color="#b00020", linestyle="--", linewidth=1, label=f"--conf {threshold:g}"
        )
    ax.set_xlabel("confidence")
    ax.set_ylabel("boxes")
    ax.set_title("Confidence of the stored boxes")
    ax.legend(fontsize=7)
    return _png(fig)


def _plot_classes_over_time(per_video: list[tuple[str, pd.DataFrame, float]]) -> str:
    plt = _plt()
    cols = 2 if len(per_video) > 1 else 1
    rows = -(-len(per_video) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, 2.6 * rows), squeeze=False)
    for ax, (title, table, bin_s) in zip(axes.flat, per_video):
        for name in table.columns:
            ax.plot(
                table.index,
                table[name],
                label=name,
                linewidth=1.4,
                marker="o" if len(table) < 8 else None,
            )
        # names may hold $
        ax.set_title(f"{title} (bins of {bin_s:g} s)", fontsize=9, parse_math=False)
        ax.set_xlabel("video time (s)")
        ax.set_ylabel("boxes per frame")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7, loc="upper right")
    for ax in list(axes.flat)[len(per_video) :]:
        ax.axis("off")
    fig.tight_layout()
    return _png(fig)


def _plot_throughput(points: list[dict]) -> str:
    plt = _plt()
    t, rates = throughput_series(points)
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.plot(t, rates, color="#3b7dd8", linewidth=1.2, label="frames/s")
    ax.set_xlabel("run time (s)")
    ax.set_ylabel("frames per second")
    ax2 = ax.twinx()
    ax2.plot(
        [p["t_s"] for p in points],
        [p["frames_done"] for p in points],
        color="#999",
        linewidth=1,
        label="frames done",
    )
    ax2.set_ylabel("frames done")
    ax.set_title("Throughput over time")
    return _png(fig)


def _plot_stages(stage_s: dict) -> str | None:
    if not any(stage_s.values()):
        return None
    plt = _plt()
    names = list(stage_s)
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(names) + 1))
    ax.barh(names[::-1], [stage_s[n] for n in names][::-1], color="#e0873a")
    ax.set_xlabel("seconds (summed over workers)")
    ax.set_title("Time per stage")
    return _png(fig)


def _plot_memory(memory: dict, points: list[dict]) -> str | None:
    plt = _plt()
    roles = [("driver", memory.get("driver")), ("coordinator", memory.get("coordinator"))]
    roles += [(f"actor {i}", m) for i, m in enumerate(memory.get("actors") or [])]
    if memory.get("tracker_peak_bytes"):
        roles.append(("tracking task", {"peak_bytes": memory["tracker_peak_bytes"]}))
    roles = [(name, m) for name, m in roles if m]
    if not roles:
        return None
    has_timeline = any(p.get("coordinator_rss") for p in points)
    fig, axes = plt.subplots(
        1, 2 if has_timeline else 1, figsize=(12 if has_timeline else 7, 3.2), squeeze=False
    )
    ax = axes[0][0]
    x = np.arange(len(roles))
    for k, (key, label) in enumerate(
        (
            ("start_bytes", "start"),
            ("warm_bytes", "warm"),
            ("peak_bytes", "peak"),
            ("last_bytes", "last"),
        )
    ):
        values = [(m.get(key) or 0) / MIB for _, m in roles]
        ax.bar(x + (k - 1.5) * 0.2, values, width=0.2, label=label)
    ax.set_xticks(x, [name for name, _ in roles], fontsize=8)
    ax.set_ylabel("RSS (MiB)")
    ax.set_title("Memory per role")
    ax.legend(fontsize=7)
    if has_timeline:
        ax = axes[0][1]
        t = [p["t_s"] for p in points]
        ax.plot(t, [(p.get("driver_rss") or np.nan) / MIB for p in points], label="driver")
        ax.plot(
            t, [(p.get("coordinator_rss") or np.nan) / MIB for p in points], label="coordinator"
        )
        actors = max((len(p.get("actor_rss") or []) for p in points), default=0)
        for i in range(actors):
            series = [((p.get("actor_rss") or [None] * actors)[i] or np.nan) / MIB for p in points]
            ax.plot(t, series, label=f"actor {i}")
        ax.set_xlabel("run time (s)")
        ax.set_ylabel("RSS (MiB)")
        ax.set_title("Memory over time")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def _plot_gpu(points: list[dict]) -> str | None:
    samples = [
        (p["t_s"], np.mean(p["gpu_utilization_percent"]))
        for p in points
        if p.get("gpu_utilization_percent")
    ]
    if not samples:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.plot([s[0] for s in samples], [s[1] for s in samples], color="#2a9d4b")
    ax.set_ylim(0, 100)
    ax.set_xlabel("run time (s)")
    ax.set_ylabel("GPU busy (%)")
    ax.set_title("GPU utilization (NVML, mean over GPUs)")
    return _png(fig)


# ---- sample frames ---------------------------------------------------------------------------

SAMPLE_SEARCH_FRAMES = 300  # a sample is the busiest frame among a video's first processed frames
SAMPLE_WIDTH = 640


def sample_frame(path: str, boxes: pd.DataFrame, frame_index: int) -> str | None:
    """One source frame with its stored boxes drawn, as an embedded JPEG (None when the source
    cannot be read any more: moved, remote, or cut shorter than it was)."""
    import cv2

    from pipeline.media.decode import DecodeError, VideoDecoder
    from pipeline.views.render import BoxPainter

    if is_uri(path) or not Path(path).is_file():
        return None
    try:
        # converts only frames 0 and frame_index
        decoder = VideoDecoder(path, stride=max(frame_index, 1))
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
            f"<figure>{_img(uri, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>"
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


def _key_values(pairs: list[tuple[str, object]]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in pairs
    )
    return f'<table class="kv">{rows}</table>'


def _duration(frames: int, fps: float) -> str:
    return f"{frames / fps:.1f}" if frames and not _missing(fps) and fps > 0 else ""


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
        ("every Nth frame (--stride)", settings["stride"]),
        ("boxes per frame at most (--max-det)", settings.get("max_det")),
        ("tracking (--track)", "on" if settings.get("track") else "off"),
        ("batch size", settings["batch_size"]),
        ("actors", run.get("placement", {}).get("num_actors")),
        ("settings hash", run.get("settings_hash")),
    ]
    return _key_values(pairs)


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
        _img(
            _plot_counts(
                per_class.head(15),
                xlabel="tracks (all videos)",
                title="Tracks per class",
                color="#2a9d8f",
            ),
            "tracks per class",
        )
        + f"<h3>The {len(top)} longest tracks</h3>"
        + _table(table)
    )


# ---- the page ----------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1200px;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}th,td{border:1px solid #ddd;padding:4px 8px;text-align:left}
th{background:#f3f3f3}td{max-width:520px;overflow-wrap:anywhere}
.failed td:nth-child(2){color:#b00020;font-weight:600}.note{color:#666;font-size:13px}
.kv td:first-child{font-weight:600}img{max-width:100%;margin:8px 0}
figure{display:inline-block;margin:0 12px 12px 0;vertical-align:top}figcaption{font-size:12px;color:#555}
.ok{color:#2a7a3b}.partial{color:#b26a00}.failedst{color:#b00020}
"""


def _section(title: str, anchor: str, body: str) -> str:
    return f'<h2 id="{anchor}">{html.escape(title)}</h2>\n{body}'


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
            _section(
                "Sample frames",
                "samples",
                '<p class="note">The frame with the most boxes early in each of the busiest videos, '
                "drawn from the stored boxes.</p>" + samples,
            )
        )

    parts.append(_classes_section(root, boxes, names, run, top_classes, max_videos, bin_s))
    tracks = _tracks_section(root, names)
    if tracks:
        parts.append(_section("Tracks", "tracks", tracks))
    from pipeline.views.report_analysis import (
        analysis_section,
    )  # it draws with this module's helpers

    analyses = analysis_section(root, names)
    if analyses:
        parts.append(analyses)

    parts.append(_run_section(run))
    parts.append(_failures_section(videos))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Run report: {html.escape(root.absolute().name)}</title><style>{CSS}</style></head><body>\n"
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
    parts.append(_section("Summary", "summary", _key_values(summary)))
    if run:
        parts.append(_section("Settings", "settings", _settings(run, known_classes_of(root))))
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
                f"{r.width}x{r.height}" if not _missing(r.width) else ""
                for r in videos.itertuples()
            ],
            "fps": videos["fps"].map(lambda v: "" if _missing(v) else f"{v:.2f}"),
        }
    )
    if "num_tracks" in videos and videos["num_tracks"].notna().any():
        shown["tracks"] = videos["num_tracks"]
    body = _table(shown)
    for status in ("ok", "partial", "failed"):  # colour the status column
        body = body.replace(f"<td>{status}</td>", f"<td>{_status_cell(status)}</td>")
    parts.append(
        _section(
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
        parts.append(_section("Classes", "classes", "<p>No detections.</p>"))
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
            _section(
                "Classes",
                "classes",
                _img(
                    _plot_counts(
                        totals.head(max(top_classes, 10)),
                        xlabel="boxes (all videos)",
                        title="Detections per class",
                        color="#3b7dd8",
                    ),
                    "detections per class",
                )
                + _img(_plot_confidence(boxes, busiest[:3], threshold), "confidence histogram")
                + "<h3>Classes over time</h3>"
                + note
                + _img(_plot_classes_over_time(per_video), "classes over time"),
            )
        )
    return parts[0]


def _run_section(run: dict | None) -> str:
    parts: list[str] = []
    if run is None:
        parts.append(
            _section(
                "Run", "run", "<p>No run.json: the run was interrupted before its summary.</p>"
            )
        )
    else:
        points = (run.get("timeline") or {}).get("points") or []
        run_parts = []
        if len(points) >= 2:
            run_parts.append(_img(_plot_throughput(points), "throughput over time"))
        else:
            run_parts.append('<p class="note">The run was too short for a throughput timeline.</p>')
        stage_rows = pd.DataFrame(
            [
                {"stage": k, "seconds": f"{v:.2f}", "what": STAGE_NOTES.get(k, "")}
                for k, v in run["stage_s"].items()
            ]
        )
        stages_plot = _plot_stages(run["stage_s"])
        run_parts.append(
            "<h3>Time per stage</h3>"
            + (_img(stages_plot, "time per stage") if stages_plot else "")
            + _table(stage_rows)
        )
        memory_plot = _plot_memory(run["memory"], points)
        if memory_plot:
            run_parts.append("<h3>Memory per role</h3>" + _img(memory_plot, "memory per role"))
        gpu_plot = _plot_gpu(points)
        gpus = run.get("gpu") or []
        if gpu_plot or gpus:
            rows = "".join(
                f"<tr><td>actor {i}</td><td>{g.get('mean_utilization_percent', float('nan')):.0f}%</td>"
                f"<td>{(g.get('peak_memory_used_bytes') or 0) / MIB:.0f} MiB</td></tr>"
                for i, g in enumerate(gpus)
            )
            run_parts.append(
                "<h3>GPU</h3>"
                + (_img(gpu_plot, "GPU utilization") if gpu_plot else "")
                + f"<table><tr><th>actor</th><th>mean utilization</th><th>peak memory</th></tr>{rows}</table>"
            )
        else:
            run_parts.append(
                '<h3>GPU</h3><p class="note">No GPU in this run (device '
                f"{html.escape(str(run['model']['device']))}).</p>"
            )
        parts.append(_section("Throughput, stages, memory, GPU", "run", "\n".join(run_parts)))
    return parts[0]


def _failures_section(videos: pd.DataFrame) -> str:
    parts: list[str] = []
    bad = videos[videos["status"] != "ok"]
    if bad.empty:
        parts.append(_section("Failures", "failures", "<p>None: every video is complete.</p>"))
    else:
        parts.append(
            _section(
                "Failures",
                "failures",
                _table(bad[["path", "status", "frames_processed", "error"]], css="failed"),
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
