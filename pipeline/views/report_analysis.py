"""The report's "Analyses" section: for every analysis stored under ``OUT/analysis/``, each line's
crossings by class and direction, and each zone's occupancy over time, dwell histogram and
overcrowded intervals."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from pipeline.analysis.analyze import Analysis, list_analyses, read_analysis
from pipeline.views import html_parts as page


def _line_table(analysis: Analysis, line: str) -> str:
    counts = analysis.line_counts[analysis.line_counts["line"] == line]
    if counts.empty:
        return '<p class="note">No crossings.</p>'
    table = counts.pivot_table(
        index="class_name", columns="direction", values="count", aggfunc="sum", fill_value=0
    ).reindex(columns=["in", "out"], fill_value=0)
    table["total"] = table["in"] + table["out"]
    table = table.sort_values("total", ascending=False).reset_index()
    table.columns = ["class", "in", "out", "total"]
    return page.table(table)


def _plot_occupancy(occupancy: pd.DataFrame, zone: str, names: dict[str, str]) -> str | None:
    """Mean objects inside per bucket (the shortest bucket), one line per video."""
    rows = occupancy[(occupancy["zone"] == zone) & (occupancy["class_name"] == "all")]
    if rows.empty:
        return None
    rows = rows[rows["bucket_s"] == rows["bucket_s"].min()]
    plt = page.pyplot()
    fig, ax = plt.subplots(figsize=(8, 2.8))
    for video_id, series in list(rows.groupby("video_id"))[:8]:
        ax.step(
            series["start_s"],
            series["mean_inside"],
            where="post",
            label=names.get(video_id, video_id),
        )
    ax.set_xlabel("time in the video (s)")
    ax.set_ylabel(f"objects inside (mean per {rows['bucket_s'].iloc[0]:g} s)")
    ax.set_title(f"zone {zone}: occupancy")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7, loc="upper right")
    return page.png(fig)


def _plot_dwell(visits: pd.DataFrame, zone: str) -> str | None:
    dwell = visits.loc[visits["zone"] == zone, "dwell_s"]
    if dwell.empty:
        return None
    plt = page.pyplot()
    fig, ax = plt.subplots(figsize=(8, 2.6))
    ax.hist(dwell, bins=min(30, max(5, len(dwell) // 3)), color="#4c72b0")
    ax.set_xlabel("dwell (s)")
    ax.set_ylabel("visits")
    ax.set_title(f"zone {zone}: time inside per visit (median {dwell.median():.1f} s)")
    return page.png(fig)


def _zone_part(analysis: Analysis, zone, names: dict[str, str]) -> str:
    visits = analysis.zone_visits[analysis.zone_visits["zone"] == zone.name]
    every = analysis.zone_occupancy[
        (analysis.zone_occupancy["zone"] == zone.name)
        & (analysis.zone_occupancy["class_name"] == "all")
    ]
    pairs = [
        ("visits", len(visits)),
        ("tracks", visits["track_id"].nunique() if len(visits) else 0),
        ("median dwell (s)", f"{visits['dwell_s'].median():.1f}" if len(visits) else "–"),
        ("most inside at once", int(every["max_inside"].max()) if len(every) else 0),
    ]
    parts = [page.key_values(pairs)]
    for plot, alt in (
        (_plot_occupancy(analysis.zone_occupancy, zone.name, names), f"zone {zone.name} occupancy"),
        (_plot_dwell(analysis.zone_visits, zone.name), f"zone {zone.name} dwell histogram"),
    ):
        if plot:
            parts.append(page.img(plot, alt))
    if zone.max_objects is not None:
        over = analysis.zone_overcrowding[analysis.zone_overcrowding["zone"] == zone.name]
        title = f"More than {zone.max_objects} inside: {len(over)} intervals"
        shown = over.assign(video=over["video_id"].map(names))[
            ["video", "start_s", "end_s", "peak"]
        ]
        parts.append(
            f"<h4>{html.escape(title)}</h4>"
            + (page.table(shown.head(20).round(2)) if len(over) else "")
        )
    return "".join(parts)


def analysis_section(root: Path, names: dict[str, str]) -> str | None:
    """None when the output has no stored analysis."""
    found = list_analyses(root)
    if not found:
        return None
    parts = [
        '<p class="note">Counted from the stored tracks by <code>python -m pipeline analyze</code> '
        "(no inference). Walking along a line from its first point to its second, "
        "<em>in</em> crosses from right to left.</p>"
    ]
    for name in found:
        analysis = read_analysis(root, name)
        parts.append(f'<h3 id="analysis-{html.escape(name)}">{html.escape(name)}</h3>')
        for line in analysis.spec.lines:
            parts.append(
                f"<h4>line {html.escape(line.name)}</h4>" + _line_table(analysis, line.name)
            )
        for zone in analysis.spec.zones:
            parts.append(
                f"<h4>zone {html.escape(zone.name)}</h4>" + _zone_part(analysis, zone, names)
            )
    return page.section("Analyses", "analyses", "\n".join(parts))
