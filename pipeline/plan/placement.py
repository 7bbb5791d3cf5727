"""How many actors, what each reserves, and how many videos are open at once, from what the
cluster has. A pure function of the cluster's resources, so that it is tested without Ray."""

from __future__ import annotations

import math
from dataclasses import dataclass

from pipeline.config import RunConfig, engine_traits
from pipeline.errors import UsageError

DECODER_NUM_CPUS = 0.5  # keep in step with pipeline.runtime.tasks.decode_video
OPEN_VIDEOS_PER_GPU_ACTOR = 4  # a GPU eats batches faster than one decoder makes them


def default_cpu_actors(total_cpus: float) -> int:
    """CPU actors when none are asked for. Several single-threaded actors beat one multi-threaded
    one on few cores: intra-op threads wait on each other at every layer, and a decoder that takes
    a core stalls all of them. Measured on 2 cores with yolo11n at batch 16 (docs/BENCHMARKS.md):
    two 1-thread actors 16.2-16.4 frames/s, one 2-thread actor 12.9-13.9. On bigger machines
    2 threads per actor keeps the memory of one model copy per core in check."""
    threads = 1 if total_cpus <= 4 else 2
    return max(1, int(total_cpus // threads))


class PlacementError(UsageError, ValueError):
    """The cluster cannot host what was asked for; the message says what to change."""


@dataclass(frozen=True)
class Placement:
    num_actors: int
    actor_num_gpus: float
    actor_num_cpus: float
    cpu_threads: int | None  # torch threads per CPU actor (None on GPU actors)
    max_open_videos: int


def _floor_half(x: float) -> float:
    return math.floor(x * 2) / 2


def runs_its_own_threads(config: RunConfig) -> bool:
    """Exported CPU runtimes (OpenVINO, ONNX Runtime) size their own thread pools to the machine,
    so one actor per node is right for them; several would fight over the cores."""
    return engine_traits(config.effective_engine).sizes_own_threads


def wanted_device(config: RunConfig, total_gpus: float) -> str:
    """ "cuda" when the actors will reserve GPUs, else "cpu"."""
    return (
        "cuda"
        if config.device == "cuda" or (config.device == "auto" and total_gpus >= 1)
        else "cpu"
    )


def plan(config: RunConfig, total_cpus: float, total_gpus: float) -> Placement:
    if wanted_device(config, total_gpus) == "cuda":
        # --num-actors is the most the run asks for: GPUs that are not there yet are a number to
        # grow into (an autoscaler adds GPU nodes when the workers ask for them); the run starts
        # on the first worker ready and each other joins when it is placed.
        num_actors = config.num_actors or int(total_gpus)
        if num_actors < 1:
            raise PlacementError(
                "--device cuda was asked for, but the Ray cluster has no GPUs; use --device cpu or auto, "
                "or pass --num-actors N to wait for an autoscaler to add GPU nodes"
            )
        cpu_bound = int((total_cpus - num_actors) / DECODER_NUM_CPUS)
        open_videos = config.max_open_videos or max(
            num_actors, min(OPEN_VIDEOS_PER_GPU_ACTOR * num_actors, cpu_bound)
        )
        return Placement(num_actors, 1.0, 1.0, None, open_videos)

    num_actors = config.num_actors or (
        1 if runs_its_own_threads(config) else default_cpu_actors(total_cpus)
    )
    open_videos = config.max_open_videos or num_actors
    # Whatever the decoders do not reserve goes to the actors, whose torch threads match their share.
    left = total_cpus - DECODER_NUM_CPUS * open_videos
    per_actor = _floor_half(left / num_actors)
    if per_actor < 0.5:
        raise PlacementError(
            f"{total_cpus:g} CPUs cannot host {num_actors} CPU actors and {open_videos} decoders; "
            "lower --num-actors or --max-open-videos"
        )
    threads = config.cpu_threads or max(1, round(per_actor))
    return Placement(num_actors, 0.0, per_actor, threads, open_videos)


def decodes_on_own_node(
    actor_nodes: list[str], node_cpus: dict[str, float], actor_num_cpus: float
) -> list[bool]:
    """Per video worker, whether its node has CPUs left for decoders
    beside the workers placed on it: a node without any would hold its workers' decoders back
    for ever, so theirs run wherever Ray has room (their frames then cross the network)."""
    on_node: dict[str, int] = {}
    for node in actor_nodes:
        on_node[node] = on_node.get(node, 0) + 1
    spare = {
        node: node_cpus.get(node, 0.0) - count * actor_num_cpus for node, count in on_node.items()
    }
    return [spare[node] >= DECODER_NUM_CPUS for node in actor_nodes]
