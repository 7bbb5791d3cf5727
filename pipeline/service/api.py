"""The HTTP API as a ``fastapi.APIRouter``: mount it in any FastAPI app, or serve it with
``python -m pipeline serve`` (Ray Serve). Every client mistake is a 4xx with one sentence in
``detail``; a 500 carries no traceback and no path."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import io
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from pipeline.errors import UsageError
from pipeline.options import REQUEST_OPTIONS
from pipeline.service.detect import BadImage, ImageBoxes, decode_image
from pipeline.service.jobs import (
    ClusterUnavailable,
    JobBackend,
    JobConflict,
    JobNotFound,
    JobService,
    check_request,
)
from pipeline.service.metrics import RequestMetrics
from pipeline.service.paths import PathNotAllowed
from pipeline.service.settings import ServiceSettings

log = logging.getLogger(__name__)

Detect = Callable[[np.ndarray], Awaitable[ImageBoxes]]
PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX = 10_000, 100_000


class JobSubmission(BaseModel):
    inputs: list[str] = Field(
        min_length=1,
        max_length=10_000,
        description="video files, folders or @list.txt files, inside the service's input roots",
    )
    output: str = Field(
        min_length=1, description="output folder, inside the service's output roots"
    )
    settings: dict[str, int | float | bool | str | list[int | str]] = Field(
        default_factory=dict,
        description="run options by name: " + ", ".join(REQUEST_OPTIONS),
    )


class LocalDetector:
    """``POST /detect`` in this process (an app without Ray Serve): one image per forward pass,
    in a worker thread so that the event loop keeps serving."""

    def __init__(self, settings: ServiceSettings):
        from pipeline.service.detect import ImageDetector

        self.detector = ImageDetector(settings)

    async def __call__(self, image: np.ndarray) -> ImageBoxes:
        return (await asyncio.to_thread(self.detector.detect, [image]))[0]


def _encode_cursor(video_id: str, row: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([video_id, row]).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[str, int]:
    try:
        video_id, row = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(video_id, str) or not isinstance(row, int) or row < 0:
            raise ValueError
        return video_id, row
    except (ValueError, TypeError, binascii.Error):
        raise HTTPException(
            400, "cursor is not one this service gave out (use X-Next-Cursor of the previous page)"
        ) from None


def _http_error(exc: Exception) -> HTTPException:
    """A client's mistake as its 4xx (a cluster that does not answer: 503), with the
    exception's one-line message."""
    if isinstance(exc, PathNotAllowed):
        return HTTPException(403, str(exc))
    if isinstance(exc, JobNotFound):
        return HTTPException(404, str(exc))
    if isinstance(exc, JobConflict):
        return HTTPException(409, str(exc))
    if isinstance(exc, BadImage):
        return HTTPException(415, str(exc))
    if isinstance(exc, ClusterUnavailable):
        return HTTPException(503, str(exc))
    return HTTPException(400, str(exc))


def make_router(
    settings: ServiceSettings,
    *,
    detector: Detect | None = None,
    jobs_backend: JobBackend | None = None,
    metrics: RequestMetrics | None = None,
) -> APIRouter:
    """The service's routes. ``detector`` answers ``POST /detect`` (default: a ``LocalDetector``
    loaded now); ``jobs_backend`` runs the jobs (default: Ray's job API at
    ``settings.ray_dashboard``)."""
    jobs = JobService(settings, jobs_backend)
    detect = detector or LocalDetector(settings)
    metrics = metrics or RequestMetrics()
    router = APIRouter(route_class=_timed_route(metrics))
    guarded = [Depends(_bearer_check(settings))]

    @router.get("/health", summary="liveness: 200 when the service answers")
    def health() -> dict:
        return {"status": "ok"}

    @router.get("/metrics", summary="the service's request metrics, Prometheus text format")
    def service_metrics() -> Response:
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4")

    _add_job_routes(router, jobs, settings, guarded)
    _add_detections_route(router, jobs, guarded)
    _add_analysis_route(router, jobs, guarded)

    @router.post(
        "/detect",
        dependencies=guarded,
        summary="boxes for one image (the request body: JPEG, PNG, ...)",
    )
    async def detect_image(request: Request) -> dict:
        data = await _read_limited(request, settings.max_upload_bytes)
        try:
            image = decode_image(data)
        except BadImage as exc:
            raise _http_error(exc) from None
        return (await detect(image)).as_dict()

    return router


