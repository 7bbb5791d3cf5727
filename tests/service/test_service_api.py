"""The service without Ray: path confinement, job requests, the jobs logic over a fake backend,
and the HTTP router (auth, a fuzz of bad requests, paginated detections, POST /detect) through
FastAPI's test client."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from service_helpers import AUTH, TOKEN, assert_boxes_equal_predict, bad_requests

from pipeline.inference.detections import BatchResult, Detections
from pipeline.output.manifest import Manifest, VideoRecord
from pipeline.output.outcomes import RunCounts
from pipeline.output.progress import ProgressFile, RunProgress, read_progress
from pipeline.output.readers import read_detections
from pipeline.output.writer import VideoResultWriter
from pipeline.service.api import build_fastapi_app
from pipeline.service.detect import ImageBoxes
from pipeline.service.jobs import (
    JobConflict,
    JobNotFound,
    JobRequestError,
    JobService,
    Submission,
    check_request,
    job_state,
)
from pipeline.service.metrics import RequestMetrics
from pipeline.service.paths import PathNotAllowed, confine
from pipeline.service.settings import ServiceSettings, SettingsError


class FakeBackend:
    """Ray's job API as a dict: submissions are recorded, nothing runs."""

    def __init__(self):
        self.jobs: dict[str, Submission] = {}
        self.entrypoints: dict[str, str] = {}
        self.envs: dict[str, dict] = {}

    def submit(self, submission_id, entrypoint, env, metadata):
        self.jobs[submission_id] = Submission(
            submission_id, "RUNNING", dict(metadata), start_time=len(self.jobs)
        )
        self.entrypoints[submission_id] = entrypoint
        self.envs[submission_id] = env

    def list(self):
        return list(self.jobs.values())

    def stop(self, submission_id):
        old = self.jobs[submission_id]
        self.jobs[submission_id] = Submission(
            old.submission_id, "STOPPED", old.metadata, start_time=old.start_time
        )

    def finish(self, submission_id, exit_code):
        old = self.jobs[submission_id]
        status = "SUCCEEDED" if exit_code == 0 else "FAILED"
        self.jobs[submission_id] = Submission(
            old.submission_id, status, old.metadata, exit_code, start_time=old.start_time
        )


@pytest.fixture
def roots(tmp_path):
    videos, out, outside = tmp_path / "videos", tmp_path / "out", tmp_path / "outside"
    for folder in (videos, out, outside):
        folder.mkdir()
    for name in ("a.mp4", "b.mp4"):
        (videos / name).write_bytes(b"not really a video")
    (outside / "secret.mp4").write_bytes(b"x")
    return videos, out, outside


@pytest.fixture
def settings(roots, model_path):
    videos, out, _ = roots
    return ServiceSettings(
        input_roots=(str(videos),),
        output_roots=(str(out),),
        token=TOKEN,
        model=model_path,
        max_upload_bytes=200_000,
    )


# --- confinement -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "location, allowed",
    [
        ("{videos}/a.mp4", True),
        ("{videos}", True),
        ("{videos}/sub/new.mp4", True),
        ("{videos}/../outside/secret.mp4", False),
        ("{videos}/link-out/secret.mp4", False),  # a symlink inside the root that leads out of it
        ("{videos}_sibling/a.mp4", False),  # a prefix of the root's name is not the root
        ("relative/a.mp4", False),
        ("/etc/passwd", False),
        ("s3://bucket/videos/a.mp4", True),
        ("s3://bucket/videos", True),
        ("s3://bucket/videos-other/a.mp4", False),
        ("s3://bucket/videos/../private/a.mp4", False),
        ("s3://KEY:SECRET@bucket/videos/a.mp4", False),
        ("s3://bucket/videos/a.mp4?versionId=1", False),
        ("gs://bucket/videos/a.mp4", False),
    ],
)
def test_confine(roots, location, allowed):
    videos, _, outside = roots
    (videos / "link-out").symlink_to(outside, target_is_directory=True)
    path = location.format(videos=videos)
    allowed_roots = (str(videos), "s3://bucket/videos")
    if allowed:
        assert confine(path, allowed_roots, what="input")
    else:
        with pytest.raises(PathNotAllowed) as err:
            confine(path, allowed_roots, what="input")
        assert "SECRET" not in str(err.value)


