"""How many actors, what each reserves, and how many videos are open at once, from what the
cluster has. A pure function of the cluster's resources, so that it is tested without Ray."""

from __future__ import annotations

import math
from dataclasses import dataclass

from pipeline.config import RunConfig

DECODER_NUM_CPUS = 0.5  # keep in step with pipeline.distributed.workers.decode_video
OPEN_VIDEOS_PER_GPU_ACTOR = 4  # a GPU eats batches faster than one decoder makes them


class PlacementError(ValueError):
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


def plan(config: RunConfig, total_cpus: float, total_gpus: float) -> Placement:
    want_gpu = config.device == "cuda" or (config.device == "auto" and total_gpus >= 1)
    if config.device == "cuda" and total_gpus < 1:
        raise PlacementError("--device cuda was asked for, but the Ray cluster has no GPUs; use --device cpu or auto")
    if want_gpu:
        num_actors = config.num_actors or int(total_gpus)
        if num_actors > total_gpus:
            raise PlacementError(
                f"--num-actors {num_actors} needs {num_actors} GPUs but the cluster has {total_gpus:g}; "
                "lower --num-actors or add GPU nodes"
            )
        cpu_bound = int((total_cpus - num_actors) / DECODER_NUM_CPUS)
        open_videos = config.max_open_videos or max(1, min(OPEN_VIDEOS_PER_GPU_ACTOR * num_actors, cpu_bound))
        return Placement(num_actors, 1.0, 1.0, None, open_videos)

    num_actors = config.num_actors or 1
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
