"""The service for real: docs/service.md's service block as typed on a ``ray start --head`` cluster,
then the API through a real HTTP client (jobs, detections, stop/resume, POST /detect, a fuzz of
bad requests), a restart of the service, docs/service.md's APIRouter example under uvicorn, a short
load test, and a real Prometheus scraping Ray's metrics during all of it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from conftest import REPO, read_rows, read_status
from service_helpers import assert_boxes_equal_predict, bad_requests, doc_block, fresh_shell_env

from pipeline.media.samples import concat_copies

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).with_name("ray"))
SERVICE = "http://127.0.0.1:8000"


def wait_until(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def stop_process_group(proc: subprocess.Popen, sig=signal.SIGINT, timeout: float = 60) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def world(tmp_path_factory, clips, people_mp4, model_path):
    """The docs' service block: its cluster and service, Prometheus scraping Ray, and the folders."""
    base = tmp_path_factory.mktemp("service")
    work, videos, out = base / "src", base / "videos", base / "out"
    shutil.copytree(
        REPO,
        work,
        ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.egg-info", "demo-out"),
    )
    (videos / "pair").mkdir(parents=True)
    out.mkdir()
    for name in ("small_h264", "tiny_17"):
        shutil.copy(clips[name], videos / "pair" / clips[name].name)
    (videos / "long").mkdir()
    # 604 frames: long enough to stop mid-way, and for Prometheus to scrape its counters while it runs.
    concat_copies(people_mp4, videos / "long" / "people.mp4", 2)  # long enough to stop mid-way
    shutil.copy(clips["short_1080p"], videos / "long" / "short_1080p.mp4")
    block = doc_block("docs/service.md", "## Service (HTTP API)")
    script = (
        block.replace("/data/videos", str(videos))
        .replace("/data/out", str(out))
        .replace("/models/yolo11n.pt", model_path)
    )
    assert "export RAY_AUTH_MODE=token" in script and "python -m pipeline serve" in script
    setup, serve_line = script.split("python -m pipeline serve", 1)
    serve_line = "python -m pipeline serve" + serve_line
    subprocess.run([RAY, "stop", "--force"], capture_output=True)
    prometheus = start_prometheus(base)
    env = fresh_shell_env()
    processes = {}
    try:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", setup],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        exports = "\n".join(line for line in setup.splitlines() if line.startswith("export "))

        def start_service():
            log = open(base / "serve.log", "a")
            processes["serve"] = subprocess.Popen(
                ["bash", "-euo", "pipefail", "-c", exports + "\n" + serve_line],
                cwd=work,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            wait_until(lambda: healthy(SERVICE), 180, "the service to answer /health")

        start_service()
        token = (work / "service-token").read_text().strip()
        yield dict(
            work=work,
            videos=videos,
            out=out,
            token=token,
            env=env,
            exports=exports,
            base=base,
            start_service=start_service,
            processes=processes,
            prometheus=prometheus,
            model=model_path,
        )
    finally:
        for proc in processes.values():
            stop_process_group(proc)
        subprocess.run(
            ["bash", "-c", "ray stop"], cwd=work, env=env, capture_output=True, timeout=120
        )
        if prometheus is not None:
            prometheus.terminate()
            prometheus.wait(30)
        subprocess.run([RAY, "stop", "--force"], capture_output=True)


def start_prometheus(base: Path):
    """Debian's prometheus with the project's deploy/prometheus.yml, as docs/monitoring.md shows."""
    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("PIPELINE_REQUIRE_PROMETHEUS") == "1":
            pytest.fail(
                "PIPELINE_REQUIRE_PROMETHEUS=1 but no prometheus binary (apt-get install prometheus)"
            )
        return None
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={REPO / 'deploy' / 'prometheus.yml'}",
            f"--storage.tsdb.path={base / 'prometheus-data'}",
            "--web.listen-address=127.0.0.1:9090",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(base / "prometheus.log", "w"),
    )
    wait_until(lambda: _port_open(9090), 60, "prometheus to listen")
    return proc


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class Api:
    """The calls a web backend makes, against a base URL (the Serve app or the mounted router)."""

    def __init__(self, base: str, token: str):
        self.client = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=120
        )

    def submit(self, inputs, output, **settings) -> str:
        r = self.client.post(
            "/jobs",
            json={"inputs": [str(i) for i in inputs], "output": str(output), "settings": settings},
        )
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def job(self, job_id) -> dict:
        r = self.client.get(f"/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return r.json()

    def wait(self, job_id, states=("succeeded",), timeout=400) -> dict:
        view = wait_until(
            lambda: (v := self.job(job_id))["state"] not in ("pending", "queued", "running") and v,
            timeout,
            f"job {job_id} to end",
        )
        assert view["state"] in states, view
        return view

    def detections(self, job_id, **params):
        import pandas as pd

        rows, cursor = [], None
        while True:
            query = {**params, "limit": 500, **({"cursor": cursor} if cursor else {})}
            r = self.client.get(f"/jobs/{job_id}/detections", params=query)
            assert r.status_code == 200, r.text
            import json

            rows += [json.loads(line) for line in r.text.splitlines()]
            cursor = r.headers.get("X-Next-Cursor")
            if not cursor:
                return pd.DataFrame(rows)


def exercise(
    api: Api, world: dict, name: str, image: np.ndarray, reference, *, stop_and_resume=True
) -> None:
    """Acceptance 1's calls: a job over two videos, filtered detections, stop and resume (the
    jobs' own promise, whoever hosts the router: checked once), /detect, the fuzz."""
    from pipeline.output.readers import read_detections

    out = world["out"] / name
    job = api.submit([world["videos"] / "pair"], out / "pair", stride=1)
    view = api.wait(job)
    assert view["frames_done"] == 57 and view["videos"]["ok"] == 2 and view["eta_s"] == 0
    for filters in ({}, {"classes": "person", "min_conf": 0.5}, {"start_s": 0.3, "end_s": 1.0}):
        got = api.detections(job, **filters)
        want = read_detections(
            out / "pair",
            classes=filters.get("classes"),
            min_confidence=filters.get("min_conf"),
            start_s=filters.get("start_s"),
            end_s=filters.get("end_s"),
        )
        assert len(want) > 0 and len(got) == len(want)
        assert got["video_id"].tolist() == want["video_id"].tolist()
        assert got["frame_index"].tolist() == want["frame_index"].tolist()
        np.testing.assert_array_equal(
            got["confidence"].to_numpy(np.float32), want["confidence"].to_numpy(np.float32)
        )
    one_video = read_detections(out / "pair")["video_id"].iloc[0]
    assert set(api.detections(job, video=one_video)["video_id"]) == {one_video}
    if stop_and_resume:
        stop_then_resume(api, world, out)
    # POST /detect: predict's boxes for the same decoded image.
    ok, jpeg = cv2.imencode(".jpg", image)
    r = api.client.post("/detect", content=jpeg.tobytes())
    assert r.status_code == 200, r.text
    decoded = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)
    assert_boxes_equal_predict(r.json(), decoded, reference)
    # The fuzz: 4xx, one sentence, never 5xx.
    roots = (world["videos"], world["out"], world["base"] / "outside")
    for method, path, options, status in bad_requests(roots, max_upload=20 * 2**20):
        r = httpx.request(
            method,
            str(api.client.base_url).rstrip("/") + path,
            timeout=60,
            **{k: v for k, v in options.items() if k != "headers"},
            headers=_fuzz_headers(options, api),
        )
        assert r.status_code < 500, (method, path, r.status_code, r.text)
        assert r.status_code == status, (method, path, r.status_code, r.text)


