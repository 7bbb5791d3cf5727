"""The driver: one run as the user's process holds it: Ray (``ray_session``), the video workers
and the coordinator (``startup``), the backlog fed to the coordinator, progress and the timeline,
SIGTERM, and the run's record at the end (``pipeline.output.run_record``)."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator
from itertools import islice
from typing import Any

import ray

from pipeline.config import ConfigError
from pipeline.errors import (
    Interrupted,
    RunStalled,
    UsageError,
)
from pipeline.inference.engines import resolve as resolve_engine
from pipeline.inference.model_ref import resolve_classes
from pipeline.locations import redact
from pipeline.output.outcomes import RunCounts
from pipeline.output.progress import ProgressDisplay, ProgressFile, RunProgress
from pipeline.output.run_record import (
    CoordinatorSummary,
    RunRecord,
    processed_run_record,
    run_totals,
    startup_figures,
)
from pipeline.output.store import OutputStore
from pipeline.output.writer import remove_stale_temp_files
from pipeline.plan.placement import (
    PlacementError,
    wanted_device,
)
from pipeline.plan.placement import plan as plan_placement
from pipeline.plan.planning import RunPlan, first_letterbox_shapes, fold_manifest_log
from pipeline.plan.resume import ToProcess
from pipeline.runtime.assignment import videos_per_worker
from pipeline.runtime.faults import FaultPlan
from pipeline.runtime.fleet import PendingNotice, pending_line
from pipeline.runtime.messages import ActorSample
from pipeline.runtime.monitoring import PeakRss, Timeline
from pipeline.runtime.ray_session import connect, no_terminal_reset_at_exit
from pipeline.runtime.startup import (
    PENDING_NOTICE_S,
    engine_used,
    start_coordinator,
    start_workers,
    wait_for_first_workers,
    warm_decoders,
)

log = logging.getLogger(__name__)


class _BacklogFeeder(threading.Thread):
    """Walks the backlog (stat of each file, a list file line by line) and hands it to the
    coordinator a chunk at a time. The coordinator's queue is bounded, so the walk keeps only a
    little ahead of the run: the driver's memory does not grow with the backlog."""

    CHUNK = 500

    def __init__(self, coordinator, videos: Iterator[ToProcess]):
        super().__init__(name="backlog-feeder", daemon=True)
        self.coordinator, self.videos = coordinator, videos
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                chunk = list(islice(self.videos, self.CHUNK))
                if not chunk:
                    ray.get(self.coordinator.backlog_walked.remote())
                    return
                ray.get(self.coordinator.add_videos.remote(chunk))
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which raises it
            if not self.stop.is_set():
                self.error = exc


def _coordinator_died() -> RunStalled:
    return RunStalled(
        "the coordinator's process died (its log is in the Ray dashboard); complete videos are "
        "kept: run the same command again to resume"
    )


def _compact_manifest(store: OutputStore) -> None:
    from pipeline.output.manifest import Manifest

    try:
        fold_manifest_log(store)
    except Exception as exc:  # the log stays; the next run folds it in
        log.warning("could not fold %s into %s: %s", Manifest.LOG_NAME, Manifest.FILE_NAME, exc)


def execute(
    plan: RunPlan,
    *,
    address: str | None = None,
    progress: bool = True,
    faults: FaultPlan | None = None,
) -> dict:
    """Process the videos of ``plan`` on Ray: start (or join) Ray, the actors and the coordinator,
    show progress, and write the run's record. Returns the record."""
    removed = remove_stale_temp_files(plan.local_output) + plan.store.remove_stale_staged()
    if removed:
        log.info("removed %d temporary files left by an interrupted run", removed)
    run = _DriverRun(plan, address, faults, ProgressDisplay(enabled=progress))
    try:
        run.start()
        summary = run.watch()
        return run.record(summary)
    except KeyboardInterrupt:
        raise run.stopped(Interrupted(signal.SIGINT)) from None
    except Interrupted as exc:
        raise run.stopped(exc) from None
    finally:
        run.close()


