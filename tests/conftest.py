"""Shared fixtures: the real clip and model from ../shared, videos generated from them, and one
local Ray shared by the test modules that ask for it (``ray_local``: those modules run one after
the other, and the Ray is shut down before any other test, and at the end)."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import pandas

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_VERBOSE", "False")

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("PIPELINE_SHARED", REPO.parent / "shared"))
PEOPLE = SHARED / "data" / "people.mp4"
MODEL = SHARED / "models" / "yolo11n-coco-int8dq.pt"
OPENVINO_MODEL = SHARED / "models" / "yolo11n_int8_openvino_model"


@pytest.fixture(autouse=True)
def _cuda_gate(request):
    """``needs_cuda`` tests skip without CUDA, unless PIPELINE_EXPECT_CUDA=1 says a GPU must be there."""
    if request.node.get_closest_marker("needs_cuda") is None:
        return
    import torch

    if not torch.cuda.is_available():
        if os.environ.get("PIPELINE_EXPECT_CUDA") == "1":
            pytest.fail("PIPELINE_EXPECT_CUDA=1 but torch sees no CUDA device")
        pytest.skip("needs CUDA (PIPELINE_EXPECT_CUDA=1 turns this skip into a failure)")


@pytest.fixture(autouse=True)
def _fast_tier_starts_no_ray(request):
    """The fast tier (``-m "not slow"``, ``make fast``) is Ray-free: a test not marked slow
    that asks for Ray, or leaves it running, fails (mark it slow, or fake Ray)."""
    slow = request.node.get_closest_marker("slow") is not None
    if not slow and "ray_local" in request.fixturenames:
        pytest.fail("a test not marked slow starts Ray (ray_local): mark it slow")

    def ray_up() -> bool:  # (a slow test's module may hold a Ray while this one runs)
        ray = sys.modules.get("ray")
        return ray is not None and getattr(ray, "is_initialized", lambda: False)()

    before = ray_up()
    yield
    if not slow and not before and ray_up():
        pytest.fail("a test not marked slow started Ray: mark it slow, or fake Ray")


def pytest_sessionfinish(session, exitstatus):
    """The shared Ray shut down; a fast-tier session that started a Ray node (a raylet), in any
    process, fails."""
    _shut_down_shared_ray()
    if "not slow" not in (session.config.getoption("markexpr") or ""):
        return
    import psutil

    started = [
        p.info["pid"]
        for p in psutil.process_iter(["pid", "name", "create_time"])
        if p.info["name"] == "raylet" and p.info["create_time"] >= _SESSION_STARTED
    ]
    if started:
        print(f"\nthe fast tier started Ray (raylet pids {started}): a Ray test is not marked slow")
        session.exitstatus = 1


_SESSION_STARTED = time.time() - 1  # process start times are rounded


@pytest.fixture(scope="session")
def people_mp4() -> Path:
    if not PEOPLE.exists():
        pytest.skip(f"{PEOPLE} not found (set PIPELINE_SHARED to the shared folder)")
    # Its real path: the pipeline records a video by it (symlinks resolved, the identity rule),
    # and ../shared may be a link.
    return PEOPLE.resolve()


@pytest.fixture(scope="session")
def model_path() -> str:
    if not MODEL.exists():
        pytest.skip(f"{MODEL} not found (set PIPELINE_SHARED to the shared folder)")
    return str(MODEL)


@pytest.fixture(scope="session")
def clips(tmp_path_factory, people_mp4) -> dict[str, Path]:
    """Short real clips cut from people.mp4: re-encoded, shrunk, in other containers."""
    import cv2

    from pipeline.media.samples import read_frames, write_video

    folder = tmp_path_factory.mktemp("clips")
    frames = list(read_frames(people_mp4, limit=40))
    small = [cv2.resize(f, (640, 360), interpolation=cv2.INTER_AREA) for f in frames]
    out = {
        "short_1080p": folder / "short_1080p.mp4",
        "small_h264": folder / "small_h264.mp4",
        "small_mjpeg": folder / "small_mjpeg.avi",
        "small_vp9": folder / "small_vp9.webm",
        "tiny_17": folder / "tiny_17.mp4",
    }
    write_video(out["short_1080p"], frames[:24])
    write_video(out["small_h264"], small)
    write_video(out["small_mjpeg"], small[:20], codec="mjpeg", pix_fmt="yuvj420p")
    write_video(
        out["small_vp9"],
        small[:20],
        codec="libvpx-vp9",
        pix_fmt="yuv420p",
        options={"deadline": "realtime", "cpu-used": "8"},
    )
    write_video(out["tiny_17"], small[:17])
    return out


@pytest.fixture(scope="module")
def ray_local():
    """The shared local Ray (started by the first module that asks; a Ray start and shutdown
    cost about 6 s, per module otherwise). The pipeline joins it instead of starting its own."""
    import ray

    if not ray.is_initialized():
        os.environ.pop("RAY_ADDRESS", None)
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray


def _shut_down_shared_ray() -> None:
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def pytest_configure(config):
    """``make test``'s slow group keeps one Ray at a time; on pytest 9 pytest-xdist (3.8) cannot
    group tests (it rewrites ``item._nodeid``, which pytest 9 no longer reads)."""
    if config.getoption("dist", "no") == "loadgroup" and int(pytest.__version__.split(".")[0]) >= 9:
        raise pytest.UsageError(
            "--dist loadgroup needs pytest below 9 here (pyproject.toml pins it): on pytest "
            f"{pytest.__version__} the slow tests would run two Rays at once"
        )


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """The modules that use the shared Ray run together, where the first of them was. With
    pytest-xdist (``make test``), every slow test that may start Ray is in one group, run by one
    worker in this order (one Ray at a time on the machine), while the rest share the other CPU."""
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("ray_free"):
            item.add_marker(pytest.mark.xdist_group("slow"))
    shared = [item for item in items if "ray_local" in item.fixturenames]
    if not shared:
        return
    modules = {item.module for item in shared}
    _SHARED_RAY_MODULES.update(m.__name__ for m in modules)
    first = next(i for i, item in enumerate(items) if item.module in modules)
    rest = [item for item in items if item.module not in modules]
    items[:] = rest[:first] + [i for i in items if i.module in modules] + rest[first:]


_SHARED_RAY_MODULES: set[str] = set()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """One Ray at a time: the shared one goes before a test of another module (which may start
    its own, or a cluster)."""
    if item.module.__name__ not in _SHARED_RAY_MODULES:
        _shut_down_shared_ray()


@contextlib.contextmanager
def ray_cluster(head: dict, nodes: list[dict]):
    """A ``ray.cluster_utils.Cluster`` on this machine (fake GPUs are a scheduler count only): a
    head made with ``head``'s arguments and a node per entry of ``nodes``; the test process joins
    it. Yields the cluster and the added nodes; always shut down."""
    import ray
    from ray.cluster_utils import Cluster

    os.environ.pop("RAY_ADDRESS", None)
    cluster = Cluster(initialize_head=True, head_node_args={"include_dashboard": False, **head})
    added = [cluster.add_node(**node) for node in nodes]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR")
    try:
        yield cluster, added
    finally:
        ray.shutdown()
        cluster.shutdown()


def read_rows(output) -> pandas.DataFrame:
    import pyarrow.dataset as ds

    return ds.dataset(Path(output) / "detections", format="parquet").to_table().to_pandas()


def canonical_rows(output, *, exact: bool = False) -> pandas.DataFrame:
    """The output as comparable rows, whatever the video ids: video file name, frame, time, and
    the boxes: class and corners rounded to 0.1 px, sorted; ``exact``: class, confidence and
    corners as written, in the order written."""
    rows = read_rows(output)
    names = {s["video_id"]: os.path.basename(p) for p, s in read_status(output).items()}
    rows["video"] = rows["video_id"].map(names)
    if exact:
        fields = ("class_id", "confidence", "x1", "y1", "x2", "y2")
        rows["boxes"] = [
            tuple(tuple(d[k] for k in fields) for d in ds) for ds in rows["detections"]
        ]
    else:
        rows["boxes"] = [
            tuple(
                sorted(
                    (d["class_id"], *(round(d[k], 1) for k in ("x1", "y1", "x2", "y2"))) for d in ds
                )
            )
            for ds in rows["detections"]
        ]
    return (
        rows[["video", "frame_index", "timestamp_s", "num_detections", "boxes"]]
        .sort_values(["video", "frame_index"])
        .reset_index(drop=True)
    )


def read_status(output) -> dict:
    """Each video's latest record, by path."""
    from pipeline.output.videos_table import VideosTable

    table = VideosTable(Path(output) / "videos.parquet").read()
    return {} if table is None else {r["path"]: r for r in table.to_pylist()}


