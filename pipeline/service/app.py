"""The service on Ray Serve: a FastAPI ingress (the router of ``api.py``) and a detector
deployment that holds the warm model and batches concurrent ``POST /detect`` requests
(``@serve.batch``). Jobs run as Ray jobs, so they outlive the service.

``build_app`` is the import path for ``serve run`` (see ``deploy/serve.yaml``);
``python -m pipeline serve`` starts the same app on a running Ray cluster (``serve_until_stopped``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading

import numpy as np
import ray
from fastapi import FastAPI
from ray import serve

from pipeline.errors import UsageError
from pipeline.service.api import build_fastapi_app
from pipeline.service.detect import ImageBoxes, ImageDetector
from pipeline.service.settings import ServiceSettings, read_token_file


# No CPU reserved for the service's replicas: the jobs plan their actors from the cluster's CPUs,
# and replicas holding CPUs would leave those actors waiting for ever on a small machine.
@serve.deployment(max_ongoing_requests=256, ray_actor_options={"num_cpus": 0})
class DetectorDeployment:
    """The warm model. Concurrent requests are gathered into one batch (up to
    ``settings.max_batch`` images, waiting at most ``settings.batch_wait_s`` for it to fill)."""

    def __init__(self, settings: ServiceSettings):
        self.detector = ImageDetector(settings)
        self.detect_batch.set_max_batch_size(settings.max_batch)
        self.detect_batch.set_batch_wait_timeout_s(settings.batch_wait_s)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def detect_batch(self, images: list[np.ndarray]) -> list[ImageBoxes]:
        # In a thread: requests keep arriving (and form the next batch) while this one runs.
        return await asyncio.to_thread(self.detector.detect, images)

    async def __call__(self, image: np.ndarray) -> ImageBoxes:
        return await self.detect_batch(image)


@serve.deployment(max_ongoing_requests=256, ray_actor_options={"num_cpus": 0})
@serve.ingress()
class ServiceIngress:
    def __init__(self, settings: ServiceSettings, detector):
        self.settings = settings
        self.detector = detector

    def __serve_build_asgi_app__(self) -> FastAPI:
        async def detect(image: np.ndarray) -> ImageBoxes:
            return await self.detector.remote(image)

        return build_fastapi_app(self.settings, detector=detect)


def service_app(settings: ServiceSettings, *, detector_replicas: int = 1):
    return ServiceIngress.bind(
        settings, DetectorDeployment.options(num_replicas=detector_replicas).bind(settings)
    )


def build_app(args: dict):
    """``serve run deploy/serve.yaml``: the config's ``args`` are the settings' fields
    (``input_roots``/``output_roots`` as lists or ``:``-separated), plus ``token_file``."""
    args = dict(args)
    overrides = {}
    for key in ("input_roots", "output_roots"):
        if key in args:
            value = args.pop(key)
            overrides[key] = tuple(value.split(":") if isinstance(value, str) else value)
    if "token_file" in args:
        overrides["token"] = read_token_file(str(args.pop("token_file")))
    replicas = int(args.pop("detector_replicas", 1))
    overrides.update(args)
    return service_app(ServiceSettings.from_env(**overrides), detector_replicas=replicas)


class ClusterNotRunning(UsageError, ConnectionError):
    """No Ray cluster at the address the service was told to join. Exit status 2."""


def serve_until_stopped(
    settings: ServiceSettings, *, address: str, host: str, port: int, detector_replicas: int = 1
) -> None:
    """Run the service on the Ray cluster at ``address`` until SIGINT or SIGTERM; its jobs go on."""
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except ConnectionError:
        raise ClusterNotRunning(
            "no Ray cluster is running: start one with `ray start --head` (see --help)"
        ) from None
    stop = threading.Event()
    # Both set explicitly: a service started in the background of a script inherits an ignored
    # SIGINT, and Ctrl-C or `kill -INT` would then do nothing.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(
            service_app(settings, detector_replicas=detector_replicas),
            name="pipeline",
            route_prefix="/",
        )
        print(
            f"serving on http://{host}:{port} (API docs: /docs); Ctrl-C stops the service, "
            "not its jobs",
            flush=True,
        )
        while not stop.wait(0.5):
            pass
    finally:
        try:
            serve.delete("pipeline")
        except Exception:
            pass
        ray.shutdown()
