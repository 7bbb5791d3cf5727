"""``python -m pipeline analyze OUT`` (lines and zones over stored tracks) and
``python -m pipeline export OUT`` (COCO, MOTChallenge, CSV): no model, no Ray."""

from __future__ import annotations

import argparse

from pipeline.analysis.spec import ANCHORS, DEFAULT_ANCHOR
from pipeline.errors import EXIT_OK, UsageError
from pipeline.options import names_or_ids

ANALYZE_EPILOG = """\
Lines and zones are in source-frame pixels (x right, y down), the boxes' coordinates. A box
counts by its anchor point (bottom centre by default, where feet and wheels meet the ground).
  line crossings: one row per crossing (video, track, class, frame, time, direction). Walking
    along the line from its first point to its second, "in" is a crossing from your right to
    your left, "out" the other way (supervision's LineZone convention).
  zones: objects inside per time bucket (mean and most, per class), each track's visits
    (entry, exit, dwell), and with --max-objects the intervals with more inside.
Needs a run made with --track. Written to OUT/analysis/NAME/ (replaced as a whole): Parquet
tables crossings, line_counts, zone_frames, zone_occupancy, zone_visits, zone_overcrowding.

spec file (YAML):
  lines:
    - {name: stop_line, points: [[100, 620], [1800, 620]], classes: [car, truck]}
  zones:
    - {name: queue, points: [[200, 300], [900, 300], [900, 1000], [200, 1000]], max_objects: 8}
  anchor: bottom_center
  buckets_s: [1, 60]

examples:
  python -m pipeline analyze out --line door=960,0,960,1080 --zone left=0,0,960,0,960,1080,0,1080
  python -m pipeline analyze out --spec counting.yaml --name counting --classes person
"""

EXPORT_EPILOG = """\
formats:
  coco   one COCO detection JSON per video (NAME.json): images are the processed frames,
         frame_<index:06d>.jpg (--images writes them into NAME/); category id = class id + 1
  mot    one MOTChallenge sequence per video from its tracks: NAME/gt/gt.txt and
         NAME/seqinfo.ini (frames 1-based; class column = class id + 1); needs --track
  csv    detections.csv: one row per box, every video

NAME is the video's file name without extension (with its id where two videos share one).

examples:
  python -m pipeline export out --format coco --output coco/ --images
  python -m pipeline export out --format mot --output mot/ --classes person
"""


def _seconds_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: seconds, e.g. 1,60") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: one or more lengths in seconds, each > 0")
    return values


ANALYZE_OPTIONS: list[tuple[str, dict]] = [
    ("--line", dict(action="append", default=[], metavar="NAME=X1,Y1,X2,Y2",
                    help="a counting line (repeat for more)")),
    ("--zone", dict(action="append", default=[], metavar="NAME=X1,Y1,X2,Y2,X3,Y3[,...]",
                    help="a polygon zone (repeat for more)")),
    ("--classes", dict(type=names_or_ids, default=None,
                       help="count only these classes (names or ids) where a line or zone names none")),
    ("--anchor", dict(choices=ANCHORS, default=None, metavar="ANCHOR",
                      help=f"the box point that counts: {', '.join(ANCHORS)} (default {DEFAULT_ANCHOR})")),
    ("--max-objects", dict(type=int, default=None, metavar="N",
                           help="zones: record the intervals with more than N objects inside (overcrowding)")),
    ("--buckets", dict(type=_seconds_list, default=None, metavar="S[,S...]",
                       help="occupancy bucket lengths in seconds (default 1,60)")),
    ("--name", dict(default="default",
                    help="the analysis's folder under OUT/analysis/ (default %(default)s)")),
]  # fmt: skip


def add_parsers(sub) -> None:
    _add_analyze_parser(sub)
    _add_export_parser(sub)


