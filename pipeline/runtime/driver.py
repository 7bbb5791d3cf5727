"""The driver: connect to Ray, start the video workers and the coordinator, feed it the backlog,
show progress, write run.json."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import signal
import threading
import time
from collections.abc import Iterator
from itertools import islice

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from pipeline.config import ConfigError, RunConfig
from pipeline.errors import (
    Interrupted,
    RunStalled,
    StartupError,
    UsageError,
)
from pipeline.inference.engines import resolve as resolve_engine
from pipeline.inference.model_ref import ModelLoadError, resolve_classes
from pipeline.locations import redact
from pipeline.media.source import VideoSource
from pipeline.output.outcomes import RunCounts
from pipeline.output.progress import ProgressDisplay, ProgressFile, RunProgress
from pipeline.output.run_record import RunRecord
from pipeline.output.store import OutputStore
from pipeline.output.writer import remove_stale_temp_files
from pipeline.plan.placement import (
    Placement,
    PlacementError,
    decodes_on_own_node,
    wanted_device,
)
from pipeline.plan.placement import plan as plan_placement
from pipeline.plan.planning import RunPlan, first_letterbox_shapes, fold_manifest_log
from pipeline.runtime.assignment import videos_per_worker
from pipeline.runtime.faults import FaultPlan
from pipeline.runtime.messages import ActorSample, ActorStartFailure, CoordinatorSummary, ModelFacts
from pipeline.runtime.monitoring import PeakRss, Timeline

log = logging.getLogger(__name__)

# loading weights on a cold node (and downloading them) can take minutes

ACTOR_START_TIMEOUT_S = 900
# an actor killed once while starting (by the node, a chaos test) is restarted by Ray and asked
# again; one whose process dies this many times will not load
ACTOR_START_DEATHS = 3
PASSED_ENV = ("YOLO_OFFLINE", "YOLO_CONFIG_DIR", "ULTRALYTICS_SAFE_LOAD")


def _connect(address: str | None) -> bool:
    """Join or start Ray; returns whether this call started it (and so must shut it down)."""
    if ray.is_initialized():
        return False
    env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
    if address is None and os.environ.get("RAY_ADDRESS"):
        env = {}  # inside `ray job submit`: the job's runtime env already applies, and Ray refuses to merge
    # Ray 2.60 warns on every start that token authentication is on (it is, and stays on); the
    # run's own output is what a user needs to read.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
        logging.ERROR
    )
    # Ctrl-C in the middle of ray.init() leaves some of Ray's processes running for good, so it
    # is held until Ray is up, then honoured (the caller shuts Ray down cleanly). A terminal's
    # Ctrl-C also reaches Ray's own processes, and Ray then logs the failures it causes (a
    # dashboard that did not start): those messages are held too, and dropped if so.
    held = []
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = (
        signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
        if in_main_thread
        else None
    )
    with _held_ray_logs() as ray_logs:
        try:
            ray.init(
                address=address,
                runtime_env={"env_vars": env} if env else None,
                logging_level=logging.WARNING,
                log_to_driver=True,
            )
        finally:
            if in_main_thread:
                signal.signal(signal.SIGINT, previous)
        if held:
            ray_logs.clear()
            ray.shutdown()
            raise KeyboardInterrupt
    return True


@contextlib.contextmanager
def _held_ray_logs():
    """Ray's log records are kept back while the block runs, then shown, unless the block
    cleared them or raised."""
    records: list[logging.LogRecord] = []
    handlers = logging.getLogger("ray").handlers

    def hold(record: logging.LogRecord) -> bool:
        records.append(record)
        return False

    for handler in handlers:
        handler.addFilter(hold)
    try:
        yield records
    finally:
        for handler in handlers:
            handler.removeFilter(hold)
    for record in records:
        logging.getLogger(record.name).handle(record)


def _start_workers(
    config: RunConfig,
    placement: Placement,
    faults: FaultPlan | None,
    warm_shapes: tuple,
    store: OutputStore,
) -> list:
    """The video workers (YoloActors that decode, infer and write their own videos)."""
    from pipeline.runtime.video_worker import VideoWorker

    worker_config = config.replace(cpu_threads=placement.cpu_threads)
    resources = dict(num_gpus=placement.actor_num_gpus, num_cpus=placement.actor_num_cpus)
    root, remote = str(store.layout.root), store.remote_uri
    return [
        VideoWorker.options(**resources).remote(worker_config, faults, warm_shapes, root, remote)
        for _ in range(placement.num_actors)
    ]


def _wait_for_actors(actors: list, stop: threading.Event) -> list[ModelFacts]:
    """Each actor's model facts once it has loaded. An actor whose process dies after loading
    is asked again (Ray restarts it); one that dies ``ACTOR_START_DEATHS`` times is a failed start."""
    refs = [a.ready.remote() for a in actors]
    deaths = [0] * len(actors)
    facts: list = [None] * len(actors)
    deadline = time.monotonic() + ACTOR_START_TIMEOUT_S
    while any(f is None for f in facts):
        if stop.is_set():
            raise Interrupted(signal.SIGTERM)
        if time.monotonic() > deadline:
            raise StartupError(
                f"the {len(actors)} YoloActor(s) did not start within {ACTOR_START_TIMEOUT_S} s; this may mean the "
                "cluster does not have enough free resources (see `ray status`)"
            )
        waiting = [ref for ref, f in zip(refs, facts) if f is None]
        done, _ = ray.wait(waiting, num_returns=len(waiting), timeout=0.5)
        for ref in done:
            i = refs.index(ref)
            try:
                facts[i] = ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                deaths[i] += 1
                if deaths[i] >= ACTOR_START_DEATHS:
                    raise StartupError(
                        f"a YoloActor's process died while loading the model ({type(exc).__name__}); "
                        "see the actor's log in the Ray dashboard"
                    ) from None
                refs[i] = actors[i].ready.remote()
    for fact in facts:
        if isinstance(fact, ActorStartFailure):
            raise (ModelLoadError if fact.usage else StartupError)(fact.message)
    return facts


class _BacklogFeeder(threading.Thread):
    """Walks the backlog (stat of each file, a list file line by line) and hands it to the
    coordinator a chunk at a time. The coordinator's queue is bounded, so the walk keeps only a
    little ahead of the run: the driver's memory does not grow with the backlog."""

    CHUNK = 500

    def __init__(self, coordinator, videos: Iterator[VideoSource]):
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


