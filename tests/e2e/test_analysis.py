"""``analyze`` and ``export`` on real tracked runs: a generated video whose crossings and dwell are
known from the paths its people walk, and people.mp4; the exports read by the tools they are for."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from corpus import Walker, walkers_video

import pipeline
from pipeline.analysis.analyze import analyze, read_analysis
from pipeline.analysis.spec import spec_from_options
from pipeline.cli.main import main
from pipeline.output.readers import read_detections, read_videos

pytestmark = pytest.mark.slow

FPS = 30
SIZE = (640, 480)
# Two people crossing the frame in opposite directions on separate rows.
WALKERS = [Walker(x0=10, y=20, speed=4), Walker(x0=560, y=300, speed=-4, start=10)]
FRAMES = 140
LINE_X = 320  # a vertical line, drawn top to bottom
ZONE_X = (200, 440)  # a band the full height of the frame


def run(args: list[str]) -> int:
    return main(["run", *args, "--device", "cpu", "--track", "--no-progress", "--quiet"])


@pytest.fixture(scope="module")
def walkers_run(ray_local, tmp_path_factory, people_mp4, model_path):
    folder = tmp_path_factory.mktemp("walkers")
    video = folder / "walkers.mp4"
    size = walkers_video(video, people_mp4, WALKERS, frames=FRAMES, size=SIZE)
    out = folder / "out"
    assert run([str(video), "--output", str(out), "--model", model_path]) == 0
    return video, out, size


@pytest.fixture(scope="module")
def people_run(ray_local, tmp_path_factory, people_mp4, model_path):
    out = tmp_path_factory.mktemp("people") / "out"
    assert run([str(people_mp4), "--output", str(out), "--model", model_path]) == 0
    return out


def bottom_centre_x(walker: Walker, t: int, width: int) -> float:
    return round(walker.left(t)) + width / 2


def test_crossings_and_dwell_are_what_the_paths_imply(walkers_run):
    _video, out, (pw, _ph) = walkers_run
    spec = spec_from_options(
        lines=[f"door={LINE_X},0,{LINE_X},{SIZE[1]}"],
        zones=[f"band={ZONE_X[0]},0,{ZONE_X[1]},0,{ZONE_X[1]},{SIZE[1]},{ZONE_X[0]},{SIZE[1]}"],
    )
    analysis = analyze(out, spec, name="known")
    # Walking down the line, your right hand points west (x < 320): a walker going east
    # crosses from right to left, "in"; one going west, "out".
    expected = []
    for walker in WALKERS:
        frames = range(walker.start, FRAMES)
        east = [t for t in frames if bottom_centre_x(walker, t, pw) > LINE_X]
        west = [t for t in frames if bottom_centre_x(walker, t, pw) <= LINE_X]
        expected.append(("in", east[0]) if walker.speed > 0 else ("out", west[0]))
    found = analysis.crossings.sort_values("frame_index")
    assert len(found) == 2 and found["track_id"].nunique() == 2
    for (direction, frame), (_, row) in zip(expected, found.iterrows()):
        assert row["direction"] == direction and abs(row["frame_index"] - frame) <= 2
    visits = analysis.zone_visits.sort_values("entry_frame")
    assert len(visits) == 2
    for walker, (_, visit) in zip(WALKERS, visits.iterrows()):
        inside = [
            t
            for t in range(walker.start, FRAMES)
            if ZONE_X[0] <= bottom_centre_x(walker, t, pw) <= ZONE_X[1]
        ]
        assert abs(visit["entry_frame"] - inside[0]) <= 2
        assert abs(visit["exit_frame"] - inside[-1]) <= 2
        assert abs(visit["dwell_s"] * FPS - len(inside)) <= 2
    stored = read_analysis(out, "known")
    assert stored.crossings.equals(analysis.crossings)
    assert stored.spec == spec


def test_dwell_at_five_frames_a_second_is_within_one_kept_interval_of_full_rate(
    walkers_run, tmp_path, model_path
):
    """``--fps 5 --track``: each observation lasts until the next kept frame, so a visit's dwell
    is the full-rate dwell give or take one kept interval (0.2 s)."""
    video, full_out, _ = walkers_run
    out = tmp_path / "fps5"
    assert run([str(video), "--output", str(out), "--model", model_path, "--fps", "5"]) == 0
    spec = spec_from_options(
        zones=[f"band={ZONE_X[0]},0,{ZONE_X[1]},0,{ZONE_X[1]},{SIZE[1]},{ZONE_X[0]},{SIZE[1]}"]
    )
    full = analyze(full_out, spec, name="full").zone_visits.sort_values("entry_s")
    sampled = analyze(out, spec, name="fps5").zone_visits.sort_values("entry_s")
    assert len(full) == len(sampled) == 2
    for (_, a), (_, b) in zip(full.iterrows(), sampled.iterrows()):
        assert abs(a["dwell_s"] - b["dwell_s"]) <= 0.2 + 1e-9, (a["dwell_s"], b["dwell_s"])
    kept = read_detections(out, flat=False)["frame_index"]
    assert sorted(kept) == list(range(0, FRAMES, 6))  # 30 fps: every 6th frame is at k/5 s


def naive_crossings(boxes, x: float) -> dict[str, int]:
    """Per track, in frame order: each change of side of a vertical line at ``x`` drawn top to
    bottom, counted the slow and obvious way."""
    counts = {"in": 0, "out": 0}
    tracked = boxes[boxes["track_id"].notna()].sort_values(["track_id", "frame_index"])
    for _, track in tracked.groupby("track_id"):
        east = ((track["x1"] + track["x2"]) / 2 > x).tolist()
        for before, after in zip(east, east[1:]):
            if before != after:
                counts["in" if after else "out"] += 1
    return counts


def test_people_two_lines_and_a_zone_in_seconds_with_no_ray_and_no_model(people_run, tmp_path):
    """The documented command, in a fresh process: under 5 s, and neither Ray nor a model loaded."""
    out = people_run
    probe = (
        "import sys, time; t = time.perf_counter(); from pipeline.cli.main import main; "
        f"code = main(['analyze', {str(out)!r}, '--line', 'middle=960,0,960,1080', "
        "'--line', 'low=0,800,1920,800', '--zone', 'left=0,0,960,0,960,1080,0,1080', "
        "'--classes', 'person']); "
        "print('SECONDS', time.perf_counter() - t); "
        "print('LOADED', sorted(m for m in ('ray', 'torch', 'ultralytics', 'openvino') if m in sys.modules)); "
        "sys.exit(code)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    seconds = float(done.stdout.split("SECONDS")[1].split()[0])
    assert seconds < 5, done.stdout
    assert "LOADED []" in done.stdout
    assert "line middle: in" in done.stdout and "zone left:" in done.stdout
    first = read_analysis(out).line_counts
    boxes = read_detections(out, classes="person")
    for x in (960, 700):
        analysis = pipeline.analyze(
            out,
            spec_from_options(lines=[f"middle={x},0,{x},1080"], classes=["person"]),
            name=f"x{x}",
        )
        counts = analysis.line_counts.groupby("direction")["count"].sum().to_dict()
        assert {d: counts.get(d, 0) for d in ("in", "out")} == naive_crossings(boxes, x)
    moved = pipeline.read_analysis(out, "x700").line_counts["count"].sum()
    assert moved != first[first["line"] == "middle"]["count"].sum()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--line", "a=10,10"], "two points"),
        (["--zone", "z=0,0,2000,0,0,500"], "outside the 1920x1080 frame"),
        (["--line", "a=0,0,100,100", "--classes", "persn"], "no class named 'persn'"),
    ],
)
def test_bad_analyses_are_one_line_and_exit_2(people_run, capsys, extra, message):
    assert main(["analyze", str(people_run), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_a_run_without_tracks_is_one_line_and_exit_2(
    ray_local, tmp_path, clips, model_path, capsys
):
    out = tmp_path / "out"
    assert (
        main(["run", str(clips["tiny_17"]), "--output", str(out), "--model", model_path,
              "--device", "cpu", "--quiet"])
        == 0
    )  # fmt: skip
    capsys.readouterr()
    assert main(["analyze", str(out), "--line", "a=0,0,100,100"]) == 2
    err = capsys.readouterr().err.strip()
    assert "without --track" in err and len(err.splitlines()) == 1
    assert main(["export", str(out), "--format", "mot", "--output", str(tmp_path / "m")]) == 2


def test_coco_export_loads_with_pycocotools_one_annotation_per_box(people_run, tmp_path):
    from pycocotools.coco import COCO

    out = people_run
    assert (
        main(["export", str(out), "--format", "coco", "--output", str(tmp_path), "--images"]) == 0
    )
    coco = COCO(str(tmp_path / "people.json"))
    boxes = read_detections(out)
    assert len(coco.getAnnIds()) == len(boxes)
    frames = read_detections(out, flat=False, columns=["frame_index"])
    assert len(coco.getImgIds()) == len(frames) == 302
    assert {c["name"] for c in coco.loadCats(coco.getCatIds())} >= {"person", "bicycle"}
    # the boxes of one frame, as COCO has them and as the run stored them
    image = next(i for i in coco.loadImgs(coco.getImgIds()) if i["frame_index"] == 100)
    theirs = np.array(sorted(a["bbox"] for a in coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))))
    mine = boxes[boxes["frame_index"] == 100]
    ours = np.array(
        sorted(zip(mine["x1"], mine["y1"], mine["x2"] - mine["x1"], mine["y2"] - mine["y1"]))
    )
    assert np.allclose(theirs, ours, atol=0.01)
    # the frame the file names is the frame the boxes were found on
    jpeg = tmp_path / "people" / image["file_name"]
    assert jpeg.is_file() and len(list((tmp_path / "people").glob("*.jpg"))) == 302


def test_mot_export_scores_perfectly_against_itself_in_trackeval(people_run, tmp_path):
    import trackeval

    gt = tmp_path / "gt"
    assert (
        main(
            [
                "export",
                str(people_run),
                "--format",
                "mot",
                "--output",
                str(gt),
                "--classes",
                "person",
            ]
        )
        == 0
    )
    lines = (gt / "people" / "gt" / "gt.txt").read_text().splitlines()
    tracked = read_detections(people_run, classes="person")
    assert len(lines) == tracked["track_id"].notna().sum()
    trackers = tmp_path / "trackers" / "self" / "data"
    trackers.mkdir(parents=True)
    (trackers / "people.txt").write_text("\n".join(lines) + "\n")
    config = trackeval.datasets.MotChallenge2DBox.get_default_dataset_config()
    config.update(
        GT_FOLDER=str(gt),
        TRACKERS_FOLDER=str(tmp_path / "trackers"),
        SKIP_SPLIT_FOL=True,
        SEQ_INFO={"people": None},  # its length from seqinfo.ini
        TRACKERS_TO_EVAL=["self"],
        PRINT_CONFIG=False,
    )
    quiet = {k: False for k in ("USE_PARALLEL", "PRINT_RESULTS", "PRINT_CONFIG", "TIME_PROGRESS",
                                "OUTPUT_SUMMARY", "OUTPUT_DETAILED", "PLOT_CURVES")}  # fmt: skip
    results, _ = trackeval.Evaluator(quiet).evaluate(
        [trackeval.datasets.MotChallenge2DBox(config)],
        [trackeval.metrics.CLEAR(), trackeval.metrics.Identity(), trackeval.metrics.HOTA()],
    )
    scores = results["MotChallenge2DBox"]["self"]["COMBINED_SEQ"]["pedestrian"]
    assert scores["CLEAR"]["MOTA"] == 1.0 and scores["CLEAR"]["IDSW"] == 0
    assert scores["Identity"]["IDF1"] == 1.0 and math.isclose(scores["HOTA"]["HOTA"].mean(), 1.0)
    assert scores["CLEAR"]["CLR_TP"] == len(lines)


def test_to_supervision_boxes_equal_read_detections(people_run):
    out = people_run
    video_id = read_videos(out)["video_id"].iloc[0]
    boxes = read_detections(out)
    frames = list(pipeline.to_supervision(out, video_id))
    assert [f for f, _ in frames] == list(range(302))
    for frame_index, detections in frames[::25]:
        mine = boxes[boxes["frame_index"] == frame_index]
        assert np.array_equal(detections.xyxy, mine[["x1", "y1", "x2", "y2"]].to_numpy(np.float32))
        assert np.array_equal(detections.confidence, mine["confidence"].to_numpy(np.float32))
        assert detections.data["class_name"].tolist() == mine["class_name"].tolist()
        assert detections.tracker_id.tolist() == mine["track_id"].fillna(-1).astype(int).tolist()


def test_csv_export_has_every_box(people_run, tmp_path):
    import pandas as pd

    assert main(["export", str(people_run), "--format", "csv", "--output", str(tmp_path)]) == 0
    table = pd.read_csv(tmp_path / "detections.csv")
    boxes = read_detections(people_run)
    assert len(table) == len(boxes) and list(table.columns) == list(boxes.columns)
    assert np.allclose(table["x1"], boxes["x1"], atol=1e-3)
    assert (table["track_id"].isna() == boxes["track_id"].isna()).all()


def test_render_and_report_show_the_lines_and_zones(walkers_run, tmp_path, capsys):
    import cv2

    from pipeline.media.decode import VideoDecoder
    from pipeline.views.overlay import LINE_COLOR, AnalysisOverlay

    video, out, _ = walkers_run
    spec = spec_from_options(
        lines=[f"door={LINE_X},0,{LINE_X},{SIZE[1]}"],
        zones=[f"band={ZONE_X[0]},0,{ZONE_X[1]},0,{ZONE_X[1]},{SIZE[1]},{ZONE_X[0]},{SIZE[1]}"],
        max_objects=1,
    )
    analysis = analyze(out, spec, name="shown")
    rendered = tmp_path / "shown.mp4"
    args = ["render", str(video), "--results", str(out), "--output", str(rendered), "--no-progress"]
    assert main([*args, "--analysis", "shown"]) == 0
    plain = tmp_path / "plain.mp4"
    assert main([*args[:5], str(plain), "--no-progress"]) == 0
    with_overlay = [f for _, _, f in VideoDecoder(str(rendered)).frames()]
    without = [f for _, _, f in VideoDecoder(str(plain)).frames()]
    assert len(with_overlay) == len(without) == FRAMES
    frame, base = with_overlay[5].astype(int), without[5].astype(int)
    # on the line, away from people and labels: the line's colour
    assert np.abs(frame[440, LINE_X] - np.array(LINE_COLOR)).max() < 60
    # inside the zone: tinted; outside both: untouched
    assert np.abs(frame[460, 260] - base[460, 260]).max() > 10
    assert np.abs(frame[460, 100] - base[460, 100]).max() < 12
    cv2.imwrite(str(tmp_path / "frame.png"), with_overlay[100])
    overlay = AnalysisOverlay(analysis, analysis.videos[0], *SIZE)
    crossing = analysis.crossings[analysis.crossings["direction"] == "in"]["frame_index"].iloc[0]
    assert overlay.crossed("door", "in", crossing - 1) == 0
    assert overlay.crossed("door", "in", crossing) == 1
    assert (
        main(
            [
                "render",
                str(video),
                "--results",
                str(out),
                "--output",
                str(plain),
                "--analysis",
                "nope",
            ]
        )
        == 2
    )
    assert "no analysis 'nope'" in capsys.readouterr().err
    assert main(["report", str(out)]) == 0
    page = (out / "report.html").read_text()
    part = page[page.index('id="analyses"') : page.index('id="run"')]
    assert "line door" in part and "zone band" in part
    assert 'alt="zone band occupancy"' in part and 'alt="zone band dwell histogram"' in part
    assert "More than 1 inside" in part
