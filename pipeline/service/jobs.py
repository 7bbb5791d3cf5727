"""Backlog jobs: each ``POST /jobs`` becomes a Ray job running ``python -m pipeline run``, so it
outlives the HTTP request and a restart of the service. The service keeps no state of its own:
a job's request rides in the Ray job's metadata, and its progress is the run's
``OUT/progress.json``. Stopping a job stops its run cleanly; resuming submits the same run again,
which skips the videos already complete (the pipeline's resume)."""

from __future__ import annotations

import json
import re
import shlex
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pipeline.config import ConfigError, RunConfig
from pipeline.errors import EXIT_OK, EXIT_VIDEOS_FAILED, UsageError
from pipeline.inference.model_ref import ModelLoadError, read_class_names, resolve_classes
from pipeline.locations import is_uri
from pipeline.options import REQUEST_OPTIONS
from pipeline.output.progress import read_progress
from pipeline.plan.inputs import InputError, expand_inputs
from pipeline.service.paths import confine
from pipeline.service.queue import is_queued
from pipeline.service.settings import ServiceSettings

JOB_KEY, ATTEMPT_KEY, REQUEST_KEY = "pipeline.job", "pipeline.attempt", "pipeline.request"
MAX_ARGV_INPUTS = 1000  # more inputs than this travel in a list file (local outputs) or are refused


class JobNotFound(LookupError):
    pass


class JobConflict(RuntimeError):
    """The job is in a state that does not allow the request (resume while running, say)."""


@dataclass(frozen=True)
class Submission:
    """One Ray job, as the backend reports it."""

    submission_id: str
    status: str  # Ray's JobStatus: PENDING, RUNNING, STOPPED, SUCCEEDED, FAILED
    metadata: dict
    exit_code: int | None = None
    message: str | None = None
    start_time: float | None = None  # seconds since the epoch
    end_time: float | None = None


class JobBackend(Protocol):
    """Where runs execute: Ray's job API in production (``RayJobBackend``)."""

    def submit(
        self, submission_id: str, entrypoint: str, env: dict[str, str], metadata: dict[str, str]
    ) -> None: ...

    def list(self) -> list[Submission]: ...

    def stop(self, submission_id: str) -> None: ...


class ClusterUnavailable(Exception):
    """Ray's job API does not answer: the service is up, its cluster is not (503)."""


class RayJobBackend:
    """Ray's job submission API, at the dashboard address (``ray start --head`` serves it)."""

    def __init__(self, address: str):
        self.address = address
        self._client = None

    @property
    def client(self):
        if self._client is None:
            from pipeline.service.ray_auth import job_client

            self._client = self._answered(lambda: job_client(self.address))
        return self._client

    def _answered(self, call):
        """``call()``, or ``ClusterUnavailable`` naming the address when nothing answers there."""
        try:
            return call()
        except (ConnectionError, OSError) as exc:  # requests' errors are OSErrors too
            raise ClusterUnavailable(
                f"the Ray cluster's job API at {self.address} does not answer "
                f"({type(exc).__name__}); start the cluster with `ray start --head`, or check "
                "the service's --dashboard address"
            ) from None

    def submit(
        self, submission_id: str, entrypoint: str, env: dict[str, str], metadata: dict[str, str]
    ) -> None:
        self._answered(
            lambda: self.client.submit_job(
                entrypoint=entrypoint,
                submission_id=submission_id,
                metadata=metadata,
                runtime_env={"env_vars": env},
            )
        )

    def list(self) -> list[Submission]:
        out = []
        for job in self._answered(lambda: self.client.list_jobs()):
            if job.submission_id is None or JOB_KEY not in (job.metadata or {}):
                continue
            out.append(
                Submission(
                    job.submission_id,
                    str(getattr(job.status, "value", job.status)),
                    dict(job.metadata),
                    getattr(job, "driver_exit_code", None),
                    job.message,
                    job.start_time / 1000 if job.start_time else None,
                    job.end_time / 1000 if job.end_time else None,
                )
            )
        return out

    def stop(self, submission_id: str) -> None:
        self._answered(lambda: self.client.stop_job(submission_id))