def _warm_decoders(count: int) -> None:
    """Start the decoders' worker processes (and their imports) while the models load; nothing
    waits for them."""
    from pipeline.runtime.tasks import warm_decoder

    for _ in range(count):
        warm_decoder.remote()


def _place_decoders(coordinator, facts: list[ModelFacts], placement: Placement) -> None:
    """Each video worker's decoders on its own node where the node has CPUs for them."""
    node_cpus = {n["NodeID"]: n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n["Alive"]}
    nodes = [f.node_id for f in facts]
    here = decodes_on_own_node(nodes, node_cpus, placement.actor_num_cpus)
    for node in sorted({n for n, h in zip(nodes, here) if not h}):
        log.warning(
            "node %s has no CPU left for decoders beside its video workers: their videos are "
            "decoded on other nodes (their frames cross the network)",
            node[:12],
        )
    ray.get(coordinator.set_local_decoding.remote(here))


def _engine_used(config: RunConfig, facts: list[ModelFacts]) -> RunConfig:
    """The engine the actors really run (an export that failed fell back to torch): it is what the
    settings hash and run.json record. One warning line per distinct reason."""
    for reason in dict.fromkeys(f.engine_fallback for f in facts if f.engine_fallback):
        log.warning("%s", reason)
    engines = [f.engine for f in facts]
    if len(set(engines)) > 1:
        log.warning(
            "the actors run different engines (%s); the run records %s",
            ", ".join(sorted(set(engines))),
            engines[0],
        )
    return config.replace(resolved_engine=engines[0])


def _startup_figures(
    started: float, ray_ready: float, actors_ready: float, summary: CoordinatorSummary
) -> dict:
    """Seconds from the command (planning's start) to Ray up, to the actors ready, to the first
    batch done; and from the actors ready to the first batch done."""
    first = summary.first_batch_done_at
    return {
        "ray_ready_s": ray_ready - started,
        "actors_ready_s": actors_ready - started,
        "first_batch_done_s": first - started if first else None,
        "actors_ready_to_first_batch_s": first - actors_ready if first else None,
    }


