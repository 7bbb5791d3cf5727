"""s3:// inputs and output against a real S3-compatible server on localhost (moto in server mode).

Each run is a separate process with its own local Ray (credentials reach it and its workers
only through the environment, as on a real cluster).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from pipeline.media.samples import read_frames, write_video

pytestmark = pytest.mark.slow

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing-key",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-do-not-leak",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory, people_mp4):
    # where moto's request recorder writes (read by ``requests_during``): set before moto loads
    recording = tmp_path_factory.mktemp("moto") / "recording.jsonl"
    os.environ.setdefault("MOTO_RECORDER_FILEPATH", str(recording))
    pytest.importorskip("moto")
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    query = f"endpoint_override=127.0.0.1:{port}&scheme=http"
    fs = pafs.S3FileSystem(
        endpoint_override=f"127.0.0.1:{port}",
        scheme="http",
        region="us-east-1",
        allow_bucket_creation=True,
    )
    fs.create_dir("videos")
    fs.create_dir("results")
    import cv2

    frames = [cv2.resize(f, (320, 180)) for f in read_frames(people_mp4, limit=40)]
    folder = tmp_path_factory.mktemp("s3src")
    for i, n in enumerate((24, 16, 12)):
        local = folder / f"clip {i}.mp4"
        write_video(local, frames[i : i + n])
        pafs.copy_files(str(local), f"videos/backlog/clip {i}.mp4", destination_filesystem=fs)
    try:
        yield fs, query
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def cli(*args, credentials_in_env: bool = True, **popen):
    env = {
        **os.environ,
        **CREDENTIALS,
        "YOLO_OFFLINE": "1",
        "PIPELINE_STAGING_DIR": popen.pop("staging"),
    }
    env.pop("RAY_ADDRESS", None)
    if not credentials_in_env:
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            env.pop(key)
    # Default SIGINT in the child, as in a terminal's foreground (see test_interrupts.start).
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "run", *args, "--no-progress", "--batch-size", "4"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        **popen,
    )


def remote_rows(fs, prefix):
    import pyarrow.dataset as ds

    return (
        ds.dataset(f"{prefix}/detections", filesystem=fs, format="parquet").to_table().to_pandas()
    )


def remote_status(fs, prefix):
    from pipeline.output.videos_table import VideosTable

    table = VideosTable(f"{prefix}/videos.parquet", fs).read()
    return [] if table is None else table.to_pylist()


def staged_ok(staging: str) -> set[str]:
    from pipeline.output.manifest import Manifest

    return {
        vid
        for log in Path(staging).rglob(Manifest.LOG_NAME)
        for vid, r in Manifest(log.parent).records.items()
        if r.status == "ok"
    }


def test_s3_in_s3_out(s3, tmp_path, model_path):
    fs, query = s3
    proc = cli(
        f"s3://videos/backlog/?{query}",
        "--output",
        f"s3://results/run1?{query}",
        "--model",
        model_path,
        "--track",
        staging=str(tmp_path / "staging"),
    )
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    rows = remote_rows(fs, "results/run1")
    assert len(rows) == 24 + 16 + 12 and not rows.duplicated(["video_id", "frame_index"]).any()
    status = remote_status(fs, "results/run1")
    assert sorted(s["status"] for s in status) == ["ok"] * 3
    assert sorted(s["path"].split("?")[0] for s in status) == [
        f"s3://videos/backlog/clip%20{i}.mp4" for i in range(3)
    ]
    with fs.open_input_file("results/run1/run.json") as f:
        record = f.read().decode()
    everything = record + json.dumps(status) + stdout + stderr
    assert (
        CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in everything
        and CREDENTIALS["AWS_ACCESS_KEY_ID"] not in everything
    )
    # the helpers read it back from the bucket, too
    import pipeline

    flat = pipeline.read_detections(f"s3://results/run1?{query}")
    assert len(flat) == rows["num_detections"].sum() > 0
    # --track: the tracks summaries were published beside the detections
    tracks = pipeline.read_tracks(f"s3://results/run1?{query}")
    assert set(tracks["video_id"]) == set(rows["video_id"]) and flat["track_id"].notna().any()
    one = status[0]["video_id"]
    only_one = pipeline.read_detections(f"s3://results/run1?{query}", video_id=one)
    assert set(only_one["video_id"]) == {one} and len(only_one) == (flat["video_id"] == one).sum()


def test_interrupted_s3_run_resumes_without_duplicates(s3, tmp_path, model_path, people_mp4):
    fs, query = s3
    # A short video, a long one, a short one, in that order: the interrupt, sent as soon as the
    # first is complete, lands while the long one is in progress (with three short clips the
    # run could finish first).
    import cv2

    frames = [cv2.resize(f, (320, 180)) for f in read_frames(people_mp4, limit=40)]
    lengths = {"a.mp4": 12, "b.mp4": 240, "c.mp4": 16}
    for name, n in lengths.items():
        local = tmp_path / name
        write_video(local, [frames[i % len(frames)] for i in range(n)])
        pafs.copy_files(str(local), f"videos/interrupted/{name}", destination_filesystem=fs)
    args = (
        f"s3://videos/interrupted/?{query}",
        "--output",
        f"s3://results/run2?{query}",
        "--model",
        model_path,
        "--max-open-videos",
        "1",
        "--part-rows",  # each short clip's part published as it ends: a is done before b
        "1",
        "--imgsz",  # the resume's 250 frames at a quarter of the default's work
        "320",
    )
    staging = str(tmp_path / "staging")
    proc = cli(*args, staging=staging)
    deadline = time.time() + 300
    # Interrupt once the first video is complete: its status is in the staging folder's log at
    # once (the bucket's videos.parquet is only replaced when the log is folded into it).
    while not staged_ok(staging):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "ray"), "stop", "--force"],
        capture_output=True,
    )
    assert proc.returncode == 130, stderr[-3000:]
    done_before = {s["video_id"] for s in remote_status(fs, "results/run2") if s["status"] == "ok"}
    assert 1 <= len(done_before) < 3
    # only complete videos visible
    assert set(remote_rows(fs, "results/run2")["video_id"]) == done_before

    proc = cli(*args, staging=str(tmp_path / "other-staging"))  # resume state comes from the bucket
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    with fs.open_input_file("results/run2/run.json") as f:
        record = json.loads(f.read())
    assert record["totals"]["videos_skipped"] == len(done_before)
    rows = remote_rows(fs, "results/run2")
    assert (
        len(rows) == sum(lengths.values())
        and not rows.duplicated(["video_id", "frame_index"]).any()
    )


@contextlib.contextmanager
def requests_during(query: str):
    """The S3 requests the server saw meanwhile, as (method, path) pairs (moto's recorder)."""
    import urllib.parse
    import urllib.request

    base = "http://" + urllib.parse.parse_qs(query)["endpoint_override"][0] + "/moto-api/recorder"
    for step in ("reset-recording", "start-recording"):
        urllib.request.urlopen(urllib.request.Request(f"{base}/{step}", method="POST"))
    seen: list[tuple[str, str]] = []
    try:
        yield seen
    finally:
        urllib.request.urlopen(urllib.request.Request(f"{base}/stop-recording", method="POST"))
        with urllib.request.urlopen(f"{base}/download-recording") as answer:
            for line in answer.read().decode().splitlines():
                entry = json.loads(line)
                path = urllib.parse.unquote(urllib.parse.urlparse(entry["url"]).path)
                seen.append((entry["method"], path))


def test_a_packed_run_puts_one_object_per_part_not_per_clip(s3, tmp_path, model_path):
    """40 short clips to object storage: their rows go in part files, each uploaded once by its
    worker under .staging/ (pyarrow uploads a file as a multipart upload: a POST to start it, a
    PUT of its one part, a POST to complete it), then copied into detections/ by the coordinator
    (one server-side copy, a PUT with a copy source) and the staged object deleted; nothing per
    clip; a rerun changes nothing."""
    from conftest import tiny_videos

    fs, query = s3
    lengths = [4 + i % 9 for i in range(40)]
    for path in tiny_videos(tmp_path, lengths):
        name = Path(path).name
        pafs.copy_files(path, f"videos/many/{name}", destination_filesystem=fs)
    args = (
        f"s3://videos/many/?{query}",
        "--output",
        f"s3://results/packed?{query}",
        "--model",
        model_path,
        "--imgsz",
        "160",
    )
    with requests_during(query) as seen:
        proc = cli(*args, staging=str(tmp_path / "staging"))
        _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    puts = [  # less directory markers (pyarrow's, empty objects named .../)
        path
        for method, path in seen
        if method == "PUT" and path.startswith("/results/") and not path.endswith("/")
    ]
    print(f"{len(puts)} PUTs for 40 clips: {sorted(puts)}")
    detections = [p for p in puts if p.startswith("/results/packed/detections/")]
    staged = [p for p in puts if p.startswith("/results/packed/.staging/")]
    parts = fs.get_file_info(pafs.FileSelector("results/packed/detections"))
    assert len(detections) == len(staged) == len(parts) <= 4  # 40 clips, 314 rows
    # and a handful for videos.parquet, run.json, runs/, the lease
    assert len(puts) <= 2 * len(parts) + 8, puts
    posts = [p for m, p in seen if m == "POST" and p.startswith("/results/packed/.staging/")]
    assert len(posts) == 2 * len(staged)  # each upload's start and end, nothing per clip
    assert not fs.get_file_info(pafs.FileSelector("results/packed/.staging", allow_not_found=True))
    rows = remote_rows(fs, "results/packed")
    assert len(rows) == sum(lengths) and not rows.duplicated(["video_id", "frame_index"]).any()
    proc = cli(*args, staging=str(tmp_path / "other-staging"))
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    assert len(remote_rows(fs, "results/packed")) == sum(lengths)


def test_the_staging_folder_is_private_to_the_user_not_a_fixed_path_in_tmp(tmp_path, monkeypatch):
    import stat
    import tempfile

    from pipeline.output.store import staging_dir_for

    monkeypatch.delenv("PIPELINE_STAGING_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = staging_dir_for("s3://bucket/out?endpoint_override=localhost:9000")
    assert folder.parent == tmp_path / "cache" / "yolo-pipeline" / "staging"
    assert stat.S_IMODE(folder.parent.stat().st_mode) == 0o700
    # stable: resume, lease
    assert folder == staging_dir_for("s3://bucket/out?endpoint_override=localhost:9000")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    folder = staging_dir_for("s3://bucket/out")
    assert folder.parent == tmp_path / "home" / ".cache" / "yolo-pipeline" / "staging"
    assert not str(folder).startswith(tempfile.gettempdir() + "/yolo")


@pytest.mark.parametrize(
    "text, shown",
    [
        ("s3://KEY:SECRET@bucket/out", "s3://bucket/out"),
        (
            "s3://bucket/v.mp4?secret_key=S&endpoint_override=h:9000",
            "s3://bucket/v.mp4?endpoint_override=h%3A9000",
        ),
        (
            "When reading s3://KEY:SECRET@bucket/out?x=1: refused (gs://a:b@c/d).",
            "When reading s3://bucket/out?x=1: refused (gs://c/d).",
        ),
        ("/local/path with: colons.mp4", "/local/path with: colons.mp4"),
    ],
)
def test_credentials_are_redacted_in_uris_and_in_messages(text, shown):
    from pipeline.locations import redact

    assert redact(text) == shown


def test_credentials_inside_the_uri_are_never_shown_or_stored(s3, tmp_path, model_path):
    """pyarrow takes s3://KEY:SECRET@bucket/...: those URIs work, and the secret appears in no
    message, summary, listing, run record or manifest, local or remote."""
    fs, query = s3
    key, secret = CREDENTIALS["AWS_ACCESS_KEY_ID"], CREDENTIALS["AWS_SECRET_ACCESS_KEY"]
    uri = lambda path: f"s3://{key}:{secret}@{path}?{query}"  # noqa: E731
    staging = tmp_path / "staging"
    typo = cli(
        uri("videos/backlog/clip 9.mp4"),
        "--output",
        uri("results/creds"),
        "--model",
        model_path,
        staging=str(staging),
        credentials_in_env=False,
    )
    out, err = typo.communicate(timeout=600)
    assert typo.returncode == 2 and "input not found: s3://videos/backlog/clip 9.mp4" in err, err
    listing = tmp_path / "list.txt"
    listing.write_text(f"{uri('videos/backlog/clip 1.mp4')}\n{uri('videos/backlog/gone.mp4')}\n")
    run = cli(
        f"@{listing}",
        "--output",
        uri("results/creds"),
        "--model",
        model_path,
        staging=str(staging),
        credentials_in_env=False,
    )
    stdout, stderr = run.communicate(timeout=600)
    assert run.returncode == 3, stderr[-3000:]  # one video read through the URI's keys, one missing
    assert "Videos: 2 (1 ok" in stdout
    seen = [out, err, stdout, stderr]
    seen += [p.read_bytes().decode(errors="replace") for p in staging.rglob("*") if p.is_file()]
    remote = [f"results/creds/{name}" for name in ("run.json",)] + [
        info.path for info in fs.get_file_info(pafs.FileSelector("results/creds/videos.parquet"))
    ]
    for path in remote:
        with fs.open_input_file(path) as f:
            seen.append(f.read().decode(errors="replace"))
    for text in seen:
        assert secret not in text and f"{key}:" not in text
    status = remote_status(fs, "results/creds")
    assert sorted(r["status"] for r in status) == ["failed", "ok"]
    assert all(r["path"].startswith("s3://videos/backlog/") for r in status)