def write_people_clips(
    folder: Path, people_mp4: Path, *, count: int, length: int, step: int
) -> list[Path]:
    """``count`` 320x180 clips of ``length`` frames cut from people.mp4, each ``step`` frames later."""
    import cv2

    from pipeline.media.samples import read_frames, write_video

    frames = [
        cv2.resize(f, (320, 180))
        for f in read_frames(people_mp4, limit=step * (count - 1) + length)
    ]
    paths = []
    for i in range(count):
        path = folder / f"v{i}.mp4"
        write_video(path, frames[i * step : i * step + length])
        paths.append(path)
    return paths


def iou_matrix(a, b):
    """Pairwise IoU of two (N, 4) and (M, 4) xyxy arrays."""
    import numpy as np

    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(br - tl, 0, None).prod(2)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def predict_matches(reference, frame, detections, imgsz: int = 640) -> tuple[int, int]:
    """``YOLO.predict``'s boxes on ``frame`` against a row's ``detections``: (reference boxes
    that one of ours matches, same class, IoU >= 0.9, confidence within 0.02; reference boxes)."""
    import numpy as np

    ref = reference.predict(frame, conf=0.25, iou=0.7, imgsz=imgsz, verbose=False)[0].boxes
    ref_xyxy, ref_conf, ref_cls = ref.xyxy.numpy(), ref.conf.numpy(), ref.cls.numpy().astype(int)
    ours_xyxy = np.array([[d["x1"], d["y1"], d["x2"], d["y2"]] for d in detections]).reshape(-1, 4)
    ours_conf = np.array([d["confidence"] for d in detections])
    ours_cls = np.array([d["class_id"] for d in detections])
    matched = 0
    if len(ref_xyxy) and len(detections):
        iou = iou_matrix(ref_xyxy, ours_xyxy)
        used: set[int] = set()
        for i in range(len(ref_xyxy)):
            candidates = [
                j
                for j in np.argsort(-iou[i])
                if j not in used
                and iou[i, j] >= 0.9
                and ours_cls[j] == ref_cls[i]
                and abs(ours_conf[j] - ref_conf[i]) <= 0.02
            ]
            if candidates:
                used.add(candidates[0])
                matched += 1
    return matched, len(ref_xyxy)


