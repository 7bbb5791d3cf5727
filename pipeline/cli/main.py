"""``python -m pipeline run INPUT... --output DIR``: the command line, its exit statuses and summary."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from pipeline.cli import analyze as analyze_cli
from pipeline.cli.parser import Parser
from pipeline.config import RunConfig
from pipeline.errors import EXIT_OK, EXIT_UNEXPECTED, Interrupted, PipelineError, UsageError
from pipeline.locations import redact
from pipeline.options import RUN_OPTIONS, config_from_options, names_or_ids

RUN_EPILOG = """\
inputs:
  video files, directories (searched recursively for video files), or @list.txt
  (one path per line; relative paths are relative to the list file).

output (DIR):
  detections/      Parquet dataset, one row per processed frame (frames without boxes too)
  videos.parquet   one row per input video: status ok | partial | failed, and the error
  run.json         settings, totals, throughput, time per stage, peak memory, GPU figures
  tracks/          with --track: one row per object track (class, first/last frame, frames)

resume:
  run the same command again: videos already complete with the same content and settings
  are skipped; nothing is written twice.

exit status:
  0 every video complete; 3 some videos failed or were partly readable (the others are
  complete); 2 bad usage; 1 unexpected error; 130 interrupted (Ctrl-C), 143 SIGTERM.

