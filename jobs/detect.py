"""Entry point for ``ray job submit``: the same options as ``python -m pipeline run``.

    ray job submit --working-dir . -- python jobs/detect.py videos/ --output /data/out --model yolo11n.pt

Inside a job, Ray sets RAY_ADDRESS, so the pipeline joins the cluster instead of starting one.
"""

import sys
from pathlib import Path

# the working dir, when not pip-installed
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.cli.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