class _DriverRun:
    """One run's Ray side, as the driver holds it: Ray (joined or started), the actors, the
    coordinator and the backlog feeder; the SIGTERM flag; progress and the timeline."""

    def __init__(
        self, plan: RunPlan, address: str | None, faults: FaultPlan | None, display: ProgressDisplay
    ):
        self.plan, self.address, self.faults, self.display = plan, address, faults, display
        self.config = plan.config
        self.actors: list = []
        self.coordinator: Any = None  # the coordinator's actor handle
        self.feeder: _BacklogFeeder | None = None
        self.started_ray = False
        self.driver_memory = PeakRss()
        self.timeline = Timeline()
        self.progress_file = ProgressFile(plan.local_output)
        self.terminated = threading.Event()
        self.last_progress: RunProgress | None = None
        self._previous_sigterm: Any = None
        self._sigterm_handled = False
        self.pending_notice = PendingNotice(PENDING_NOTICE_S)

    def _on_sigterm(self, signum, frame) -> None:
        # Only a flag: an exception raised here could surface inside Ray's C++ calls, which turn
        # it into a SystemError. The progress loop checks the flag twice a second.
        self.terminated.set()

    def start(self) -> None:
        """Ray, the actors (their models loaded), the coordinator, and the feeder of the backlog."""
        plan, faults = self.plan, self.faults
        self.started_ray = connect(self.address)
        # Signal handlers can only be set from the main thread (the API may be called from
        # others), and after ray.init(), which installs a SIGTERM handler of its own.
        if threading.current_thread() is threading.main_thread():
            self._previous_sigterm = signal.signal(signal.SIGTERM, self._on_sigterm)
            self._sigterm_handled = True
        self.ray_ready_at = time.time()
        resources = ray.cluster_resources()
        # The device and engine "auto" became are part of the settings hash: the coordinator records them.
        try:
            config = resolve_engine(
                self.config, wanted_device(self.config, resources.get("GPU", 0))
            )
            placement = plan_placement(config, resources.get("CPU", 0), resources.get("GPU", 0))
        except (PlacementError, ConfigError) as exc:
            raise UsageError(str(exc)) from None
        config = config.replace(max_open_videos=placement.max_open_videos)
        self.placement = placement
        self.actors = start_workers(
            config,
            placement,
            faults,
            first_letterbox_shapes([t.source for t in plan.todo], config),
            plan.store,
        )
        # starts while the models load; the user's --max-open-videos is shared out among the
        # workers, not the planned one
        open_per_worker = videos_per_worker(self.config.max_open_videos, len(self.actors))
        self.coordinator = start_coordinator(
            plan.store, config, self.actors, faults, open_per_worker, placement
        )
        warm_decoders(placement.max_open_videos)
        ready = wait_for_first_workers(
            self.actors, self.terminated, lambda pending: self._pending_line(pending, 0)
        )
        self.facts = list(ready.values())
        self.actors_ready_at = time.time()  # the first worker's: work starts now
        if plan.store.remote_uri is None:
            from pipeline.runtime.shared_output import check_output_shared

            check_output_shared(plan.store.layout.root, [f.node_id for f in self.facts])
        config = engine_used(config, self.facts)
        ray.get(self.coordinator.set_config.remote(config))
        if not config.classes_resolved:  # class names that only the loaded model could check
            config = config.replace(classes=resolve_classes(config.classes, self.facts[0].names))
            ray.get(self.coordinator.set_config.remote(config))
        self.config = config
        self.pending = self.coordinator.run.remote(self.facts[0], tuple(ready))
        self.feeder = _BacklogFeeder(self.coordinator, plan.videos_to_process())
        self.feeder.start()

    def watch(self) -> CoordinatorSummary:
        """Show progress until the coordinator's run ends; a stuck or dead coordinator, a failed
        walk of the backlog and SIGTERM end the wait. Returns the coordinator's summary."""
        assert self.feeder is not None and self.coordinator is not None
        last_answer = time.monotonic()
        while True:
            ready, _ = ray.wait([self.pending], timeout=0.5)
            if self.terminated.is_set():
                raise Interrupted(signal.SIGTERM)
            if self.feeder.error is not None:
                if isinstance(self.feeder.error, ray.exceptions.RayActorError):
                    raise _coordinator_died() from None
                raise self.feeder.error  # the walk could not go on (a list that became unreadable, say)
            self.driver_memory.sample()
            try:
                progress_now = ray.get(self.coordinator.progress.remote(), timeout=10)
                self.last_progress = progress_now
                last_answer = time.monotonic()
                self.display.update(progress_now)
                self.progress_file.running(progress_now)
                self._tell_pending(progress_now)
                _sample_timeline(self.timeline, progress_now, self.driver_memory)
            except ray.exceptions.GetTimeoutError:
                # Its event loop is stuck (or its node is): no wait in this run is for ever.
                stall_s = self.config.stall_timeout_s
                if not ready and time.monotonic() - last_answer > stall_s:
                    raise RunStalled(
                        f"the coordinator has not answered for {stall_s:.0f} s; "
                        "complete videos are kept: run the same command again to resume"
                    ) from None
            except ray.exceptions.RayActorError:
                raise _coordinator_died() from None
            if ready:
                break
        try:
            return ray.get(self.pending)
        except ray.exceptions.RayActorError:
            raise _coordinator_died() from None

    def _pending_line(self, pending: int, ready: int) -> str:
        placement = self.placement
        demand = {"GPU": placement.actor_num_gpus, "CPU": placement.actor_num_cpus}
        free = ray.available_resources()
        return pending_line(pending, len(self.actors), ready, demand, free)

    def _tell_pending(self, progress: RunProgress) -> None:
        """One line when workers have been waited for a while (and when their number changes):
        what each needs and what the cluster has free."""
        pending, ready = progress.workers_pending, progress.workers_ready
        if self.pending_notice.due(time.monotonic(), pending, ready):
            log.warning("%s", self._pending_line(pending, ready))

    def record(self, summary: CoordinatorSummary) -> dict:
        """Write the run's record (``run.json``, ``runs/``) and return it."""
        self.display.close()
        plan = self.plan
        facts, address = self.facts, self.address
        record = processed_run_record(
            self.config,
            started=plan.started,
            totals=run_totals(plan.walk.count, plan.skipped, summary.counts, self.config.track),
            placement=self.placement,
            model=facts[0].model_record()
            | {"engine_export_s": {k: v for f in facts for k, v in f.engine_export_s.items()}},
            ray={"version": ray.__version__, "address": redact(address) if address else "local"},
            nodes=summary.nodes,
            summary=summary,
            driver_memory=self.driver_memory.as_dict(),
        )
        record.details["startup"] = startup_figures(
            plan.started, self.ray_ready_at, self.actors_ready_at, summary
        )
        record.details["timeline"] = {
            "interval_s": self.timeline.interval_s,
            "points": self.timeline.points,
        }
        return record.save(plan.store)[0]

    def stopped(self, exc: Interrupted) -> Interrupted:
        """A signal stopped the run: its ``runs/`` record (``stopped_by``, what was done by the
        last progress report) and a final ``progress.json`` that says so, written first, before
        the clean-up (``ray job stop`` follows its SIGTERM with a SIGKILL a few seconds later)."""
        plan = self.plan
        # After SIGTERM (``ray job stop``, a scheduler) the coordinator still answers: its counts
        # now. A terminal's Ctrl-C reaches Ray's processes too: the last report stands.
        if self.coordinator is not None and exc.signum == signal.SIGTERM:
            try:
                self.last_progress = ray.get(self.coordinator.progress.remote(), timeout=1)
            except Exception:
                pass
        counts = self.last_progress.counts if self.last_progress else RunCounts()
        record = RunRecord(
            plan.started,
            self.config.to_dict(),
            self.config.settings_hash(),
            run_totals(plan.walk.count, plan.skipped, counts, self.config.track),
            did_work=True,
            stopped_by=exc.signum,
        )
        try:
            written, _ = record.save(plan.store)
            self.progress_file.finished(written)
        except Exception as error:  # the stop goes on; the record is a convenience
            log.warning("could not record the stopped run: %s", error)
        return exc

    def close(self) -> None:
        """However the run ended: Ray's processes of this run killed, temporary files removed,
        the log folded, and Ray shut down if this run started it."""
        self.display.close()
        if self.feeder is not None:
            self.feeder.stop.set()
        # None: a handler set outside Python
        if self._sigterm_handled and self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
        for handle in [self.coordinator, *self.actors]:
            if handle is not None:
                try:
                    ray.kill(handle)
                except Exception:
                    pass
        # what the killed coordinator and workers were writing; complete videos stay
        remove_stale_temp_files(self.plan.local_output)
        try:
            self.plan.store.remove_stale_staged()
        except OSError as exc:  # the next run removes them; readers never see them
            log.warning("could not remove staged parts: %s", exc)
        _compact_manifest(
            self.plan.store
        )  # a run that ended early: its log folded into videos.parquet
        if self.started_ray:
            ray.shutdown()
        no_terminal_reset_at_exit()


def _sample_timeline(timeline: Timeline, progress: RunProgress, driver_memory: PeakRss) -> None:
    """Frames done, work in flight, memory per role and GPU use, about once a second."""
    actors: tuple[ActorSample | None, ...] = progress.actors
    gpu_util = [g.utilization_percent for a in actors if a and a.gpu for g in a.gpu]
    gpu_mem = [g.memory_used_bytes for a in actors if a and a.gpu for g in a.gpu]
    timeline.add(
        progress.elapsed_s,
        frames_done=progress.frames_done,
        videos_done=progress.counts.videos_done,
        in_flight=progress.in_flight,
        driver_rss=driver_memory.last,
        coordinator_rss=progress.coordinator_rss,
        actor_rss=[a.rss if a else None for a in actors],
        gpu_utilization_percent=gpu_util or None,
        gpu_memory_used_bytes=gpu_mem or None,
    )