def test_settings_need_a_token_and_roots(tmp_path):
    with pytest.raises(SettingsError, match="PIPELINE_SERVICE_TOKEN"):
        ServiceSettings(input_roots=("/a",), output_roots=("/b",))
    with pytest.raises(SettingsError, match="input root"):
        ServiceSettings(input_roots=(), output_roots=("/b",), token="t")
    assert ServiceSettings(input_roots=("/a",), output_roots=("/b",), auth=False).token is None
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    env = {
        "PIPELINE_SERVICE_TOKEN_FILE": str(token_file),
        "PIPELINE_INPUT_ROOTS": f"/a{os.pathsep}/c",
        "PIPELINE_OUTPUT_ROOTS": "/b",
    }
    s = ServiceSettings.from_env(env)
    assert s.token == "from-file" and s.input_roots == ("/a", "/c") and s.output_roots == ("/b",)
    assert "from-file" not in repr(s)


@pytest.mark.parametrize(
    "status, exit_code, state",
    [
        ("PENDING", None, "pending"),
        ("RUNNING", None, "running"),
        ("STOPPED", None, "stopped"),
        ("SUCCEEDED", 0, "succeeded"),
        ("FAILED", 3, "completed_with_failures"),
        ("FAILED", 1, "failed"),
        ("FAILED", None, "failed"),
        ("FAILED", 2, "failed"),
    ],
)
def test_job_state(status, exit_code, state):
    assert job_state(status, exit_code) == state


# --- job requests ------------------------------------------------------------------------


def test_check_request_expands_and_confines(roots, settings):
    videos, out, outside = roots
    request = check_request(
        [str(videos)], str(out / "run1"), {"stride": 5, "classes": ["person", 2]}, settings
    )
    assert request.inputs == (str(videos / "a.mp4"), str(videos / "b.mp4"))
    assert request.argv("m.pt") == [
        "--output",
        str(out / "run1"),
        "--model",
        "m.pt",
        "--classes",
        "person,2",
        "--stride",
        "5",
    ]
    # A symlink inside the root that points out of it is found by the folder scan, and refused.
    (videos / "innocent.mp4").symlink_to(outside / "secret.mp4")
    with pytest.raises(PathNotAllowed, match="outside"):
        check_request([str(videos)], str(out / "run1"), {}, settings)


@pytest.mark.parametrize(
    "inputs, output, job_settings, match",
    [
        ([], "{out}/x", {}, "inputs is empty"),
        (["{videos}/a.mp4"], "{out}/x", {"model": "evil.pt"}, "unknown setting 'model'"),
        (["{videos}/a.mp4"], "{out}/x", {"batch_size": 0}, "batch_size must be between 1 and 256"),
        (["{videos}/a.mp4"], "{out}/x", {"imgsz": 33}, "imgsz must be a multiple of 32"),
        (["{videos}/a.mp4"], "{out}/x", {"stride": "many"}, "bad settings"),
        (["{videos}/a.mp4"], "{out}/x", {"fps": 0}, "fps must be positive"),
        (["{videos}/a.mp4"], "{out}/x", {"fps": 1, "stride": 2}, "fps and stride are exclusive"),
        (["{videos}/missing.mp4"], "{out}/x", {}, "input not found"),
        (["{videos}/a.mp4"], "{outside}/x", {}, "output .* is outside"),
        (["@{outside}/list.txt"], "{out}/x", {}, "list file .* is outside"),
    ],
)
def test_check_request_refuses(roots, settings, inputs, output, job_settings, match):
    videos, out, outside = roots
    fmt = dict(videos=videos, out=out, outside=outside)
    with pytest.raises((JobRequestError, PathNotAllowed), match=match):
        check_request(
            [i.format(**fmt) for i in inputs], output.format(**fmt), job_settings, settings
        )


def test_list_file_entries_are_confined(roots, settings):
    videos, out, outside = roots
    listing = videos / "list.txt"
    listing.write_text(f"a.mp4\n{outside / 'secret.mp4'}\n")
    with pytest.raises(PathNotAllowed):
        check_request([f"@{listing}"], str(out / "x"), {}, settings)


# --- jobs over a fake backend --------------------------------------------------------------


