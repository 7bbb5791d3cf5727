"""Faults, bad input, awkward input and hostile names, end to end on a real local Ray."""

from __future__ import annotations

import os
import re

import numpy as np
import pandas as pd
import pytest
from conftest import canonical_rows as canonical
from conftest import read_rows, read_status
from corpus import make_bad_corpus, scene_frames, write_vfr

from pipeline.cli.main import main
from pipeline.config import RunConfig
from pipeline.media.samples import read_frames, write_video
from pipeline.runtime.faults import FaultPlan

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def people_small(people_mp4):
    return scene_frames(list(read_frames(people_mp4, limit=30)), 30)


@pytest.fixture(scope="module")
def three_videos(tmp_path_factory, people_small):
    folder = tmp_path_factory.mktemp("three")
    paths = []
    for i, n in enumerate((21, 16, 9)):
        path = folder / f"clip{i}.mp4"
        write_video(path, people_small[i : i + n])
        paths.append(path)
    return paths


def run(inputs, out, model, faults=None, **settings):
    import pipeline

    config = RunConfig(model=model, batch_size=4, **settings)
    return pipeline.run(
        [str(p) for p in inputs], output=str(out), config=config, faults=faults, progress=False
    )


@pytest.fixture(scope="module")
def clean_run(ray_local, tmp_path_factory, three_videos, model_path):
    out = tmp_path_factory.mktemp("clean") / "out"
    record = run(three_videos, out, model_path, num_actors=2)
    assert record["exit_code"] == 0
    return canonical(out)


def assert_same_output(out, clean: pd.DataFrame):
    got = canonical(out)
    assert not got.duplicated(["video", "frame_index"]).any()
    assert len(got) == len(clean) == 21 + 16 + 9
    pd.testing.assert_frame_equal(got, clean)


def test_decoder_killed_once_is_retried_and_output_equals_clean_run(
    clean_run, tmp_path, three_videos, model_path
):
    plan = FaultPlan(
        marker_dir=str(tmp_path), decoder_exit_video="clip0", decoder_exit_after_batches=2
    )
    record = run(three_videos, tmp_path / "out", model_path, faults=plan, num_actors=2)
    assert len(list(tmp_path.glob("decoder-*"))) == 1
    assert record["exit_code"] == 0 and record["totals"]["decoder_retries"] == 1
    assert_same_output(tmp_path / "out", clean_run)


def test_coordinator_killed_between_a_video_s_files_and_its_record(
    clean_run, tmp_path, three_videos, model_path
):
    """The files of a video whose record never got written are removed when the run ends, so a
    reader sees only the videos videos.parquet accounts for; the rerun redoes that video."""
    from pipeline.errors import RunStalled
    from pipeline.output.manifest import Manifest

    out = tmp_path / "out"
    plan = FaultPlan(marker_dir=str(tmp_path), coordinator_exit_after_commit=True)
    with pytest.raises(RunStalled, match="coordinator's process died"):
        run(three_videos, out, model_path, faults=plan, num_actors=2, max_open_videos=1)
    assert list(tmp_path.glob("commit-*")), "the fault hook never fired"
    recorded = {vid for vid, r in Manifest(out).records.items() if r.status == "ok"}
    on_disk = {p.stem for p in (out / "detections").glob("*.parquet")}
    assert on_disk == recorded and len(recorded) < 3
    record = run(three_videos, out, model_path, num_actors=2)
    assert record["exit_code"] == 0 and record["totals"]["videos_skipped"] == len(recorded)
    assert_same_output(out, clean_run)


@pytest.mark.timeout(300)  # a stalled decoder that held a window slot would stall the run
def test_a_stalled_decoder_is_given_up_and_the_video_completes(
    clean_run, tmp_path, three_videos, model_path
):
    """clip0's first decoder hangs (alive, yielding nothing) after a batch: past
    ``--stall-timeout`` another decoder resumes after that batch; the worker's one-batch window
    goes on serving the other videos meanwhile."""
    plan = FaultPlan(
        marker_dir=str(tmp_path),
        decoder_exit_video="clip0",
        decoder_exit_after_batches=1,
        decoder_stalls=True,
    )
    record = run(
        three_videos,
        tmp_path / "out",
        model_path,
        faults=plan,
        num_actors=1,
        window_per_actor=1,
        stall_timeout_s=3,
    )
    assert len(list(tmp_path.glob("decoder-*"))) == 1  # the one stall
    # (on a loaded machine another decoder may also go silent for 3 s: started again too)
    assert record["exit_code"] == 0 and record["totals"]["decoder_retries"] >= 1
    assert_same_output(tmp_path / "out", clean_run)


