"""The driver: connect to Ray, start the actors and the coordinator, show progress, write run.json."""

from __future__ import annotations

import json
import logging
import os
import platform
import signal
import threading
import time
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from pipeline.config import RunConfig
from pipeline.model_ref import ModelLoadError, check_model_available, model_fingerprint
from pipeline.errors import Interrupted, UsageError
from pipeline.faults import FaultPlan
from pipeline.inputs import VideoSource, expand_inputs
from pipeline.monitoring import PeakRss, Timeline
from pipeline.placement import Placement, PlacementError, plan
from pipeline.progress import ProgressDisplay
from pipeline.results_writer import remove_stale_temp_files
from pipeline.storage import RemoteOutput, is_uri, redact, staging_dir_for

log = logging.getLogger(__name__)

ACTOR_START_TIMEOUT_S = 900  # loading weights on a cold node (and downloading them) can take minutes
PASSED_ENV = ("YOLO_OFFLINE", "YOLO_CONFIG_DIR", "ULTRALYTICS_SAFE_LOAD")


def _prepare_output(output: str) -> tuple[Path, RemoteOutput | None]:
    """The local folder files are written to, and the remote output they are published to (if any)."""
    if is_uri(output):
        try:
            remote = RemoteOutput(output)
            remote.check_writable()
        except (OSError, ValueError) as exc:
            raise UsageError(f"output {redact(output)} is not writable: {redact(str(exc))}") from exc
        staging = staging_dir_for(output)
        (staging / "detections").mkdir(parents=True, exist_ok=True)
        (staging / "videos.parquet").unlink(missing_ok=True)
        remote.pull("videos.parquet", staging / "videos.parquet")  # resume from what the remote has
        return staging, remote
    path = Path(output).expanduser().absolute()
    try:
        (path / "detections").mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"output directory {output} is not writable: {exc.strerror or exc}") from exc
    return path, None


def _connect(address: str | None) -> bool:
    """Join or start Ray; returns whether this call started it (and so must shut it down)."""
    if ray.is_initialized():
        return False
    env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
    if address is None and os.environ.get("RAY_ADDRESS"):
        env = {}  # inside `ray job submit`: the job's runtime env already applies, and Ray refuses to merge
    ray.init(
        address=address,
        runtime_env={"env_vars": env} if env else None,
        logging_level=logging.WARNING,
        log_to_driver=True,
    )
    return True


def _start_actors(config: RunConfig, placement: Placement, faults: FaultPlan | None) -> list:
    from pipeline.distributed.workers import YoloActor

    actor_config = config.replace(cpu_threads=placement.cpu_threads)
    return [
        YoloActor.options(num_gpus=placement.actor_num_gpus, num_cpus=placement.actor_num_cpus).remote(
            actor_config, faults
        )
        for _ in range(placement.num_actors)
    ]


def _wait_for_actors(actors: list, stop: threading.Event) -> list[dict]:
    refs = [a.ready.remote() for a in actors]
    deadline = time.monotonic() + ACTOR_START_TIMEOUT_S
    try:
        while ray.wait(refs, num_returns=len(refs), timeout=0.5)[1]:
            if stop.is_set():
                raise Interrupted(signal.SIGTERM)
            if time.monotonic() > deadline:
                raise ray.exceptions.GetTimeoutError()
        facts = ray.get(refs)
    except ray.exceptions.GetTimeoutError:
        raise RuntimeError(
            f"the {len(actors)} YoloActor(s) did not start within {ACTOR_START_TIMEOUT_S} s; this may mean the "
            "cluster does not have enough free resources (see `ray status`)"
        ) from None
    except ray.exceptions.RayActorError as exc:
        cause = str(exc)
        for line in cause.splitlines()[::-1]:
            if "ModelLoadError" in line or "RuntimeError" in line:
                raise ModelLoadError(line.split(": ", 1)[-1].strip()) from None
        raise
    return facts


def _write_run_json(output: Path, record: dict) -> None:
    temp = output / ".tmp-run.json"
    temp.write_text(json.dumps(record, indent=2, default=str))
    os.replace(temp, output / "run.json")


def _roles_memory(summary: dict, driver: PeakRss) -> dict:
    actors = [a["memory"] for a in summary["actors"] if a]
    return {
        "driver": driver.as_dict(),
        "coordinator": summary["coordinator_memory"],
        "actors": actors,
        "actor_peak_bytes": max((a["peak_bytes"] for a in actors), default=None),
        "tracker_peak_bytes": summary.get("tracker_peak_bytes"),  # tracking tasks (--track), at their end
    }