def test_jobs_submit_show_stop_resume(roots, settings):
    videos, out, _ = roots
    backend = FakeBackend()
    jobs = JobService(settings, backend)
    request = check_request([str(videos)], str(out / "run"), {"stride": 2}, settings)
    job = jobs.submit(request)
    assert backend.envs[job["id"]]["PIPELINE_JOB_ID"] == job["id"]
    assert (
        "-m pipeline.cli.service_job" in backend.entrypoints[job["id"]]
        and "--stride 2" in backend.entrypoints[job["id"]]
    )
    assert jobs.show(job["id"])["state"] == "running"
    with pytest.raises(JobConflict):
        jobs.resume(job["id"])
    assert jobs.stop(job["id"])["state"] == "stopping"
    assert jobs.show(job["id"])["state"] == "stopped"
    again = jobs.resume(job["id"])
    assert again == {"id": job["id"], "state": "pending", "attempt": 2}
    second = f"{job['id']}-attempt2"
    # the same run again: resume
    assert backend.entrypoints[second] == backend.entrypoints[job["id"]]
    backend.finish(second, 3)
    view = jobs.show(job["id"])
    assert view["state"] == "completed_with_failures" and view["attempts"] == 2
    assert [j["id"] for j in jobs.list()] == [job["id"]]
    with pytest.raises(JobNotFound):
        jobs.show("job-unknown")


def test_job_progress_comes_from_its_own_progress_file(roots, settings, monkeypatch):
    videos, out, _ = roots
    backend = FakeBackend()
    jobs = JobService(settings, backend)
    job = jobs.submit(check_request([str(videos)], str(out / "run"), {}, settings))
    (out / "run").mkdir()
    monkeypatch.setenv("PIPELINE_JOB_ID", "another-job")
    ProgressFile(out / "run", interval_s=0).running(
        RunProgress(
            RunCounts(frames_done=5, frames_expected=10, videos_total=2, videos_done=0),
            elapsed_s=1.0,
        )
    )
    # a later run's file is not this job's progress
    assert jobs.show(job["id"])["frames_done"] is None
    monkeypatch.setenv("PIPELINE_JOB_ID", job["id"])
    ProgressFile(out / "run", interval_s=0).running(
        RunProgress(
            RunCounts(
                frames_done=5, frames_expected=10, videos_total=2, videos_done=1, videos_failed=1
            ),
            elapsed_s=1.0,
        )
    )
    view = jobs.show(job["id"])
    assert view["frames_done"] == 5 and view["frames_per_s"] == 5.0 and 0 <= view["eta_s"] <= 1.0
    assert view["videos"] == {
        "total": 2,
        "done": 1,
        "ok": 0,
        "partial": 0,
        "failed": 1,
        "skipped": 0,
    }
    ProgressFile(out / "run").finished(
        {
            "exit_code": 3,
            "totals": {"videos": 2, "videos_ok": 1, "videos_failed": 1, "frames": 9},
            "throughput": {"frames_per_s": 4.5},
        }
    )
    assert (
        read_progress(out / "run")["state"] == "finished"
        and jobs.show(job["id"])["frames_done"] == 9
    )


def test_many_inputs_travel_in_a_list_file(roots, settings):
    videos, out, _ = roots
    for i in range(1005):
        (videos / f"clip{i:04d}.mp4").write_bytes(b"x")
    backend = FakeBackend()
    job = JobService(settings, backend).submit(
        check_request([str(videos)], str(out / "run"), {}, settings)
    )
    entry = backend.entrypoints[job["id"]]
    list_file = out / "run" / ".jobs" / f"{job['id']}.txt"
    assert f"@{list_file}" in entry and len(list_file.read_text().splitlines()) == 1007


# --- the HTTP router -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def names():
    return {0: "person", 2: "car", 5: "bus"}


def write_output(folder: Path, names: dict) -> None:
    """Three videos of boxes with varied classes and confidences (no Ray, no model)."""
    rng = np.random.default_rng(7)
    manifest = Manifest(folder)
    manifest.class_names = names
    for vid, frames in (("aaaa", 7), ("bbbb", 1), ("cccc", 12)):
        writer = VideoResultWriter(folder, vid, names)
        counts = rng.integers(0, 5, frames)
        n = int(counts.sum())
        xy = rng.uniform(0, 500, (n, 2))
        det = Detections(
            np.hstack([xy, xy + 20]), rng.uniform(0.25, 1, n), rng.choice([0, 2, 5], n)
        )
        idx = np.arange(frames) * 3
        writer.add(BatchResult(vid, 0, idx, idx / 30, counts, det))
        writer.commit()
        manifest.update(
            VideoRecord(
                vid,
                f"/videos/{vid}.mp4",
                "ok",
                frames_processed=frames,
                num_detections=n,
                class_counts=writer.class_totals(),
            )
        )
    manifest.save()