def test_video_whose_decoder_always_dies_fails_and_the_others_complete(
    clean_run, tmp_path, three_videos, model_path
):
    plan = FaultPlan(marker_dir=str(tmp_path), decoder_exit_video="clip1", decoder_exit_times=100)
    record = run(
        three_videos, tmp_path / "out", model_path, faults=plan, num_actors=2, decode_retries=2
    )
    assert len(list(tmp_path.glob("decoder-*"))) == 3  # first try + 2 retries
    assert record["exit_code"] == 3
    status = {os.path.basename(p): s for p, s in read_status(tmp_path / "out").items()}
    assert status["clip1.mp4"]["status"] == "failed"
    assert (
        "decoder process died" in status["clip1.mp4"]["error"]
        and "3 attempts" in status["clip1.mp4"]["error"]
    )
    assert status["clip0.mp4"]["status"] == status["clip2.mp4"]["status"] == "ok"
    got = canonical(tmp_path / "out")
    pd.testing.assert_frame_equal(
        got, clean_run[clean_run["video"] != "clip1.mp4"].reset_index(drop=True)
    )


def test_bad_input_corpus(ray_local, tmp_path, model_path, people_small):
    folder = tmp_path / "in"
    expected = make_bad_corpus(folder)
    good = folder / "good.mp4"
    write_video(good, people_small[:10])
    empty_dir = tmp_path / "empty_dir"
    empty_dir.mkdir()
    # A missing file named on the command line is a usage error; in a list it is a failed video.
    listing = tmp_path / "also.txt"
    listing.write_text(f"{folder / 'does_not_exist.mp4'}\n")
    inputs = [good, *sorted(folder.glob("*")), f"@{listing}", empty_dir]
    out = tmp_path / "out"
    code = main(
        [
            "run",
            *map(str, dict.fromkeys(inputs)),
            "--output",
            str(out),
            "--model",
            model_path,
            "--batch-size",
            "4",
            "--no-progress",
        ]
    )
    assert code == 3
    status = {os.path.basename(p): s for p, s in read_status(out).items()}
    assert status["good.mp4"]["status"] == "ok" and status["good.mp4"]["frames_processed"] == 10
    for name, (want_status, cause) in expected.items():
        row = status[name]
        assert row["status"] == want_status, (name, row)
        assert cause in row["error"], (name, row["error"])
        if want_status == "partial":
            assert 0 < row["frames_processed"] < 30
        else:
            assert row["frames_processed"] == 0
    rows = read_rows(out)
    partial_ids = {s["video_id"] for s in status.values() if s["status"] == "partial"}
    # kept frames of partial videos
    assert set(rows["video_id"]) == partial_ids | {status["good.mp4"]["video_id"]}
    assert not rows.duplicated(["video_id", "frame_index"]).any()


def test_awkward_but_valid_input(ray_local, tmp_path, model_path, people_small):
    import cv2

    folder = tmp_path / "in"
    folder.mkdir()
    frames = people_small[:10]
    vfr_times = [0, 0.05, 0.07, 0.2, 0.21, 0.5, 0.55, 0.9, 1.0, 1.3]
    write_vfr(folder / "vfr.mp4", frames, vfr_times)
    write_video(folder / "rotated.mp4", frames, rotation=90)
    write_video(
        folder / "odd_size.mkv", [f[:239, :319] for f in frames], codec="ffv1", pix_fmt="bgr0"
    )
    write_video(
        folder / "gray.mkv",
        [cv2.cvtColor(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR) for f in frames],
        codec="ffv1",
        pix_fmt="gray",
    )
    write_video(folder / "ten_bit.mp4", frames, pix_fmt="yuv420p10le")
    write_video(
        folder / "vp9.webm",
        frames,
        codec="libvpx-vp9",
        options={"deadline": "realtime", "cpu-used": "8"},
    )
    write_video(
        folder / "hevc.mkv", frames, codec="libx265", options={"x265-params": "log-level=none"}
    )
    write_video(folder / "mjpeg.avi", frames, codec="mjpeg", pix_fmt="yuvj420p")
    write_video(folder / "one_frame.mp4", frames[:1])
    write_video(folder / "batch_plus_one.mp4", frames[:5])  # batch size 4 + 1
    out = tmp_path / "out"
    assert (
        main(
            [
                "run",
                str(folder),
                "--output",
                str(out),
                "--model",
                model_path,
                "--batch-size",
                "4",
                "--no-progress",
            ]
        )
        == 0
    )
    rows = read_rows(out)
    status = {os.path.basename(p): s for p, s in read_status(out).items()}
    expected_frames = {"one_frame.mp4": 1, "batch_plus_one.mp4": 5}
    for name, s in status.items():
        mine = rows[rows["video_id"] == s["video_id"]].sort_values("frame_index")
        n = expected_frames.get(name, 10)
        assert s["status"] == "ok" and mine["frame_index"].tolist() == list(range(n)), name
        if name == "vfr.mp4":
            np.testing.assert_allclose(mine["timestamp_s"], vfr_times, atol=1e-3)
        elif name not in ("mjpeg.avi",):
            np.testing.assert_allclose(
                mine["timestamp_s"], np.arange(n) / 30, atol=1e-3, err_msg=name
            )
        width, height = s["width"], s["height"]
        for boxes in mine["detections"]:
            for d in boxes:
                assert 0 <= d["x1"] <= d["x2"] <= width and 0 <= d["y1"] <= d["y2"] <= height, name
        assert mine["num_detections"].sum() > 0, name
    # coded 320x240
    assert (status["rotated.mp4"]["width"], status["rotated.mp4"]["height"]) == (
        240,
        320,
    )
    assert status["rotated.mp4"]["rotation"] in (90, 270)
    assert (status["odd_size.mkv"]["width"], status["odd_size.mkv"]["height"]) == (319, 239)


