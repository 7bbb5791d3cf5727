"""The Ray calls of the runtime's logic, in one place: a video worker's (start a decoder, cancel
it, probe a video, track a finished one) and the coordinator's (restart a hung worker). The
logic reaches Ray only through this object (and the actor handles it is given), so tests drive
it with fakes (``tests/fakes.py``)."""

from __future__ import annotations

from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from pipeline.media.decode import DecodeSpec
from pipeline.runtime.faults import FaultPlan
from pipeline.runtime.tasks import decode_video, probe_video, track_video

# An actor call that failed because of the actor (dead, restarting, unreachable), not its work.
ACTOR_LOST = (RayActorError, ActorDiedError, ActorUnavailableError)


def error_cause(exc: BaseException) -> BaseException:
    """What a task raised, inside Ray's wrapper (``RayTaskError.cause``)."""
    cause = getattr(exc, "cause", None)
    return cause if cause is not None else exc


class RayCalls:
    def __init__(self, faults: FaultPlan | None = None, *, decoders_here: bool = False):
        """``decoders_here``: decoders run on this node (a video worker's: its frames never
        cross the network); else wherever Ray has room."""
        self.faults = faults
        self.node_id = ray.get_runtime_context().get_node_id()
        # Tracking tasks run on this node: the files they read and write are here.
        self._on_this_node = NodeAffinitySchedulingStrategy(node_id=self.node_id, soft=False)
        self._decoder_options: dict = (
            {"scheduling_strategy": self._on_this_node} if decoders_here else {}
        )

    def start_decoder(self, path: str, spec: DecodeSpec, buffer: int):
        """A decoder task's stream of refs; it runs at most ``buffer`` batches ahead."""
        return decode_video.options(
            _generator_backpressure_num_objects=2 * buffer, **self._decoder_options
        ).remote(path, spec, self.faults)

    @staticmethod
    def cancel(task) -> None:
        try:
            ray.cancel(task, force=True)
        except Exception:  # already finished, or its worker is gone
            pass

    @staticmethod
    def probe(path: str):
        return probe_video.remote(path)

    def track(
        self, untracked: str, tracked: str, tracks: str, video_id: str, names: dict[int, str]
    ):
        task: Any = track_video  # Ray's stubs count its arguments without the defaults
        return task.options(scheduling_strategy=self._on_this_node).remote(
            untracked, tracked, tracks, video_id, names, self.faults
        )

    @staticmethod
    def release_actor(handle) -> None:
        """End an actor for good (no restart): its resources go back to the cluster."""
        try:
            ray.kill(handle, no_restart=True)
        except Exception:  # already gone
            pass

    @staticmethod
    def node_cpus() -> dict[str, float]:
        """Each live node's CPUs (a call to Ray's control store: not on an event loop)."""
        return {n["NodeID"]: n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n["Alive"]}

    @staticmethod
    def seen_from(node_id: str, path: str):
        """An awaitable: whether ``path`` exists as seen from ``node_id``."""
        from pipeline.runtime.shared_output import exists_on

        return exists_on(node_id, path)

    @staticmethod
    def restart_actor(handle) -> None:
        """Kill a hung actor; Ray starts it again (unlimited restarts)."""
        try:
            ray.kill(handle, no_restart=False)
        except Exception:  # already dead or restarting: Ray is on it
            pass