async def fake_detect(image):
    return ImageBoxes(image.shape[1], image.shape[0], [])


@pytest.fixture
def client(roots, settings, names):
    videos, out, _ = roots
    backend = FakeBackend()
    app = build_fastapi_app(settings, detector=fake_detect, jobs_backend=backend)
    with TestClient(app, raise_server_exceptions=False) as c:
        c.backend = backend
        yield c


def submit(client, roots, **body) -> str:
    videos, out, _ = roots
    body = {"inputs": [str(videos)], "output": str(out / "run"), **body}
    r = client.post("/jobs", json=body, headers=AUTH)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def all_pages(client, job_id, params, *, fmt="jsonl") -> tuple[pd.DataFrame, int]:
    rows, cursor, pages = [], None, 0
    while True:
        query = {**params, "format": fmt, **({"cursor": cursor} if cursor else {})}
        r = client.get(f"/jobs/{job_id}/detections", params=query, headers=AUTH)
        assert r.status_code == 200, r.text
        pages += 1
        if fmt == "jsonl":
            rows.extend(json.loads(line) for line in r.text.splitlines())
        elif r.content:
            rows.extend(pd.read_parquet(io.BytesIO(r.content)).to_dict("records"))
        cursor = r.headers.get("X-Next-Cursor")
        if not cursor:
            return pd.DataFrame(rows), pages


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"classes": "person,bus"},
        {"classes": "2", "min_conf": 0.6},
        {"start_s": 0.2, "end_s": 0.9, "video": ["cccc", "aaaa"]},
    ],
)
@pytest.mark.parametrize("limit", [1, 7, 10_000])
def test_detections_pages_equal_read_detections(client, roots, names, filters, limit):
    _, out, _ = roots
    write_output(out / "run", names)
    job_id = submit(client, roots)
    got, pages = all_pages(client, job_id, {**filters, "limit": limit})
    expected = read_detections(
        out / "run",
        video_id=filters.get("video"),
        classes=filters["classes"].split(",") if "classes" in filters else None,
        start_s=filters.get("start_s"),
        end_s=filters.get("end_s"),
        min_confidence=filters.get("min_conf"),
    )
    assert len(expected) > 0 and pages == len(expected) // limit + 1
    assert got["video_id"].tolist() == expected["video_id"].tolist()
    assert got["frame_index"].tolist() == expected["frame_index"].tolist()
    for column in ("x1", "y1", "x2", "y2", "confidence"):
        assert np.array_equal(
            got[column].to_numpy(np.float32), expected[column].to_numpy(np.float32)
        )
    assert got["class_name"].tolist() == expected["class_name"].tolist()


def test_detections_as_parquet_per_frame(client, roots, names):
    _, out, _ = roots
    write_output(out / "run", names)
    job_id = submit(client, roots)
    got, _ = all_pages(client, job_id, {"flat": "false", "limit": 5}, fmt="parquet")
    expected = read_detections(out / "run", flat=False)
    assert got["frame_index"].tolist() == expected["frame_index"].tolist()
    assert got["num_detections"].tolist() == expected["num_detections"].tolist()


def test_detect_returns_the_detector_answer(client):
    ok, png = cv2.imencode(".png", np.zeros((48, 64, 3), np.uint8))
    r = client.post("/detect", content=png.tobytes(), headers=AUTH)
    assert r.status_code == 200 and r.json() == {
        "width": 64,
        "height": 48,
        "num_detections": 0,
        "detections": [],
    }


def test_health_docs_and_metrics_need_no_token(client):
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/docs").status_code == 200
    assert "/jobs/{job_id}/detections" in client.get("/openapi.json").json()["paths"]
    client.get("/jobs", headers=AUTH)
    client.get("/jobs")
    text = client.get("/metrics").text
    assert 'pipeline_service_requests_total{method="GET",route="/jobs",status="200"} 1.0' in text
    assert 'pipeline_service_requests_total{method="GET",route="/jobs",status="401"} 1.0' in text
    assert "pipeline_service_request_latency_s_bucket" in text


