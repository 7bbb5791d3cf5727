"""A bounded load test of the service, on this machine only.

``POST /detect`` with one image at each concurrency for a fixed time, then job submission and
status polls while a backlog runs. Each phase stops by itself; only localhost URLs are accepted.
Reports requests/s, latency percentiles, errors and the service replicas' memory (RSS at the
start and end of each phase, from the processes on this machine)::

    python -m pipeline.bench.loadtest --url http://127.0.0.1:8000 --token-file service-token \\
        --image frame.jpg --concurrency 1,8,32 --duration 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass
class PhaseResult:
    name: str
    concurrency: int
    duration_s: float
    requests: int
    errors: int
    requests_per_s: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    replica_rss_start_mb: float | None
    replica_rss_end_mb: float | None
    error_samples: list[str]
    rss_samples_mb: list[float]  # every 5 s: flat memory is a flat second half

    @property
    def rss_growth_second_half_mb(self) -> float | None:
        half = self.rss_samples_mb[len(self.rss_samples_mb) // 2 :]
        return max(half) - half[0] if len(half) >= 2 else None


def replica_rss_mb() -> float | None:
    """RSS of the service's Serve replicas (and uvicorn apps) on this machine, summed."""
    import psutil

    total, found = 0, False
    for proc in psutil.process_iter(["cmdline"]):
        try:
            line = " ".join(proc.info["cmdline"] or [])
            if "ServeReplica:pipeline" in line:
                total += proc.memory_info().rss
                found = True
        except psutil.Error:
            continue
    return total / 2**20 if found else None


def _percentiles(latencies: list[float]) -> tuple[float | None, float | None, float | None]:
    if not latencies:
        return None, None, None
    p50, p95, p99 = np.percentile(np.array(latencies) * 1000, [50, 95, 99])
    return float(p50), float(p95), float(p99)


async def _hammer(client, name: str, concurrency: int, duration_s: float, request) -> PhaseResult:
    """``concurrency`` workers send ``request(client)`` back to back until ``duration_s`` is up."""
    latencies: list[float] = []
    errors: list[str] = []
    rss_start = replica_rss_mb()
    started = time.perf_counter()
    deadline = started + duration_s

    async def worker() -> None:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            try:
                response = await request(client)
                if response.status_code >= 400:
                    errors.append(f"HTTP {response.status_code}: {response.text[:120]}")
                    continue
            except Exception as exc:  # a refused connection or a timeout is an error of the run
                errors.append(f"{type(exc).__name__}: {exc}"[:160])
                continue
            latencies.append(time.perf_counter() - t0)

    samples: list[float] = []

    async def sample_memory() -> None:
        while time.perf_counter() < deadline:
            rss = replica_rss_mb()
            if rss is not None:
                samples.append(rss)
            await asyncio.sleep(5)

    await asyncio.gather(sample_memory(), *(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    p50, p95, p99 = _percentiles(latencies)
    return PhaseResult(
        name,
        concurrency,
        elapsed,
        len(latencies) + len(errors),
        len(errors),
        len(latencies) / elapsed,
        p50,
        p95,
        p99,
        rss_start,
        replica_rss_mb(),
        errors[:5],
        samples,
    )


async def run_load(
    url: str,
    token: str,
    image: bytes,
    concurrency: list[int],
    duration_s: float,
    job: dict | None = None,
    poll_concurrency: int = 4,
    warmup_s: float = 0.0,
) -> list[PhaseResult]:
    import httpx

    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=max(concurrency + [poll_concurrency + 8]) + 4)
    results = []
    async with httpx.AsyncClient(
        base_url=url, headers=headers, timeout=120, limits=limits
    ) as client:
        detect = lambda c: c.post("/detect", content=image)  # noqa: E731
        await detect(client)  # the first request may load code paths: not part of the figures
        for n in concurrency:
            if warmup_s:  # the replicas' memory pools fill at each new concurrency: not a leak
                await _hammer(client, "warm-up", n, warmup_s, detect)
            results.append(await _hammer(client, "POST /detect", n, duration_s, detect))
        if job is not None:
            submitted = await client.post("/jobs", json=job)
            submitted.raise_for_status()
            job_id = submitted.json()["id"]
            status = lambda c: c.get(f"/jobs/{job_id}")  # noqa: E731
            polls, detects = await asyncio.gather(
                _hammer(
                    client, "GET /jobs/{id} during a job", poll_concurrency, duration_s, status
                ),
                _hammer(client, "POST /detect during a job", 8, duration_s, detect),
            )
            results += [polls, detects]
            await client.delete(f"/jobs/{job_id}")
    return results


def format_table(results: list[PhaseResult]) -> str:
    def ms(v):
        return "-" if v is None else f"{v:.0f}"

    def mb(v):
        return "-" if v is None else f"{v:.0f}"

    lines = [
        "| phase | clients | requests | errors | req/s | p50 ms | p95 ms | p99 ms | replica RSS start → end MB "
        "| RSS growth, 2nd half MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.concurrency} | {r.requests} | {r.errors} | {r.requests_per_s:.1f} | "
            f"{ms(r.p50_ms)} | {ms(r.p95_ms)} | {ms(r.p99_ms)} | {mb(r.replica_rss_start_mb)} → "
            f"{mb(r.replica_rss_end_mb)} | {mb(r.rss_growth_second_half_mb)} |"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.bench.loadtest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--url", default="http://127.0.0.1:8000", help="the service (localhost only)"
    )
    parser.add_argument(
        "--token-file", required=True, help="file holding the service's bearer token"
    )
    parser.add_argument("--image", required=True, help="image sent by every POST /detect")
    parser.add_argument(
        "--concurrency",
        default="1,8,32",
        help="clients per phase, comma-separated (default %(default)s)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=60.0,
        help="seconds per phase, at most 600 (default %(default)s)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=0.0,
        help="seconds of unmeasured load before each phase (default %(default)s)",
    )
    parser.add_argument(
        "--job-input",
        help="with --job-output: submit this folder as a job and poll it during a phase",
    )
    parser.add_argument("--job-output", help="the job's output folder")
    parser.add_argument("--json", help="write the figures here as JSON too")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    host = urlsplit(args.url).hostname
    if host not in LOCAL_HOSTS:
        parser.error(f"the load test sends only to this machine (127.0.0.1, localhost); got {host}")
    if not 0 < args.duration <= 600:
        parser.error("--duration must be between 0 and 600 seconds")
    levels = [int(c) for c in args.concurrency.split(",")]
    if not all(1 <= c <= 256 for c in levels):
        parser.error("--concurrency values must be between 1 and 256")
    job = (
        {"inputs": [args.job_input], "output": args.job_output}
        if args.job_input and args.job_output
        else None
    )
    results = asyncio.run(
        run_load(
            args.url,
            Path(args.token_file).read_text().strip(),
            Path(args.image).read_bytes(),
            levels,
            args.duration,
            job,
            warmup_s=args.warmup,
        )
    )
    print(format_table(results))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                [
                    {**asdict(r), "rss_growth_second_half_mb": r.rss_growth_second_half_mb}
                    for r in results
                ],
                indent=2,
            )
        )
    return 1 if any(r.errors for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
