"""What is decided before Ray starts: the model's classes (read without torch), ``--classes``,
and which videos need work. All Ray-free."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.config import ConfigError, RunConfig
from pipeline.errors import UsageError
from pipeline.inference.model_ref import (
    ClassesError,
    ModelLoadError,
    read_class_names,
    resolve_classes,
)
from pipeline.media.source import describe
from pipeline.output.manifest import Manifest, VideoRecord
from pipeline.plan.planning import finish_without_workers, plan_run

COCO_HEAD = {0: "person", 1: "bicycle", 2: "car"}


def test_class_names_come_from_the_checkpoint(model_path):
    names = read_class_names(model_path)
    assert len(names) == 80 and names[0] == "person" and names[79] == "toothbrush"


def test_reading_class_names_imports_neither_torch_nor_ultralytics(model_path):
    import subprocess
    import sys

    code = (
        "import sys; from pipeline.inference.model_ref import read_class_names; "
        f"n = read_class_names({model_path!r}); "
        "print(len(n), 'torch' in sys.modules, 'ultralytics' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["80", "False", "False"]


def test_class_names_of_an_openvino_export(tmp_path):
    from conftest import OPENVINO_MODEL

    if not OPENVINO_MODEL.exists():
        pytest.skip("no OpenVINO export in the shared folder")
    assert read_class_names(str(OPENVINO_MODEL))[2] == "car"
    # a folder without metadata: the actors tell later
    assert read_class_names(str(tmp_path)) is None


def test_files_that_are_not_checkpoints(tmp_path):
    import torch

    (tmp_path / "garbage.pt").write_bytes(b"junk")
    with pytest.raises(ModelLoadError, match="not a readable PyTorch checkpoint"):
        read_class_names(str(tmp_path / "garbage.pt"))
    torch.save({"weights": torch.zeros(1)}, tmp_path / "weights.pt")
    with pytest.raises(ModelLoadError, match="not a YOLO checkpoint"):
        read_class_names(str(tmp_path / "weights.pt"))
    assert read_class_names("yolo11n.pt") is None  # to be downloaded: unknown until loaded


@pytest.mark.parametrize(
    "classes, expected",
    [
        (None, None),
        ([0, 2], (0, 2)),
        (["person", "car"], (0, 2)),
        (["Person", 2, "car"], (0, 2)),
        (["2"], (2,)),
        (["bicycle", 0], (0, 1)),
        (["persn"], ClassesError("did you mean 'person'")),
        (["zebra"], ClassesError("it has 3: person, bicycle, car")),
        ([3], ClassesError("the model has no class id 3: it has 3 classes, ids 0 to 2")),
    ],
)
def test_resolve_classes(classes, expected):
    config_classes = RunConfig(classes=classes).classes
    if isinstance(expected, Exception):
        with pytest.raises(
            type(expected), match=str(expected).replace("(", "\\(").replace(")", "\\)")
        ):
            resolve_classes(config_classes, COCO_HEAD)
    else:
        assert resolve_classes(config_classes, COCO_HEAD) == expected


@pytest.mark.parametrize("classes", [[], ["", " "], [-1]])
def test_empty_or_negative_classes_are_config_errors(classes):
    with pytest.raises(ConfigError):
        RunConfig(classes=classes)


def planned(inputs, output, config):
    """The plan, with the output's lease already released (these tests plan one output many times)."""
    plan = plan_run(inputs, output, config)
    plan.release()
    return plan


def write_done(output: Path, video: Path, config: RunConfig) -> None:
    manifest = Manifest(output)
    source = describe(str(video))
    manifest.update(
        VideoRecord(
            source.video_id,
            source.path,
            "ok",
            frames_processed=3,
            size_bytes=source.size_bytes,
            mtime_ns=source.mtime_ns,
            settings_hash=config.settings_hash(),
        )
    )
    manifest.save()


