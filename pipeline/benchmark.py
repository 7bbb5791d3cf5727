"""``python -m pipeline bench``: this pipeline against the alternatives, in one run, same settings.

Contenders (each in its own process, so that the peak RSS of its whole process tree is its own):
  naive     cv2.VideoCapture.read() + YOLO.predict(frame), one frame at a time
  raydata   ray.data.read_videos + map_batches(YOLO predictor class) + write_parquet
  pipeline  this project
Ceilings on the same machine:
  decode    decode + letterbox only, the pipeline's decoder, all cores
  infer     the pipeline's detector on preprocessed batches already in memory, its thread settings
The contenders alternate over the repeats; the table reports medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from pipeline.config import RunConfig
from pipeline.monitoring import tree_rss_bytes

CONTENDERS = ("naive", "raydata", "pipeline")
CEILINGS = ("decode", "infer")


# ---- the contenders, each run inside its own process ------------------------------------


def run_naive(args) -> dict:
    import cv2
    from ultralytics import YOLO

    started = time.perf_counter()
    model = YOLO(args.model, task="detect")
    cap = cv2.VideoCapture(args.video)
    frames = boxes = index = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if index % args.stride == 0:
            result = model.predict(frame, imgsz=args.imgsz, conf=args.conf, iou=args.iou, verbose=False)[0]
            boxes += len(result.boxes)
            frames += 1
        index += 1
    return {"frames": frames, "boxes": boxes, "seconds": time.perf_counter() - started}


def run_decode_ceiling(args) -> dict:
    from pipeline.decode import VideoDecoder, iter_batches

    geometry = _geometry(args)
    started = time.perf_counter()
    frames = 0
    for batch in iter_batches(VideoDecoder(args.video, stride=args.stride), geometry, args.batch_size):
        frames += len(batch.frame_indices)
    return {"frames": frames, "boxes": None, "seconds": time.perf_counter() - started}


def _infer_worker(args, threads: int, frames_wanted: int, barrier, results) -> None:
    import torch

    from pipeline.decode import VideoDecoder, iter_batches
    from pipeline.detector import BatchDetector

    torch.set_num_threads(threads)
    detector = BatchDetector(args.model, imgsz=args.imgsz, conf=args.conf, iou=args.iou, max_batch=args.batch_size)
    geometry = detector.geometry(*_source_shape(args.video))
    batches = []
    for batch in iter_batches(VideoDecoder(args.video, stride=args.stride), geometry, args.batch_size):
        batches.append(batch.frames)
        if len(batches) * args.batch_size >= 128:  # enough to time; memory stays modest
            break
    barrier.wait()  # every worker starts timing together, as actors share the cores
    started = time.perf_counter()
    frames = 0
    while frames < frames_wanted:
        for frames_array in batches:
            counts, _ = detector.detect(frames_array, geometry)
            frames += len(counts)
            if frames >= frames_wanted:
                break
    results.put((frames, time.perf_counter() - started))


def run_infer_ceiling(args) -> dict:
    """The detector alone, on batches decoded beforehand, with the actors and threads the pipeline
    would plan on this machine (one process per actor, all timed together)."""
    import multiprocessing as mp

    from pipeline.config import RunConfig
    from pipeline.placement import plan

    placement = plan(RunConfig(model=args.model, batch_size=args.batch_size), os.cpu_count(), 0)
    total = _count_frames(args.video, args.stride)
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(placement.num_actors), ctx.Queue()
    share = -(-total // placement.num_actors)
    workers = [ctx.Process(target=_infer_worker, args=(args, placement.cpu_threads, share, barrier, results))
               for _ in range(placement.num_actors)]
    for w in workers:
        w.start()
    done = [results.get() for _ in workers]
    for w in workers:
        w.join()
    frames = sum(f for f, _ in done)
    return {"frames": frames, "boxes": None, "seconds": max(s for _, s in done),
            "actors": placement.num_actors, "threads_per_actor": placement.cpu_threads}


def _source_shape(video: str) -> tuple[int, int]:
    from pipeline.decode import VideoDecoder

    info = VideoDecoder(video).info
    return info.height, info.width


def _geometry(args):
    """The letterbox the pipeline would use, without loading the model twice."""
    from pipeline.detector import load_backend
    from pipeline.letterbox import LetterboxGeometry

    import torch

    backend = load_backend(args.model, torch.device("cpu"), half=False)
    rect = backend.format == "pt" or bool(getattr(backend, "dynamic", False))
    return LetterboxGeometry.for_source(*_source_shape(args.video), args.imgsz, rect=rect)


def _count_frames(video: str, stride: int) -> int:
    import av

    with av.open(video) as container:
        n = sum(1 for _ in container.demux(video=0) if _.size)
    return -(-n // stride)


def _ray_runner(name: str):
    def run(args) -> dict:
        from pipeline.distributed import bench_contenders  # Ray is imported only there

        return getattr(bench_contenders, name)(args)

    return run


RUNNERS = {
    "naive": run_naive,
    "raydata": _ray_runner("run_raydata"),
    "pipeline": _ray_runner("run_pipeline"),
    "decode": run_decode_ceiling,
    "infer": run_infer_ceiling,
}


# ---- the harness ----------------------------------------------------------------------------


def _measure(name: str, args) -> dict:
    """Run one contender in a child process; sample its process tree's RSS for the peak."""
    cmd = [sys.executable, "-m", "pipeline.benchmark", "_one", name, "--video", args.video, "--model", args.model,
           "--imgsz", str(args.imgsz), "--conf", str(args.conf), "--iou", str(args.iou), "--stride", str(args.stride),
           "--batch-size", str(args.batch_size)]
    env = {**os.environ, "YOLO_VERBOSE": "False"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = 0
    stop = threading.Event()

    def sample():
        nonlocal peak
        while not stop.is_set():
            try:
                peak = max(peak, tree_rss_bytes(proc.pid))
            except Exception:
                pass
            stop.wait(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"contender {name} failed ({proc.returncode}):\n{stderr[-3000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["peak_tree_rss_bytes"] = peak
    result["fps"] = result["frames"] / result["seconds"]
    return result


def _summarize(runs: dict[str, list[dict]]) -> dict:
    summary = {}
    for name, results in runs.items():
        summary[name] = {
            "median_fps": statistics.median(r["fps"] for r in results),
            "fps": [round(r["fps"], 2) for r in results],
            "frames": results[0]["frames"],
            "boxes": results[0]["boxes"],
            "peak_tree_rss_mib": max(r["peak_tree_rss_bytes"] for r in results) / 2**20,
        }
        if "memory_by_role" in results[0]:
            summary[name]["peak_rss_mib_by_role"] = {
                role: max(r["memory_by_role"][role] or 0 for r in results) / 2**20 for role in results[0]["memory_by_role"]
            }
    if "decode" in summary and "infer" in summary:
        d, i = summary["decode"]["median_fps"], summary["infer"]["median_fps"]
        summary["bound_fps"] = 1 / (1 / d + 1 / i)
    return summary


def format_table(summary: dict) -> str:
    lines = [f"{'contender':<10} {'median fps':>10} {'runs (fps)':<28} {'frames':>7} {'boxes':>7} {'peak RSS (tree)':>16}"]
    for name in (*CONTENDERS, *CEILINGS):
        if name in summary:
            s = summary[name]
            boxes = "-" if s["boxes"] is None else s["boxes"]
            lines.append(
                f"{name:<10} {s['median_fps']:>10.2f} {str(s['fps']):<28} {s['frames']:>7} {boxes:>7} "
                f"{s['peak_tree_rss_mib']:>12.0f} MiB"
            )
    p = summary.get("pipeline")
    if p:
        for other in ("naive", "raydata"):
            if other in summary:
                lines.append(f"pipeline / {other}: {p['median_fps'] / summary[other]['median_fps']:.2f}x")
        if "bound_fps" in summary:
            lines.append(
                f"bound 1/(1/decode + 1/infer) = {summary['bound_fps']:.2f} fps; "
                f"pipeline at {100 * p['median_fps'] / summary['bound_fps']:.0f}% of it"
            )
        if "naive" in summary and summary["naive"]["boxes"]:
            diff = 100 * (p["boxes"] - summary["naive"]["boxes"]) / summary["naive"]["boxes"]
            lines.append(f"boxes: pipeline {p['boxes']} vs naive {summary['naive']['boxes']} ({diff:+.2f}%)")
        if "peak_rss_mib_by_role" in p:
            roles = ", ".join(f"{k} {v:.0f} MiB" for k, v in p["peak_rss_mib_by_role"].items())
            lines.append(f"pipeline peak RSS by role: {roles}")
    return "\n".join(lines)


def _common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--video", required=True, help="input video")
    parser.add_argument("--model", required=True, help="model for every contender")
    d = RunConfig()  # the same defaults as `run`, so the contenders are compared as users run them
    parser.add_argument("--imgsz", type=int, default=d.imgsz, help="model input size (default %(default)s)")
    parser.add_argument("--conf", type=float, default=d.conf, help="confidence threshold (default %(default)s)")
    parser.add_argument("--iou", type=float, default=d.iou, help="NMS IoU threshold (default %(default)s)")
    parser.add_argument("--stride", type=int, default=d.stride, help="process every Nth frame (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=d.batch_size,
                        help="frames per batch for the pipeline and Ray Data (default %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _common_args(parser)
    parser.add_argument("--concat", type=int, default=1, help="repeat the video N times (remuxed, no re-encode)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per contender, alternated (default 3)")
    parser.add_argument("--contenders", default=",".join(CONTENDERS + CEILINGS),
                        help="comma-separated subset of: " + ", ".join(CONTENDERS + CEILINGS))
    parser.add_argument("--baseline-model", default=None,
                        help="model for the naive loop only (e.g. the .pt when --model is an OpenVINO export)")
    parser.add_argument("--json", default="bench.json", help="where to write the results (default %(default)s)")
    return parser


def bench(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = [n.strip() for n in args.contenders.split(",") if n.strip()]
    unknown = set(names) - set(RUNNERS)
    if unknown:
        print(f"error: unknown contenders {sorted(unknown)}; choose from {', '.join(RUNNERS)}", file=sys.stderr)
        return 2
    video = args.video
    if args.concat > 1:
        from pipeline.samples import concat_copies

        video = str(Path(tempfile.mkdtemp(prefix="bench-input-")) / f"concat{args.concat}{Path(video).suffix}")
        concat_copies(args.video, video, args.concat)
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for repeat in range(args.repeats):
        order = names if repeat % 2 == 0 else names[::-1]
        for name in order:
            run_args = argparse.Namespace(**{**vars(args), "video": video})
            if name == "naive" and args.baseline_model:
                run_args.model = args.baseline_model
            result = _measure(name, run_args)
            runs[name].append(result)
            print(f"[{repeat + 1}/{args.repeats}] {name}: {result['fps']:.2f} fps, {result['frames']} frames, "
                  f"{result['boxes']} boxes, peak RSS {result['peak_tree_rss_bytes'] / 2**20:.0f} MiB", flush=True)
    summary = _summarize(runs)
    record = {
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "input": video,
        "host": {"cpus": os.cpu_count(), "machine": os.uname().machine},
        "summary": summary,
        "runs": runs,
    }
    Path(args.json).write_text(json.dumps(record, indent=2, default=str))
    print()
    print(format_table(summary))
    print(f"\nwritten: {args.json}")
    return 0


def _one(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("name", choices=sorted(RUNNERS))
    _common_args(parser)
    args = parser.parse_args(argv)
    os.environ.setdefault("YOLO_VERBOSE", "False")
    result = RUNNERS[args.name](args)
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_one":
        sys.exit(_one(sys.argv[2:]))
    sys.exit(bench(sys.argv[1:]))
