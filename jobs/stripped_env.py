"""Make a virtualenv that holds only what a bare GPU machine has, to prove that the GPU kit runs
there: torch (with torchvision and their dependencies), pyarrow, psutil, opencv-python-headless,
nvidia-ml-py and numpy, linked from the environment this script runs in. No ray, no ultralytics,
no PyAV: those come as the kit's carried wheels.

    python jobs/stripped_env.py kit-venv
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import re
import subprocess
import sys
from pathlib import Path

BARE_MACHINE = (
    "torch",
    "torchvision",
    "pyarrow",
    "psutil",
    "opencv-python-headless",
    "nvidia-ml-py",
    "numpy",
)


def _requirements(name: str) -> list[str]:
    out = []
    for req in md.distribution(name).requires or []:
        if "extra ==" in req:
            continue
        marker_ok = True
        if ";" in req:
            from packaging.markers import Marker

            marker_ok = Marker(req.split(";", 1)[1]).evaluate()
        if marker_ok:
            out.append(re.split(r"[\s;<>=!~\[(]", req, maxsplit=1)[0])
    return out


def closure(names) -> set[str]:
    """The distributions ``names`` need, recursively (those installed here)."""
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        try:
            canonical = md.distribution(name).metadata["Name"].lower()
        except md.PackageNotFoundError:
            continue
        if canonical in seen:
            continue
        seen.add(canonical)
        todo.extend(_requirements(name))
    return seen


def top_level_entries(name: str) -> set[str]:
    """The files and folders a distribution puts directly in site-packages."""
    entries = set()
    for f in md.distribution(name).files or []:
        first = Path(str(f)).parts[0]
        if first != ".." and not first.endswith(".pth") and first != "__pycache__":
            entries.add(first)
    return entries


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("venv", type=Path)
    args = parser.parse_args()
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(args.venv)], check=True)
    site = next(args.venv.glob("lib/python3*/site-packages"))
    here = Path(md.distribution("torch").locate_file(""))
    dists = sorted(closure(BARE_MACHINE))
    for dist in dists:
        for entry in top_level_entries(dist):
            source = here / entry
            if source.exists() and not (site / entry).exists():
                (site / entry).symlink_to(source)
    for forbidden in ("ray", "ultralytics", "av"):
        if (site / forbidden).exists():
            raise SystemExit(f"{forbidden} would be in the stripped environment")
    print(f"{args.venv}: {len(dists)} distributions linked: {', '.join(dists)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