def test_hostile_names_write_only_inside_the_output(ray_local, tmp_path, model_path, people_small):
    """Files with hostile names are each a video whose rows land only inside the output, under
    hashed file names; one file reached through a symlink or a path with '..' is one video."""
    folder = tmp_path / "in"
    folder.mkdir()
    names = [
        "..x.mp4",
        "a b.mp4",
        "quote'\"s.mp4",
        "new\nline.mp4",
        "видео ✓.mp4",
        "$(touch pwned).mp4",
        "-rf.mp4",
    ]
    files = []
    for i, name in enumerate(names):
        write_video(folder / name, people_small[i : i + 3])  # distinct content: distinct videos
        files.append(folder / name)
    (folder / "..x").mkdir()
    link = folder / "link.mp4"
    link.symlink_to(folder / "a b.mp4")
    traversal = folder / "..x" / ".." / "..x.mp4"  # the same file as '..x.mp4', through '..'
    out = tmp_path / "out"
    before = {p for p in tmp_path.rglob("*")}
    assert (
        main(
            [
                "run",
                "--output",
                str(out),
                "--model",
                model_path,
                "--no-progress",
                "--",
                *map(str, files),
                str(link),
                str(traversal),
            ]
        )
        == 0
    )
    written = {p for p in tmp_path.rglob("*")} - before
    assert written and all(out in p.parents or p == out for p in written), written
    status = read_status(out)
    # the link and '..' add none
    assert sorted(os.path.basename(p) for p in status) == sorted(names)
    assert all(s["status"] == "ok" for s in status.values())
    assert read_rows(out).groupby("video_id").size().tolist() == [3] * len(names)
    for p in (out / "detections").iterdir():  # a video's id, or a part's name: never the input's
        assert re.fullmatch(r"[0-9a-f]{16}|part-[0-9]+-[0-9a-f]{12}", p.stem), p.name


@pytest.mark.parametrize("with_other_work", [True, False], ids=["on Ray", "without Ray"])
def test_a_video_that_turned_bad_loses_its_old_rows(
    ray_local, tmp_path, model_path, people_small, with_other_work
):
    """An 'ok' video that is now empty (or missing) is recorded failed, and its earlier rows go:
    a video's rows and its manifest row agree, whether the rerun needs Ray (other videos to
    process) or not (nothing else to do)."""
    folder = tmp_path / "in"
    folder.mkdir()
    first, second = folder / "first.mp4", folder / "second.mp4"
    write_video(first, people_small[:6])
    write_video(second, people_small[6:12])
    listing = tmp_path / "list.txt"
    listing.write_text("in/first.mp4\nin/second.mp4\n")
    out = tmp_path / "out"
    assert run([f"@{listing}"], out, model_path)["exit_code"] == 0
    assert read_rows(out)["video_id"].nunique() == 2
    first.write_bytes(b"")  # the file went bad
    if with_other_work:
        write_video(second, people_small[12:20])  # changed: processed again, so Ray starts
    record = run([f"@{listing}"], out, model_path)
    assert record["exit_code"] == 3 and record["did_work"] is with_other_work
    status = {os.path.basename(p): s for p, s in read_status(out).items()}
    assert (
        status["first.mp4"]["status"] == "failed" and "empty file" in status["first.mp4"]["error"]
    )
    rows = read_rows(out)
    assert set(rows["video_id"]) == {status["second.mp4"]["video_id"]}
    assert not (out / "detections" / f"{status['first.mp4']['video_id']}.parquet").exists()
