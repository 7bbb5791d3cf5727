"""videos.parquet as a folder of parts: folds that write only what is new, merges that bound the
parts, every reader seeing each video once, kills at random moments of folds and merges."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import doc_block, legacy_videos_file, run_in

from pipeline.output.manifest import Manifest, VideoRecord
from pipeline.output.readers import read_videos, videos_not_ok
from pipeline.output.videos_table import Part, VideosTable, live_and_superseded


def record(video_id: str, status: str = "ok", frames: int = 10) -> VideoRecord:
    error = None if status == "ok" else f"{status} try"
    return VideoRecord(
        video_id=video_id,
        path=f"/v/{video_id}.mp4",
        status=status,
        frames_processed=frames if status != "failed" else 0,
        error=error,
        settings_hash="h",
    )


@pytest.fixture
def small_tiers(monkeypatch):
    """Tiers of 20 rows and merges of 3 parts: a few hundred records exercise every level."""
    monkeypatch.setattr(VideosTable, "TIER_ROWS", 20)
    monkeypatch.setattr(VideosTable, "FANIN", 3)
    monkeypatch.setattr(VideosTable, "ROW_GROUP", 8)
    monkeypatch.setattr(VideosTable, "CHUNK_ROWS", 16)
    monkeypatch.setattr(VideosTable, "BATCH_ROWS", 5)


def test_superseded_parts_are_those_a_merge_covers():
    a, b, merged = Part(1, 10, "a"), Part(11, 20, "b"), Part(1, 20, "m")
    later = Part(21, 30, "c")
    assert live_and_superseded([a, b, merged, later]) == ([merged, later], [a, b])
    assert live_and_superseded([a, b, later]) == ([a, b, later], [])


@pytest.mark.parametrize("seed", range(3))
def test_folds_and_merges_keep_the_latest_record_of_each_video_and_few_parts(
    tmp_path, small_tiers, seed
):
    """Random records (many videos recorded again), folds of random sizes: the records equal a
    dict of the latest ones; merges keep the parts few and drop superseded rows."""
    rng = np.random.default_rng(seed)
    manifest, truth = Manifest(tmp_path), {}
    for _ in range(800):
        video_id = f"v{rng.integers(400):03d}"
        status = "ok" if rng.random() < 0.7 else "failed"
        manifest.record(record(video_id, status, int(rng.integers(1, 99))))
        truth[video_id] = manifest.pending[video_id]
        if rng.random() < 0.08:
            manifest.save()
    manifest.save()
    table = VideosTable(tmp_path / Manifest.FILE_NAME)
    parts = table.parts()
    assert 1 < len(parts) <= 3 * 4  # FANIN per tier, a few tiers
    assert Manifest(tmp_path).records == truth
    stored = sum(table.rows(p) for p in parts)
    assert stored < 800 * 0.75  # merges dropped the superseded rows (800 records, 400 videos)
    latest = table.read()
    assert latest.num_rows == len(truth) and latest.column("video_id").to_pylist() == sorted(truth)


def test_a_fold_rewrites_no_stored_part(tmp_path):
    manifest = Manifest(tmp_path)
    for i in range(100):
        manifest.record(record(f"a{i:03d}"))
    manifest.save()
    (first,) = (tmp_path / Manifest.FILE_NAME).iterdir()
    stamp = first.stat().st_mtime_ns
    manifest.record(record("a007", "failed"))  # recorded again
    manifest.save()
    assert first.stat().st_mtime_ns == stamp and len(list(first.parent.iterdir())) == 2
    assert read_videos(tmp_path).set_index("video_id").loc["a007", "status"] == "failed"


def several_parts(folder) -> dict[str, str]:
    """An output whose videos.parquet has three parts and superseded records; the latest status
    of each video."""
    manifest, latest = Manifest(folder), {}
    for wave, status in enumerate(("failed", "partial", "ok")):
        for i in range(0, 30, wave + 1):  # fewer videos are redone each time
            manifest.record(record(f"v{i:02d}", status))
            latest[f"v{i:02d}"] = status
        manifest.save()
    assert len(list((folder / Manifest.FILE_NAME).iterdir())) == 3
    return latest


def test_every_reader_sees_each_video_once_with_its_latest_record(tmp_path, monkeypatch):
    """The pipeline's readers and the docs' one-liners (pandas, DuckDB), as typed."""
    duckdb = pytest.importorskip("duckdb")
    (tmp_path / "out").mkdir()
    latest = several_parts(tmp_path / "out")

    def statuses(frame) -> dict:
        assert not frame["video_id"].duplicated().any()
        return dict(zip(frame["video_id"], frame["status"]))

    assert statuses(read_videos(tmp_path / "out")) == latest
    assert statuses(VideosTable(tmp_path / "out" / Manifest.FILE_NAME).read().to_pandas()) == latest
    assert videos_not_ok(tmp_path / "out")[1] == sum(s != "ok" for s in latest.values())
    pandas_line = doc_block("docs/output.md", "in one line. With pandas", "python")
    scope = run_in(tmp_path, "import pandas as pd\n" + pandas_line, monkeypatch)
    assert statuses(scope["videos"]) == latest
    query = doc_block("docs/output.md", "in DuckDB,", "sql")
    assert statuses(duckdb.connect().sql(query).df()) == latest
    # without keeping the latest, a reader sees superseded records: the test can fail
    assert len(pd.read_parquet(tmp_path / "out" / Manifest.FILE_NAME)) > len(latest)


def test_an_output_written_before_parts_is_read_and_upgraded_once(tmp_path, caplog):
    legacy_videos_file(tmp_path, [record("a"), record("b", "failed")])
    before = read_videos(tmp_path)  # read as it is: no writer upgraded it yet
    assert sorted(before["video_id"]) == ["a", "b"] and (tmp_path / "videos.parquet").is_file()
    manifest = Manifest(tmp_path)
    assert caplog.text.count("upgraded in place") == 1
    manifest.record(record("b"))
    manifest.save()
    Manifest(tmp_path)
    assert caplog.text.count("upgraded in place") == 1  # once
    assert dict(zip(*read_videos(tmp_path)[["video_id", "status"]].T.values)) == {
        "a": "ok",
        "b": "ok",
    }
    assert sorted(os.listdir(tmp_path)) == ["videos.parquet"]  # nothing left beside it


def test_a_legacy_file_in_no_id_order_is_read_and_upgraded_sorted(tmp_path, monkeypatch):
    """Outputs written before parts kept rows in no order; so may a part 0 that the code before
    the streamed reads upgraded. Each is read whole and sorted, beside sorted parts."""
    monkeypatch.setattr(VideosTable, "ROW_GROUP", 4)
    monkeypatch.setattr(VideosTable, "BATCH_ROWS", 3)
    ids = [f"v{i:03d}" for i in np.random.default_rng(0).permutation(40)]
    legacy_videos_file(tmp_path, [record(v) for v in ids])
    pq.write_table(
        pq.read_table(tmp_path / "videos.parquet"), tmp_path / "l.parquet", row_group_size=4
    )
    os.replace(tmp_path / "l.parquet", tmp_path / "videos.parquet")  # row groups out of order
    assert sorted(read_videos(tmp_path)["video_id"]) == sorted(ids)

    # as the earlier upgrade left it: part 0 in the legacy order, then a newer part
    folder = tmp_path / "videos.parquet"
    unsorted = pq.read_table(folder).append_column("seq", pa.array([0] * 40, pa.int64()))
    folder.unlink()
    folder.mkdir()
    pq.write_table(unsorted, folder / Part.name_for(0, 0), row_group_size=4)
    manifest = Manifest(tmp_path)
    manifest.record(record(ids[7], "failed"))
    manifest.record(record("v999"))
    manifest.save()
    table = VideosTable(folder).read()
    assert table.column("video_id").to_pylist() == sorted([*ids, "v999"])
    status = dict(zip(table.column("video_id").to_pylist(), table.column("status").to_pylist()))
    assert status[ids[7]] == "failed" and status[ids[8]] == "ok"

    # a legacy file upgraded now is written sorted, so it streams
    (tmp_path / "again").mkdir()
    legacy_videos_file(tmp_path / "again", [record(v) for v in ids])
    Manifest(tmp_path / "again")
    (part,) = VideosTable(tmp_path / "again" / "videos.parquet").parts()
    assert pq.read_table(part.path).column("video_id").to_pylist() == sorted(ids)
    assert pq.ParquetFile(part.path).metadata.num_row_groups == 10


@pytest.mark.parametrize("seed", range(5))
def test_the_streamed_merge_keeps_each_videos_latest_row_once_in_id_order(seed):
    """Parts with overlapping ids and random batch sizes: the merge equals a dict of the latest
    rows, sorted, and no video's rows are split between two chunks."""
    from pipeline.output.videos_table import _merge_sorted

    rng = np.random.default_rng(seed)
    streams, truth, seq = [], {}, 0
    for _ in range(int(rng.integers(1, 6))):
        ids = sorted(f"{i:04x}" for i in rng.choice(500, int(rng.integers(0, 200)), replace=False))
        seqs = list(range(seq, seq + len(ids)))
        seq += len(ids)
        truth.update(zip(ids, seqs))  # later parts have higher seqs
        table = pa.table({"video_id": ids, "seq": pa.array(seqs, pa.int64())})
        size = int(rng.integers(1, 30))
        streams.append(iter([table.slice(at, size) for at in range(0, len(ids), size)]))
    chunks = list(_merge_sorted(streams, int(rng.integers(1, 50))))
    merged = pa.concat_tables(chunks) if chunks else pa.table({"video_id": [], "seq": []})
    assert merged.column("video_id").to_pylist() == sorted(truth)
    assert dict(zip(*(merged.column(c).to_pylist() for c in ("video_id", "seq")))) == truth


