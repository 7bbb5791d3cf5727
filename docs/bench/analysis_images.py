"""The two pictures of an analysis in the docs, from a tracked run of people.mp4:

    python -m pipeline run ../shared/data/people.mp4 --output out --model MODEL --track
    python docs/bench/analysis_images.py out ../shared/data/people.mp4

It analyzes two lines and a zone (``analyze``), renders the video with them (``render
--analysis``) and writes ``docs/analysis-frame.jpg`` (frame 150, half size) and
``docs/analysis-report.png`` (the report's Analyses section, shot with headless Chromium).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2

from pipeline.cli.main import main
from pipeline.media.decode import VideoDecoder
from pipeline.views.report import build_report

DOCS = Path(__file__).resolve().parents[1]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    sys.exit("no Chromium found (apt install chromium)")


def main_(out: str, video: str) -> None:
    analyze = ["analyze", out, "--name", "docs", "--classes", "person", "--max-objects", "8"]
    lines = ["--line", "door=960,0,960,1080", "--line", "kerb=0,820,1920,820"]
    assert main([*analyze, *lines, "--zone", "left=0,0,960,0,960,1080,0,1080"]) == 0
    with tempfile.TemporaryDirectory() as tmp:
        rendered = Path(tmp) / "analysis.mp4"
        render = ["render", video, "--results", out, "--output", str(rendered)]
        assert main([*render, "--analysis", "docs", "--end", "5.5", "--no-progress"]) == 0
        frame = next(f for i, _, f in VideoDecoder(str(rendered)).frames() if i == 150)
        cv2.imwrite(
            str(DOCS / "analysis-frame.jpg"),
            cv2.resize(frame, (960, 540)),
            [cv2.IMWRITE_JPEG_QUALITY, 85],
        )
        page = build_report(out)
        body = page[page.index('<h2 id="analyses">') : page.index('<h2 id="run">')]
        # the Analyses section alone, with the report's own head (its styles)
        section = Path(tmp) / "analyses.html"
        section.write_text(page[: page.index("<body>") + 6] + body + "</body></html>")
        subprocess.run(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--virtual-time-budget=10000", "--window-size=900,1420",
             f"--screenshot={DOCS / 'analysis-report.png'}", section.as_uri()],
            check=True, capture_output=True,
        )  # fmt: skip
    print(f"Wrote {DOCS / 'analysis-frame.jpg'} and {DOCS / 'analysis-report.png'}")


if __name__ == "__main__":
    main_(*sys.argv[1:3])