def _add_analyze_parser(sub) -> None:
    analyze = sub.add_parser(
        "analyze",
        help="count line crossings, zone occupancy and dwell from a run's tracks (no inference)",
        description="Count line crossings and zone occupancy, visits and dwell over the tracks a "
        "run stored, and write them to OUT/analysis/NAME/.",
        epilog=ANALYZE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    analyze.add_argument("results", metavar="OUT", help="the --output of a run made with --track")
    analyze.add_argument(
        "--spec", metavar="FILE", help="lines and zones in a YAML file (see below)"
    )
    for flag, options in ANALYZE_OPTIONS:
        analyze.add_argument(flag, **options)
    analyze.add_argument(
        "--video",
        action="append",
        default=None,
        metavar="VIDEO",
        help="only this video (path or video id; repeat for more); default every video",
    )


def _add_export_parser(sub) -> None:
    export = sub.add_parser(
        "export",
        help="write a run's boxes as COCO, MOTChallenge or CSV files (no inference)",
        description="Write the boxes a run stored in a format other tools import.",
        epilog=EXPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("results", metavar="OUT", help="the run's --output directory")
    export.add_argument("--format", required=True, choices=("coco", "mot", "csv"))
    export.add_argument("--output", "-o", required=True, metavar="DIR", help="folder to write into")
    export.add_argument(
        "--video", action="append", default=None, metavar="VIDEO", help="only this video (repeat)"
    )
    export.add_argument(
        "--classes",
        type=names_or_ids,
        default=None,
        help="only these classes (names or ids); MOTChallenge tools evaluate pedestrians: person",
    )
    export.add_argument(
        "--images", action="store_true", help="coco: also write the processed frames as JPEGs"
    )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def analysis_summary(analysis, output: str) -> str:
    spec = analysis.spec
    lines = [
        f"Analysis {analysis.name!r} of {output}: {_plural(len(analysis.videos), 'video')}, "
        f"{_plural(len(spec.lines), 'line')}, {_plural(len(spec.zones), 'zone')} "
        f"in {analysis.elapsed_s:.2f} s"
    ]
    counts = analysis.line_counts
    for line in spec.lines:
        parts = []
        for direction in ("in", "out"):
            mine = counts[(counts["line"] == line.name) & (counts["direction"] == direction)]
            by_class = mine.groupby("class_name")["count"].sum().sort_values(ascending=False)
            detail = ", ".join(f"{c} {n}" for c, n in by_class.items())
            parts.append(f"{direction} {int(by_class.sum())}" + (f" ({detail})" if detail else ""))
        lines.append(f"  line {line.name}: " + ", ".join(parts))
    for zone in spec.zones:
        visits = analysis.zone_visits[analysis.zone_visits["zone"] == zone.name]
        occupancy = analysis.zone_occupancy[
            (analysis.zone_occupancy["zone"] == zone.name)
            & (analysis.zone_occupancy["class_id"] == -1)
        ]
        text = f"  zone {zone.name}: {_plural(len(visits), 'visit')}"
        if len(visits):
            text += f", dwell median {visits['dwell_s'].median():.1f} s (longest {visits['dwell_s'].max():.1f} s)"
        text += (
            f", most inside at once {int(occupancy['max_inside'].max()) if len(occupancy) else 0}"
        )
        if zone.max_objects is not None:
            over = analysis.zone_overcrowding[analysis.zone_overcrowding["zone"] == zone.name]
            total = float((over["end_s"] - over["start_s"]).sum())
            text += f"; more than {zone.max_objects} inside: {_plural(len(over), 'interval')}, {total:.1f} s in all"
        lines.append(text)
    if analysis.path:
        lines.append(f"Wrote {analysis.path}/ (Parquet: crossings, line_counts, zone_*)")
    return "\n".join(lines)


def analyze_main(args: argparse.Namespace) -> int:
    from pipeline.analysis.analyze import analyze
    from pipeline.analysis.spec import spec_from_options

    if args.max_objects is not None and args.max_objects < 0:
        raise UsageError("--max-objects must be 0 or more")
    spec = spec_from_options(
        spec_file=args.spec,
        lines=args.line,
        zones=args.zone,
        classes=args.classes,
        anchor=args.anchor,
        max_objects=args.max_objects,
        buckets_s=args.buckets,
    )
    analysis = analyze(args.results, spec, name=args.name, video_id=args.video)
    print(analysis_summary(analysis, args.results))
    return EXIT_OK


def export_main(args: argparse.Namespace) -> int:
    from pipeline.views.export import export

    summary = export(
        args.results,
        args.output,
        args.format,
        videos=args.video,
        classes=args.classes,
        images=args.images,
    )
    what = f"{summary.boxes} boxes of {_plural(summary.videos, 'video')}"
    images = f", {summary.images} images" if summary.images else ""
    print(f"Wrote {len(summary.files)} {args.format} file(s) to {summary.folder}: {what}{images}")
    return EXIT_OK