def test_merged_parts_have_row_groups_of_row_group_rows(tmp_path, small_tiers):
    manifest = Manifest(tmp_path)
    for i in range(200):
        manifest.record(record(f"v{i:04d}"))
        if manifest.compaction_due() or i % 19 == 0:
            manifest.save()
    manifest.save()
    table = VideosTable(tmp_path / Manifest.FILE_NAME)
    biggest = max(table.parts(), key=table.rows)
    meta = pq.ParquetFile(biggest.path).metadata
    assert meta.num_rows > 3 * VideosTable.ROW_GROUP
    groups = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
    assert (
        all(n == VideosTable.ROW_GROUP for n in groups[:-1]) and groups[-1] <= VideosTable.ROW_GROUP
    )


@pytest.mark.parametrize("stage", ["writing", "after the rename", "after one input went"])
def test_a_merge_cut_short_at_any_stage_loses_nothing_and_shows_nothing_twice(
    tmp_path, small_tiers, monkeypatch, stage
):
    manifest = Manifest(tmp_path)
    truth = {}
    for i in range(40):  # two parts of 20: the third fold's part makes a merge due
        manifest.record(record(f"v{i:02d}", "failed"))
        truth[f"v{i:02d}"] = "failed"
        if i % 20 == 19:
            manifest.save()
    for i in range(0, 20, 2):
        manifest.record(record(f"v{i:02d}"))
        truth[f"v{i:02d}"] = "ok"

    class Cut(Exception):
        pass

    def cut(*args, **kwargs):
        raise Cut()

    real_unlink = Path.unlink
    gone: list[Path] = []  # inputs removed before the cut

    def unlink(self, *args, **kwargs):
        if self.parent.name == Manifest.FILE_NAME and self.name.startswith("part-"):
            if stage == "after the rename" or gone:
                raise Cut()
            gone.append(self)
        return real_unlink(self, *args, **kwargs)

    fold = manifest.begin_fold()
    with pytest.MonkeyPatch.context() as faults:
        if stage == "writing":  # the fold's part, cut short while it is written
            faults.setattr(pq.ParquetWriter, "write_table", cut)
            with pytest.raises(Cut):
                manifest.write_fold(fold)
            manifest.abort_fold(fold)
        else:  # the merge the fold made due, cut short after its part is in place
            faults.setattr(Path, "unlink", unlink)
            manifest.write_fold(fold)
            manifest.end_fold(fold)
            with pytest.raises(Cut):
                manifest.merge_due()
    seen = read_videos(tmp_path)
    assert not seen["video_id"].duplicated().any()
    if stage != "writing":
        assert dict(zip(seen["video_id"], seen["status"])) == truth
    reopened = Manifest(tmp_path)  # the next writer: the log replayed, covered parts removed
    reopened.save()
    assert {v: r.status for v, r in Manifest(tmp_path).records.items()} == truth
    assert not [p for p in (tmp_path / Manifest.FILE_NAME).iterdir() if p.name.startswith(".")]
    live, superseded = live_and_superseded(VideosTable(tmp_path / Manifest.FILE_NAME).all_parts())
    assert not superseded


