"""The HTML of the report's pages, shared by its sections (``report``, ``report_analysis``):
tables, key-value lists, sections, images and matplotlib figures as data URIs, the style sheet."""

from __future__ import annotations

import base64
import html
import io

import numpy as np
import pandas as pd

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


def pyplot():
    """matplotlib's pyplot, drawing to memory (no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png(fig) -> str:
    """A figure as a PNG data URI (the figure is closed)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    pyplot().close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{html.escape(alt)}">'


def missing(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def table(frame: pd.DataFrame, css: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for row in frame.itertuples(index=False):
        cells = "".join(f"<td>{html.escape('' if missing(v) else str(v))}</td>" for v in row)
        rows.append(f"<tr>{cells}</tr>")
    return (
        f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def key_values(pairs: list[tuple[str, object]]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in pairs
    )
    return f'<table class="kv">{rows}</table>'


def section(title: str, anchor: str, body: str) -> str:
    return f'<h2 id="{anchor}">{html.escape(title)}</h2>\n{body}'