def run(
    inputs: list[str],
    *,
    output: str,
    config: RunConfig | None = None,
    address: str | None = None,
    progress: bool = True,
    faults: FaultPlan | None = None,
) -> dict:
    """Detect objects in every frame of ``inputs`` and write them under ``output``.

    Returns the run summary (also written to ``output/run.json``); ``summary["exit_code"]`` is the
    command line's exit status. Raises ``UsageError`` for bad inputs or options and
    ``Interrupted`` on SIGINT/SIGTERM, after stopping cleanly.
    """
    config = config or RunConfig()
    driver_memory = PeakRss()
    out, remote = _prepare_output(output)
    sources, warnings = expand_inputs(inputs)
    for w in warnings:
        log.warning(w)
    try:
        check_model_available(config.model)
    except ModelLoadError as exc:
        raise UsageError(str(exc)) from None
    model = str(Path(config.model).absolute()) if Path(config.model).exists() else config.model
    config = config.replace(model=model, model_fingerprint=model_fingerprint(model))
    removed = remove_stale_temp_files(out)
    if removed:
        log.info("removed %d temporary files left by an interrupted run", removed)

    started_ray = _connect(address)
    actors, coordinator = [], None
    terminated = threading.Event()

    def on_sigterm(signum, frame):
        # Only a flag: an exception raised here could surface inside Ray's C++ calls, which turn
        # it into a SystemError. The progress loop below checks the flag twice a second.
        terminated.set()

    # Signal handlers can only be set from the main thread (the API may be called from others).
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous_sigterm = signal.signal(signal.SIGTERM, on_sigterm) if in_main_thread else None
    started = time.time()
    display = ProgressDisplay(enabled=progress)
    try:
        resources = ray.cluster_resources()
        try:
            placement = plan(config, resources.get("CPU", 0), resources.get("GPU", 0))
        except PlacementError as exc:
            raise UsageError(str(exc)) from None
        config = config.replace(max_open_videos=placement.max_open_videos)
        actors = _start_actors(config, placement, faults)
        coordinator = _start_coordinator(out, config, actors, faults, remote)  # starts while the models load
        facts = _wait_for_actors(actors, terminated)
        pending = coordinator.run.remote(sources, facts[0])
        timeline = Timeline()
        while True:
            ready, _ = ray.wait([pending], timeout=0.5)
            if terminated.is_set():
                raise Interrupted(signal.SIGTERM)
            driver_memory.sample()
            try:
                progress_now = ray.get(coordinator.progress.remote(), timeout=10)
                display.update(progress_now)
                _sample_timeline(timeline, progress_now, driver_memory)
            except ray.exceptions.GetTimeoutError:
                pass
            if ready:
                break
        summary = ray.get(pending)
        display.close()
        record = _run_record(config, placement, facts, sources, summary, driver_memory, started, address)
        record["timeline"] = {"interval_s": timeline.interval_s, "points": timeline.points}
        _write_run_json(out, record)
        if remote:
            remote.publish(out / "run.json", "run.json")
        return record
    except KeyboardInterrupt:
        raise Interrupted(signal.SIGINT) from None
    finally:
        display.close()
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous_sigterm)
        for handle in [coordinator, *actors]:
            if handle is not None:
                try:
                    ray.kill(handle)
                except Exception:
                    pass
        remove_stale_temp_files(out)  # what the killed coordinator was writing; complete videos stay
        if started_ray:
            ray.shutdown()


def _sample_timeline(timeline: Timeline, progress: dict, driver_memory: PeakRss) -> None:
    """Frames done, work in flight, memory per role and GPU use, about once a second."""
    actors = progress.get("actors") or []
    gpu_util = [g["utilization_percent"] for a in actors if a and a.get("gpu") for g in a["gpu"]]
    gpu_mem = [g["memory_used_bytes"] for a in actors if a and a.get("gpu") for g in a["gpu"]]
    timeline.add(
        progress["elapsed_s"],
        frames_done=progress["frames_done"],
        videos_done=progress["videos_done"],
        in_flight=progress["in_flight"],
        driver_rss=driver_memory.last,
        coordinator_rss=progress.get("coordinator_rss"),
        actor_rss=[a["rss"] if a else None for a in actors],
        gpu_utilization_percent=gpu_util or None,
        gpu_memory_used_bytes=gpu_mem or None,
    )


def _start_coordinator(out: Path, config: RunConfig, actors, faults, remote: RemoteOutput | None):
    from pipeline.distributed.coordinator import Coordinator

    # The coordinator writes the output files, so it lives on the driver's node (whose disk
    # ``--output`` names), and it is an async actor so that thousands of awaits cost no threads.
    here = ray.get_runtime_context().get_node_id()
    return Coordinator.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False),
        max_concurrency=1000,
    ).remote(str(out), config, actors, faults, remote.uri if remote else None)


def _run_record(config, placement, facts, sources: list[VideoSource], summary, driver_memory, started, address) -> dict:
    counts = summary["counts"]
    statuses = summary["statuses"]
    this_run = [statuses.get(s.video_id) for s in sources]
    bad = sum(1 for s in this_run if s in ("failed", "partial"))
    elapsed = time.time() - started
    processing = summary["elapsed_s"]
    gpus = [a["gpu"] for a in summary["actors"] if a and a.get("gpu")]
    return {
        "exit_code": 3 if bad else 0,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "elapsed_s": elapsed,
        "settings": config.to_dict(),
        "settings_hash": config.settings_hash(),
        "placement": placement.__dict__,
        "model": {k: facts[0][k] for k in ("device", "half", "rect", "model_stride")},
        "ray": {"version": ray.__version__, "address": address or "local"},
        "host": {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()},
        "totals": {
            "videos": len(sources),
            "videos_ok": this_run.count("ok"),
            "videos_partial": this_run.count("partial"),
            "videos_failed": this_run.count("failed"),
            "videos_skipped": counts["videos_skipped"],
            "frames": counts["frames_done"],
            "detections": counts["boxes"],
            "batches_retried": counts["batches_retried"],
            "decoder_retries": counts["decoder_retries"],
            "duplicate_batches_dropped": counts["duplicate_batches_dropped"],
        },
        "throughput": {
            "frames_per_s": counts["frames_done"] / processing if processing > 0 else 0.0,
            "processing_s": processing,
        },
        "stage_s": summary["stage_s"],
        "backpressure": {
            "peak_batches_in_flight": summary["peak_batches_in_flight"],
            "limit": summary["window_limit"],
            "peak_open_decoders": counts["peak_open_decoders"],
            "max_open_videos": placement.max_open_videos,
        },
        "memory": _roles_memory(summary, driver_memory),
        "gpu": gpus or None,
        "actors": [dict(stats or {}, node_id=f["node_id"]) for stats, f in zip(summary["actors"], facts)],
    }
