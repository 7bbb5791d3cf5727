"""The control plane and its video workers without Ray: every frame written once with the
synthetic detector's known boxes, batches packed across videos, a dead worker's open videos each
committed once elsewhere, a worker that was presumed dead refused its commit; a dead decoder
resumed after the last batch it delivered, one killed many times while making progress still
complete, and a video whose decoders always die failed alone."""

from __future__ import annotations

import dataclasses

import pyarrow.parquet as pq
import pytest
from fakes import (
    FakeCalls,
    FakeWorker,
    expected_rows,
    rows_of,
    run_workers,
    sources_of,
    workers,
    written_rows,
)

from pipeline.output.layout import OutputLayout
from pipeline.output.manifest import Manifest
from pipeline.output.readers import read_detections

FRAMES = {"a.mp4": 37, "b.mp4": 22}


CLIPS = {f"clip{i}.mp4": 3 for i in range(12)} | FRAMES


def test_workers_write_the_synthetic_boxes_of_every_frame_once_and_mix_clips(tmp_path):
    settings = dict(batch_size=8, max_open_videos=8)
    summary, out, sources = run_workers(tmp_path, "workers", CLIPS, workers(CLIPS), **settings)
    assert written_rows(out, sources) == expected_rows(CLIPS)
    counts = summary.counts
    assert counts.videos_ok == len(CLIPS) and counts.frames_done == sum(CLIPS.values())
    assert counts.mixed_batches > 0  # 3-frame clips shared forward passes
    assert (
        counts.batches_decoded_here == counts.batches_done and not counts.batches_decoded_elsewhere
    )
    assert not list((out / "detections").glob(".*"))  # no hidden file left


def test_a_dead_workers_open_videos_are_committed_once_elsewhere(tmp_path):
    frames = {f"v{i}.mp4": 9 for i in range(8)}
    # worker 0 dies with its first hand-out (a chunk of clips) open: each goes out again
    workers = [
        FakeWorker(FakeCalls(dict(frames)), die_on=(1,)),
        FakeWorker(FakeCalls(dict(frames))),
    ]
    summary, out, sources = run_workers(tmp_path, "deaths", frames, workers, batch_size=4)
    assert summary.counts.videos_ok == 8 and summary.counts.videos_reassigned >= 2
    rows = rows_of(out, sources)
    assert all([r["frame_index"] for r in rows[p]] == list(range(9)) for p in frames)


@pytest.mark.parametrize("layout", ["per-video", "packed"])
def test_a_worker_presumed_dead_is_refused_its_commit(tmp_path, layout):
    frames = {"a.mp4": 20, "b.mp4": 7}
    workers = [
        FakeWorker(FakeCalls(dict(frames)), partitioned_on=(1,)),
        FakeWorker(FakeCalls(dict(frames))),
    ]
    summary, out, sources = run_workers(
        tmp_path, "partition", frames, workers, batch_size=4, max_open_videos=2, layout=layout
    )
    # a backlog this short goes out a clip per worker: worker 0's attempt goes on unseen
    counts = summary.counts
    assert counts.commits_refused == counts.videos_reassigned == 1 and counts.videos_ok == 2
    rows = rows_of(out, sources)
    assert [r["frame_index"] for r in rows["a.mp4"]] == list(range(20))
    assert not list((out / "detections").glob(".*"))  # the refused attempt's file is gone


def direct_rows(out):
    """What DuckDB, pandas and Spark see: every ``detections/*.parquet``, hidden names skipped."""
    files = sorted((out / "detections").glob("[!.]*.parquet"))
    return pq.read_table(files).to_pandas() if files else None


