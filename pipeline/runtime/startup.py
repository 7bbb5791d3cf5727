"""A run's start-up, for the driver: the video workers asked for (the run starts once the first
has loaded its model; the others join as each is ready), the engine they really run, and the
coordinator on the driver's node."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from pipeline.config import RunConfig
from pipeline.errors import Interrupted, StartupError
from pipeline.inference.model_ref import ModelLoadError
from pipeline.output.store import OutputStore
from pipeline.plan.placement import Placement
from pipeline.runtime.faults import FaultPlan
from pipeline.runtime.messages import ActorStartFailure, ModelFacts

log = logging.getLogger(__name__)

# how long a run waits for its first video worker: loading weights on a cold node (and
# downloading them), or an autoscaler adding the first GPU node, can take minutes
ACTOR_START_TIMEOUT_S = 900
# the run names what it waits for (workers not placed yet) after this long
PENDING_NOTICE_S = 20.0
# once the first worker is ready, those ready within this much more start with it (workers that
# load side by side finish together): a small backlog is then not all handed to the first
START_GRACE_S = 2.0
# an actor killed once while starting (by the node, a chaos test) is restarted by Ray and asked
# again; one whose process dies this many times will not load
ACTOR_START_DEATHS = 3


def start_workers(
    config: RunConfig,
    placement: Placement,
    faults: FaultPlan | None,
    warm_shapes: tuple,
    store: OutputStore,
) -> list:
    """The video workers (YoloActors that decode, infer and write their own videos)."""
    from pipeline.runtime.video_worker import VideoWorker

    actor: Any = VideoWorker  # a Ray actor class (Ray's stubs do not see its options)
    worker_config = config.replace(cpu_threads=placement.cpu_threads)
    resources = dict(num_gpus=placement.actor_num_gpus, num_cpus=placement.actor_num_cpus)
    root, remote = str(store.layout.root), store.remote_uri
    return [
        actor.options(**resources).remote(worker_config, faults, warm_shapes, root, remote)
        for _ in range(placement.num_actors)
    ]


def wait_for_first_workers(
    actors: list, stop: threading.Event, pending: Callable[[int], str]
) -> dict[int, ModelFacts]:
    """The model facts of the workers ready once the first one is, by index: the run starts on
    them, and each other joins when it is ready (``CoordinatorFleet._join``). A worker whose
    process dies while loading is asked again (Ray restarts it); one that dies
    ``ACTOR_START_DEATHS`` times is left out. Those ready within ``START_GRACE_S`` of the first
    start with it. ``pending(count)`` says what the run waits for:
    logged after ``PENDING_NOTICE_S``, and the error when no worker is ready after
    ``ACTOR_START_TIMEOUT_S`` (or all are left out)."""
    refs = {i: actor.ready.remote() for i, actor in enumerate(actors)}
    deaths = dict.fromkeys(refs, 0)
    facts: dict[int, ModelFacts] = {}
    started, told = time.monotonic(), False
    grace_ends = None  # the first is ready: the others finishing with it start with it
    while refs and (grace_ends is None or time.monotonic() < grace_ends):
        if stop.is_set():
            raise Interrupted(signal.SIGTERM)
        waited = time.monotonic() - started
        if waited > ACTOR_START_TIMEOUT_S and not facts:
            raise StartupError(
                f"no video worker started within {ACTOR_START_TIMEOUT_S} s: {pending(len(refs))} "
                "(see `ray status`)"
            )
        if waited > PENDING_NOTICE_S and not told and not facts:
            log.warning("%s", pending(len(refs)))
            told = True
        wait_s = 0.5 if grace_ends is None else max(0.0, grace_ends - time.monotonic())
        done, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=wait_s)
        by_ref = {ref: i for i, ref in refs.items()}
        for ref in done:
            i = by_ref[ref]
            try:
                answer = ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                deaths[i] += 1
                if deaths[i] < ACTOR_START_DEATHS:
                    refs[i] = actors[i].ready.remote()
                    continue
                del refs[i]  # left out (if none is left, the start fails below)
                log.warning("a video worker died %d times while loading: %s", deaths[i], exc)
                continue
            if isinstance(answer, ActorStartFailure):
                raise (ModelLoadError if answer.usage else StartupError)(answer.message)
            facts[i] = answer
            del refs[i]
            if grace_ends is None:
                grace_ends = time.monotonic() + START_GRACE_S
    if not facts:
        raise StartupError(
            "the video workers' processes died while loading the model; see their logs in the "
            "Ray dashboard"
        )
    return facts


def warm_decoders(count: int) -> None:
    """Start the decoders' worker processes (and their imports) while the models load; nothing
    waits for them."""
    from pipeline.runtime.tasks import warm_decoder

    for _ in range(count):
        warm_decoder.remote()


def engine_used(config: RunConfig, facts: list[ModelFacts]) -> RunConfig:
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


def start_coordinator(
    store: OutputStore, config: RunConfig, workers, faults, open_per_worker, placement: Placement
):
    from pipeline.runtime.coordinator import Coordinator

    actor: Any = Coordinator  # a Ray actor class
    # On the driver's node (a head node may offer no CPU: it asks for none), and an async actor
    # so that thousands of awaits cost no threads.
    here = ray.get_runtime_context().get_node_id()
    return actor.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False),
        max_concurrency=1000,
    ).remote(
        str(store.layout.root),
        config,
        workers,
        faults,
        store.remote_uri,
        open_per_worker,
        placement,
    )