# ---- kills from outside, at random moments of folds and merges --------------------------------

WRITER = r"""
import sys
from pipeline.output.manifest import Manifest, VideoRecord
from pipeline.output.videos_table import VideosTable

VideosTable.TIER_ROWS, VideosTable.FANIN, VideosTable.ROW_GROUP = 40, 3, 16
VideosTable.BATCH_ROWS = 5
Manifest.PENDING_MAX = 40
out, start = sys.argv[1], int(sys.argv[2])
manifest = Manifest(__import__("pathlib").Path(out))
for n in range(start, start + 100000):
    video_id = f"v{n % 700:04d}"  # every video recorded again and again
    status = "ok" if n % 3 else "failed"
    manifest.record(VideoRecord(video_id, f"/v/{video_id}.mp4", status,
                                frames_processed=n if status == "ok" else 0,
                                error=None if status == "ok" else f"try {n}", settings_hash="h"))
    print(video_id, n, flush=True)  # acknowledged: logged
    if manifest.compaction_due():
        manifest.save()
"""


# The coordinator's way: records held on an event loop, their lines written by the log's thread,
# folds and merges in threads (``Bookkeeping``); a record is acknowledged once its line is written.
COORDINATOR_WRITER = r"""
import asyncio, sys
from pipeline.output.bookkeeping import Bookkeeping
from pipeline.output.manifest import Manifest, VideoRecord
from pipeline.output.videos_table import VideosTable

VideosTable.TIER_ROWS, VideosTable.FANIN, VideosTable.ROW_GROUP = 40, 3, 16
VideosTable.BATCH_ROWS = 5
Manifest.PENDING_MAX = 40
out, start = sys.argv[1], int(sys.argv[2])

async def main():
    bookkeeping = Bookkeeping(Manifest(__import__("pathlib").Path(out)))
    for at in range(start, start + 100000, 10):
        for n in range(at, at + 10):
            video_id = f"v{n % 700:04d}"
            status = "ok" if n % 3 else "failed"
            await bookkeeping.record(VideoRecord(
                video_id, f"/v/{video_id}.mp4", status,
                frames_processed=n if status == "ok" else 0,
                error=None if status == "ok" else f"try {n}", settings_hash="h"))
        await bookkeeping.logged()
        for n in range(at, at + 10):
            print(f"v{n % 700:04d}", n, flush=True)  # acknowledged: in the log

asyncio.run(main())
"""


