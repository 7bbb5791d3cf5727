"""What the service is allowed to do, fixed when it starts: the folders it may read and write,
its token, the detector's settings and the request limits."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config import RunConfig
from pipeline.errors import UsageError

TOKEN_ENV = "PIPELINE_SERVICE_TOKEN"


class SettingsError(UsageError, ValueError):
    """A service setting that cannot work (no roots, no token, a token file that cannot be read)."""


def _roots(value: str | None) -> tuple[str, ...]:
    return tuple(p for p in (value or "").split(os.pathsep) if p)


@dataclass(frozen=True)
class ServiceSettings:
    input_roots: tuple[str, ...]  # folders (or URI prefixes) that jobs may read videos from
    output_roots: tuple[str, ...]  # folders (or URI prefixes) that jobs may write to
    token: str | None = field(default=None, repr=False)  # None only with auth=False
    auth: bool = True
    model: str = RunConfig.model
    imgsz: int = RunConfig.imgsz
    conf: float = RunConfig.conf
    iou: float = RunConfig.iou
    device: str = "cpu"
    max_upload_bytes: int = 20 * 1024 * 1024
    max_batch: int = 16  # POST /detect: most images per dynamic batch
    batch_wait_s: float = 0.01  # ... and how long a batch waits to fill
    ray_dashboard: str = "http://127.0.0.1:8265"  # where jobs are submitted (Ray's job API)
    job_env: tuple[tuple[str, str], ...] = ()  # environment variables every job gets

    def __post_init__(self) -> None:
        if not self.input_roots or not self.output_roots:
            raise SettingsError(
                "the service needs at least one input root and one output root "
                "(--input-root DIR --output-root DIR)"
            )
        if self.auth and not self.token:
            raise SettingsError(
                f"no token: set {TOKEN_ENV}, or --token-file FILE "
                "(or run with --no-auth on a trusted network)"
            )
        if self.max_upload_bytes < 1 or self.max_batch < 1 or self.batch_wait_s < 0:
            raise SettingsError(
                "max upload size and max batch must be positive, batch wait non-negative"
            )

    @classmethod
    def from_env(cls, env: dict | None = None, **overrides) -> ServiceSettings:
        """From ``PIPELINE_SERVICE_TOKEN`` (or ``PIPELINE_SERVICE_TOKEN_FILE``),
        ``PIPELINE_INPUT_ROOTS`` and ``PIPELINE_OUTPUT_ROOTS`` (``:``-separated), and optionally
        ``PIPELINE_SERVICE_MODEL`` and ``PIPELINE_SERVICE_DEVICE``; keyword arguments win."""
        env = os.environ if env is None else env
        token = env.get(TOKEN_ENV) or None
        if token is None and env.get(f"{TOKEN_ENV}_FILE"):
            token = read_token_file(env[f"{TOKEN_ENV}_FILE"])
        values = {
            "input_roots": _roots(env.get("PIPELINE_INPUT_ROOTS")),
            "output_roots": _roots(env.get("PIPELINE_OUTPUT_ROOTS")),
            "token": token,
            "model": env.get("PIPELINE_SERVICE_MODEL", RunConfig.model),
            "device": env.get("PIPELINE_SERVICE_DEVICE", "cpu"),
        }
        if "YOLO_OFFLINE" in env:
            values["job_env"] = (("YOLO_OFFLINE", env["YOLO_OFFLINE"]),)
        values.update(overrides)
        return cls(**values)


def read_token_file(path: str) -> str:
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise SettingsError(f"cannot read the token file {path}: {exc.strerror}") from None
    if not token:
        raise SettingsError(f"the token file {path} is empty")
    return token
