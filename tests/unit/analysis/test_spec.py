"""Lines and zones as users give them: every mistake is one AnalysisError (exit status 2)."""

from __future__ import annotations

import pytest

from pipeline.analysis.spec import (
    AnalysisError,
    AnalysisSpec,
    Line,
    Zone,
    load_spec,
    parse_shape,
    spec_from_options,
)
from pipeline.errors import EXIT_USAGE


def test_command_line_shapes_become_lines_and_zones():
    spec = spec_from_options(
        lines=["door=960,0,960,1080"], zones=["left=0,0,960,0,960,1080,0,1080"], max_objects=5
    )
    assert spec.lines == (Line("door", (960.0, 0.0), (960.0, 1080.0)),)
    assert spec.zones[0].points[2] == (960.0, 1080.0) and spec.zones[0].max_objects == 5
    assert spec.anchor == "bottom_center" and spec.buckets_s == (1.0, 60.0)


def test_a_yaml_file_round_trips_through_to_dict(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text(
        "lines:\n  - {name: stop, points: [[0, 10], [100, 10]], classes: [car, 7]}\n"
        "zones:\n  - {name: q, points: [[0, 0], [5, 0], [5, 5]], max_objects: 2}\n"
        "anchor: center\nbuckets_s: [10]\n"
    )
    spec = load_spec(path)
    assert spec.lines[0].classes == (7, "car") and spec.anchor == "center"
    assert AnalysisSpec.from_dict(spec.to_dict()) == spec


def test_classes_option_fills_only_what_the_file_leaves_out(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text("lines:\n  - {name: a, points: [[0, 0], [9, 9]], classes: [car]}\n")
    spec = spec_from_options(spec_file=str(path), lines=["b=0,0,5,5"], classes=["person"])
    assert [x.classes for x in spec.lines] == [("car",), ("person",)]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: spec_from_options(lines=["a=1,2"]), "two points"),
        (lambda: spec_from_options(lines=["a=1,2,1,2"]), "the same"),
        (lambda: spec_from_options(lines=["a=1,2,3"]), "odd count"),
        (lambda: spec_from_options(lines=["a:1,2,3,4"]), "NAME=X1,Y1"),
        (lambda: spec_from_options(lines=["a=1,x,3,4"]), "numbers"),
        (lambda: spec_from_options(zones=["z=0,0,5,5"]), "at least three"),
        (lambda: spec_from_options(zones=["z=0,0,5,5,10,10"]), "no area"),
        (lambda: spec_from_options(lines=["a b=0,0,1,1"]), "name"),
        (lambda: spec_from_options(lines=["a=0,0,1,1"], zones=["a=0,0,5,0,5,5"]), "distinct"),
        (lambda: spec_from_options(), "nothing to analyze"),
        (lambda: spec_from_options(lines=["a=0,0,1,1"], anchor="feet"), "anchor"),
        (lambda: spec_from_options(lines=["a=0,0,1,1"], buckets_s=[0]), "buckets_s"),
        (lambda: Zone.build("z", [[0, 0], [5, 0], [5, 5]], max_objects=-1), "max_objects"),
        (lambda: AnalysisSpec.from_dict({"lines": [], "zonez": []}), "unknown key"),
        (lambda: AnalysisSpec.from_dict({"lines": [{"name": "a"}]}), "name and points"),
        (
            lambda: AnalysisSpec.from_dict(
                {"lines": [{"name": "a", "points": [[0, 0], [1, 1]], "max_objects": 3}]}
            ),
            "unknown key",
        ),
        (lambda: Line.build("a", [[0, 0], [1, float("inf")]]), "not finite"),
    ],
)
def test_mistakes_are_one_usage_error(build, message):
    with pytest.raises(AnalysisError, match=message) as caught:
        build()
    assert caught.value.exit_code == EXIT_USAGE and "\n" not in str(caught.value)


def test_a_spec_file_that_is_not_yaml_or_missing(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lines: [unclosed\n")
    with pytest.raises(AnalysisError, match="not valid YAML"):
        load_spec(bad)
    with pytest.raises(AnalysisError, match="missing.yaml"):
        load_spec(tmp_path / "missing.yaml")


def test_parse_shape_keeps_the_points_in_order():
    assert parse_shape("z=1,2, 3,4,5,6", "zone") == ("z", [(1.0, 2.0), (3.0, 4.0), (5.0, 6.0)])