def job_state(status: str, exit_code: int | None) -> str:
    """The service's job state from Ray's status and the run's exit status (the CLI's contract:
    0 all complete, 3 some videos failed while the others completed). A running job that waits
    for another to finish is shown as ``queued`` (see ``pipeline.service.queue``)."""
    if status in ("PENDING", "RUNNING", "STOPPED"):
        return {"PENDING": "pending", "RUNNING": "running", "STOPPED": "stopped"}[status]
    if status == "SUCCEEDED" or exit_code == 0:
        return "succeeded"
    if exit_code == EXIT_VIDEOS_FAILED:
        return "completed_with_failures"
    return "failed"


class JobRequestError(UsageError):
    """A job request that cannot run: bad inputs, a path outside the roots, a bad setting."""


@dataclass(frozen=True)
class JobRequest:
    inputs: tuple[str, ...]
    output: str
    settings: dict  # RunConfig fields a request may set (pipeline.options.REQUEST_OPTIONS)

    def argv(self, model: str) -> list[str]:
        args = ["--output", self.output, "--model", model]
        for name, value in sorted(self.settings.items()):
            args += REQUEST_OPTIONS[name].argv(value)
        return args


def check_request(
    inputs: list[str], output: str, settings: dict, service: ServiceSettings
) -> JobRequest:
    """Confine the paths, check the settings, and expand the inputs now, so that the job reads
    exactly the files that were checked (a symlink inside a root pointing out of it is refused)."""
    if not inputs:
        raise JobRequestError("inputs is empty: give at least one video, folder or @list.txt")
    unknown = sorted(set(settings) - set(REQUEST_OPTIONS))
    if unknown:
        raise JobRequestError(
            f"unknown setting {unknown[0]!r}; allowed: {', '.join(sorted(REQUEST_OPTIONS))}"
        )
    try:
        config = RunConfig(model=service.model, **settings)
        _check_classes(config.classes, service.model)
    except (ConfigError, TypeError) as exc:
        # The CLI's messages name options (--batch-size); a request names fields (batch_size).
        message = re.sub(r"--([a-z-]+)", lambda m: m.group(1).replace("-", "_"), str(exc))
        raise JobRequestError(
            message if isinstance(exc, ConfigError) else f"bad settings: {message}"
        ) from None
    output = confine(output, service.output_roots, what="output")
    named = [
        ("@" + confine(i[1:], service.input_roots, what="list file"))
        if i.startswith("@")
        else confine(i, service.input_roots, what="input")
        for i in inputs
    ]
    try:
        sources, _ = expand_inputs(named)
    except InputError as exc:
        raise JobRequestError(str(exc)) from None
    files = [
        source.path
        if is_uri(source.path)
        else confine(source.path, service.input_roots, what="input")
        for source in sources
    ]
    return JobRequest(tuple(files), output, dict(settings))


def _check_classes(classes, model: str) -> None:
    """The classes a request names, against the service's model (read without loading it, as
    the CLI does): a typo is a 400 now, not a failed job later. A model whose names cannot be
    read this way (a name ultralytics would download) leaves the check to the run."""
    if classes is None:
        return
    try:
        names = read_class_names(model)
    except ModelLoadError:  # the service's own model: the job reports it
        return
    if names is not None:
        resolve_classes(classes, names, context="classes: the service's model")