@pytest.mark.parametrize("layout", ["packed", "per-video"])
def test_a_worker_cut_off_after_its_commit_was_granted_never_lands_rows_twice(tmp_path, layout):
    """Worker 0's commit is answered, then the coordinator loses sight of it; it comes back (its
    answer in hand) only after the run is over. The coordinator, not the worker, puts parts in
    place, so when the answer was yes its rows were in place and recorded before it was cut off,
    and the video is not handed out again: each frame is in detections/ once."""
    frames = {"a.mp4": 20, "b.mp4": 7}
    workers = [
        FakeWorker(FakeCalls(dict(frames)), cut_off_after_commit=True),
        FakeWorker(FakeCalls(dict(frames))),
    ]
    summary, out, sources = run_workers(
        tmp_path, "cut", frames, workers, batch_size=4, max_open_videos=2, layout=layout
    )
    assert workers[0].cut.is_set(), "worker 0 was never cut off"
    rows = direct_rows(out)
    assert not rows.duplicated(["video_id", "frame_index"]).any()
    assert rows.groupby("video_id").size().to_dict() == {
        s.video_id: frames[s.path] for s in sources
    }
    assert written_rows(out, sources) == expected_rows(frames)
    assert summary.counts.videos_ok == 2 and not list((out / "detections").glob(".*"))


def test_a_worker_whose_commit_hangs_on_storage_is_restarted_and_its_videos_go_to_another(
    tmp_path,
):
    """Worker 0's first commit hangs in its upload (storage that stopped answering). Past
    ``--stall-timeout`` the coordinator, which reads each worker's running commit step from its
    reports, restarts it, as it does a worker hung in a forward pass: its videos go elsewhere,
    every frame once."""
    frames = {"a.mp4": 20, "b.mp4": 12}
    workers = [
        FakeWorker(FakeCalls(dict(frames)), hang_commit=True),
        FakeWorker(FakeCalls(dict(frames))),
    ]
    summary, out, sources = run_workers(
        tmp_path,
        "hung",
        frames,
        workers,
        batch_size=4,
        max_open_videos=2,
        layout="per-video",
        stall_timeout_s=1.0,
    )
    assert workers[0].restarts == 1 and summary.counts.actors_hung == 1
    assert summary.counts.videos_ok == 2 and summary.counts.videos_reassigned >= 1
    assert written_rows(out, sources) == expected_rows(frames)
    assert not direct_rows(out).duplicated(["video_id", "frame_index"]).any()