def test_fuzz_of_bad_requests_gets_no_5xx(client, roots, names):
    _, out, _ = roots
    write_output(out / "run", names)
    job_id = submit(client, roots)
    cases = bad_requests(roots) + [
        (
            "GET",
            f"/jobs/{job_id}/detections",
            {"params": {"classes": "unicorn"}, "headers": AUTH},
            400,
        ),
        ("GET", f"/jobs/{job_id}/detections", {"params": {"classes": ","}, "headers": AUTH}, 400),
        (
            "GET",
            f"/jobs/{job_id}/detections",
            {"params": {"min_conf": "abc"}, "headers": AUTH},
            422,
        ),
        ("GET", f"/jobs/{job_id}/detections", {"params": {"min_conf": 2}, "headers": AUTH}, 422),
        ("GET", f"/jobs/{job_id}/detections", {"params": {"limit": 0}, "headers": AUTH}, 422),
        ("GET", f"/jobs/{job_id}/detections", {"params": {"limit": 10**9}, "headers": AUTH}, 422),
        ("GET", f"/jobs/{job_id}/detections", {"params": {"format": "xml"}, "headers": AUTH}, 422),
        ("GET", f"/jobs/{job_id}/detections", {"params": {"cursor": "!!"}, "headers": AUTH}, 400),
        (
            "GET",
            f"/jobs/{job_id}/detections",
            {"params": {"cursor": "WyJhIiwgLTFd"}, "headers": AUTH},
            400,
        ),
        (
            "GET",
            f"/jobs/{job_id}/detections",
            {"params": {"start_s": "soon"}, "headers": AUTH},
            422,
        ),
        ("POST", f"/jobs/{job_id}/resume", {"headers": AUTH}, 409),
    ]
    for method, path, options, status in cases:
        r = client.request(method, path, **options)
        assert r.status_code == status, (method, path, r.status_code, r.text)
        detail = r.json()["detail"]
        assert isinstance(detail, str) and "Traceback" not in detail and "SECRET" not in detail, (
            detail
        )
        assert len(detail.splitlines()) == 1


def test_detections_of_a_job_whose_run_has_not_written_yet(client, roots):
    job_id = submit(client, roots)
    r = client.get(f"/jobs/{job_id}/detections", headers=AUTH)
    assert r.status_code == 409 and "not" in r.json()["detail"]


def test_image_detector_equals_yolo_predict_on_mixed_sizes(settings, people_mp4):
    """One batch of images of three sizes (grouped by size inside) gives predict's boxes for each."""
    from ultralytics import YOLO

    from pipeline.media.samples import read_frames
    from pipeline.service.detect import ImageDetector, decode_image

    frames = list(read_frames(people_mp4, limit=3))
    encoded = [
        cv2.imencode(".jpg", frames[0])[1],
        cv2.imencode(".png", cv2.resize(frames[1], (640, 360)))[1],
        cv2.imencode(".jpg", frames[2][:, 600:1300])[1],
        cv2.imencode(".jpg", frames[2])[1],
    ]
    images = [decode_image(e.tobytes()) for e in encoded]
    answers = ImageDetector(settings).detect(images)
    reference = YOLO(settings.model)
    for answer, image in zip(answers, images):
        assert answer.as_dict()["num_detections"] > 3
        assert_boxes_equal_predict(answer.as_dict(), image, reference)


