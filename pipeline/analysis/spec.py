"""What an analysis counts: lines (crossings by direction) and zones (occupancy, dwell,
overcrowding), in source-frame pixels, from the command line or a small YAML file.

Every check that can fail on a user's input happens here, before any file is read, so a mistake
is one line (``AnalysisError``, exit status 2) and never a half-written analysis.

The YAML file::

    lines:
      - name: stop_line
        points: [[100, 620], [1800, 620]]
        classes: [car, truck]        # optional: every class by default
    zones:
      - name: queue
        points: [[200, 300], [900, 300], [900, 1000], [200, 1000]]
        classes: [person]
        max_objects: 8               # optional: record the intervals with more inside
    anchor: bottom_center            # the box point that counts (supervision's default for zones)
    buckets_s: [1, 60]               # occupancy per second and per minute
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from pipeline.config import class_keys
from pipeline.errors import UsageError

# supervision's box anchors (``sv.Position``), lower case; bottom centre is where a person's feet
# or a car's wheels touch the ground, so it is the default for lines and zones alike.
ANCHORS = (
    "bottom_center",
    "center",
    "top_center",
    "bottom_left",
    "bottom_right",
    "top_left",
    "top_right",
    "center_left",
    "center_right",
)
DEFAULT_ANCHOR = "bottom_center"
DEFAULT_BUCKETS_S = (1.0, 60.0)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

Point = tuple[float, float]


class AnalysisError(UsageError, ValueError):
    """A line, zone or option of an analysis that cannot be used; the message says which."""


def check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise AnalysisError(
            f"{what} name {name!r}: use 1-64 letters, digits, '_', '.' or '-' (starting with a "
            "letter or digit)"
        )
    return name


def _point(value, where: str) -> Point:
    try:
        x, y = (float(v) for v in value)
    except (TypeError, ValueError):
        raise AnalysisError(f"{where}: a point is two numbers [x, y], not {value!r}") from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise AnalysisError(f"{where}: point {value!r} is not finite")
    return (x, y)


def _points(value, where: str) -> tuple[Point, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise AnalysisError(f"{where}: points must be a list of [x, y] pairs, not {value!r}")
    return tuple(_point(p, where) for p in value)


def _classes(value, where: str) -> tuple[int | str, ...] | None:
    if value is None:
        return None
    keys = class_keys(value)
    if not keys:
        raise AnalysisError(f"{where}: classes is empty (leave it out to count every class)")
    return keys


def _twice_area(points: Sequence[Point]) -> float:
    return sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in zip(points, [*points[1:], points[0]]))


@dataclass(frozen=True)
class Line:
    """A counting line from ``start`` to ``end``. A tracked box crosses it when its anchor moves
    from one side to the other (supervision's ``LineZone``); ``in`` is the crossing from the
    right-hand side of start→end to its left-hand side, in image coordinates (y down)."""

    name: str
    start: Point
    end: Point
    classes: tuple[int | str, ...] | None = None

    @classmethod
    def build(cls, name: str, points, classes=None) -> Line:
        where = f"line {name!r}"
        check_name(name, "line")
        found = _points(points, where)
        if len(found) != 2:
            raise AnalysisError(f"{where}: a line has two points (start and end), not {len(found)}")
        if found[0] == found[1]:
            raise AnalysisError(f"{where}: its two points are the same")
        return cls(name, found[0], found[1], _classes(classes, where))


@dataclass(frozen=True)
class Zone:
    """A polygon; a box is inside when its anchor is (supervision's ``PolygonZone``)."""

    name: str
    points: tuple[Point, ...]
    classes: tuple[int | str, ...] | None = None
    max_objects: int | None = None  # intervals with more objects inside are "overcrowded"

    @classmethod
    def build(cls, name: str, points, classes=None, max_objects=None) -> Zone:
        where = f"zone {name!r}"
        check_name(name, "zone")
        found = _points(points, where)
        if len(found) < 3:
            raise AnalysisError(f"{where}: a zone has at least three points, not {len(found)}")
        if abs(_twice_area(found)) < 1e-6:
            raise AnalysisError(f"{where}: its points enclose no area")
        if max_objects is not None and (
            isinstance(max_objects, bool) or not isinstance(max_objects, int) or max_objects < 0
        ):
            raise AnalysisError(f"{where}: max_objects must be a whole number >= 0")
        return cls(name, found, _classes(classes, where), max_objects)


@dataclass(frozen=True)
class AnalysisSpec:
    lines: tuple[Line, ...] = ()
    zones: tuple[Zone, ...] = ()
    anchor: str = DEFAULT_ANCHOR
    buckets_s: tuple[float, ...] = DEFAULT_BUCKETS_S

    def __post_init__(self):
        if not self.lines and not self.zones:
            raise AnalysisError("nothing to analyze: give at least one --line or --zone")
        names = [x.name for x in self.items]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise AnalysisError(f"lines and zones need distinct names: {', '.join(repeated)}")
        if self.anchor not in ANCHORS:
            raise AnalysisError(f"anchor {self.anchor!r}: one of {', '.join(ANCHORS)}")
        if not self.buckets_s or any(not (b > 0 and math.isfinite(b)) for b in self.buckets_s):
            raise AnalysisError("buckets_s: one or more bucket lengths in seconds, each > 0")

    @property
    def items(self) -> tuple[Line | Zone, ...]:
        """Its lines, then its zones."""
        return (*self.lines, *self.zones)

    def with_classes(self, classes) -> AnalysisSpec:
        """Every line and zone without classes of its own counts ``classes`` (``--classes``)."""
        keys = _classes(classes, "--classes")
        return replace(
            self,
            lines=tuple(x if x.classes else replace(x, classes=keys) for x in self.lines),
            zones=tuple(x if x.classes else replace(x, classes=keys) for x in self.zones),
        )

    def to_dict(self) -> dict:
        return {
            "lines": [_plain(asdict(x)) for x in self.lines],
            "zones": [_plain(asdict(x)) for x in self.zones],
            "anchor": self.anchor,
            "buckets_s": list(self.buckets_s),
        }

    @classmethod
    def from_dict(cls, data: dict, where: str = "the analysis") -> AnalysisSpec:
        if not isinstance(data, dict):
            raise AnalysisError(f"{where}: expected a mapping with lines: and/or zones:")
        unknown = set(data) - {"lines", "zones", "anchor", "buckets_s"}
        if unknown:
            raise AnalysisError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        lines = [_item(Line, x, where) for x in data.get("lines") or []]
        zones = [_item(Zone, x, where) for x in data.get("zones") or []]
        buckets = data.get("buckets_s", DEFAULT_BUCKETS_S)
        try:
            buckets = tuple(float(b) for b in buckets)
        except (TypeError, ValueError):
            raise AnalysisError(f"{where}: buckets_s is a list of seconds, e.g. [1, 60]") from None
        return cls(tuple(lines), tuple(zones), data.get("anchor", DEFAULT_ANCHOR), buckets)


def _plain(item: dict) -> dict:
    """A line or zone as YAML/JSON writes it: points as lists, no empty keys."""
    out = {k: v for k, v in item.items() if v is not None}
    for key in ("start", "end"):
        if key in out:
            out.setdefault("points", []).append(list(out.pop(key)))
    if "points" in out:
        out["points"] = [list(p) for p in out["points"]]
    if "classes" in out:
        out["classes"] = list(out["classes"])
    return out


def _item(kind, data, where: str):
    if not isinstance(data, dict) or "name" not in data or "points" not in data:
        raise AnalysisError(f"{where}: each line and zone needs a name and points")
    allowed = {"name", "points", "classes"} | ({"max_objects"} if kind is Zone else set())
    unknown = set(data) - allowed
    if unknown:
        raise AnalysisError(
            f"{where}: {kind.__name__.lower()} {data['name']!r} has unknown key(s) "
            f"{', '.join(sorted(unknown))} (allowed: {', '.join(sorted(allowed))})"
        )
    return kind.build(**data)


def load_spec(path: str | Path) -> AnalysisSpec:
    import yaml

    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise AnalysisError(f"--spec {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise AnalysisError(f"--spec {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return AnalysisSpec.from_dict(data, where=f"--spec {path}")


def parse_shape(text: str, kind: str) -> tuple[str, list[Point]]:
    """``NAME=x1,y1,x2,y2,...`` (``--line`` / ``--zone``) as its name and points."""
    name, sep, numbers = text.partition("=")
    if not sep:
        raise AnalysisError(
            f"--{kind} {text!r}: expected NAME=X1,Y1,X2,Y2{',...' * (kind == 'zone')}"
        )
    try:
        values = [float(v) for v in numbers.replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise AnalysisError(f"--{kind} {text!r}: the points are numbers x1,y1,x2,y2,...") from None
    if len(values) % 2:
        raise AnalysisError(f"--{kind} {text!r}: an odd count of numbers (points are x,y pairs)")
    return name.strip(), [(values[i], values[i + 1]) for i in range(0, len(values), 2)]


def spec_from_options(
    *,
    spec_file: str | None = None,
    lines: Iterable[str] = (),
    zones: Iterable[str] = (),
    classes=None,
    anchor: str | None = None,
    max_objects: int | None = None,
    buckets_s: Sequence[float] | None = None,
) -> AnalysisSpec:
    """The analysis ``python -m pipeline analyze`` was asked for: a YAML file and/or
    ``--line``/``--zone`` options; ``--classes`` and ``--max-objects`` fill what the file leaves out."""
    base = load_spec(spec_file).to_dict() if spec_file else {"lines": [], "zones": []}
    for text in lines:
        name, points = parse_shape(text, "line")
        base["lines"].append({"name": name, "points": points})
    for text in zones:
        name, points = parse_shape(text, "zone")
        base["zones"].append({"name": name, "points": points})
    if max_objects is not None:
        for zone in base["zones"]:
            zone.setdefault("max_objects", max_objects)
    if anchor is not None:
        base["anchor"] = anchor
    if buckets_s is not None:
        base["buckets_s"] = list(buckets_s)
    spec = AnalysisSpec.from_dict(base)
    return spec.with_classes(classes) if classes else spec