def test_plan_skips_complete_videos_and_needs_no_workers(tmp_path, model_path):
    videos = [tmp_path / "a.mp4", tmp_path / "b.mp4"]
    for v in videos:
        v.write_bytes(b"video bytes")
    out = tmp_path / "out"
    plan = planned(
        [str(v) for v in videos], str(out), RunConfig(model=model_path, classes=["person"])
    )
    assert plan.config.classes == (0,) and plan.needs_workers and len(plan.todo) == 2
    write_done(out, videos[0], plan.config)
    write_done(out, videos[1], plan.config)
    again = planned([str(v) for v in videos], str(out), RunConfig(model=model_path, classes=[0]))
    assert again.skipped == 2 and again.todo == [] and not again.needs_workers
    changed = planned(
        [str(v) for v in videos], str(out), RunConfig(model=model_path, classes=[0], conf=0.5)
    )
    assert changed.needs_workers and len(changed.todo) == 2  # another setting: done again


def test_a_run_without_work_keeps_run_json_and_adds_its_own_record(tmp_path, model_path):
    video = tmp_path / "a.mp4"
    video.write_bytes(b"video bytes")
    out = tmp_path / "out"
    config = planned([str(video)], str(out), RunConfig(model=model_path)).config
    write_done(out, video, config)
    (out / "run.json").write_text(json.dumps({"did_work": True, "totals": {"frames": 300}}))
    listing = tmp_path / "list.txt"
    listing.write_text(f"{video}\ngone.mp4\n")
    plan = plan_run([f"@{listing}"], str(out), RunConfig(model=model_path))
    assert not plan.needs_workers and [Path(t.source.path).name for t in plan.todo] == ["gone.mp4"]
    record = finish_without_workers(plan)
    plan.release()
    assert record["exit_code"] == 3 and record["did_work"] is False
    assert record["totals"]["videos_skipped"] == 1 and record["totals"]["videos_failed"] == 1
    assert json.loads((out / "run.json").read_text())["totals"]["frames"] == 300  # untouched
    (runs,) = (out / "runs").iterdir()
    assert json.loads(runs.read_text())["did_work"] is False
    statuses = {Path(r.path).name: r.status for r in Manifest(out).records.values()}
    assert statuses == {"a.mp4": "ok", "gone.mp4": "failed"}


def test_the_output_is_created_last_and_removed_if_a_later_check_fails(tmp_path, model_path):
    video = tmp_path / "a.mp4"
    video.write_bytes(b"video bytes")
    out = tmp_path / "new" / "out"
    with pytest.raises(ConfigError):
        plan_run([str(video)], str(out), RunConfig(model=model_path, classes=["persn"]))
    with pytest.raises(UsageError):
        plan_run([str(video)], str(out), RunConfig(model=str(tmp_path / "missing.pt")))
    assert not (tmp_path / "new").exists()
    plan = plan_run([str(video)], str(out), RunConfig(model=model_path))
    assert (out / "detections").is_dir() and (out / ".lease").is_file()
    plan.remove_created_output()  # what launch does for a mistake found once Ray is up
    assert not (tmp_path / "new").exists()


def test_a_second_plan_on_an_output_in_use_touches_nothing(tmp_path, model_path):
    from pipeline.plan.lease import OutputInUse

    video = tmp_path / "a.mp4"
    video.write_bytes(b"video bytes")
    out = tmp_path / "out"
    first = plan_run([str(video)], str(out), RunConfig(model=model_path))
    (out / "videos.parquet").write_bytes(b"the first run's manifest")
    with pytest.raises(OutputInUse, match="in use by another run"):
        plan_run([str(video)], str(out), RunConfig(model=model_path))
    assert (out / "videos.parquet").read_bytes() == b"the first run's manifest"
    first.release()
    (out / "videos.parquet").unlink()
    planned([str(video)], str(out), RunConfig(model=model_path, conf=0.5))  # free again