def test_jobs_run_one_at_a_time_and_a_waiting_job_can_be_stopped(tmp_path, monkeypatch):
    """A second job waits (queued) while a first holds the lock, runs when it ends, and a job
    stopped while it waits leaves no queued marker behind."""
    import subprocess
    import sys
    import time

    from pipeline.service.queue import is_queued

    monkeypatch.setenv("PIPELINE_JOB_QUEUE_DIR", str(tmp_path / "q"))
    (tmp_path / "q").mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
                "print('locked', flush=True); time.sleep(60)"
            ),
            str(tmp_path / "q" / "run.lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    env = {**os.environ, "PIPELINE_JOB_ID": "job-a"}
    waiting = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline.cli.service_job",
            str(tmp_path / "missing.mp4"),
            "--output",
            str(tmp_path / "out"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 30
    while not is_queued("job-a") and time.time() < deadline:
        time.sleep(0.1)
    assert is_queued("job-a") and waiting.poll() is None
    holder.kill()
    holder.wait()
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 2 and "input not found" in err  # it ran: the CLI's own usage error
    assert not is_queued("job-a")

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
                "print('locked', flush=True); time.sleep(60)"
            ),
            str(tmp_path / "q" / "run.lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    env["PIPELINE_JOB_ID"] = "job-b"
    stopped = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli.service_job", "x.mp4", "--output", "o"], env=env
    )
    while not is_queued("job-b") and time.time() < deadline + 30:
        time.sleep(0.1)
    stopped.terminate()
    assert stopped.wait(30) == 128 + 15 and not is_queued("job-b")
    holder.kill()
    holder.wait()


def test_grafana_dashboard_is_importable_dashboard_json():
    """The structure Grafana's importer needs, panels that do not overlap, and only metrics the
    project (or Ray Serve) exports. tests/service/test_service.py runs every query on a real Prometheus."""
    import re

    from conftest import REPO

    dashboard = json.loads((REPO / "deploy" / "grafana" / "pipeline-dashboard.json").read_text())
    assert dashboard["title"] and dashboard["uid"] and isinstance(dashboard["schemaVersion"], int)
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"
    exported = set(
        re.findall(
            r'"(pipeline_[a-z_]+)"', (REPO / "pipeline" / "runtime" / "metrics.py").read_text()
        )
    )
    cells = set()
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) >= 8
    for panel in dashboard["panels"]:
        assert (
            panel["type"] in {"timeseries", "stat", "gauge", "bargauge", "table"} and panel["title"]
        )
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24 and pos["h"] > 0
        mine = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & mine, f"panel {panel['title']!r} overlaps another"
        cells |= mine
        assert panel["targets"] and len({t["refId"] for t in panel["targets"]}) == len(
            panel["targets"]
        )
        for target in panel["targets"]:
            for metric in re.findall(
                r"ray_(pipeline_[a-z_]+?)(?:_total|_bucket)?\b", target["expr"]
            ):
                assert metric in exported, f"{metric} is not a metric the pipeline exports"
            assert re.findall(r"ray_(pipeline|serve)_", target["expr"])
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in (
        "frames per second",
        "in flight",
        "latency",
        "memory",
        "gpu utilization",
        "video outcomes",
    ):
        assert topic in titles


def test_serve_config_builds_the_app(tmp_path):
    """deploy/serve.yaml's import path and args build the Serve application (nothing started)."""
    import yaml
    from conftest import REPO

    pytest.importorskip("ray.serve")
    from ray.serve import Application

    from pipeline.service.app import build_app

    config = yaml.safe_load((REPO / "deploy" / "serve.yaml").read_text())
    app = config["applications"][0]
    assert app["import_path"] == "pipeline.service.app:build_app"
    token = tmp_path / "token"
    token.write_text("t0k3n")
    args = {**app["args"], "token_file": str(token)}
    assert isinstance(build_app(args), Application)
    with pytest.raises(SettingsError, match="token file"):
        build_app({**app["args"], "token_file": str(tmp_path / "missing")})


@pytest.mark.parametrize(
    "args, env, code, message",
    [
        (["--help"], {}, 0, "--input-root"),
        (
            ["--input-root", "/a", "--output-root", "/b"],
            {},
            2,
            "error: no token: set PIPELINE_SERVICE_TOKEN",
        ),
        (
            ["--output-root", "/b"],
            {"PIPELINE_SERVICE_TOKEN": "t"},
            2,
            "the following arguments are required: --input-root",
        ),
        (
            ["--input-root", "/a", "--output-root", "/b", "--token-file", "/nonexistent"],
            {},
            2,
            "error: cannot read the token file /nonexistent",
        ),
    ],
)
def test_serve_command_line(args, env, code, message):
    import subprocess
    import sys

    clean = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_SERVICE")}
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "serve", *args],
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=60,
    )
    assert done.returncode == code
    assert message in (done.stdout + done.stderr)
    if code == 2:
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_pipeline_help_lists_serve():
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "serve" in done.stdout and "HTTP API" in done.stdout