def _roles_memory(summary: CoordinatorSummary, driver: PeakRss) -> dict:
    actors = [a.memory for a in summary.actors if a]
    return {
        "driver": driver.as_dict(),
        "coordinator": summary.coordinator_memory,
        "actors": actors,
        "actor_peak_bytes": max((a["peak_bytes"] for a in actors), default=None),
        # tracking tasks (--track), at their end
        "tracker_peak_bytes": summary.tracker_peak_bytes,
    }


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
        self.coordinator = None
        self.feeder: _BacklogFeeder | None = None
        self.started_ray = False
        self.driver_memory = PeakRss()
        self.timeline = Timeline()
        self.progress_file = ProgressFile(plan.local_output)
        self.terminated = threading.Event()
        self.last_progress: RunProgress | None = None
        self._previous_sigterm = None
        self._sigterm_handled = False

    def _on_sigterm(self, signum, frame) -> None:
        # Only a flag: an exception raised here could surface inside Ray's C++ calls, which turn
        # it into a SystemError. The progress loop checks the flag twice a second.
        self.terminated.set()

    def start(self) -> None:
        """Ray, the actors (their models loaded), the coordinator, and the feeder of the backlog."""
        plan, faults = self.plan, self.faults
        self.started_ray = _connect(self.address)
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
        self.actors = _start_workers(
            config, placement, faults, first_letterbox_shapes(plan.todo, config), plan.store
        )
        # starts while the models load; the user's --max-open-videos is shared out among the
        # workers, not the planned one
        open_per_worker = videos_per_worker(self.config.max_open_videos, len(self.actors))
        self.coordinator = _start_coordinator(
            plan.store, config, self.actors, faults, open_per_worker
        )
        _warm_decoders(placement.max_open_videos)
        self.facts = _wait_for_actors(self.actors, self.terminated)
        self.actors_ready_at = time.time()
        if plan.store.remote_uri is None:
            from pipeline.runtime.shared_output import check_output_shared

            check_output_shared(plan.store.layout.root, [f.node_id for f in self.facts])
        _place_decoders(self.coordinator, self.facts, placement)
        config = _engine_used(config, self.facts)
        ray.get(self.coordinator.set_config.remote(config))
        if not config.classes_resolved:  # class names that only the loaded model could check
            config = config.replace(classes=resolve_classes(config.classes, self.facts[0].names))
            ray.get(self.coordinator.set_config.remote(config))
        self.config = config
        self.pending = self.coordinator.run.remote(self.facts[0])
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

    def record(self, summary: CoordinatorSummary) -> dict:
        """Write the run's record (``run.json``, ``runs/``) and return it."""
        self.display.close()
        plan = self.plan
        record = _run_record(
            self.config, self.placement, self.facts, plan, summary, self.driver_memory, self.address
        )
        record.details["startup"] = _startup_figures(
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
            _run_totals(plan, counts, self.config.track),
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
        _no_terminal_reset_at_exit()


def _no_terminal_reset_at_exit() -> None:
    """Ray's CLI logger calls ``colorama.init()`` when imported, whose exit hook writes a stray
    ``ESC[0m`` after the run's summary on a terminal. The run prints no colours to reset."""
    try:
        import atexit

        import colorama.initialise

        atexit.unregister(colorama.initialise.reset_all)
    except Exception:  # another colorama, or none: nothing registered
        pass


def _sample_timeline(timeline: Timeline, progress: RunProgress, driver_memory: PeakRss) -> None:
    """Frames done, work in flight, memory per role and GPU use, about once a second."""
    actors: tuple[ActorSample | None, ...] = progress.actors
    gpu_util = [g["utilization_percent"] for a in actors if a and a.gpu for g in a.gpu]
    gpu_mem = [g["memory_used_bytes"] for a in actors if a and a.gpu for g in a.gpu]
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


def _start_coordinator(store: OutputStore, config: RunConfig, workers, faults, open_per_worker):
    from pipeline.runtime.control import ControlCoordinator

    # On the driver's node (a head node may offer no CPU: it asks for none), and an async actor
    # so that thousands of awaits cost no threads.
    here = ray.get_runtime_context().get_node_id()
    return ControlCoordinator.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False),
        max_concurrency=1000,
    ).remote(str(store.layout.root), config, workers, faults, store.remote_uri, open_per_worker)


