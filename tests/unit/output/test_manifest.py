import pyarrow.parquet as pq
import pytest
from conftest import legacy_videos_file

from pipeline.media.source import VideoSource
from pipeline.output.manifest import INTERRUPTED, TAKEN_OUT, Manifest, VideoRecord
from pipeline.output.videos_table import VideosTable

SOURCE = VideoSource("/v/a.mp4", "abc", size_bytes=100, mtime_ns=5)


def record(**changes):
    base = dict(
        video_id="abc",
        path="/v/a.mp4",
        status="ok",
        frames_processed=10,
        size_bytes=100,
        mtime_ns=5,
        settings_hash="h1",
    )
    base.update(changes)
    return VideoRecord(**base)


def failed_since(before: VideoRecord, why: str) -> VideoRecord:
    """The record a video gets when its rows are removed and no newer record follows."""
    return VideoRecord(
        video_id=before.video_id,
        path=before.path,
        status="failed",
        error=why,
        size_bytes=before.size_bytes,
        mtime_ns=before.mtime_ns,
        settings_hash=before.settings_hash,
    )


@pytest.mark.parametrize(
    "stored, source, settings, complete",
    [
        (record(), SOURCE, "h1", True),
        (record(), SOURCE, "h2", False),  # settings that change results differ
        (record(size_bytes=99), SOURCE, "h1", False),  # content changed
        (record(mtime_ns=4), SOURCE, "h1", False),
        (
            record(status="partial", error="cut"),
            SOURCE,
            "h1",
            False,
        ),  # retried: the file may be fixed
        (record(status="failed", error="bad", frames_processed=0), SOURCE, "h1", False),
        (None, SOURCE, "h1", False),
    ],
)
def test_resume_decision(tmp_path, stored, source, settings, complete):
    manifest = Manifest(tmp_path)
    if stored:
        manifest.update(stored)
        manifest.save()
    assert Manifest(tmp_path).is_complete(source, settings) is complete


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"frames_processed": 0}, "0 frames"),
        ({"status": "failed"}, "needs an error"),
        ({"status": "done"}, "ok, partial or failed"),
    ],
)
def test_invalid_records_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        record(**changes)


def listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path, monkeypatch):
    """A save that dies while writing leaves the parts as they were, whole and readable; a save
    that completes adds its part in one rename and leaves no temporary file."""
    import pyarrow.parquet as pq

    manifest = Manifest(tmp_path)
    manifest.update(record())
    manifest.save()
    first = listing(tmp_path)
    assert first == [
        "videos.parquet",
        "videos.parquet/part-000000000000001-000000000000001.parquet",
    ]
    manifest.update(VideoRecord.failed(VideoSource("/v/b.mp4", "b"), "file not found", "h1"))
    real_write = pq.ParquetWriter.write_table

    def write_then_die(writer, table, *args, **kwargs):
        real_write(writer, table.slice(0, 1), *args, **kwargs)  # part of the file is out ...
        raise OSError("disk full")  # ... and then the writer dies

    monkeypatch.setattr(pq.ParquetWriter, "write_table", write_then_die)
    with pytest.raises(OSError):
        manifest.save()
    monkeypatch.undo()
    assert listing(tmp_path) == first  # the reader's view never changed, no half file left
    assert list(Manifest(tmp_path).records) == ["abc"]
    manifest.save()
    assert len(listing(tmp_path)) == 3 and not [p for p in listing(tmp_path) if ".tmp" in p]
    again = Manifest(tmp_path)
    assert again.records["b"].status == "failed" and again.records["b"].error == "file not found"
    assert again.records["abc"].frames_processed == 10


# ---- the log: O(1) per finished video, compacted from time to time --------------------------


def test_a_recorded_video_survives_a_crash_before_any_compaction(tmp_path):
    manifest = Manifest(tmp_path)
    manifest.record(record())
    manifest.record(record(video_id="def", path="/v/b.mp4"))
    assert not (tmp_path / Manifest.FILE_NAME).exists()  # nothing rewritten per video
    reloaded = Manifest(tmp_path)  # what the next run sees after this process died
    assert set(reloaded.records) == {"abc", "def"} and reloaded.logged == 2
    assert reloaded.is_complete(SOURCE, "h1")


def test_the_log_wins_over_videos_parquet_and_a_torn_last_line_is_dropped(tmp_path, caplog):
    manifest = Manifest(tmp_path)
    manifest.update(record(status="failed", error="first try", frames_processed=0))
    manifest.save()
    manifest.record(record())  # the second try succeeded
    manifest.record(record(video_id="def", path="/v/b.mp4"))
    with open(tmp_path / Manifest.LOG_NAME, "r+b") as f:  # a crash in the middle of the last write
        f.truncate(f.seek(0, 2) - 7)
    reloaded = Manifest(tmp_path)
    assert reloaded.records["abc"].status == "ok"
    assert "def" not in reloaded.records  # processed again by the next run: never half a record
    assert "unreadable" in caplog.text


