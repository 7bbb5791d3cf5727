"""What an async Ray actor that does nothing costs in CPU: the floor under the coordinator's CPU.

    python docs/bench/idle_actor.py [--seconds 10]

Measures the actor process's CPU time (all its threads) over ``--seconds`` of idling, twice: bare,
and holding the pipeline's metrics (``PipelineMetrics``, as the coordinator does). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import ray


@ray.remote(num_cpus=0)
class Idle:
    async def cpu(self) -> float:
        return time.process_time()

    async def hold_metrics(self) -> None:
        from pipeline.runtime.metrics import PipelineMetrics

        self.metrics = PipelineMetrics()


def idle_ms_per_s(actor, seconds: float) -> float:
    before = ray.get(actor.cpu.remote())
    time.sleep(seconds)
    return 1000 * (ray.get(actor.cpu.remote()) - before) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        actor = Idle.remote()
        ray.get(actor.cpu.remote())  # started
        bare = idle_ms_per_s(actor, args.seconds)
        ray.get(actor.hold_metrics.remote())
        with_metrics = idle_ms_per_s(actor, args.seconds)
    finally:
        ray.shutdown()
    print(json.dumps({"idle_cpu_ms_per_s": bare, "with_metrics_cpu_ms_per_s": with_metrics}))


if __name__ == "__main__":
    main()