@pytest.mark.parametrize(
    ("writer", "seed"),
    [("manifest", 0), ("manifest", 1), ("manifest", 2), ("bookkeeping", 0), ("bookkeeping", 1)],
)
def test_kills_during_folds_and_merges_lose_no_record_and_show_none_twice(tmp_path, writer, seed):
    """A writer recording, folding and merging as fast as it can is SIGKILLed at a random moment,
    three times; after each kill every reader sees each video once, with the last record the writer
    acknowledged; then a run takes over and folds what was left. ``bookkeeping``: the writer is
    the coordinator's (the log written by its own thread, folds and merges in threads)."""
    rng = np.random.default_rng(seed)
    acked: dict[str, int] = {}
    start = 0
    code = WRITER if writer == "manifest" else COORDINATOR_WRITER
    ahead = 1 if writer == "manifest" else 10  # records logged past the last acknowledged one
    for _ in range(3):
        child = subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path), str(start)],
            stdout=subprocess.PIPE,
            text=True,
        )
        # recording (at least 101 records, however loaded the machine): from now on the kill
        # may land anywhere
        first = "".join(child.stdout.readline() for _ in range(101))
        time.sleep(float(rng.uniform(0.3, 1.2)))
        os.kill(child.pid, signal.SIGKILL)
        out, _ = child.communicate()
        out = first + out
        lines = [line.split() for line in out.splitlines() if len(line.split()) == 2]
        assert len(lines) > 100, "the writer did not get going"
        for video_id, n in lines:
            acked[video_id] = int(n)
        start = int(lines[-1][1]) + 1
        seen = read_videos(tmp_path) if (tmp_path / Manifest.FILE_NAME).exists() else None
        if seen is not None:
            assert not seen["video_id"].duplicated().any()
        # what the next run recovers (the parts and the logs): each video's last acknowledged
        # record, or a later one the writer logged but was killed before acknowledging
        records = Manifest(tmp_path).records
        for video_id, n in acked.items():
            got = records[video_id]
            number = got.frames_processed if got.status == "ok" else int(got.error.split()[1])
            assert number % 700 == int(video_id[1:]) and (got.status == "ok") == bool(number % 3)
            assert n <= number < start + ahead, (video_id, n, got)
    manifest = Manifest(tmp_path)
    manifest.save()
    seen = read_videos(tmp_path)
    assert not seen["video_id"].duplicated().any() and set(seen["video_id"]) == set(acked)