def test_hostile_names_survive_the_job_entrypoint_shell(roots, settings, tmp_path):
    """Ray runs a job's entrypoint with a shell: every name must reach the run as one argument,
    and nothing in a name may run (this fails without the entrypoint's quoting)."""
    import shlex
    import subprocess
    import sys

    videos, out, _ = roots
    hostile = [
        "$(touch pwned).mp4",
        "a b;touch pwned2.mp4",
        "`touch pwned3`.mp4",
        "quote'\"s.mp4",
        "-rf.mp4",
    ]
    for name in hostile:
        (videos / name).write_bytes(b"x")
    backend = FakeBackend()
    job = JobService(settings, backend).submit(
        check_request([str(videos)], str(out / "r"), {}, settings)
    )
    entry = backend.entrypoints[job["id"]]
    prefix = shlex.join([sys.executable, "-m", "pipeline.cli.service_job"])
    assert entry.startswith(prefix)
    echo = shlex.join([sys.executable, "-c", "import sys; print('\\0'.join(sys.argv[1:]), end='')"])
    done = subprocess.run(
        ["bash", "-c", echo + entry[len(prefix) :]], cwd=tmp_path, capture_output=True, text=True
    )
    argv = done.stdout.split("\0")
    assert [a for a in argv if a.startswith(str(videos))] == [
        str(videos / n) for n in sorted(["a.mp4", "b.mp4", *hostile])
    ]
    assert not list(tmp_path.glob("pwned*")) and not list(videos.glob("pwned*"))


def requests_by_status(metrics: RequestMetrics) -> dict[str, float]:
    totals: dict[str, float] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "pipeline_service_requests_total":
                status = sample.labels["status"]
                totals[status] = totals.get(status, 0) + sample.value
    return totals


def test_metrics_count_each_request_under_the_status_the_client_got(roots, settings):
    async def broken_detect(image):
        raise RuntimeError("an injected fault")

    metrics = RequestMetrics()
    app = build_fastapi_app(
        settings, detector=broken_detect, jobs_backend=FakeBackend(), metrics=metrics
    )
    png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    cases = bad_requests(roots)
    cases.append(("POST", "/detect", {"content": png, "headers": AUTH}, 500))  # the fault
    got: dict[str, float] = {}
    with TestClient(app, raise_server_exceptions=False) as client:
        for method, path, options, status in cases:
            assert client.request(method, path, **options).status_code == status, (method, path)
            got[str(status)] = got.get(str(status), 0) + 1
    assert {"400", "401", "403", "404", "413", "415", "422", "500"} <= set(got)
    assert requests_by_status(metrics) == got


def test_job_endpoints_without_a_cluster_answer_503_after_their_own_checks(roots, settings):
    """The README's router in a plain FastAPI app, with nothing at the job API's address."""
    from dataclasses import replace

    from fastapi import FastAPI

    from pipeline.service import make_router

    videos, out, _ = roots
    nowhere = "http://127.0.0.1:9"  # the discard port: nothing listens there
    app = FastAPI()
    app.include_router(make_router(replace(settings, ray_dashboard=nowhere), detector=fake_detect))
    job = {"inputs": [str(videos)], "output": str(out / "r")}
    with TestClient(app, raise_server_exceptions=False) as client:
        bad = client.post("/jobs", json={**job, "settings": {"stride": 0}}, headers=AUTH)
        assert bad.status_code == 400 and "stride" in bad.json()["detail"]
        bad = client.post("/jobs", json={**job, "settings": {"fps": -1}}, headers=AUTH)
        assert bad.status_code == 400 and bad.json()["detail"] == "fps must be positive"
        for method, path, body in [
            ("POST", "/jobs", job),
            ("GET", "/jobs", None),
            ("GET", "/jobs/job-0123456789ab", None),
            ("DELETE", "/jobs/job-0123456789ab", None),
            ("GET", "/jobs/job-0123456789ab/detections", None),
        ]:
            r = client.request(method, path, json=body, headers=AUTH)
            assert r.status_code == 503, (method, path, r.status_code, r.text)
            detail = r.json()["detail"]
            assert nowhere in detail and len(detail.splitlines()) == 1, detail