def ray_worker_pids(titles: tuple[str, ...]) -> dict[int, str]:
    """Ray worker processes whose title (Ray names them by task or actor) starts with one of
    ``titles``, e.g. ``ray::decode_video``: pid -> title."""
    import psutil

    found = {}
    for proc in psutil.process_iter(["cmdline"]):
        title = " ".join(proc.info["cmdline"] or [])
        for target in titles:
            if title.startswith(target):
                found[proc.pid] = target
    return found


def tiny_videos(folder: Path, lengths: list[int], size=(160, 96)) -> list[str]:
    """Moving gradients: cheap to decode, each video different."""
    import numpy as np

    from pipeline.media.samples import write_video

    w, h = size
    paths = []
    for v, length in enumerate(lengths):
        frames = [
            np.full((h, w, 3), (7 * v + 3 * t) % 256, np.uint8)
            + np.arange(w, dtype=np.uint8)[None, :, None]
            for t in range(length)
        ]
        path = folder / f"tiny{v:03d}.mp4"
        write_video(path, frames)
        paths.append(str(path))
    return paths


def frames_by_reader(out: Path, ray_data: bool = True) -> dict[str, pandas.DataFrame]:
    """(video_id, frame_index, num_detections) of every row, as each reader sees the folder."""
    import duckdb
    import pandas as pd
    import pyarrow.dataset as ds

    folder = out / "detections"
    columns = ["video_id", "frame_index", "num_detections"]
    found = {
        "duckdb": duckdb.sql(
            f"SELECT {', '.join(columns)} FROM read_parquet('{folder}/*.parquet')"
        ).df(),
        "pandas": pd.read_parquet(folder, columns=columns),
        "pyarrow": ds.dataset(folder, format="parquet").to_table(columns=columns).to_pandas(),
    }
    if ray_data:
        import ray.data

        found["ray_data"] = ray.data.read_parquet(str(folder)).select_columns(columns).to_pandas()
    return {
        name: frame.sort_values(columns[:2]).reset_index(drop=True).astype({"num_detections": int})
        for name, frame in found.items()
    }


