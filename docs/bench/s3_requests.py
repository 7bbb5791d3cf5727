"""Object-storage requests of a run over short clips, on a local S3 server (moto), by layout.

    python docs/bench/s3_requests.py --model ../shared/models/yolo11n-coco-int8dq.pt [--clips 1000]

``--clips`` generated clips (160x96, 4 to 12 frames) are uploaded to the server, then
``python -m pipeline run s3://… --output s3://… --imgsz 160`` runs once with ``--layout auto``
(the clips are packed) and once with ``--layout per-video``. moto's request recorder counts each
run's write requests under the output: PUTs (pyarrow uploads a file as a multipart upload: a
POST to start it, one PUT per 5 MiB part, a POST to complete it), POSTs and DELETEs. Prints
one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench-key",
    "AWS_SECRET_ACCESS_KEY": "bench-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def recorder(port: int, step: str) -> bytes:
    url = f"http://127.0.0.1:{port}/moto-api/recorder/{step}"
    method = "GET" if step.startswith("download") else "POST"
    with urllib.request.urlopen(urllib.request.Request(url, method=method)) as answer:
        return answer.read()


def requests_of(port: int, prefix: str) -> Counter:
    counts: Counter = Counter()
    for line in recorder(port, "download-recording").decode().splitlines():
        entry = json.loads(line)
        path = urllib.parse.unquote(urllib.parse.urlparse(entry["url"]).path)
        if path.startswith(prefix):
            where = "detections" if "/detections/" in path else "other"
            counts[f"{entry['method']} {where}"] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--clips", type=int, default=1000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-s3-"))
    os.environ["MOTO_RECORDER_FILEPATH"] = str(work / "recording.jsonl")
    os.environ.update(CREDENTIALS)
    import pyarrow.fs as pafs
    from moto.server import ThreadedMotoServer

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
    from conftest import tiny_videos

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    query = f"endpoint_override=127.0.0.1:{port}&scheme=http"
    fs = pafs.S3FileSystem(
        endpoint_override=f"127.0.0.1:{port}", scheme="http", allow_bucket_creation=True
    )
    result: dict = {"clips": args.clips}
    try:
        fs.create_dir("videos")
        fs.create_dir("results")
        (work / "clips").mkdir()
        lengths = [4 + i % 9 for i in range(args.clips)]
        for path in tiny_videos(work / "clips", lengths):
            pafs.copy_files(path, f"videos/clips/{Path(path).name}", destination_filesystem=fs)
        result["frames"] = sum(lengths)
        env = {**os.environ, "YOLO_OFFLINE": "1"}
        env.pop("RAY_ADDRESS", None)
        for layout in ("auto", "per-video"):
            recorder(port, "reset-recording")
            recorder(port, "start-recording")
            started = time.perf_counter()
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pipeline",
                    "run",
                    f"s3://videos/clips/?{query}",
                    "--output",
                    f"s3://results/{layout}?{query}",
                    "--model",
                    args.model,
                    "--imgsz",
                    "160",
                    "--layout",
                    layout,
                    "--no-progress",
                    "--quiet",
                ],
                env={**env, "PIPELINE_STAGING_DIR": str(work / f"staging-{layout}")},
                capture_output=True,
                text=True,
            )
            wall = time.perf_counter() - started
            recorder(port, "stop-recording")
            if done.returncode != 0:
                raise SystemExit(done.stderr[-3000:])
            counts = requests_of(port, f"/results/{layout}/")
            puts = counts["PUT detections"] + counts["PUT other"]
            result[layout] = {
                "wall_s": wall,
                "requests": dict(sorted(counts.items())),
                "puts": puts,
                "puts_per_1000_clips": 1000 * puts / args.clips,
                "detections_files": len(
                    fs.get_file_info(pafs.FileSelector(f"results/{layout}/detections"))
                ),
            }
    finally:
        server.stop()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
