"""``pipeline.run``: plan the run without Ray, then process the videos that need it on Ray."""

from __future__ import annotations

import logging
import os

from pipeline.config import RunConfig
from pipeline.errors import UsageError
from pipeline.output.progress import ProgressFile
from pipeline.plan.planning import finish_without_workers, plan_run
from pipeline.runtime.faults import FaultPlan

log = logging.getLogger(__name__)


def run(
    inputs,
    *,
    output,
    config: RunConfig | None = None,
    address: str | None = None,
    progress: bool = True,
    faults: FaultPlan | None = None,
) -> dict:
    """Detect objects in every frame of ``inputs`` and write them under ``output``.

    Returns the run's record (``output/runs/<time>.json``; also ``output/run.json`` when videos
    were processed); ``record["exit_code"]`` is the command line's exit status and
    ``record["did_work"]`` says whether anything needed processing. Raises ``UsageError``,
    ``InputError`` or ``ConfigError`` for a mistake in the inputs or options, before anything
    starts, and ``Interrupted`` on SIGINT/SIGTERM after stopping cleanly.
    """
    # OutputInUse (a UsageError) here when another run is using the output folder.
    plan = plan_run(
        [os.fspath(i) for i in inputs],
        os.fspath(output),
        config or RunConfig(),
        local_cluster=address is None,
    )
    for warning in plan.warnings:
        log.warning(warning)
    try:
        if not plan.needs_workers:  # every video complete (or unreadable): no Ray, no model
            record = finish_without_workers(plan)
        else:
            from pipeline.runtime.driver import execute  # imports Ray: only when there is work

            record = execute(plan, address=address, progress=progress, faults=faults)
        ProgressFile(plan.local_output).finished(record)
        return record
    except UsageError:  # ConfigError, ModelLoadError and InputError are UsageErrors too
        plan.remove_created_output()  # a mistake found only once the model loaded: leave no folder
        raise
    finally:
        plan.release()