class JobService:
    """The jobs API's logic, apart from HTTP: submit, list, show, stop and resume."""

    def __init__(self, settings: ServiceSettings, backend: JobBackend | None = None):
        self.settings = settings
        self.backend = backend or RayJobBackend(settings.ray_dashboard)

    def submit(self, request: JobRequest, *, job_id: str | None = None, attempt: int = 1) -> dict:
        job_id = job_id or f"job-{uuid.uuid4().hex[:12]}"
        submission_id = job_id if attempt == 1 else f"{job_id}-attempt{attempt}"
        inputs = list(request.inputs)
        if len(inputs) > MAX_ARGV_INPUTS:
            if is_uri(request.output):
                raise JobRequestError(
                    f"{len(inputs)} inputs: give a folder or an @list.txt for more than {MAX_ARGV_INPUTS}"
                )
            lists = Path(request.output) / ".jobs"
            lists.mkdir(parents=True, exist_ok=True)
            list_file = lists / f"{submission_id}.txt"
            list_file.write_text("".join(f"{p}\n" for p in inputs))
            inputs = [f"@{list_file}"]
        entrypoint = shlex.join(
            [
                sys.executable,
                "-m",
                "pipeline.cli.service_job",
                *inputs,
                *request.argv(self.settings.model),
            ]
        )
        # The attempt as well as the job: a resumed job's progress is its new attempt's, from
        # that attempt's first report (the progress file says which attempt wrote it).
        env = {
            **dict(self.settings.job_env),
            "PIPELINE_JOB_ID": job_id,
            "PIPELINE_JOB_ATTEMPT": submission_id,
        }
        blob = json.dumps(
            {"inputs": list(request.inputs), "output": request.output, "settings": request.settings}
        )
        metadata = {JOB_KEY: job_id, ATTEMPT_KEY: str(attempt), REQUEST_KEY: blob}
        self.backend.submit(submission_id, entrypoint, env, metadata)
        return {"id": job_id, "state": "pending", "attempt": attempt}

    def _attempts(self, job_id: str | None = None) -> dict[str, list[Submission]]:
        jobs: dict[str, list[Submission]] = {}
        for sub in self.backend.list():
            if job_id is None or sub.metadata.get(JOB_KEY) == job_id:
                jobs.setdefault(sub.metadata[JOB_KEY], []).append(sub)
        for subs in jobs.values():
            subs.sort(key=lambda s: int(s.metadata.get(ATTEMPT_KEY, "1")))
        return jobs

    def _latest(self, job_id: str) -> list[Submission]:
        attempts = self._attempts(job_id).get(job_id)
        if not attempts:
            raise JobNotFound(f"no job {job_id!r}")
        return attempts

    def request_of(self, job_id: str) -> JobRequest:
        data = json.loads(self._latest(job_id)[-1].metadata[REQUEST_KEY])
        return JobRequest(tuple(data["inputs"]), data["output"], data["settings"])

    def show(self, job_id: str) -> dict:
        return self._view(job_id, self._latest(job_id))

    def list(self) -> list[dict]:
        views = [
            self._view(job_id, subs, with_progress=False)
            for job_id, subs in self._attempts().items()
        ]
        return sorted(views, key=lambda v: v["submitted_at"] or 0, reverse=True)

    def stop(self, job_id: str) -> dict:
        latest = self._latest(job_id)[-1]
        if latest.status in ("PENDING", "RUNNING"):
            self.backend.stop(latest.submission_id)
            return {"id": job_id, "state": "stopping"}
        return {"id": job_id, "state": job_state(latest.status, latest.exit_code)}

    def resume(self, job_id: str) -> dict:
        attempts = self._latest(job_id)
        if attempts[-1].status in ("PENDING", "RUNNING"):
            raise JobConflict(
                f"job {job_id} is still running: stop it first (DELETE /jobs/{job_id})"
            )
        return self.submit(self.request_of(job_id), job_id=job_id, attempt=len(attempts) + 1)

    def _view(self, job_id: str, attempts: list[Submission], *, with_progress: bool = True) -> dict:
        latest = attempts[-1]
        request = json.loads(latest.metadata[REQUEST_KEY])
        state = job_state(latest.status, latest.exit_code)
        if state == "running" and is_queued(job_id):
            state = "queued"
        view = {
            "id": job_id,
            "state": state,
            "attempts": len(attempts),
            "submitted_at": attempts[0].start_time,
            "ended_at": latest.end_time,
            "inputs": len(request["inputs"]),
            "output": request["output"],
            "settings": request["settings"],
        }
        if latest.status == "FAILED" and latest.exit_code not in (EXIT_OK, EXIT_VIDEOS_FAILED):
            view["error"] = (latest.message or "the run failed").splitlines()[-1][:300]
        if with_progress:
            view.update(
                self._progress(
                    job_id,
                    latest.submission_id,
                    request["output"],
                    running=latest.status in ("PENDING", "RUNNING"),
                )
            )
        return view

    @staticmethod
    def _progress(job_id: str, attempt: str, output: str, *, running: bool) -> dict:
        progress = None if is_uri(output) else read_progress(output)
        # A file without an attempt was written by a run of an older version of the service.
        if (
            progress is None
            or progress.get("job_id") != job_id
            or progress.get("attempt", attempt) != attempt
        ):
            return {"frames_done": None, "frames_per_s": None, "eta_s": None, "videos": None}
        eta = progress.get("eta_s")
        if running and progress.get("state") == "running" and eta is not None:
            eta = max(0.0, eta - (time.time() - progress.get("updated_at", time.time())))
        return {
            "frames_done": progress.get("frames_done"),
            "frames_expected": progress.get("frames_expected"),
            "frames_per_s": progress.get("frames_per_s"),
            "eta_s": eta,
            "videos": progress.get("videos"),
        }