def test_a_long_list_is_planned_from_its_head_and_the_rest_is_walked_lazily(
    tmp_path, model_path, monkeypatch
):
    """A new output: planning walks only as far as its look-ahead; the rest comes as the run asks
    for it, in order and without repeats."""
    import pipeline.plan.planning as planning

    monkeypatch.setattr(planning, "HEAD_VIDEOS", 10)
    names = [f"missing-{i:03d}.mp4" for i in range(25)]
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join([*names, names[3]]) + "\n")
    plan = planned([f"@{listing}"], str(tmp_path / "out"), RunConfig(model=model_path))
    assert [Path(t.source.path).name for t in plan.todo] == names[:10] and plan.more is not None
    assert plan.needs_workers  # more than the look-ahead: assumed to need the run
    assert plan.walk.count == 10  # walked only as far as the head
    walked = [Path(t.source.path).name for t in plan.videos_to_process()]
    assert walked == names and plan.walk.count == 25  # a name given twice: once
    assert all(t.source.error == "file not found" and t.previous is None for t in plan.todo)


def test_a_rerun_pairs_the_walk_with_the_stored_records_in_one_sorted_pass(
    tmp_path, model_path, monkeypatch
):
    """An output with records: the walk is sorted by video id (in runs, spilled and merged) and
    joined with the stored records; complete videos are skipped, the others come with their
    previous record (None: never recorded), without repeats."""
    import pipeline.plan.planning as planning
    import pipeline.plan.resume as resume

    monkeypatch.setattr(planning, "HEAD_VIDEOS", 10)
    monkeypatch.setattr(resume, "RUN_ROWS", 4)  # several spilled runs
    done = tmp_path / "done.mp4"
    done.write_bytes(b"video bytes")
    out = tmp_path / "out"
    config = planned([str(done)], str(out), RunConfig(model=model_path)).config
    write_done(out, done, config)
    names = [f"missing-{i:03d}.mp4" for i in range(25)]
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join([names[0], str(done), *names[1:], names[3], str(done)]) + "\n")
    plan = planned([f"@{listing}"], str(out), RunConfig(model=model_path))
    assert plan.walk.count >= 26  # the whole walk, to sort it
    walked = list(plan.videos_to_process())
    # repeats dropped side by side by the sort (no set of every id), skips counted by the join
    assert plan.walk.count == 26 and plan.skipped == 1
    ids = [t.source.video_id for t in walked]
    assert ids == sorted(ids) and sorted(Path(t.source.path).name for t in walked) == names
    assert all(t.previous is None for t in walked)
    # changed since: processed again, with its previous record (its rows' place, if packed)
    done.write_bytes(b"video bytes, edited")
    again = planned([f"@{listing}"], str(out), RunConfig(model=model_path))
    previous = {Path(t.source.path).name: t.previous for t in again.videos_to_process()}
    assert again.skipped == 0 and previous["done.mp4"].status == "ok"


def test_the_walk_reads_a_list_line_by_line(tmp_path):
    """Lines appended after the walk started are still read: the file is not read whole up front."""
    from pipeline.plan.inputs import InputWalk

    listing = tmp_path / "list.txt"
    listing.write_text("a.mp4\n")
    videos = iter(InputWalk([f"@{listing}"]))
    assert Path(next(videos).path).name == "a.mp4"
    with open(listing, "a") as f:
        f.write("b.mp4\n")
    assert [Path(v.path).name for v in videos] == ["b.mp4"]


def test_an_unreadable_list_or_a_missing_named_file_stops_before_the_walk(tmp_path, model_path):
    from pipeline.plan.inputs import InputError

    out = tmp_path / "out"
    with pytest.raises(InputError, match="cannot read input list"):
        plan_run([f"@{tmp_path / 'nope.txt'}"], str(out), RunConfig(model=model_path))
    listing = tmp_path / "list.txt"
    listing.write_text("a.mp4\n")
    with pytest.raises(InputError, match="input not found"):
        plan_run([f"@{listing}", str(tmp_path / "typo.mp4")], str(out), RunConfig(model=model_path))
    assert not out.exists()


def test_a_directory_is_listed_a_folder_at_a_time(tmp_path):
    from pipeline.plan.inputs import InputWalk

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.mp4").write_bytes(b"video")
    videos = iter(InputWalk([str(tmp_path)]))
    assert Path(next(videos).path).name == "x.mp4"
    (tmp_path / "b" / "y.mp4").write_bytes(b"video")  # b is not listed yet
    assert [Path(v.path).name for v in videos] == ["y.mp4"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert InputWalk([str(empty)]).warnings == [f"no video files in directory {empty}"]
