"""Helpers of the service tests (``tests/service/``): the README's blocks as a user copies
them, a new user's shell, the API's token, the requests a client might get wrong, and the
check of ``POST /detect`` against ``YOLO.predict``."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import cv2
import numpy as np
from conftest import REPO

from pipeline.inference.detections import Detections

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def doc_block(page: str, heading: str, language: str = "bash") -> str:
    """The first ```language block after ``heading`` in ``page`` (``README.md``,
    ``docs/service.md``): what a user copies."""
    text = (REPO / page).read_text()
    after = text[text.index(heading) :]
    return re.search(rf"```{language}\n(.*?)```", after, re.S).group(1)


def fresh_shell_env() -> dict:
    """A new user's shell: this virtualenv activated, no Ray or test variables."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RAY_", "PIPELINE_", "YOLO_", "PYTEST")) and k != "PYTHONPATH"
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(Path(sys.executable).parent.parent)
    return env


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` (its pixels are missing)."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
    )


def bad_requests(roots, max_upload: int = 200_000) -> list[tuple[str, str, dict, int]]:
    """(method, path, request options, expected status) that a client might send."""
    videos, out, outside = roots
    png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    huge_header = png_header(60_000, 60_000)
    job = {"inputs": [str(videos)], "output": str(out / "r")}
    return [
        ("GET", "/jobs", {}, 401),
        ("GET", "/jobs", {"headers": {"Authorization": "Bearer wrong"}}, 401),
        ("GET", "/jobs", {"headers": {"Authorization": f"Basic {TOKEN}"}}, 401),
        ("GET", "/jobs", {"headers": {"Authorization": f"Bearer {TOKEN}x"}}, 401),
        ("POST", "/detect", {"content": png}, 401),
        ("POST", "/detect", {"content": b"\0" * (max_upload + 1), "headers": AUTH}, 413),
        (
            "POST",
            "/detect",
            {"content": (b"\0" * (max_upload // 2 + 1) for _ in range(2)), "headers": AUTH},
            413,
        ),  # chunked
        ("POST", "/detect", {"content": b"GIF89a not an image at all", "headers": AUTH}, 415),
        ("POST", "/detect", {"content": b"", "headers": AUTH}, 415),
        ("POST", "/detect", {"content": png[:20], "headers": AUTH}, 415),
        ("POST", "/detect", {"content": huge_header, "headers": AUTH}, 415),
        ("GET", "/jobs/job-unknown", {"headers": AUTH}, 404),
        ("DELETE", "/jobs/job-unknown", {"headers": AUTH}, 404),
        ("POST", "/jobs/job-unknown/resume", {"headers": AUTH}, 404),
        ("GET", "/jobs/job-unknown/detections", {"headers": AUTH}, 404),
        ("POST", "/jobs", {"json": {**job, "inputs": ["/etc/passwd"]}, "headers": AUTH}, 403),
        (
            "POST",
            "/jobs",
            {"json": {**job, "inputs": [f"{videos}/../outside/secret.mp4"]}, "headers": AUTH},
            403,
        ),
        ("POST", "/jobs", {"json": {**job, "output": "/var/elsewhere"}, "headers": AUTH}, 403),
        ("POST", "/jobs", {"json": {**job, "output": f"{out}/../outside"}, "headers": AUTH}, 403),
        (
            "POST",
            "/jobs",
            {"json": {**job, "inputs": ["s3://KEY:SECRET@bucket/x.mp4"]}, "headers": AUTH},
            403,
        ),
        ("POST", "/jobs", {"json": {**job, "inputs": []}, "headers": AUTH}, 422),
        ("POST", "/jobs", {"json": {**job, "settings": {"batch_size": -1}}, "headers": AUTH}, 400),
        ("POST", "/jobs", {"json": {**job, "settings": {"imgsz": 10**12}}, "headers": AUTH}, 400),
        (
            "POST",
            "/jobs",
            {"json": {**job, "settings": {"num_actors": 1_000_000}}, "headers": AUTH},
            400,
        ),
        ("POST", "/jobs", {"json": {**job, "settings": {"stride": 2.5}}, "headers": AUTH}, 400),
        (
            "POST",
            "/jobs",
            {"json": {**job, "settings": {"classes": ["persn"]}}, "headers": AUTH},
            400,
        ),
        ("POST", "/jobs", {"json": {**job, "settings": {"classes": [99]}}, "headers": AUTH}, 400),
        (
            "POST",
            "/jobs",
            {"json": {**job, "settings": {"model": "/etc/passwd"}}, "headers": AUTH},
            400,
        ),
        (
            "POST",
            "/jobs",
            {"json": {**job, "settings": {"stride": {"a": 1}}}, "headers": AUTH},
            422,
        ),
        (
            "POST",
            "/jobs",
            {"json": {**job, "inputs": [f"{videos}/nope.mp4"]}, "headers": AUTH},
            400,
        ),
        (
            "POST",
            "/jobs",
            {"content": b"{not json", "headers": {**AUTH, "Content-Type": "application/json"}},
            422,
        ),
        ("POST", "/jobs", {"json": ["a", "list"], "headers": AUTH}, 422),
        ("POST", "/jobs", {"json": {**job, "inputs": ["relative.mp4"]}, "headers": AUTH}, 403),
        (
            "POST",
            "/jobs",
            {"json": {**job, "inputs": [f"{videos}/a\u0000.mp4"]}, "headers": AUTH},
            403,
        ),
    ]


def assert_boxes_equal_predict(answer: dict, image: np.ndarray, reference) -> None:
    """An answer of POST /detect against ``YOLO.predict`` on the same decoded image."""
    want = Detections.from_ultralytics(
        reference.predict(image, conf=0.25, iou=0.7, imgsz=640, verbose=False)[0]
    )
    got = answer["detections"]
    assert answer["num_detections"] == len(got) == len(want)
    assert (answer["width"], answer["height"]) == (image.shape[1], image.shape[0])
    xyxy = np.array([[b["x1"], b["y1"], b["x2"], b["y2"]] for b in got], np.float32).reshape(-1, 4)
    order_got, order_want = np.lexsort(xyxy.T[::-1]), np.lexsort(want.xyxy.T[::-1])
    np.testing.assert_allclose(xyxy[order_got], want.xyxy[order_want], atol=0.05)
    np.testing.assert_allclose(
        np.array([b["confidence"] for b in got])[order_got], want.confidence[order_want], atol=1e-3
    )
    assert [got[i]["class_id"] for i in order_got] == want.class_id[order_want].tolist()
    assert all(b["class_name"] == reference.names[b["class_id"]] for b in got)
