"""The record of a run: ``runs/<UTC start time>.json`` for every run, and ``run.json`` for the
latest run that processed videos (a rerun with nothing to do never wipes the figures of the one
that did). One type for both kinds of run; the readers of ``run.json`` read what it writes."""

from __future__ import annotations

import json
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import EXIT_OK, EXIT_VIDEOS_FAILED
from pipeline.output.layout import OutputLayout, process_unique
from pipeline.output.store import OutputStore
from pipeline.output.writer import durable_replace


def utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


@dataclass
class RunRecord:
    """What every run records. ``details`` holds what a run that processed videos adds
    (placement, model, throughput, time per stage, memory, GPU figures, the timeline, …)."""

    started: float  # wall clock at the command's start
    settings: dict
    settings_hash: str
    totals: dict
    did_work: bool
    details: dict = field(default_factory=dict)
    stopped_by: int | None = None  # the signal that stopped the run (SIGINT, SIGTERM), if one did

    @property
    def exit_code(self) -> int:
        """The command's exit status: 128 + the signal for a stopped run, else 3 when any video
        failed or was only partly readable."""
        if self.stopped_by is not None:
            return 128 + self.stopped_by
        bad = self.totals.get("videos_failed", 0) + self.totals.get("videos_partial", 0)
        return EXIT_VIDEOS_FAILED if bad else EXIT_OK

    # Where a run that processed videos puts these: before the totals, as run.json always had them.
    _BEFORE_TOTALS = ("placement", "model", "ray", "host")

    def as_json(self) -> dict:
        before = {k: self.details[k] for k in self._BEFORE_TOTALS if k in self.details}
        after = {k: v for k, v in self.details.items() if k not in self._BEFORE_TOTALS}
        return {
            "exit_code": self.exit_code,
            "did_work": self.did_work,
            "started_at": utc(self.started),
            "elapsed_s": time.time() - self.started,
            "settings": self.settings,
            "settings_hash": self.settings_hash,
            **({"stopped_by": signal.Signals(self.stopped_by).name} if self.stopped_by else {}),
            **before,
            "totals": self.totals,
            **after,
        }

    def save(self, store: OutputStore) -> tuple[dict, Path]:
        """Write (and publish) the run's own record, and ``run.json`` when it processed videos to
        the end (a stopped run's figures are partial). Returns the record as written, and the
        path of the run's own record."""
        record = self.as_json()
        layout = store.layout
        path = process_unique(layout.path(OutputLayout.run_record_key(self.started)))
        path.parent.mkdir(exist_ok=True)
        text = json.dumps(record, indent=2, default=str)
        latest = self.did_work and self.stopped_by is None
        for target in [path, layout.run_file] if latest else [path]:
            temp = OutputLayout.temp_for(target)
            temp.write_text(text)
            durable_replace(temp, target)
            store.publish(target)
        return record, path
