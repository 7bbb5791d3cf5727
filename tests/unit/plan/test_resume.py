"""The resume decision as one streaming pass: the walk sorted in spilled runs and joined with the
stored records says what a plain dict of every record would, whatever the parts look like."""

from __future__ import annotations

import random

import pytest

from pipeline.media.source import VideoSource
from pipeline.output.manifest import Manifest, VideoRecord
from pipeline.output.video_record import Previous
from pipeline.output.videos_table import VideosTable
from pipeline.plan.resume import ToProcess, needing_work, sorted_by_id


def _source(i: int, size: int = 100) -> VideoSource:
    vid = f"{random.Random(i).getrandbits(64):016x}"  # the pipeline's ids are in no order
    return VideoSource(f"/v/{i}.mp4", vid, size_bytes=size, mtime_ns=7)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_sorted_join_decides_what_a_dict_of_every_record_would(tmp_path, seed, monkeypatch):
    """Records stored over several folds (re-recorded, dropped, packed), merged into parts of
    several tiers; a walk of stored and new videos, some changed, one unreadable: exactly the
    videos a dict of the latest records says, each with that record, in video id order."""
    rng = random.Random(seed)
    monkeypatch.setattr(VideosTable, "FANIN", 3)
    monkeypatch.setattr(VideosTable, "TIER_ROWS", 20)
    monkeypatch.setattr(VideosTable, "ROW_GROUP", 16)
    monkeypatch.setattr(VideosTable, "CHUNK_ROWS", 25)
    monkeypatch.setattr(VideosTable, "BATCH_ROWS", 7)
    manifest = Manifest(tmp_path)
    truth: dict[str, VideoRecord] = {}
    for step in range(12):
        for i in rng.sample(range(300), 30):
            status = rng.choice(["ok", "ok", "partial", "failed"])
            part = f"detections/part-w0-{step}.parquet" if rng.random() < 0.5 else None
            record = VideoRecord(
                _source(i).video_id,
                f"/v/{i}.mp4",
                status,
                frames_processed=0 if status == "failed" else 3,
                error=None if status == "ok" else "boom",
                size_bytes=100,
                mtime_ns=7,
                settings_hash=rng.choice(["h", "h", "other"]),
                detections_file=None if status == "failed" else part,
            )
            manifest.record(record)
            truth[record.video_id] = record
        manifest.save()
    assert len(VideosTable(tmp_path / Manifest.FILE_NAME).parts()) > 1
    walk = [_source(i, size=rng.choice([100, 100, 100, 5])) for i in range(400)]
    walk[17] = VideoSource("/v/17.mp4", walk[17].video_id, error="file not found")
    skipped = []
    got = list(
        needing_work(
            iter(walk),
            VideosTable(tmp_path / Manifest.FILE_NAME),
            "h",
            lambda: skipped.append(1),
            run_rows=50,
        )
    )
    want = []
    for source in sorted(walk, key=lambda s: s.video_id):
        record = truth.get(source.video_id)
        previous = None if record is None else Previous.of(record.as_row())
        if source.error is None and previous is not None and previous.complete_for(source, "h"):
            continue
        want.append(ToProcess(source, previous))
    assert got == want and len(skipped) == len(walk) - len(want) > 0
    assert any(t.previous and t.previous.detections_part for t in got)  # packed rows to take out


def test_without_stored_records_the_walk_passes_through_lazily_in_its_order(tmp_path):
    def walk():
        yield from (_source(i) for i in range(5))
        raise AssertionError("walked past what was asked for")

    needing = needing_work(walk(), VideosTable(tmp_path / "videos.parquet"), "h")
    first = [next(needing) for _ in range(5)]
    assert [t.source for t in first] == [_source(i) for i in range(5)]
    assert all(t.previous is None for t in first)


def test_sorting_spills_runs_and_merges_them(monkeypatch):
    import pipeline.plan.resume as resume

    sources = [_source(i) for i in range(1000)]
    spilled = []
    spill = resume._spill

    def counted(videos, path):
        spilled.append(path)
        return spill(videos, path)

    monkeypatch.setattr(resume, "_spill", counted)
    got = list(sorted_by_id(iter(sources), run_rows=64))
    assert got == sorted(sources, key=lambda s: s.video_id) and len(spilled) == 16


def test_an_output_written_before_parts_and_packing_is_joined_as_it_is(tmp_path):
    """One ``videos.parquet`` file without ``seq`` or the packing columns: read as one part."""
    from conftest import legacy_videos_file

    done, failed = _source(1), _source(2)
    records = [
        VideoRecord(
            done.video_id,
            done.path,
            "ok",
            frames_processed=3,
            size_bytes=100,
            mtime_ns=7,
            settings_hash="h",
        ),
        VideoRecord(
            failed.video_id,
            failed.path,
            "failed",
            error="boom",
            size_bytes=100,
            mtime_ns=7,
            settings_hash="h",
        ),
    ]
    old = ["detections_file", "row_groups", "tracks_file"]
    legacy_videos_file(tmp_path, records, drop_columns=old)
    table = VideosTable(tmp_path / Manifest.FILE_NAME)
    got = {
        t.source.video_id: t.previous for t in needing_work([done, failed, _source(3)], table, "h")
    }
    assert set(got) == {failed.video_id, _source(3).video_id}
    assert (
        got[failed.video_id] == Previous("failed", "h", 100, 7) and got[_source(3).video_id] is None
    )