def stop_then_resume(api: Api, world: dict, out) -> None:
    """Stop the long job once it has made progress, then resume it: every frame once, all ok.
    (Submitted after the first job ended: jobs run one at a time, in no promised order.)"""
    # At 320 px: the resume's 600-odd frames are what this test spends most of its time on.
    long_job = api.submit([world["videos"] / "long"], out / "long", imgsz=320)
    wait_until(
        lambda: (api.job(long_job).get("frames_done") or 0) > 30,
        300,
        "the long job to make progress",
    )
    assert api.client.delete(f"/jobs/{long_job}").status_code == 202
    api.wait(long_job, states=("stopped",), timeout=120)
    # The stopped run left its record and a progress file that says so.
    records = [json.loads(p.read_text()) for p in (out / "long" / "runs").glob("*.json")]
    assert [(r["stopped_by"], r["exit_code"]) for r in records] == [("SIGTERM", 143)]
    assert json.loads((out / "long" / "progress.json").read_text())["state"] == "stopped"
    assert api.client.post(f"/jobs/{long_job}/resume").status_code == 201
    view = api.wait(long_job)
    assert view["attempts"] == 2 and view["videos"]["ok"] + view["videos"]["skipped"] == 2
    rows = read_rows(out / "long")
    assert len(rows) == 2 * 302 + 24 and not rows.duplicated(["video_id", "frame_index"]).any()
    assert all(v["status"] == "ok" for v in read_status(out / "long").values())