examples:
  python -m pipeline run traffic/ --output out --model yolo11n.pt
  python -m pipeline run @backlog.txt --output out --stride 5 --device cuda --batch-size 32
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m pipeline", description="YOLO object detection over video backlogs, on Ray."
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    sub.add_parser(
        "bench",
        help="benchmark against a per-frame loop and Ray Data (see bench --help)",
        add_help=False,
    )
    sub.add_parser(
        "serve",
        help="serve the HTTP API: jobs, results, single images (see serve --help)",
        add_help=False,
    )
    run = sub.add_parser(
        "run",
        help="detect objects in every (Nth) frame of the inputs",
        description="Detect objects in every (Nth) frame of the inputs and write them to Parquet.",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="video file, directory, or @list.txt"
    )
    run.add_argument(
        "--output", "-o", required=True, metavar="DIR", help="output directory (created if missing)"
    )
    for option in RUN_OPTIONS:
        run.add_argument(option.flag, **option.argparse_kwargs())
    run.add_argument(
        "--address",
        default=None,
        help="Ray address to join, e.g. auto or ray://host:10001 (default: start a local Ray)",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress display")
    run.add_argument("--quiet", "-q", action="store_true", help="no progress and no summary")
    _add_render_parser(sub)
    _add_report_parser(sub)
    analyze_cli.add_parsers(sub)
    return parser


RENDER_EPILOG = """\
Draws the boxes a run stored (class, confidence, and track id after --track) on the source
video; no model is run. Frames the run skipped (--stride) show the last processed frame's
boxes, dashed and labelled "held". Writes H.264/MP4 (MPEG-4 Part 2 if this PyAV has
no H.264 encoder, with a warning).

examples:
  python -m pipeline render traffic/cam1.mp4 --results out --output cam1-boxes.mp4
  python -m pipeline render cam1.mp4 --results out --output cars.mp4 --start 60 --end 90 --classes car,truck --min-conf 0.5
"""  # noqa: E501 - an example command, as the user types it


def _add_render_parser(sub) -> None:
    render = sub.add_parser(
        "render",
        help="draw a run's stored boxes on a video (no inference)",
        description="Draw the boxes stored by a run on the source video and write an MP4.",
        epilog=RENDER_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    render.add_argument("video", metavar="VIDEO", help="a video the run processed")
    render.add_argument(
        "--results", required=True, metavar="DIR", help="the run's --output directory"
    )
    render.add_argument("--output", "-o", required=True, metavar="FILE", help="the MP4 to write")
    render.add_argument(
        "--start", type=float, default=None, metavar="SECONDS", help="first timestamp to render"
    )
    render.add_argument(
        "--end", type=float, default=None, metavar="SECONDS", help="last timestamp to render"
    )
    render.add_argument(
        "--classes",
        type=names_or_ids,
        default=None,
        help="only these classes: names or ids, e.g. person,car or 0,2",
    )
    render.add_argument(
        "--min-conf", type=float, default=None, help="only boxes with at least this confidence"
    )
    render.add_argument(
        "--analysis",
        default=None,
        metavar="NAME",
        help="also draw this stored analysis's lines and zones with their running counts "
        "(see analyze --help)",
    )
    render.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_report_parser(sub) -> None:
    report = sub.add_parser(
        "report",
        help="write a self-contained HTML report of a run (plots, per-video table, failures)",
        description="Write one HTML file (plots embedded) that opens in a browser with no server or network.",
    )
    report.add_argument("results", metavar="DIR", help="the run's --output directory")
    report.add_argument(
        "--output",
        "-o",
        default=None,
        metavar="FILE",
        help="the HTML file (default DIR/report.html)",
    )
    report.add_argument(
        "--top-classes", type=int, default=5, help="classes plotted over time (default %(default)s)"
    )
    report.add_argument(
        "--max-videos",
        type=int,
        default=12,
        help="videos with their own plot, busiest first (default %(default)s)",
    )


def _check_writable_file(path: str, option: str = "--output") -> None:
    """A file the command will write: its folder must exist (one line instead of a traceback)."""
    folder = Path(path).expanduser().absolute().parent
    if not folder.is_dir():
        raise UsageError(f"{option} {path}: folder {folder} does not exist (create it first)")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"{option} {path}: folder {folder} is not writable")
    if Path(path).is_dir():
        raise UsageError(f"{option} {path} is a folder; give a file name")


def render_main(args: argparse.Namespace) -> int:
    from pipeline.views.render import render

    if args.start is not None and args.end is not None and args.end < args.start:
        raise UsageError("--end must not be before --start")
    if not Path(args.video).is_file():
        raise UsageError(f"{args.video}: file not found")
    _check_writable_file(args.output)
    if Path(args.output).absolute() == Path(args.video).absolute() or (
        Path(args.output).exists() and Path(args.output).samefile(args.video)
    ):
        raise UsageError(f"--output {args.output} is the input video; give another file name")
    summary = render(
        args.video,
        args.results,
        args.output,
        start_s=args.start,
        end_s=args.end,
        classes=args.classes,
        min_confidence=args.min_conf,
        analysis=args.analysis,
        progress=not args.no_progress,
    )
    print(
        f"Wrote {summary.output}: {summary.frames} frames {summary.width}x{summary.height} ({summary.codec}), "
        f"{summary.boxes_drawn} boxes, {summary.frames_held} frames with held boxes"
    )
    return EXIT_OK


def report_main(args: argparse.Namespace) -> int:
    from pipeline.views.report import write_report

    if args.top_classes < 1 or args.max_videos < 1:
        raise UsageError("--top-classes and --max-videos must be at least 1")
    if args.output:
        _check_writable_file(args.output)
    path = write_report(
        args.results, args.output, top_classes=args.top_classes, max_videos=args.max_videos
    )
    print(f"Wrote {path}")
    return EXIT_OK


def config_from_args(args: argparse.Namespace) -> RunConfig:
    return config_from_options(vars(args))


def _nothing_to_do(t: dict, output: str) -> str:
    done = (
        f"All {t['videos_skipped']} videos already done"
        if not t["videos_failed"]
        else (
            f"{t['videos_skipped']} videos already done, {t['videos_failed']} unreadable (recorded as failed)"
        )
    )
    return (
        f"{done} in {output} (same content and settings): nothing to process. "
        f"run.json still describes the last run that processed videos."
    )


def format_summary(record: dict, output: str) -> str:
    output = redact(output)  # an object-storage output may carry credentials
    t = record["totals"]
    if not record.get("did_work", True):
        return _nothing_to_do(t, output)
    mem = record["memory"]
    mib = 1024 * 1024
    lines = [
        "",
        f"Videos: {t['videos']} ({t['videos_ok']} ok, {t['videos_partial']} partial, {t['videos_failed']} failed, "
        f"{t['videos_skipped']} already done)",
        f"Frames: {t['frames']} in {record['throughput']['processing_s']:.1f} s "
        f"({record['throughput']['frames_per_s']:.1f} frames/s), detections: {t['detections']}",
        f"Device: {record['model']['device']}"
        + (" fp16" if record["model"]["half"] else "")
        + f", engine: {record['model']['engine']}"
        + "".join(
            f" (built for {shape} in {s:.1f} s)"
            for shape, s in record["model"].get("engine_export_s", {}).items()
        )
        + f", actors: {record['placement']['num_actors']}, batch {record['settings']['batch_size']}",
        f"Peak memory: driver {mem['driver']['peak_bytes'] / mib:.0f} MiB, coordinator "
        f"{mem['coordinator']['peak_bytes'] / mib:.0f} MiB"
        + (
            f", actor {mem['actor_peak_bytes'] / mib:.0f} MiB"
            if mem.get("actor_peak_bytes")
            else ""
        ),
    ]
    startup = record.get("startup") or {}
    if startup.get("first_batch_done_s") is not None:
        lines.append(
            f"Start-up: first batch done {startup['first_batch_done_s']:.1f} s after the command, "
            f"{startup['actors_ready_to_first_batch_s']:.1f} s after the actors were ready"
        )
    if record.get("gpu"):
        for g in record["gpu"]:
            if g.get("mean_utilization_percent") is not None:
                lines.append(f"GPU: {g['mean_utilization_percent']:.0f}% busy on average")
    if record["settings"].get("track"):
        lines.append(
            f"Tracks: {t.get('tracks', 0)} (one row per track in {output}/tracks/, a track_id per box)"
        )
    if t["videos_failed"] or t["videos_partial"]:
        lines.append(
            f"Some videos were not fully read; see the 'error' column of {output}/videos.parquet"
        )
    outputs = f"{output}/detections (Parquet), " + (
        f"{output}/tracks, " if record["settings"].get("track") else ""
    )
    lines.append(f"Output: {outputs}{output}/videos.parquet, {output}/run.json")
    return "\n".join(lines)


def _print_bad_videos(output: str, limit: int = 10) -> None:
    from pipeline.output.readers import videos_not_ok

    try:
        bad, count = videos_not_ok(output, limit)
    except (
        OSError,
        UsageError,
    ) as exc:  # e.g. object storage unreachable now: the exit status stands
        print(
            f"(could not list them: reading {redact(output)}/videos.parquet failed: {redact(str(exc))})",
            file=sys.stderr,
        )
        return
    for row in bad:
        print(f"{row['status']}: {row['path']}: {row['error']}", file=sys.stderr)
    if count > limit:
        print(f"... and {count - limit} more", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(sys.argv[1:] if argv is None else argv)
    except KeyboardInterrupt:  # Ctrl-C before the run's own handling (imports, Ray's start-up)
        stopped = Interrupted(signal.SIGINT)
        print(_interrupted_line(stopped), file=sys.stderr)
        return stopped.exit_code


def _interrupted_line(exc: Interrupted, output: str | None = None) -> str:
    """The one wording of an interrupted run, whenever the signal came."""
    kept = f"complete videos are kept in {redact(output)}" if output else "complete videos are kept"
    return f"\n{exc}: {kept}. Run the same command again to resume."


def _main(argv: list[str]) -> int:
    # bench has its own parser: the contenders share options that `run` does not have
    if argv[:1] == ["bench"]:
        from pipeline.bench.harness import bench

        return bench(argv[1:])
    if argv[:1] == ["serve"]:
        from pipeline.cli.serve import serve_main

        return serve_main(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    views = {
        "render": render_main,
        "report": report_main,
        "analyze": analyze_cli.analyze_main,
        "export": analyze_cli.export_main,
    }
    if args.command in views:
        try:
            return views[args.command](args)
        except PipelineError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return exc.exit_code
    from pipeline import run
    from pipeline.output.bookkeeping import return_freed_memory

    return_freed_memory()  # the driver walks the inputs, and reads videos.parquet at the end
    try:
        record = run(
            args.inputs,
            output=args.output,
            config=config_from_args(args),
            address=args.address,
            progress=not (args.no_progress or args.quiet),
        )
    except Interrupted as exc:
        print(_interrupted_line(exc, args.output), file=sys.stderr)
        return exc.exit_code
    except PipelineError as exc:  # a mistake in the command (2), workers that could not start (1)
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception:
        import traceback

        traceback.print_exc()
        print(
            "error: unexpected failure (traceback above); complete videos are kept, re-run to resume",
            file=sys.stderr,
        )
        return EXIT_UNEXPECTED
    if not args.quiet:
        print(format_summary(record, args.output))
    if record["exit_code"] != EXIT_OK:
        _print_bad_videos(args.output)
    return record["exit_code"]


if __name__ == "__main__":
    sys.exit(main())
