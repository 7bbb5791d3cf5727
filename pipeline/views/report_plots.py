"""The report's data shaping (time bins, class counts over time, throughput) and its plots, each
a PNG data URI (``views.html_parts``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.views.html_parts import png, pyplot

MIB = 1024 * 1024


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


def plot_counts(counts: pd.Series, *, xlabel: str, title: str, color: str) -> str:
    """Horizontal bars, busiest on top, each labelled with its count."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(counts) + 1))
    bars = ax.barh([str(n) for n in counts.index[::-1]], counts.values[::-1], color=color)
    ax.bar_label(bars, labels=[f"{int(v):,}" for v in counts.values[::-1]], padding=3, fontsize=8)
    ax.set_xlim(0, counts.max() * 1.15)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    return png(fig)


def plot_confidence(boxes: pd.DataFrame, classes: list[str], threshold: float | None) -> str:
    """Distribution of the stored boxes' confidences, overall and for the busiest classes."""
    plt = pyplot()
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
    return png(fig)


def plot_classes_over_time(per_video: list[tuple[str, pd.DataFrame, float]]) -> str:
    plt = pyplot()
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
    return png(fig)


def plot_throughput(points: list[dict]) -> str:
    plt = pyplot()
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
    return png(fig)


def plot_stages(stage_s: dict) -> str | None:
    if not any(stage_s.values()):
        return None
    plt = pyplot()
    names = list(stage_s)
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(names) + 1))
    ax.barh(names[::-1], [stage_s[n] for n in names][::-1], color="#e0873a")
    ax.set_xlabel("seconds (summed over workers)")
    ax.set_title("Time per stage")
    return png(fig)


def plot_memory(memory: dict, points: list[dict]) -> str | None:
    plt = pyplot()
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
    return png(fig)


def plot_gpu(points: list[dict]) -> str | None:
    samples = [
        (p["t_s"], np.mean(p["gpu_utilization_percent"]))
        for p in points
        if p.get("gpu_utilization_percent")
    ]
    if not samples:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.plot([s[0] for s in samples], [s[1] for s in samples], color="#2a9d4b")
    ax.set_ylim(0, 100)
    ax.set_xlabel("run time (s)")
    ax.set_ylabel("GPU busy (%)")
    ax.set_title("GPU utilization (NVML, mean over GPUs)")
    return png(fig)