def test_a_fold_is_due_at_pending_max_and_writes_only_the_records_since_the_last(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(Manifest, "PENDING_MAX", 500)
    manifest = Manifest(tmp_path)
    for i in range(1000):
        manifest.update(record(video_id=f"old{i}", path=f"/v/old{i}.mp4"))
    manifest.save()
    assert manifest.logged == 0
    (stored,) = (tmp_path / Manifest.FILE_NAME).iterdir()
    before = stored.stat()
    for i in range(499):
        manifest.record(record(video_id=f"new{i}", path=f"/v/new{i}.mp4"))
    assert not manifest.compaction_due(now=0)
    manifest.record(record(video_id="new499", path="/v/new499.mp4"))
    assert manifest.compaction_due(now=0)
    manifest.save()
    assert not (tmp_path / Manifest.LOG_NAME).exists() and manifest.logged == 0
    parts = sorted((tmp_path / Manifest.FILE_NAME).iterdir())
    assert parts[0] == stored and stored.stat().st_mtime_ns == before.st_mtime_ns  # untouched
    assert pq.read_metadata(parts[1]).num_rows == 500  # the new records only
    assert len(Manifest(tmp_path).records) == 1500


def test_a_crash_between_compaction_and_emptying_the_log_changes_nothing(tmp_path):
    manifest = Manifest(tmp_path)
    manifest.record(record())
    log_bytes = (tmp_path / Manifest.LOG_NAME).read_bytes()
    manifest.save()
    (tmp_path / Manifest.LOG_NAME).write_bytes(log_bytes)  # as if save() died before unlinking it
    reloaded = Manifest(tmp_path)
    assert list(reloaded.records) == ["abc"] and reloaded.records["abc"] == record()


def test_compact_folds_a_left_log_into_videos_parquet(tmp_path):
    from pipeline.output.manifest import compact

    assert compact(tmp_path, lambda video_id, places: None) is False
    Manifest(tmp_path).record(record())
    assert compact(tmp_path, lambda video_id, places: None) is True
    assert not (tmp_path / Manifest.LOG_NAME).exists()
    assert pq.read_table(tmp_path / Manifest.FILE_NAME).column("video_id").to_pylist() == ["abc"]


def test_the_time_rule_keeps_readers_close_at_a_bounded_cost(tmp_path):
    manifest = Manifest(tmp_path)
    start = manifest.timer.folded_at
    assert not manifest.compaction_due(now=start + 3600)  # nothing logged: nothing to do
    manifest.record(record())
    # (off the boundaries: start + 10 - start can come out a hair below 10 in floating point)
    assert not manifest.compaction_due(now=start + 9.9)
    assert manifest.compaction_due(now=start + 10.1)  # FRESH_S
    manifest.timer.took_s = 2.0  # a big manifest: compacting took 2 s
    assert not manifest.compaction_due(now=start + 39.9)
    assert manifest.compaction_due(now=start + 40.1)  # 20 x 2 s: at most 5 % of the time


def test_a_commit_begun_but_never_recorded_has_its_files_removed_by_the_next_fold(tmp_path):
    """A run killed between putting a video's files in place and recording it: the fold removes
    the files (through the caller) and any older record of that video, so it is processed again."""
    from pipeline.output.manifest import compact

    manifest = Manifest(tmp_path)
    manifest.record(record(video_id="old"))
    manifest.committing("old")  # redone (say, the file changed), killed before the new record
    manifest.committing("done")
    manifest.record(record(video_id="done"))
    manifest.committing("lost")
    reloaded = Manifest(tmp_path)
    assert reloaded.interrupted == {"old": {None}, "lost": {None}}
    with pytest.raises(RuntimeError, match="interrupted commits"):
        reloaded.save()  # folding first would forget which files to remove
    removed = []
    assert compact(tmp_path, lambda video_id, places: removed.append((video_id, places))) is True
    assert removed == [("lost", {None}), ("old", {None})]
    records = Manifest(tmp_path).records  # old's rows are gone: its record says so
    assert sorted(records) == ["done", "old"] and not (tmp_path / Manifest.LOG_NAME).exists()
    assert (records["old"].status, records["old"].error) == ("failed", INTERRUPTED)


def test_a_compaction_while_a_commit_is_in_progress_keeps_its_line(tmp_path):
    manifest = Manifest(tmp_path)
    manifest.record(record(video_id="a"))
    manifest.committing("b")
    manifest.save()  # the coordinator folds the log while b's files are being published
    # a kill now: b's files are still found and removed
    assert Manifest(tmp_path).interrupted == {"b": {None}}
    manifest.record(record(video_id="b"))
    assert Manifest(tmp_path).interrupted == {}


def test_save_writes_in_chunks_and_keeps_every_record(tmp_path, monkeypatch):
    from pipeline.output import unfolded

    monkeypatch.setattr(unfolded, "ROWS_AT_A_TIME", 3)
    manifest = Manifest(tmp_path)
    for i in range(10):
        manifest.update(record(video_id=f"v{i}", frames_processed=i + 1))
    manifest.save()
    again = Manifest(tmp_path)
    assert list(again.records) == [f"v{i}" for i in range(10)]
    assert [r.frames_processed for r in again.records.values()] == list(range(1, 11))
    empty = tmp_path / "empty"
    empty.mkdir()
    Manifest(empty).save()  # no records: a valid file with no rows
    assert pq.read_table(empty / Manifest.FILE_NAME).num_rows == 0


def test_the_videos_not_ok_are_counted_over_every_row_group_and_the_first_ones_shown(
    tmp_path, monkeypatch
):
    from pipeline.output.readers import videos_not_ok

    monkeypatch.setattr(VideosTable, "ROW_GROUP", 4)  # several row groups, read in batches
    monkeypatch.setattr(VideosTable, "BATCH_ROWS", 3)
    monkeypatch.setattr(VideosTable, "CHUNK_ROWS", 4)
    manifest = Manifest(tmp_path)
    for i in range(14):
        if i % 3 == 0:
            manifest.update(
                VideoRecord.failed(VideoSource(f"/v/{i}.mp4", f"v{i}"), f"error {i}", "h1")
            )
        else:
            manifest.update(record(video_id=f"v{i}", path=f"/v/{i}.mp4"))
    manifest.save()
    first, count = videos_not_ok(tmp_path, limit=3)
    assert count == 5  # 0, 3, 6, 9, 12
    assert [(r["status"], r["path"], r["error"]) for r in first] == [  # in video id order
        ("failed", "/v/0.mp4", "error 0"),
        ("failed", "/v/12.mp4", "error 12"),
        ("failed", "/v/3.mp4", "error 3"),
    ]


# ---- memory that does not grow with the backlog ---------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_resume_decisions_over_saves_and_reloads_equal_a_plain_dict_of_records(tmp_path, seed):
    """Only the records since the last save are held; stored ones are an 8-byte key each. Over
    random records (ok or failed, changed settings or content), saves, reloads and interrupted
    commits, ``is_complete`` and ``records`` say what a dict of every record would."""
    import numpy as np

    rng = np.random.default_rng(seed)
    manifest, truth = Manifest(tmp_path), {}
    for step in range(400):
        video_id = f"v{rng.integers(60)}"
        source = VideoSource(f"/v/{video_id}.mp4", video_id, int(rng.integers(2)), 5)
        action = rng.random()
        if action < 0.6:
            ok = rng.random() < 0.7
            changes = dict(video_id=video_id, path=source.path, size_bytes=source.size_bytes)
            if not ok:
                changes.update(status="failed", error="bad", frames_processed=0)
            rec = record(settings_hash=f"h{rng.integers(2)}", **changes)
            manifest.record(rec)
            truth[video_id] = rec
        elif action < 0.7:
            manifest.save()
        elif action < 0.8:
            manifest = Manifest(tmp_path)
        elif action < 0.85:  # a commit killed before its record: the fold forgets the video
            manifest.committing(video_id)
            manifest = Manifest(tmp_path)
            manifest.forget_interrupted()
            if video_id in truth:  # its rows are gone: a failed record says so
                truth[video_id] = failed_since(truth[video_id], INTERRUPTED)
            assert not manifest.is_complete(source, "h0") and not manifest.is_complete(source, "h1")
            manifest.save()  # as the fold does
        for settings in ("h0", "h1"):
            want = video_id in truth and (
                truth[video_id].status == "ok"
                and truth[video_id].settings_hash == settings
                and truth[video_id].size_bytes == source.size_bytes
            )
            assert manifest.is_complete(source, settings) is want, (step, video_id)
    assert manifest.records == truth
    manifest.save()
    assert Manifest(tmp_path).records == truth and len(manifest.pending) == 0


def test_held_records_stay_bounded_however_many_are_stored(tmp_path, monkeypatch):
    monkeypatch.setattr(Manifest, "PENDING_MAX", 300)
    manifest = Manifest(tmp_path)
    for i in range(5000):
        manifest.update(record(video_id=f"old{i}", path=f"/v/old{i}.mp4"))
    manifest.save()
    assert manifest.stored == 5000 and not manifest.pending
    for i in range(299):
        manifest.record(record(video_id=f"new{i}", path=f"/v/new{i}.mp4"))
    assert not manifest.compaction_due(now=0)  # well below half of 5,299 ...
    manifest.record(record(video_id="new299", path="/v/new299.mp4"))
    assert manifest.compaction_due(now=0)  # ... but PENDING_MAX records are held
    manifest.save()
    assert manifest.stored == 5300 and not manifest.pending
    assert manifest.is_complete(VideoSource("/v/old7.mp4", "old7", 100, 5), "h1")


def test_rows_stored_before_a_column_existed_are_kept_with_it_null(tmp_path, caplog):
    legacy_videos_file(tmp_path, [record()], drop_columns=["num_tracks", "class_counts"])
    again = Manifest(tmp_path)  # upgraded in place, once, with a message
    assert "upgraded in place" in caplog.text and (tmp_path / Manifest.FILE_NAME).is_dir()
    assert again.is_complete(SOURCE, "h1")
    again.record(record(video_id="def", path="/v/b.mp4"))
    again.save()
    table = VideosTable(tmp_path / Manifest.FILE_NAME).read()
    assert table.column("video_id").to_pylist() == ["abc", "def"]
    assert table.column("num_tracks").to_pylist() == [None, None]


def packed(video_id: str, part: str, **kwargs) -> VideoRecord:
    return record(video_id=video_id, detections_file=part, row_groups=[0], **kwargs)


def test_where_packed_videos_are_is_kept_through_saves_and_reloads(tmp_path):
    manifest = Manifest(tmp_path)
    manifest.record(packed("a", "detections/part-w0-1.parquet"))
    manifest.record(
        packed("b", "detections/part-w0-2.parquet", tracks_file="tracks/part-w0-2.parquet")
    )
    manifest.record(record(video_id="c"))
    assert manifest.part_of("a") == ("detections/part-w0-1.parquet", None)
    manifest.save()
    reloaded = Manifest(tmp_path)
    assert reloaded.part_of("a") == ("detections/part-w0-1.parquet", None)
    assert reloaded.part_of("b") == ("detections/part-w0-2.parquet", "tracks/part-w0-2.parquet")
    assert reloaded.part_of("c") == (None, None) and reloaded.part_of("zzz") == (None, None)
    reloaded.drop("a")  # its rows are about to leave the part: no usable record from now on
    assert reloaded.part_of("a") == (None, None) and "a" not in reloaded.records
    assert "a" not in Manifest(tmp_path).records  # the drop was logged
    reloaded.record(record(video_id="b"))  # b redone into its own file
    reloaded.save()  # (a ends without a new record: failed, since its rows are gone)
    again = Manifest(tmp_path)
    assert again.part_of("b") == (None, None) and sorted(again.records) == ["a", "b", "c"]
    assert again.records["b"].detections_file is None
    assert again.records["a"] == failed_since(
        packed("a", "detections/part-w0-1.parquet"), TAKEN_OUT
    )
    assert again.part_of("a") == (None, None)


def test_an_interrupted_packed_commit_names_its_part_and_a_newer_record_is_kept(tmp_path):
    """A part that landed without its records has its videos' rows removed from it; a video
    recorded since elsewhere (a worker presumed dead committed late) keeps that record."""
    from pipeline.output.manifest import compact

    part_1, part_2 = "detections/part-w0-1.parquet", "detections/part-w1-2.parquet"
    manifest = Manifest(tmp_path)
    manifest.committing("x", part_1)  # attempt 1 on a worker presumed dead
    manifest.committing("x", part_2)  # attempt 2
    manifest.record(packed("x", part_2))
    manifest.committing("y", part_2)  # killed before y's record
    manifest.record(record(video_id="z"))
    reloaded = Manifest(tmp_path)
    assert reloaded.interrupted == {"x": {part_1}, "y": {part_2}}
    removed = []
    assert compact(tmp_path, lambda video_id, places: removed.append((video_id, places)))
    assert removed == [("x", {part_1}), ("y", {part_2})]
    records = Manifest(tmp_path).records
    assert sorted(records) == ["x", "z"] and records["x"].detections_file == part_2


def test_has_record_knows_every_video_ever_recorded_through_saves(tmp_path):
    manifest = Manifest(tmp_path)
    manifest.record(record(video_id="a"))
    manifest.record(VideoRecord.failed(VideoSource("/v/b.mp4", "b"), "no video stream", "h"))
    assert manifest.has_record("a") and manifest.has_record("b") and not manifest.has_record("c")
    manifest.save()
    reloaded = Manifest(tmp_path)
    assert reloaded.has_record("a") and reloaded.has_record("b") and not reloaded.has_record("c")
    reloaded.drop("a")
    assert not reloaded.has_record("a")
    reloaded.record(record(video_id="c"))
    reloaded.save()
    again = Manifest(tmp_path)
    assert again.has_record("a") and again.records["a"].status == "failed"  # (rows gone)
    assert again.has_record("b") and again.has_record("c")