def _bearer_check(settings: ServiceSettings):
    """The dependency that refuses a request without the service's token (401)."""
    bearer = HTTPBearer(auto_error=False)

    def authorized(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if not settings.auth:
            return
        given = credentials.credentials.encode() if credentials else b""
        # compare_digest: the time taken does not say how much of a guess was right.
        if credentials is None or not hmac.compare_digest(given, settings.token.encode()):
            raise HTTPException(
                401,
                "missing or wrong bearer token (Authorization: Bearer <token>)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return authorized


def _timed_route(metrics: RequestMetrics) -> type[APIRoute]:
    """A route class that counts and times every request by method, route and status."""

    class TimedRoute(APIRoute):
        def get_route_handler(self):
            handler = super().get_route_handler()
            route = self.path

            async def timed(request: Request) -> Response:
                started = time.perf_counter()
                status = 500
                try:
                    response = await handler(request)
                    status = response.status_code
                    return response
                except HTTPException as exc:
                    status = exc.status_code
                    raise
                except RequestValidationError:  # answered 422 by install_error_handlers
                    status = 422
                    raise
                finally:
                    metrics.observe(request.method, route, status, time.perf_counter() - started)

            return timed

    return TimedRoute


def _add_job_routes(
    router: APIRouter, jobs: JobService, settings: ServiceSettings, guarded: list
) -> None:
    @router.post(
        "/jobs", status_code=201, dependencies=guarded, summary="start a backlog run (a Ray job)"
    )
    def submit_job(body: JobSubmission) -> dict:
        try:
            # the request's own checks first: a bad setting is a 400 whether or not Ray is up
            request = check_request(body.inputs, body.output, body.settings, settings)
            return jobs.submit(request)
        except (UsageError, ClusterUnavailable) as exc:
            raise _http_error(exc) from None

    @router.get("/jobs", dependencies=guarded, summary="all jobs, newest first")
    def list_jobs() -> dict:
        try:
            return {"jobs": jobs.list()}
        except ClusterUnavailable as exc:
            raise _http_error(exc) from None

    @router.get(
        "/jobs/{job_id}",
        dependencies=guarded,
        summary="a job's state, frames done, frames/s, ETA and video counts",
    )
    def show_job(job_id: str) -> dict:
        try:
            return jobs.show(job_id)
        except (JobNotFound, ClusterUnavailable) as exc:
            raise _http_error(exc) from None

    @router.delete(
        "/jobs/{job_id}",
        status_code=202,
        dependencies=guarded,
        summary="stop a job (resume it with POST /jobs/{id}/resume)",
    )
    def stop_job(job_id: str) -> dict:
        try:
            return jobs.stop(job_id)
        except (JobNotFound, ClusterUnavailable) as exc:
            raise _http_error(exc) from None

    @router.post(
        "/jobs/{job_id}/resume",
        status_code=201,
        dependencies=guarded,
        summary="run a stopped or finished job again: complete videos are skipped",
    )
    def resume_job(job_id: str) -> dict:
        try:
            return jobs.resume(job_id)
        except (JobNotFound, JobConflict, ClusterUnavailable) as exc:
            raise _http_error(exc) from None


def _add_detections_route(router: APIRouter, jobs: JobService, guarded: list) -> None:
    @router.get(
        "/jobs/{job_id}/detections",
        dependencies=guarded,
        summary="a job's detections, filtered and paginated (JSON lines or Parquet)",
    )
    def job_detections(
        job_id: str,
        video: list[str] | None = Query(None, description="video_id (repeat for several)"),
        classes: str | None = Query(None, description="class names or ids, comma-separated"),
        start_s: float | None = Query(None, description="first timestamp, seconds (inclusive)"),
        end_s: float | None = Query(None, description="last timestamp, seconds (inclusive)"),
        min_conf: float | None = Query(None, ge=0, le=1, description="lowest confidence kept"),
        flat: bool = Query(
            True, description="one row per box (true) or per processed frame (false)"
        ),
        format: Literal["jsonl", "parquet"] = Query("jsonl"),
        limit: int = Query(
            PAGE_LIMIT_DEFAULT, ge=1, le=PAGE_LIMIT_MAX, description="rows per page"
        ),
        cursor: str | None = Query(None, description="X-Next-Cursor of the previous page"),
    ) -> Response:
        try:
            output = jobs.request_of(job_id).output
        except (JobNotFound, ClusterUnavailable) as exc:
            raise _http_error(exc) from None
        after = _decode_cursor(cursor) if cursor else None
        class_filter = [c for c in classes.split(",") if c.strip()] if classes else None
        if classes is not None and not class_filter:
            raise HTTPException(
                400, "classes is empty: give class names or ids, e.g. person,car or 0,2"
            )
        filters = dict(
            video_id=video,
            classes=class_filter,
            start_s=start_s,
            end_s=end_s,
            min_confidence=min_conf,
        )
        pages, next_cursor = _detections_page(output, flat, after, limit, filters)
        headers = {"X-Next-Cursor": next_cursor} if next_cursor else {}
        if format == "parquet":
            page = pa.concat_tables(pages, promote_options="permissive") if pages else None
            buffer = io.BytesIO()
            if page is not None:
                pq.write_table(page, buffer)
            return Response(
                buffer.getvalue(), media_type="application/vnd.apache.parquet", headers=headers
            )
        return StreamingResponse(
            _json_lines(pages), media_type="application/x-ndjson", headers=headers
        )


def _add_analysis_route(router: APIRouter, jobs: JobService, guarded: list) -> None:
    @router.get(
        "/jobs/{job_id}/analysis",
        dependencies=guarded,
        summary="the analyses stored for a job's output (python -m pipeline analyze), or one table",
    )
    def job_analysis(
        job_id: str,
        name: str | None = Query(None, description="one analysis (default: every one)"),
        table: str | None = Query(
            None, description="with name: one of its tables as JSON lines, e.g. crossings"
        ),
    ) -> Response:
        from pipeline.analysis.analyze import SCHEMAS, list_analyses, read_analysis

        try:
            output = jobs.request_of(job_id).output
        except (JobNotFound, ClusterUnavailable) as exc:
            raise _http_error(exc) from None
        if table is not None and (name is None or table not in SCHEMAS):
            raise HTTPException(400, f"table goes with name and is one of {', '.join(SCHEMAS)}")
        names = [name] if name else list_analyses(output)
        if not names:
            raise HTTPException(
                404, f"job {job_id} has no analysis (run python -m pipeline analyze on its output)"
            )
        try:
            analyses = [read_analysis(output, n) for n in names]
        except UsageError as exc:
            raise HTTPException(404, str(exc)) from None
        if table is not None:
            rows = pa.Table.from_pandas(analyses[0].tables[table], preserve_index=False)
            return StreamingResponse(_json_lines([rows]), media_type="application/x-ndjson")
        return JSONResponse(
            {
                "job_id": job_id,
                "analyses": [{**a.summary(), "spec": a.spec.to_dict()} for a in analyses],
            }
        )


def _detections_page(
    output: str, flat: bool, after, limit: int, filters: dict
) -> tuple[list[pa.Table], str | None]:
    """Up to ``limit`` rows after the cursor position ``after``, and the next page's cursor."""
    from pipeline.output.readers import iter_detections

    pages, rows, next_cursor = [], 0, None
    try:
        for video_id, first, table in iter_detections(output, flat=flat, after=after, **filters):
            room = limit - rows
            if table.num_rows > room:
                pages.append(table.slice(0, room))
                next_cursor = _encode_cursor(video_id, first + room)
                break
            pages.append(table)
            rows += table.num_rows
            if rows == limit:
                next_cursor = _encode_cursor(video_id, first + table.num_rows)
                break
    except UsageError as exc:  # not a run's output yet, an unknown class
        raise HTTPException(409 if isinstance(exc, FileNotFoundError) else 400, str(exc)) from None
    return pages, next_cursor


async def _read_limited(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes ``limit`` (never read whole first)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"the upload is larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"the upload is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _json_lines(pages: list[pa.Table]):
    for page in pages:
        for batch in page.to_batches(max_chunksize=1000):
            yield "".join(json.dumps(row) + "\n" for row in batch.to_pylist())


def install_error_handlers(app: FastAPI) -> None:
    """Request validation errors as one sentence (FastAPI's default is a list of dicts), and
    anything unexpected as a bare 500 (the traceback goes to the log, never to the client)."""

    @app.exception_handler(RequestValidationError)
    async def one_sentence(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path"))
        message = (
            f"{where}: {first.get('msg', 'invalid value')}"
            if where
            else first.get("msg", "invalid request")
        )
        return JSONResponse({"detail": message}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error (see the service's log)"}, status_code=500)


def build_fastapi_app(settings: ServiceSettings, **router_options) -> FastAPI:
    app = FastAPI(
        title="YOLO video pipeline",
        description="Detection jobs over video backlogs, their results, "
        "and detection on single images.",
    )
    app.include_router(make_router(settings, **router_options))
    install_error_handlers(app)
    return app