def _run_totals(plan: RunPlan, counts: RunCounts, track: bool) -> dict:
    totals = {
        "videos": plan.walk.count,
        "videos_ok": counts.videos_ok,
        "videos_partial": counts.videos_partial,
        "videos_failed": counts.videos_failed,
        "videos_skipped": plan.skipped + counts.videos_skipped,
        "frames": counts.frames_recorded,
        "detections": counts.boxes_recorded,
        "tracks": counts.tracks if track else None,
        "decoder_retries": counts.decoder_retries,
        "duplicate_batches_dropped": counts.duplicate_batches_dropped,
        "actors_hung": counts.actors_hung,
        "videos_split": counts.videos_split,  # long videos decoded in parallel segments
        "segments": counts.segments,
        # where batches were decoded against their worker's node, the forward passes that
        # mixed videos, videos handed on after their worker died
        "batches_decoded_on_worker_node": counts.batches_decoded_here,
        "batches_decoded_elsewhere": counts.batches_decoded_elsewhere,
        "mixed_batches": counts.mixed_batches,
        "videos_reassigned": counts.videos_reassigned,
        "commits_refused": counts.commits_refused,
    }
    return totals


def _actor_records(summary: CoordinatorSummary, facts: list[ModelFacts]) -> list[dict]:
    processing = summary.elapsed_s
    return [
        dict(
            stats.as_dict() if stats else {},
            node_id=f.node_id,
            # time in the engine over the run's wall time: how busy it was kept
            busy_share=stats.busy_s / processing if stats and processing > 0 else None,
        )
        for stats, f in zip(summary.actors, facts)
    ]


def _per(cpu_s: float, count: int) -> float | None:
    return 1000 * cpu_s / count if count else None


def _coordinator_figures(summary: CoordinatorSummary) -> dict:
    """The control plane's CPU per video and per hand-out: what sets the ceiling of a run
    (``python -m pipeline bench --contenders control-plane``)."""
    counts = summary.counts
    return {
        "cpu_s": summary.cpu_s,
        "batches": counts.batches_done,
        "handouts": counts.handouts,
        "cpu_ms_per_batch": _per(summary.cpu_s, counts.batches_done),
        "cpu_ms_per_video": _per(summary.cpu_s, counts.videos_done),
        "cpu_ms_per_handout": _per(summary.cpu_s, counts.handouts),
    }


def _run_record(
    config: RunConfig,
    placement: Placement,
    facts: list[ModelFacts],
    plan: RunPlan,
    summary: CoordinatorSummary,
    driver_memory: PeakRss,
    address: str | None,
) -> RunRecord:
    counts = summary.counts
    processing = summary.elapsed_s
    gpus = [a.gpu for a in summary.actors if a and a.gpu]
    totals = _run_totals(plan, counts, config.track)
    details = {
        "placement": placement.__dict__,
        "model": facts[0].model_record()
        | {"engine_export_s": {k: v for f in facts for k, v in f.engine_export_s.items()}},
        "ray": {"version": ray.__version__, "address": redact(address) if address else "local"},
        "host": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
        },
        "throughput": {
            "frames_per_s": counts.frames_done / processing if processing > 0 else 0.0,
            "processing_s": processing,
        },
        "stage_s": summary.stage_s,
        "coordinator": _coordinator_figures(summary),
        "backpressure": {
            "peak_batches_in_flight": summary.peak_batches_in_flight,
            "limit": summary.window_limit,
            "peak_open_decoders": counts.peak_open_decoders,
            "max_open_videos": placement.max_open_videos,
        },
        "memory": _roles_memory(summary, driver_memory),
        "gpu": gpus or None,
        "actors": _actor_records(summary, facts),
    }
    return RunRecord(
        plan.started,
        config.to_dict(),
        config.settings_hash(),
        totals,
        did_work=True,
        details=details,
    )