@pytest.mark.parametrize(
    ("sizes", "merged"),
    [
        ([10, 10, 10, 2, 2], [0, 1, 2]),  # a tier's run followed by newer, smaller parts
        ([2, 2, 10, 2, 10, 10], [0, 1, 2]),  # tier 0 first: none; then the oldest of tier 1
        ([10, 2, 10, 2], [0, 1, 2]),  # a smaller part between two of the tier joins them
        ([40, 10, 10], []),  # a big part is not rewritten for smaller newer ones
        ([40, 10, 10, 10, 2], [1, 2, 3]),
    ],
)
def test_a_merge_is_due_for_any_run_of_a_tier_not_only_at_the_newest_end(
    tmp_path, monkeypatch, sizes, merged
):
    monkeypatch.setattr(VideosTable, "TIER_ROWS", 4)  # tiers: <=4, <=12, <=36, <=108
    monkeypatch.setattr(VideosTable, "FANIN", 3)
    table = VideosTable(tmp_path / "videos.parquet")
    schema = pa.schema([("video_id", pa.string()), ("seq", pa.int64())])
    parts, seq = [], 0
    for size in sizes:
        ids = [f"v{seq + i:04d}" for i in range(size)]
        rows = pa.table({"video_id": ids, "seq": list(range(seq, seq + size))}, schema=schema)
        parts.append(table.write_part(rows, seq, seq + size - 1, schema))
        seq += size
    assert table.due_merge() == [parts[i] for i in merged]