@pytest.mark.parametrize("seed", range(4))
def test_random_worker_deaths_every_frame_once(tmp_path, seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    frames = {f"v{i}.mp4": int(rng.integers(1, 30)) for i in range(10)}
    workers = [
        FakeWorker(FakeCalls(dict(frames)), die_on=tuple(rng.choice(12, 2, replace=False) + 1))
        for _ in range(3)
    ]
    summary, out, sources = run_workers(
        tmp_path, "random", frames, workers, batch_size=4, max_open_videos=6
    )
    rows = rows_of(out, sources)
    assert summary.counts.videos_ok == 10
    assert all([r["frame_index"] for r in rows[p]] == list(range(n)) for p, n in frames.items())


def test_a_worker_killed_before_its_run_started_gets_its_videos_when_it_is_back(tmp_path):
    frames = {f"v{i}.mp4": 5 for i in range(6)}
    # the only worker died between its model's ready answer and the run's start: it restarts
    # (twice), and the hand-outs wait for it
    workers = [FakeWorker(FakeCalls(dict(frames)), dead_at_start=2)]
    summary, out, sources = run_workers(
        tmp_path, "late", frames, workers, batch_size=4, max_open_videos=4
    )
    assert summary.counts.videos_ok == 6 and workers[0].dead_at_start == 0
    assert summary.workers["joined"] == 1 and summary.workers["spells"][0]["videos"] == 6
    rows = rows_of(out, sources)
    assert all([r["frame_index"] for r in rows[p]] == list(range(5)) for p in frames)


def test_a_worker_that_raises_fails_its_videos_and_loses_none(tmp_path):
    frames = {f"v{i}.mp4": 5 for i in range(3)}
    workers = [FakeWorker(FakeCalls(dict(frames)), raise_on=(1,))]
    summary, out, sources = run_workers(tmp_path, "raises", frames, workers, batch_size=4)
    records = Manifest(out).records
    assert summary.counts.videos_failed == 3 and len(records) == 3
    assert all("the worker tripped" in r.error for r in records.values())


@pytest.mark.parametrize("tells", [True, False])
def test_a_chunks_clip_is_recorded_when_its_pass_ends_not_with_the_chunk(tmp_path, tells):
    """A driver killed while a chunk's long clip still runs keeps its short clips: they were
    recorded as each ended (told by the worker), not when the whole hand-out came back."""
    frames = {"short.mp4": 2, "long.mp4": 120}
    worker = FakeWorker(FakeCalls(dict(frames)), tells=tells)
    recorded: list[tuple[str, int]] = []  # (video id, hand-outs still running)
    summary, out, sources = run_workers(
        tmp_path,
        "told",
        frames,
        [worker],
        on_record=lambda logic, r: recorded.append((r.video_id, worker.handouts_running)),
        batch_size=4,
        max_open_videos=4,
        layout="per-video",  # packed, both would wait for one part
    )
    assert summary.counts.videos_ok == 2 and worker.count == 1  # one hand-out, both clips
    short, long = (s.video_id for s in sources)
    if tells:  # the short clip first, while the hand-out (its long clip) still ran
        assert recorded == [(short, 1), (long, 1)]
    else:  # both with the hand-out's reply
        assert recorded == [(short, 0), (long, 0)]


def test_a_worker_lost_after_telling_its_outcomes_keeps_them(tmp_path):
    """The worker told each outcome, then died before its reply: nothing is redone or failed."""
    frames = {f"v{i}.mp4": 5 for i in range(4)}
    workers = [FakeWorker(FakeCalls(dict(frames)), reply_lost_on=(1,))]
    summary, out, sources = run_workers(tmp_path, "told-then-lost", frames, workers, batch_size=4)
    counts = summary.counts
    assert counts.videos_ok == 4 and counts.videos_failed == 0 and counts.videos_reassigned == 0
    assert workers[0].count == 1 and {r.status for r in Manifest(out).records.values()} == {"ok"}


def test_short_clips_are_packed_into_a_few_part_files_with_the_same_rows(tmp_path):
    clips = {f"clip{i}.mp4": 1 + i % 5 for i in range(40)} | {"long.mp4": 600}
    settings = dict(batch_size=8, max_open_videos=8)
    summary, out, sources = run_workers(tmp_path, "packed", clips, workers(clips), **settings)
    _, own, _ = run_workers(tmp_path, "own", clips, workers(clips), layout="per-video", **settings)
    assert written_rows(out, sources) == written_rows(own, sources) == expected_rows(clips)
    assert summary.counts.videos_ok == len(clips)
    files = sorted(p.name for p in (out / "detections").iterdir())
    parts = [name for name in files if name.startswith("part-")]
    long_id = sources[-1].video_id
    assert f"{long_id}.parquet" in files and 1 <= len(parts) <= 4  # 40 clips in a few parts
    assert len(files) == len(parts) + 1  # no hidden file left, no clip of its own
    records = Manifest(out).records
    for source in sources[:-1]:
        record = records[source.video_id]
        assert record.detections_file.startswith("detections/part-") and len(record.row_groups) == 1
    assert records[long_id].detections_file is None
    assert len(list((own / "detections").iterdir())) == len(clips)


@pytest.mark.parametrize("first_layout", ["auto", "per-video"])
def test_a_clip_redone_leaves_its_old_rows_before_its_new_rows_land(tmp_path, first_layout):
    """A rerun over changed clips (packed the second time): each clip's rows once, none left
    behind in its old part or its old file of its own."""
    clips = {f"clip{i}.mp4": 2 + i % 3 for i in range(12)}

    def run(sources, frames, layout="auto"):
        settings = dict(batch_size=4, max_open_videos=8, layout=layout)
        return run_workers(tmp_path, "out", frames, workers(frames, 1), sources=sources, **settings)

    first = sources_of(clips)
    run(first, clips, first_layout)
    changed = {p: (n + 3 if i % 4 == 0 else n) for i, (p, n) in enumerate(clips.items())}
    second = [dataclasses.replace(s, mtime_ns=2) if i % 4 == 0 else s for i, s in enumerate(first)]
    summary, out, _ = run(second, changed)
    assert summary.counts.videos_ok == 3 and summary.counts.videos_skipped == 9
    expected = {s.video_id: changed[s.path] for s in first}
    direct = pq.read_table(out / "detections").to_pandas()  # what DuckDB, pandas, Spark see
    for rows in (read_detections(out, flat=False), direct):
        assert not rows.duplicated(["video_id", "frame_index"]).any()
        assert rows.groupby("video_id").size().to_dict() == expected


def test_a_reply_without_outcomes_never_leaves_a_video_open(tmp_path):
    frames = {f"v{i}.mp4": 3 for i in range(3)}
    workers = [FakeWorker(FakeCalls(dict(frames)), blank_on=(1,))]
    summary, out, sources = run_workers(tmp_path, "blank", frames, workers, batch_size=4)
    counts = summary.counts
    assert counts.videos_ok == 3 and counts.videos_done == 3 and counts.videos_reassigned == 3


# ---- decoders that die or stall ---------------------------------------------------------------


def test_a_dead_decoder_resumes_after_the_last_batch_it_delivered(tmp_path):
    # one worker, so that its decoders are the ones counted; dies after opened + 3 batches
    (worker,) = workers(FRAMES, 1, deaths={"a.mp4": 1}, die_after=4)
    summary, out, sources = run_workers(tmp_path, "decoder", FRAMES, [worker], batch_size=4)
    assert written_rows(out, sources) == expected_rows(FRAMES)
    assert summary.counts.decoder_retries == 1 and summary.counts.videos_reassigned == 0
    started = [spec.skip_batches for path, spec in worker.calls.started if path == "a.mp4"]
    assert started == [0, 3]  # the new decoder starts after the 3 batches delivered


def test_a_decoder_killed_many_times_while_making_progress_still_completes_the_video(tmp_path):
    """Each death delivered a batch first: not a video that kills its decoders (the default
    budget is 2 retries in a row without a batch; here 6 deaths)."""
    (worker,) = workers(FRAMES, 1, deaths={"a.mp4": 6}, die_after=2)
    summary, out, sources = run_workers(tmp_path, "progress", FRAMES, [worker], batch_size=4)
    records = Manifest(out).records
    assert {r.status for r in records.values()} == {"ok"}, [r.error for r in records.values()]
    assert written_rows(out, sources) == expected_rows(FRAMES)
    assert summary.counts.decoder_retries == 6
    started = [spec.skip_batches for path, spec in worker.calls.started if path == "a.mp4"]
    assert started == [0, 1, 2, 3, 4, 5, 6]


def test_a_video_whose_decoders_always_die_without_a_batch_fails_alone(tmp_path):
    (worker,) = workers(FRAMES, 1, deaths={"a.mp4": 99}, die_after=1)  # opened, then dead
    summary, out, sources = run_workers(tmp_path, "fails", FRAMES, [worker], batch_size=4)
    records = {s.path: Manifest(out).records[s.video_id] for s in sources}
    assert records["a.mp4"].status == "failed"
    assert "gave up after 3 attempts that delivered no batch" in records["a.mp4"].error
    assert records["b.mp4"].status == "ok"
    assert written_rows(out, sources) == {"b.mp4": expected_rows(FRAMES)["b.mp4"]}
    assert not OutputLayout(out).detections(records["a.mp4"].video_id).exists()
    assert not list((out / "detections").glob(".*"))  # its hidden file went too


def test_a_stalled_decoder_is_given_up_and_its_successor_finishes_the_video(tmp_path):
    """A decoder that hangs (alive, yielding nothing) holds no slot of the worker's window: its
    successor's batches and the other video's are inferred, every frame once."""
    (worker,) = workers(FRAMES, 1, stalls={"a.mp4": 1}, die_after=3)
    summary, out, sources = run_workers(
        tmp_path, "stall", FRAMES, [worker], batch_size=4, window_per_actor=1, stall_timeout_s=0.3
    )
    assert written_rows(out, sources) == expected_rows(FRAMES)
    assert summary.counts.decoder_retries == 1
    started = [spec.skip_batches for path, spec in worker.calls.started if path == "a.mp4"]
    assert started == [0, 2]
