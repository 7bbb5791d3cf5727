"""The web service: a FastAPI router (jobs, detections, single-image detection) that any FastAPI
app mounts, and a Ray Serve app that serves it with a warm, dynamically batching detector.

``make_router`` and ``ServiceSettings`` import neither Ray Serve nor the model: an existing
FastAPI backend mounts the router with ``app.include_router(make_router(settings))``.

Modules: ``api`` (the router), ``jobs`` (jobs as Ray jobs, their state), ``queue`` (one job at a
time), ``paths`` (confinement to the roots), ``detect`` (images to boxes), ``app`` (the Ray Serve
deployments), ``settings``, ``metrics``, ``ray_auth``. Imports: ``config``, ``options``, ``errors``,
``locations``, ``plan``, ``inference``, ``output``; Ray (Serve, the job client); never ``cli``.
"""

from pipeline.service.api import make_router
from pipeline.service.settings import ServiceSettings

__all__ = ["ServiceSettings", "make_router"]
