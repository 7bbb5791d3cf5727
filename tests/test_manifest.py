import pytest

from pipeline.inputs import VideoSource
from pipeline.manifest import Manifest, VideoRecord

SOURCE = VideoSource("/v/a.mp4", "abc", size_bytes=100, mtime_ns=5)


def record(**changes):
    base = dict(video_id="abc", path="/v/a.mp4", status="ok", frames_processed=10, size_bytes=100, mtime_ns=5,
                settings_hash="h1")
    base.update(changes)
    return VideoRecord(**base)


@pytest.mark.parametrize(
    "stored, source, settings, complete",
    [
        (record(), SOURCE, "h1", True),
        (record(), SOURCE, "h2", False),  # settings that change results differ
        (record(size_bytes=99), SOURCE, "h1", False),  # content changed
        (record(mtime_ns=4), SOURCE, "h1", False),
        (record(status="partial", error="cut"), SOURCE, "h1", False),  # retried: the file may be fixed
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


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path, monkeypatch):
    """A save that dies while writing leaves the previous videos.parquet whole and readable; a
    save that completes replaces it in one rename and leaves no temporary file."""
    import pyarrow.parquet as pq

    manifest = Manifest(tmp_path)
    manifest.update(record())
    manifest.save()
    first = (tmp_path / "videos.parquet").read_bytes()
    manifest.update(VideoRecord.failed(VideoSource("/v/b.mp4", "b"), "file not found", "h1"))
    real_write = pq.write_table

    def write_then_die(table, where, *args, **kwargs):
        real_write(table.slice(0, 1), where, *args, **kwargs)  # part of the file is out ...
        raise OSError("disk full")  # ... and then the writer dies

    monkeypatch.setattr(pq, "write_table", write_then_die)
    with pytest.raises(OSError):
        manifest.save()
    monkeypatch.undo()
    assert (tmp_path / "videos.parquet").read_bytes() == first  # the reader's view never changed
    assert list(Manifest(tmp_path).records) == ["abc"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["videos.parquet"]  # no half file left
    manifest.save()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["videos.parquet"]
    again = Manifest(tmp_path)
    assert again.records["b"].status == "failed" and again.records["b"].error == "file not found"
    assert again.records["abc"].frames_processed == 10