def _fuzz_headers(options: dict, api: Api) -> dict:
    """The fuzz cases' headers, with the test token standing for this service's real token."""
    from service_helpers import TOKEN

    real = api.client.headers["Authorization"].split(" ", 1)[1]
    return {k: v.replace(TOKEN, real) for k, v in options.get("headers", {}).items()}


@pytest.fixture(scope="module")
def reference_and_frame(people_mp4, model_path):
    from ultralytics import YOLO

    from pipeline.media.samples import read_frames

    return YOLO(model_path), next(iter(read_frames(people_mp4, limit=1)))


def test_service_api_end_to_end(world, reference_and_frame):
    reference, frame = reference_and_frame
    api = Api(SERVICE, world["token"])
    exercise(api, world, "serve", frame, reference)
    # A restart of the service: its jobs are Ray jobs, still listed with their results.
    before = {j["id"]: j["state"] for j in api.client.get("/jobs").json()["jobs"]}
    stop_process_group(world["processes"]["serve"])
    world["start_service"]()
    after = {j["id"]: j["state"] for j in api.client.get("/jobs").json()["jobs"]}
    assert after == before and len(after) == 2


def test_router_example_in_a_plain_fastapi_app(world, reference_and_frame, tmp_path):
    reference, frame = reference_and_frame
    example = doc_block("docs/service.md", "**In an existing FastAPI app**", "python")
    (world["work"] / "myapp.py").write_text(example)
    env = {
        **world["env"],
        "PIPELINE_SERVICE_TOKEN_FILE": str(world["work"] / "service-token"),
        "PIPELINE_INPUT_ROOTS": str(world["videos"]),
        "PIPELINE_OUTPUT_ROOTS": str(world["out"]),
        "PIPELINE_SERVICE_MODEL": world["model"],
    }
    uvicorn = subprocess.Popen(
        ["bash", "-c", world["exports"] + "\nexec uvicorn myapp:app --port 8001"],
        cwd=world["work"],
        env=env,
        stdout=open(tmp_path / "uvicorn.log", "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_until(lambda: healthy("http://127.0.0.1:8001/yolo"), 120, "the plain FastAPI app")
        api = Api("http://127.0.0.1:8001/yolo", world["token"])
        exercise(api, world, "router", frame, reference, stop_and_resume=False)
    finally:
        stop_process_group(uvicorn)


def test_load_generator_is_bounded_and_reports(world, tmp_path, people_mp4):
    from pipeline.media.samples import read_frames

    image = tmp_path / "frame.jpg"
    cv2.imwrite(str(image), next(iter(read_frames(people_mp4, limit=1))))
    token_file = world["work"] / "service-token"
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.bench.loadtest",
            "--url",
            "http://example.com",
            "--token-file",
            str(token_file),
            "--image",
            str(image),
        ],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2 and "only to this machine" in refused.stderr
    started = time.time()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.bench.loadtest",
            "--token-file",
            str(token_file),
            "--image",
            str(image),
            "--concurrency",
            "1,4",
            "--duration",
            "3",
            "--json",
            str(tmp_path / "load.json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert time.time() - started < 60
    import json

    phases = json.loads((tmp_path / "load.json").read_text())
    assert [p["concurrency"] for p in phases] == [1, 4]
    assert all(p["errors"] == 0 and p["requests"] > 0 and p["p99_ms"] > 0 for p in phases)
    assert phases[0]["replica_rss_end_mb"] > 100  # the detector replica was found and measured


def promql(query: str) -> list:
    r = httpx.get("http://127.0.0.1:9090/api/v1/query", params={"query": query}, timeout=30)
    body = r.json()
    assert body["status"] == "success", (query, body)
    return body["data"]["result"]


def test_prometheus_sees_the_runs_and_the_dashboard_queries_work(world):
    """Last in the module: the jobs above ran while Prometheus scraped Ray's metrics port."""
    if world["prometheus"] is None:
        pytest.skip(
            "no prometheus binary (apt-get install prometheus; CI sets PIPELINE_REQUIRE_PROMETHEUS=1)"
        )
    # A few detections on the running service, so that its batch metrics are exported by a
    # replica that lives on (the service was restarted since the first test's requests).
    ok, jpeg = cv2.imencode(".jpg", np.full((360, 640, 3), 114, np.uint8))
    for _ in range(3):
        r = httpx.post(
            f"{SERVICE}/detect",
            content=jpeg.tobytes(),
            timeout=120,
            headers={"Authorization": f"Bearer {world['token']}"},
        )
        assert r.status_code == 200, r.text
    # The jobs' frames reached Prometheus. (Not their rate: each job's workers are new
    # processes, hence new series, and a short job's worker can be reported once, already at
    # its final count, which gives a rate of 0; the dashboard's rate panel is checked below.)
    frames_query = "sum(max_over_time(ray_pipeline_frames_inferred_total[30m]))"
    frames = wait_until(
        lambda: [r for r in promql(frames_query) if float(r["value"][1]) > 0],
        60,
        "the jobs' frames in Prometheus",
        interval=2,
    )
    assert float(frames[0]["value"][1]) > 0
    # the jobs' batch latencies, all of them (cumulative counts, for the reason above)
    p99_query = (
        "histogram_quantile(0.99, sum by (le) "
        "(max_over_time(ray_pipeline_batch_latency_s_bucket[30m])))"
    )
    p99 = wait_until(
        lambda: [r for r in promql(p99_query) if 0 < float(r["value"][1]) < 120],
        60,
        "the batch latency's 99th percentile in Prometheus",
        interval=2,
    )
    assert 0 < float(p99[0]["value"][1]) < 120
    import json

    dashboard = json.loads((REPO / "deploy" / "grafana" / "pipeline-dashboard.json").read_text())
    must_have_data = {
        "Frames per second",
        "Batch latency",
        "Video outcomes",
        "Service requests per second",
        "Service latency",
        "POST /detect batch size",
    }
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            query = target["expr"].replace("$__rate_interval", "10m")
            # Ray exports every ~10 s, Prometheus scrapes every 5 s
            if panel["title"] in must_have_data:
                wait_until(
                    lambda: promql(query),  # noqa: B023 - called before the loop moves on
                    60,
                    f"data for {panel['title']!r}: {query}",
                    interval=2,
                )
            else:
                promql(query)  # valid PromQL, whether or not there is data (no GPU here)
