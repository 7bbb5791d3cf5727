"""A run's start-up, for the driver: the video workers (their models loaded, asked again when
one dies while loading), their decoders' placement, the engine they really run, and the
coordinator on the driver's node."""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from pipeline.config import RunConfig
from pipeline.errors import Interrupted, StartupError
from pipeline.inference.model_ref import ModelLoadError
from pipeline.output.store import OutputStore
from pipeline.plan.placement import Placement, decodes_on_own_node
from pipeline.runtime.faults import FaultPlan
from pipeline.runtime.messages import ActorStartFailure, ModelFacts

log = logging.getLogger(__name__)

# loading weights on a cold node (and downloading them) can take minutes
ACTOR_START_TIMEOUT_S = 900
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


def wait_for_workers(actors: list, stop: threading.Event) -> list[ModelFacts]:
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


def warm_decoders(count: int) -> None:
    """Start the decoders' worker processes (and their imports) while the models load; nothing
    waits for them."""
    from pipeline.runtime.tasks import warm_decoder

    for _ in range(count):
        warm_decoder.remote()


def place_decoders(coordinator, facts: list[ModelFacts], placement: Placement) -> None:
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


def start_coordinator(store: OutputStore, config: RunConfig, workers, faults, open_per_worker):
    from pipeline.runtime.coordinator import Coordinator

    actor: Any = Coordinator  # a Ray actor class
    # On the driver's node (a head node may offer no CPU: it asks for none), and an async actor
    # so that thousands of awaits cost no threads.
    here = ray.get_runtime_context().get_node_id()
    return actor.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False),
        max_concurrency=1000,
    ).remote(str(store.layout.root), config, workers, faults, store.remote_uri, open_per_worker)