def test_a_resumed_job_shows_its_new_attempt_s_progress_from_its_first_report(
    roots, settings, monkeypatch
):
    videos, out, _ = roots
    backend = FakeBackend()
    jobs = JobService(settings, backend)
    job = jobs.submit(check_request([str(videos)], str(out / "run"), {}, settings))
    (out / "run").mkdir()
    first = backend.envs[job["id"]]
    monkeypatch.setenv("PIPELINE_JOB_ID", first["PIPELINE_JOB_ID"])
    monkeypatch.setenv("PIPELINE_JOB_ATTEMPT", first["PIPELINE_JOB_ATTEMPT"])
    ProgressFile(out / "run", interval_s=0).running(
        RunProgress(RunCounts(frames_done=40, frames_expected=80, videos_total=2), elapsed_s=2.0)
    )
    assert jobs.show(job["id"])["frames_done"] == 40
    jobs.stop(job["id"])
    jobs.resume(job["id"])
    # The stopped attempt's file is still there: not the new attempt's progress.
    assert jobs.show(job["id"])["frames_done"] is None
    second = backend.envs[f"{job['id']}-attempt2"]
    assert second["PIPELINE_JOB_ID"] == job["id"] != second["PIPELINE_JOB_ATTEMPT"]
    monkeypatch.setenv("PIPELINE_JOB_ATTEMPT", second["PIPELINE_JOB_ATTEMPT"])
    ProgressFile(out / "run", interval_s=0).running(
        RunProgress(RunCounts(frames_done=3, frames_expected=80, videos_total=2), elapsed_s=1.0)
    )
    assert jobs.show(job["id"])["frames_done"] == 3


# --- analyses -------------------------------------------------------------------------------


def write_tracked_output(folder: Path, names: dict) -> None:
    """Two objects gliding across a 640x480 video for 40 frames, tracked as a --track run is."""
    from pipeline.analysis.tracking import track_detections_file
    from pipeline.output.layout import OutputLayout

    manifest = Manifest(folder)
    manifest.class_names = names
    writer = VideoResultWriter(folder, "walk", names)
    frames = np.arange(40)
    xyxy = []
    for f in frames:
        xyxy += [[100 + 8 * f, 100, 140 + 8 * f, 200], [500 - 8 * f, 300, 540 - 8 * f, 400]]
    det = Detections(np.array(xyxy, np.float32), np.full(80, 0.9), np.zeros(80, int))
    writer.add(BatchResult("walk", 0, frames, frames / 30, np.full(40, 2), det))
    untracked = writer.commit()
    layout = OutputLayout(folder)
    layout.tracks("walk").parent.mkdir(parents=True, exist_ok=True)
    tracked = untracked.with_name(".tracked.parquet")
    num = track_detections_file(
        untracked, tracked, layout.tracks("walk"), video_id="walk", names=names
    )
    os.replace(tracked, untracked)
    manifest.update(
        VideoRecord("walk", "/videos/walk.mp4", "ok", frames_processed=40, width=640, height=480,
                    num_detections=80, class_counts=writer.class_totals(), num_tracks=num)
    )  # fmt: skip
    manifest.save()


def test_analysis_of_a_job(client, roots, names):
    from pipeline.analysis.analyze import analyze
    from pipeline.analysis.spec import spec_from_options

    _, out, _ = roots
    write_tracked_output(out / "run", names)
    job_id = submit(client, roots)
    r = client.get(f"/jobs/{job_id}/analysis", headers=AUTH)
    assert r.status_code == 404 and "no analysis" in r.json()["detail"]
    spec = spec_from_options(
        lines=["middle=320,0,320,480"], zones=["right=320,0,640,0,640,480,320,480"]
    )
    analysis = analyze(out / "run", spec, name="counts")
    r = client.get(f"/jobs/{job_id}/analysis", headers=AUTH)
    assert r.status_code == 200, r.text
    (found,) = r.json()["analyses"]
    assert found["lines"] == [
        {"name": "middle", "in": 1, "out": 1, "by_class": {"person": {"in": 1, "out": 1}}}
    ]
    assert found["zones"][0]["visits"] == 2 and found["spec"] == spec.to_dict()
    assert {k: v for k, v in found.items() if k != "spec"} == analysis.summary()
    r = client.get(
        f"/jobs/{job_id}/analysis", params={"name": "counts", "table": "crossings"}, headers=AUTH
    )
    rows = [json.loads(line) for line in r.text.splitlines()]
    assert [(x["direction"], x["frame_index"]) for x in rows] == list(
        zip(analysis.crossings["direction"], analysis.crossings["frame_index"])
    )
    r = client.get(f"/jobs/{job_id}/analysis", params={"name": "other"}, headers=AUTH)
    assert r.status_code == 404 and "counts" in r.json()["detail"]
    r = client.get(f"/jobs/{job_id}/analysis", params={"table": "crossings"}, headers=AUTH)
    assert r.status_code == 400
