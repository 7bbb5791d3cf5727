"""What Ray itself charges a coordinator per message, on this machine: the floor under the
coordination benchmark's CPU per batch.

    python docs/bench/ray_message_floor.py

An async actor (as the coordinator is) measures its own process CPU time per message for:
  - an actor call with a batch's frames passed by reference and a small dict returned, awaited one
    at a time and eight at a time (the coordinator keeps several in flight);
  - a streaming generator of two items per batch (a header, then the frames), as the decoders send.
"""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import ray

FRAMES = np.zeros((32, 96, 160, 3), np.uint8)  # a batch of 32 small frames


@ray.remote
class Sink:
    def infer(self, frames, geometry):
        return {
            "counts": np.zeros(32, np.int32),
            "rows": np.zeros((160, 6), np.float32),
            "infer_s": 0.0,
        }


@ray.remote(num_returns="streaming")
def two_items_per_batch(batches: int):
    for seq in range(batches):
        yield {"seq": seq, "frame_indices": np.arange(32)}
        yield FRAMES


@ray.remote(num_cpus=0)
class Caller:
    async def calls(self, sink, n: int, in_flight: int) -> float:
        ref = ray.put(FRAMES)
        slots = asyncio.Semaphore(in_flight)

        async def one():
            async with slots:
                await sink.infer.remote(ref, None)

        cpu = time.process_time()
        await asyncio.gather(*[one() for _ in range(n)])
        return 1000 * (time.process_time() - cpu) / n

    async def stream(self, batches: int) -> float:
        cpu = time.process_time()
        async for ref in two_items_per_batch.remote(batches):
            await ref
        return 1000 * (time.process_time() - cpu) / batches


def main() -> None:
    ray.init(include_dashboard=False, logging_level="ERROR")
    try:
        sink, caller = Sink.remote(), Caller.remote()
        ray.get(sink.infer.remote(None, None))
        print(
            json.dumps(
                {
                    "actor_call_ms_cpu_one_in_flight": ray.get(caller.calls.remote(sink, 2000, 1)),
                    "actor_call_ms_cpu_eight_in_flight": ray.get(
                        caller.calls.remote(sink, 2000, 8)
                    ),
                    "stream_two_items_ms_cpu_per_batch": ray.get(caller.stream.remote(1000)),
                },
                indent=2,
            )
        )
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