def videos_by_reader(out: Path, *, ray_data: bool = False) -> dict[str, pandas.DataFrame]:
    """``videos.parquet`` as each reader sees it: the pipeline's ``read_videos`` and the docs'
    one-liners for pandas, DuckDB and (``ray_data``) Ray Data, each run as typed in the folder
    above ``out`` (named ``out``, as the docs have it)."""
    import duckdb

    from pipeline.output.readers import read_videos

    assert out.name == "out", "the docs' lines name the output folder out/"
    pandas_line = doc_block("docs/output.md", "in one line. With pandas", "python")
    found = {"read_videos": read_videos(out)}
    prefix = "import os\nimport pandas as pd\nimport ray\n"
    found["pandas"] = _run_at(out.parent, prefix + pandas_line)["videos"]
    query = doc_block("docs/output.md", "in DuckDB,", "sql")
    found["duckdb"] = _in_folder(out.parent, lambda: duckdb.connect().sql(query).df())
    if ray_data:
        ray_line = doc_block("docs/output.md", "and in Ray Data,", "python")
        found["ray_data"] = _run_at(out.parent, prefix + ray_line)["videos"].to_pandas()
    return found


def _in_folder(folder: Path, call):
    before = os.getcwd()
    os.chdir(folder)
    try:
        return call()
    finally:
        os.chdir(before)


def _run_at(folder: Path, code: str) -> dict:
    scope: dict = {}
    _in_folder(folder, lambda: exec(code, scope))  # the docs' own example
    return scope


def part_files(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "detections").glob("part-*.parquet"))


def synthetic_run(videos, out, model_path, *, faults=None, **settings) -> dict:
    """``pipeline.run`` on the synthetic engine (its boxes are fixed: ``synthetic_rows``)."""
    import pipeline
    from pipeline.config import RunConfig

    config = RunConfig(model=model_path, engine="synthetic", imgsz=160, **settings)
    return pipeline.run(videos, output=str(out), config=config, faults=faults, progress=False)


def rows_by_name(out) -> list[tuple]:
    """(file name, frame index, boxes) of every row, sorted: a run's rows, whatever its ids."""
    from pipeline.output.readers import read_detections, read_videos

    boxes = read_detections(out, flat=False)
    paths = read_videos(out).set_index("video_id")["path"]
    return sorted(
        (Path(paths[v]).name, f, len(d))
        for v, f, d in zip(boxes.video_id, boxes.frame_index, boxes.detections)
    )


def synthetic_rows(videos, lengths: list[int]) -> list[tuple]:
    """``rows_by_name`` of any run of the synthetic engine over ``videos`` (five boxes a frame)."""
    return sorted((Path(v).name, f, 5) for v, n in zip(videos, lengths) for f in range(n))


# ---- the docs' examples as typed, and outputs of earlier versions ----------------------------


def doc_block(page: str, after: str, language: str) -> str:
    """The first ```language block after ``after`` in ``page``: what a user copies."""
    import re

    text = (REPO / page).read_text()
    return re.search(rf"```{language}\n(.*?)```", text[text.index(after) :], re.S).group(1)


def run_in(folder, code: str, monkeypatch) -> dict:
    """``code`` as typed, run with ``folder`` as the working directory: its variables."""
    monkeypatch.chdir(folder)
    scope: dict = {}
    exec(code, scope)  # the docs' own example
    return scope


def legacy_videos_file(folder, records, drop_columns=()):
    """``videos.parquet`` as outputs written before parts have it: one file, no ``seq``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.output.manifest import VIDEOS_SCHEMA, Manifest

    rows = [r.as_row() for r in records]
    table = pa.Table.from_pylist(rows, schema=VIDEOS_SCHEMA).drop_columns(list(drop_columns))
    pq.write_table(table, folder / Manifest.FILE_NAME)
