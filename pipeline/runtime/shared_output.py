"""Video workers write each video on the node of their worker, so the output folder
must be one every such node sees (a shared mount). Checked before any video starts: a probe file
written here, looked for by a task on each worker's node; a node that cannot see it makes the
run a usage error, in one line, instead of videos that land on one node's private disk."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from pipeline.errors import UsageError
from pipeline.output.layout import TEMP_PREFIX


class OutputNotShared(UsageError):
    """The output folder is not visible from every node that runs a video worker."""


def unseen_by(
    probe: Path, nodes: Iterable[str], sees: Callable[[str, list[str]], list[bool]]
) -> list[str]:
    """The nodes (of ``nodes``) from which ``probe`` cannot be seen; ``sees(path, nodes)``
    answers for each node."""
    nodes = sorted(set(nodes))
    return [node for node, seen in zip(nodes, sees(str(probe), nodes)) if not seen]


def check_output_shared(root: Path, nodes: Iterable[str]) -> None:
    nodes = list(nodes)
    if len(set(nodes)) < 2:
        return  # one node: its own disk is shared with itself
    probe = root / f"{TEMP_PREFIX}shared-probe-{uuid.uuid4().hex}"
    probe.write_text("")
    try:
        unseen = unseen_by(probe, nodes, _sees_on_nodes)
    finally:
        probe.unlink(missing_ok=True)
    if unseen:
        raise OutputNotShared(
            f"--output {root} is not visible from {len(unseen)} of the {len(set(nodes))} nodes "
            "that run video workers (each video is written on its worker's "
            "node): give a folder every node mounts, or object storage (s3://...)"
        )


@ray.remote(num_cpus=0, max_retries=1)
def _exists(path: str) -> bool:
    return os.path.exists(path)


def exists_on(node_id: str, path: str):
    """A ref to whether ``path`` exists as seen from ``node_id``."""
    strategy = NodeAffinitySchedulingStrategy(node_id, soft=False)
    return _exists.options(scheduling_strategy=strategy).remote(path)


def _sees_on_nodes(path: str, nodes: list[str]) -> list[bool]:
    return ray.get([exists_on(node, path) for node in nodes], timeout=120)
