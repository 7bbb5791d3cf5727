"""The entry point of a service job: ``python -m pipeline run``, once it is this job's turn
(``pipeline.service.queue``: one job at a time)."""

from __future__ import annotations

import os
import sys

from pipeline.cli.main import main as cli_main
from pipeline.service.queue import wait_for_turn


def main(argv: list[str]) -> int:
    lock = wait_for_turn(os.environ.get("PIPELINE_JOB_ID", f"pid{os.getpid()}"))
    try:
        return cli_main(["run", *argv])
    finally:
        lock.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
