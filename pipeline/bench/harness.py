"""``python -m pipeline bench``: this pipeline against the alternatives, in one run, same settings.

Contenders (each in its own process, so that the peak RSS of its whole process tree is its own):
  naive           cv2.VideoCapture.read() + YOLO.predict(frame), one frame at a time
  raydata         ray.data.read_videos + map_batches(YOLO predictor class) + write_parquet
  pipeline        this project, with --engine (default auto)
  pipeline-torch  this project with --engine torch
Ceilings on the same machine:
  decode          decode + letterbox only, the pipeline's decoder, all cores
  decode-2seg     the same, the video in 2 segments decoded by 2 processes at once (segment decoding)
  infer           the detector of --engine on batches already in memory, as the pipeline places it
Measured once, not a contender:
  decode-parts    one decoder's milliseconds per frame: decode, colour conversion, letterbox resize
  control-plane   the pipeline on a synthetic engine (no model, fixed boxes): 1,000 generated
                  4-frame clips (the coordinator's CPU per video and per hand-out, its process CPU
                  time), then four long 160x96 videos on a simulated GPU (2 + 0.35 ms a frame: how
                  busy the decoders keep it)
The contenders alternate over the repeats; the table reports medians. The pipeline's boxes are
matched against the naive loop's (IoU >= 0.9, same class) on the first repeat.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from pipeline.config import CPU_PRECISIONS, ENGINES, RunConfig, engine_traits
from pipeline.options import BENCH_FIELDS, config_from_options
from pipeline.runtime.monitoring import tree_rss_bytes

CONTENDERS = ("naive", "raydata", "pipeline", "pipeline-torch")
CEILINGS = ("decode", "decode-2seg", "infer")
# the decode ceiling with every packet decoded, whatever the sampling: what --fps, --keyframes and
# --stride saved before the decoder skipped work (pipeline.media.sampling)
DECODE_EVERY_PACKET = "decode-every-packet"


# ---- the contenders, each run inside its own process ------------------------------------


def run_naive(args) -> dict:
    import cv2
    from ultralytics import YOLO

    started = time.perf_counter()
    model = YOLO(args.model, task="detect")
    cap = cv2.VideoCapture(args.video)
    frames = boxes = index = 0
    kept = []  # (frame index, box rows) for the parity check, when asked
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if index % args.stride == 0:
            result = model.predict(
                frame, imgsz=args.imgsz, conf=args.conf, iou=args.iou, verbose=False
            )[0]
            boxes += len(result.boxes)
            frames += 1
            if args.boxes_out:
                b = result.boxes
                kept.append((index, b.xyxy.numpy(), b.conf.numpy(), b.cls.numpy()))
        index += 1
    seconds = time.perf_counter() - started
    if args.boxes_out:
        _save_boxes(args.boxes_out, kept)
    return {"frames": frames, "boxes": boxes, "seconds": seconds}


def _save_boxes(path: str, kept: list) -> None:
    import numpy as np

    np.savez(
        path,
        frame=np.concatenate([np.full(len(x), i) for i, x, _, _ in kept]),
        xyxy=np.concatenate([x for _, x, _, _ in kept]).reshape(-1, 4),
        conf=np.concatenate([c for _, _, c, _ in kept]),
        cls=np.concatenate([k for _, _, _, k in kept]),
    )


def match_boxes(reference: list, ours: list, min_iou: float = 0.9) -> tuple[int, int, float]:
    """``reference`` and ``ours``: per frame, ``(xyxy (n, 4), confidence (n,), class (n,))``. Returns
    how many reference boxes have a box of the same class at IoU >= ``min_iou`` in ``ours``, out
    of how many, and the largest confidence difference among the matched."""
    import numpy as np

    matched = total = 0
    worst = 0.0
    for (rx, rc, rk), (ox, oc, ok) in zip(reference, ours):
        total += len(rx)
        if not len(rx) or not len(ox):
            continue
        tl, br = (
            np.maximum(rx[:, None, :2], ox[None, :, :2]),
            np.minimum(rx[:, None, 2:], ox[None, :, 2:]),
        )
        inter = np.clip(br - tl, 0, None).prod(2)
        area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
        ious = inter / (area(rx)[:, None] + area(ox)[None, :] - inter)
        ious[np.asarray(rk)[:, None] != np.asarray(ok)[None, :]] = 0
        best = ious.argmax(1)
        hit = ious[np.arange(len(rx)), best] >= min_iou
        matched += int(hit.sum())
        if hit.any():
            worst = max(worst, float(np.abs(rc[hit] - oc[best[hit]]).max()))
    return matched, total, worst


def box_parity(reference_npz: str, output: str, iou: float = 0.9) -> dict:
    """How many of the naive loop's boxes the pipeline's output has (``match_boxes``)."""
    import numpy as np

    from pipeline.output.readers import read_detections

    ref = np.load(reference_npz)
    ours = read_detections(output)
    by_frame = {int(f): g for f, g in ours.groupby("frame_index")}
    empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
    reference, mine = [], []
    for f in np.unique(ref["frame"]):
        sel = ref["frame"] == f
        reference.append((ref["xyxy"][sel], ref["conf"][sel], ref["cls"][sel].astype(np.int64)))
        g = by_frame.get(int(f))
        mine.append(
            empty
            if g is None
            else (
                g[["x1", "y1", "x2", "y2"]].to_numpy(np.float32),
                g["confidence"].to_numpy(),
                g["class_id"].to_numpy(),
            )
        )
    matched, total, worst = match_boxes(reference, mine, iou)
    return {
        "reference_boxes": total,
        "pipeline_boxes": len(ours),
        "matched": matched,
        "matched_fraction": matched / total if total else 1.0,
        "max_abs_conf_diff": worst,
        "iou": iou,
    }


def _timed_pass(video: str, *steps) -> tuple[int, list[float]]:
    """Frames, and seconds spent decoding and in each step (each step takes what the one before
    gave), over one pass of the video."""
    import av

    spent = [0.0] * (1 + len(steps))
    frames = 0
    with av.open(video) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        decoded = container.decode(stream)
        while True:
            t0 = time.perf_counter()
            frame = next(decoded, None)
            spent[0] += time.perf_counter() - t0
            if frame is None:
                return frames, spent
            value = frame
            for i, step in enumerate(steps, 1):
                t0 = time.perf_counter()
                value = step(value)
                spent[i] += time.perf_counter() - t0
            frames += 1


def run_decode_parts(args) -> dict:
    """One decoder thread pool, each part timed on its own, frame by frame: decode (the wait for
    the next frame); colour conversion at full size (what ``predict``'s cv2 path and the pipeline
    do); cv2 letterbox resize (the pipeline). Then a second pass for comparison: conversion and
    resize in one swscale call (bilinear: other pixels than cv2's). Parts are timed directly, not as
    differences of whole passes, so a busy machine cannot make one come out at zero or below."""
    import cv2

    geometry = _geometry(args)
    canvas = geometry.new_canvas(1)[0]
    inner = canvas[
        geometry.top : geometry.top + geometry.new_h, geometry.left : geometry.left + geometry.new_w
    ]
    size = (geometry.new_w, geometry.new_h)

    started = time.perf_counter()
    frames, (decode_s, bgr_s, resize_s) = _timed_pass(
        args.video,
        lambda f: f.to_ndarray(format="bgr24"),
        lambda bgr: cv2.resize(bgr, size, dst=inner, interpolation=cv2.INTER_LINEAR),
    )
    _, (_, swscale_s) = _timed_pass(
        args.video,
        lambda f: inner.__setitem__(
            ...,
            f.to_ndarray(width=size[0], height=size[1], format="bgr24", interpolation="BILINEAR"),
        ),
    )
    per_frame_ms = 1000 / max(frames, 1)
    parts = {
        "decode_ms": decode_s * per_frame_ms,
        "bgr_conversion_ms": bgr_s * per_frame_ms,
        "letterbox_resize_ms": resize_s * per_frame_ms,
        "swscale_conversion_and_resize_ms": swscale_s * per_frame_ms,
    }
    return {
        "frames": frames,
        "boxes": None,
        "seconds": time.perf_counter() - started,
        "parts_ms": parts,
    }


def _sampling(args):
    from pipeline.media.sampling import Sampling

    return Sampling(stride=args.stride, fps=args.fps, keyframes=args.keyframes)


def run_decode_ceiling(args, *, skip_work: bool = True) -> dict:
    from pipeline.media.decode import VideoDecoder, iter_batches

    geometry = _geometry(args)
    started = time.perf_counter()
    frames = 0
    decoder = VideoDecoder(args.video, sampling=_sampling(args), skip_work=skip_work)
    for batch in iter_batches(decoder, geometry, args.batch_size):
        frames += len(batch.frame_indices)
    return {"frames": frames, "boxes": None, "seconds": time.perf_counter() - started}


def run_decode_every_packet(args) -> dict:
    return run_decode_ceiling(args, skip_work=False)


def _segment_worker(args, segment, barrier, results) -> None:
    from pipeline.media.decode import VideoDecoder, iter_batches

    geometry = _geometry(args)
    decoder = VideoDecoder(args.video, sampling=_sampling(args), segment=segment)
    barrier.wait()
    started = time.perf_counter()
    frames = sum(
        len(b.frame_indices)
        for b in iter_batches(decoder, geometry, args.batch_size, first_seq=segment.first_seq)
    )
    results.put((frames, started, time.perf_counter()))


def run_decode_segments(args, count: int = 2) -> dict:
    """The decode ceiling with the video split as the pipeline splits a long one: one process
    per segment, all started together; the time is from the first start to the last end."""
    import multiprocessing as mp

    from pipeline.media.segments import plan_segments, probe_frame_times

    segments = plan_segments(
        probe_frame_times(args.video), count, sampling=_sampling(args), batch_size=args.batch_size
    )
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(len(segments)), ctx.Queue()
    workers = [
        ctx.Process(target=_segment_worker, args=(args, s, barrier, results)) for s in segments
    ]
    for w in workers:
        w.start()
    done = [results.get() for _ in workers]
    for w in workers:
        w.join()
    return {
        "frames": sum(f for f, _, _ in done),
        "boxes": None,
        "seconds": max(e for _, _, e in done) - min(s for _, s, _ in done),
        "segments": len(segments),
    }


def _infer_worker(args, threads: int, frames_wanted: int, barrier, results) -> None:
    from pipeline.inference.open import open_detector
    from pipeline.media.decode import VideoDecoder, iter_batches

    config = _resolved_config(args)
    if engine_traits(config.resolved_engine or config.engine).needs_torch:
        import torch

        torch.set_num_threads(threads)
    geometry = _geometry(args)
    detector = open_detector(config, "cpu", warm_shapes=(geometry.out_shape,)).detector
    batches = []
    for batch in iter_batches(
        VideoDecoder(args.video, sampling=_sampling(args)), geometry, args.batch_size
    ):
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

    from pipeline.plan.placement import plan

    placement = plan(_resolved_config(args), os.cpu_count(), 0)
    total = _count_frames(args.video, args.stride)
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(placement.num_actors), ctx.Queue()
    share = -(-total // placement.num_actors)
    workers = [
        ctx.Process(
            target=_infer_worker, args=(args, placement.cpu_threads, share, barrier, results)
        )
        for _ in range(placement.num_actors)
    ]
    for w in workers:
        w.start()
    done = [results.get() for _ in workers]
    for w in workers:
        w.join()
    frames = sum(f for f, _ in done)
    return {
        "frames": frames,
        "boxes": None,
        "seconds": max(s for _, s in done),
        "actors": placement.num_actors,
        "threads_per_actor": placement.cpu_threads,
    }


def _source_shape(video: str) -> tuple[int, int]:
    from pipeline.media.decode import VideoDecoder

    info = VideoDecoder(video).info
    return info.height, info.width


def _resolved_config(args) -> RunConfig:
    from pipeline.inference.engines import resolve

    config = config_from_options(vars(args), BENCH_FIELDS)
    return resolve(config, "cpu")


def _geometry(args):
    """The letterbox the pipeline uses: the minimal rectangle for weights (torch, or an engine built
    from them per shape), the square of a given static export."""
    from pipeline.config import engine_for_model
    from pipeline.media.letterbox import LetterboxGeometry

    rect = engine_for_model(args.model) == "torch"
    return LetterboxGeometry.for_source(*_source_shape(args.video), args.imgsz, rect=rect)


def _count_frames(video: str, stride: int) -> int:
    import av

    with av.open(video) as container:
        n = sum(1 for _ in container.demux(video=0) if _.size)
    return -(-n // stride)


def _ray_runner(name: str):
    def run(args) -> dict:
        from pipeline.runtime import bench_contenders  # Ray is imported only there

        return getattr(bench_contenders, name)(args)

    return run


RUNNERS = {
    "naive": run_naive,
    "raydata": _ray_runner("run_raydata"),
    "pipeline": _ray_runner("run_pipeline"),
    "pipeline-torch": _ray_runner("run_pipeline_torch"),
    "decode": run_decode_ceiling,
    DECODE_EVERY_PACKET: run_decode_every_packet,
    "decode-2seg": run_decode_segments,
    "infer": run_infer_ceiling,
    "decode-parts": run_decode_parts,
    "control-plane": _ray_runner("run_control_plane"),
}
ONCE = ("decode-parts", "control-plane")  # measured once, after the contenders


# ---- the harness ----------------------------------------------------------------------------


def _child_command(name: str, args) -> list[str]:
    """The command that runs contender ``name`` alone (``_one``), with the bench's settings."""
    settings = {
        "--video": args.video,
        "--model": args.model,
        "--imgsz": args.imgsz,
        "--conf": args.conf,
        "--iou": args.iou,
        "--stride": args.stride,
        "--fps": args.fps,
        "--batch-size": args.batch_size,
        "--engine": args.engine,
        "--cpu-precision": args.cpu_precision,
        "--clips": args.clips,
        "--long-frames": args.long_frames,
        "--boxes-out": getattr(args, "boxes_out", None),
        "--keep-output": getattr(args, "keep_output", None),
    }
    cmd = [sys.executable, "-m", "pipeline.bench.harness", "_one", name]
    for flag, value in settings.items():
        if value is not None:
            cmd += [flag, str(value)]
    return cmd + (["--keyframes"] if args.keyframes else [])


def _measure(name: str, args) -> dict:
    """Run one contender in a child process; sample its process tree's RSS for the peak."""
    cmd = _child_command(name, args)
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
        if "engine" in results[0]:
            summary[name]["engine"] = results[0]["engine"]
            summary[name]["startup"] = [r["startup"] for r in results]
        if "memory_by_role" in results[0]:
            summary[name]["peak_rss_mib_by_role"] = {
                role: max(r["memory_by_role"][role] or 0 for r in results) / 2**20
                for role in results[0]["memory_by_role"]
            }
    if "decode" in summary and "infer" in summary:
        d, i = summary["decode"]["median_fps"], summary["infer"]["median_fps"]
        summary["bound_fps"] = 1 / (1 / d + 1 / i)
    return summary


def _pipeline_lines(summary: dict, p: dict) -> list[str]:
    """The pipeline against the others: speed-ups, the bound, boxes, memory, start-up."""
    lines: list[str] = []
    for other in ("naive", "raydata"):
        if other in summary:
            lines.append(
                f"pipeline / {other}: {p['median_fps'] / summary[other]['median_fps']:.2f}x"
            )
    if "bound_fps" in summary:
        lines.append(
            f"bound 1/(1/decode + 1/infer) = {summary['bound_fps']:.2f} fps; "
            f"pipeline at {100 * p['median_fps'] / summary['bound_fps']:.0f}% of it"
        )
    if "naive" in summary and summary["naive"]["boxes"]:
        diff = 100 * (p["boxes"] - summary["naive"]["boxes"]) / summary["naive"]["boxes"]
        lines.append(
            f"boxes: pipeline {p['boxes']} vs naive {summary['naive']['boxes']} ({diff:+.2f}%)"
        )
    for name in ("pipeline", "pipeline-torch"):
        if "peak_rss_mib_by_role" in summary.get(name, {}):
            roles = ", ".join(
                f"{k} {v:.0f} MiB" for k, v in summary[name]["peak_rss_mib_by_role"].items()
            )
            lines.append(f"{name} peak RSS by role: {roles}")
    for start in p.get("startup") or []:
        lines.append(
            f"pipeline start-up: first batch done {start['first_batch_done_s']:.2f} s after the call, "
            f"{start['actors_ready_to_first_batch_s']:.2f} s after the actors were ready"
        )
    return lines


def format_table(summary: dict) -> str:
    lines = [
        f"{'contender':<15} {'median fps':>10} {'runs (fps)':<28} {'frames':>7} {'boxes':>7} {'peak RSS (tree)':>16}"
    ]
    for name in (*CONTENDERS, *CEILINGS):
        if name in summary:
            s = summary[name]
            boxes = "-" if s["boxes"] is None else s["boxes"]
            lines.append(
                f"{name:<15} {s['median_fps']:>10.2f} {str(s['fps']):<28} {s['frames']:>7} {boxes:>7} "
                f"{s['peak_tree_rss_mib']:>12.0f} MiB"
                + (f"  ({s['engine']})" if s.get("engine") else "")
            )
    p = summary.get("pipeline")
    if p:
        lines += _pipeline_lines(summary, p)
    if "parity" in summary:
        q = summary["parity"]
        lines.append(
            f"box parity, pipeline vs naive: {q['matched']}/{q['reference_boxes']} naive boxes matched "
            f"({100 * q['matched_fraction']:.2f}%) at IoU >= {q['iou']}, max |dconf| {q['max_abs_conf_diff']:.2g}; "
            f"pipeline has {q['pipeline_boxes']} boxes"
        )
    if "control-plane" in summary:
        clips, gpu = summary["control-plane"]["clips"], summary["control-plane"]["simulated_gpu"]
        busy = ", ".join(f"{100 * b:.0f}%" for b in gpu["busy_share"] if b is not None)
        lines.append(
            f"control plane (synthetic engine): {clips['coordinator_cpu_ms_per_video']:.2f} ms of "
            f"coordinator CPU per video, {clips['coordinator_cpu_ms_per_handout']:.2f} ms per "
            f"hand-out, over {clips['videos']} clips in {clips['handouts']} hand-outs; a "
            f"simulated GPU busy {busy} ({gpu['frames_per_s']:.0f} frames/s)"
        )
    if "decode-parts" in summary:
        parts = ", ".join(
            f"{k[:-3]} {v:.2f}" for k, v in summary["decode-parts"]["parts_ms"].items()
        )
        lines.append(f"one decoder, ms per frame: {parts}")
    return "\n".join(lines)


def _common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--video", required=True, help="input video")
    parser.add_argument("--model", required=True, help="model for every contender")
    parser.add_argument(
        "--clips",
        type=int,
        default=1000,
        help="control-plane: generated clips of its first run (default %(default)s)",
    )
    parser.add_argument(
        "--long-frames",
        type=int,
        default=4800,
        help="control-plane: frames of each of the simulated GPU's four videos (default %(default)s)",
    )
    d = RunConfig()  # the same defaults as `run`, so the contenders are compared as users run them
    parser.add_argument(
        "--imgsz", type=int, default=d.imgsz, help="model input size (default %(default)s)"
    )
    parser.add_argument(
        "--conf", type=float, default=d.conf, help="confidence threshold (default %(default)s)"
    )
    parser.add_argument(
        "--iou", type=float, default=d.iou, help="NMS IoU threshold (default %(default)s)"
    )
    parser.add_argument(
        "--stride", type=int, default=d.stride, help="process every Nth frame (default %(default)s)"
    )
    parser.add_argument(
        "--fps",
        type=float,
        default=None,
        metavar="N",
        help="the decode ceilings and the pipeline: N frames a second, as `run --fps`",
    )
    parser.add_argument(
        "--keyframes",
        action="store_true",
        help="the decode ceilings and the pipeline: keyframes only, as `run --keyframes`",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=d.batch_size,
        help="frames per batch for the pipeline and Ray Data (default %(default)s)",
    )
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default=d.engine,
        help="the pipeline's and the infer ceiling's engine (default %(default)s; "
        "pipeline-torch always uses torch)",
    )
    parser.add_argument(
        "--cpu-precision",
        choices=CPU_PRECISIONS,
        default=d.cpu_precision,
        help="OpenVINO's arithmetic for the pipeline and the infer ceiling (default %(default)s)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common_args(parser)
    parser.add_argument(
        "--concat", type=int, default=1, help="repeat the video N times (remuxed, no re-encode)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs per contender, alternated (default 3)"
    )
    parser.add_argument(
        "--contenders",
        default=",".join((*CONTENDERS, *CEILINGS, "decode-parts")),
        help="comma-separated subset of: "
        + ", ".join((*CONTENDERS, *CEILINGS, DECODE_EVERY_PACKET, *ONCE)),
    )
    parser.add_argument(
        "--baseline-model",
        default=None,
        help="model for the naive loop only (e.g. the .pt when --model is an OpenVINO export)",
    )
    parser.add_argument(
        "--json", default="bench.json", help="where to write the results (default %(default)s)"
    )
    return parser


def _repeated_runs(args, names: list[str], video: str, parity_files: dict) -> dict[str, list[dict]]:
    """Each contender ``args.repeats`` times, in alternating order (so drift favours none)."""
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for repeat in range(args.repeats):
        order = names if repeat % 2 == 0 else names[::-1]
        for name in order:
            run_args = argparse.Namespace(**{**vars(args), "video": video})
            if name == "naive" and args.baseline_model:
                run_args.model = args.baseline_model
            # boxes kept for the parity check
            if repeat == 0 and {"naive", "pipeline"} <= set(names):
                run_args.boxes_out = parity_files["boxes_out"] if name == "naive" else None
                run_args.keep_output = parity_files["keep_output"] if name == "pipeline" else None
            result = _measure(name, run_args)
            runs[name].append(result)
            print(
                f"[{repeat + 1}/{args.repeats}] {name}: {result['fps']:.2f} fps, {result['frames']} frames, "
                f"{result['boxes']} boxes, peak RSS {result['peak_tree_rss_bytes'] / 2**20:.0f} MiB",
                flush=True,
            )
    return runs


def bench(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = [n.strip() for n in args.contenders.split(",") if n.strip()]
    unknown = set(names) - set(RUNNERS)
    if unknown:
        print(
            f"error: unknown contenders {sorted(unknown)}; choose from {', '.join(RUNNERS)}",
            file=sys.stderr,
        )
        return 2
    if (args.fps or args.keyframes) and {"naive", "raydata"} & set(names):
        print(
            "error: --fps and --keyframes apply to the decode ceilings and the pipeline only "
            "(the naive loop and Ray Data sample by --stride)",
            file=sys.stderr,
        )
        return 2
    video = args.video
    if args.concat > 1:
        from pipeline.media.samples import concat_copies

        video = str(
            Path(tempfile.mkdtemp(prefix="bench-input-"))
            / f"concat{args.concat}{Path(video).suffix}"
        )
        concat_copies(args.video, video, args.concat)
    once = [n for n in names if n in ONCE]
    names = [n for n in names if n not in once]
    work = Path(tempfile.mkdtemp(prefix="bench-work-"))
    parity_files = {
        "boxes_out": str(work / "naive-boxes.npz"),
        "keep_output": str(work / "pipeline-output"),
    }
    runs = _repeated_runs(args, names, video, parity_files)
    summary = _summarize(runs)
    if Path(parity_files["boxes_out"]).exists() and Path(parity_files["keep_output"]).exists():
        summary["parity"] = box_parity(parity_files["boxes_out"], parity_files["keep_output"])
    for name in once:
        summary[name] = _measure(name, argparse.Namespace(**{**vars(args), "video": video}))
    record = {
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "input": video
        if args.concat == 1
        else f"<tmp>/{Path(video).name}",  # the temporary copy's path says nothing
        "host": {"cpus": os.cpu_count(), "machine": os.uname().machine},
        "summary": summary,
        "runs": runs,
    }
    Path(args.json).write_text(json.dumps(record, indent=2, default=str))
    print()
    print(format_table(summary))
    print(f"\nwritten: {args.json}")
    shutil.rmtree(work, ignore_errors=True)  # the parity check's boxes and output
    if args.concat > 1:
        shutil.rmtree(Path(video).parent, ignore_errors=True)
    return 0


def _one(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("name", choices=sorted(RUNNERS))
    _common_args(parser)
    parser.add_argument("--boxes-out", default=None, help="naive: save its boxes here (npz)")
    parser.add_argument("--keep-output", default=None, help="pipeline: write its output here")
    args = parser.parse_args(argv)
    os.environ.setdefault("YOLO_VERBOSE", "False")
    result = RUNNERS[args.name](args)
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_one":
        sys.exit(_one(sys.argv[2:]))
    sys.exit(bench(sys.argv[1:]))
