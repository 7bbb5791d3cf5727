"""The control plane's decisions: hand-outs per worker, commit grants fenced by attempt, and the
videos of a worker that died handed out again."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.inference.detections import Detections
from pipeline.runtime.assignment import Assignments
from pipeline.runtime.packing import BatchPacker, split_boxes


def test_videos_go_to_the_least_loaded_worker_with_room():
    a = Assignments(workers=2, open_per_worker=2)
    placed = []
    for v in "abcd":
        worker = a.free_worker()
        placed.append(worker)
        a.assign(v, worker)
    assert placed == [0, 1, 0, 1] and a.free_worker() is None
    first = a.open["a"]
    assert a.finish("a", first.attempt_id) and a.free_worker() == 0
    with pytest.raises(ValueError, match="open already"):
        a.assign("b", 0)


def test_only_the_current_attempt_is_granted_and_only_once():
    a = Assignments(workers=2, open_per_worker=1)
    old = a.assign("v", 0)
    assert a.grant("v", old.attempt_id) and not a.grant("v", old.attempt_id)
    # its worker is given up on; the video goes elsewhere under a new attempt
    (lost,) = a.worker_lost(0)
    assert a.abandon("v", lost.attempt_id)
    new = a.assign("v", a.free_worker())
    assert new.worker == 1 and new.attempt_id != old.attempt_id
    # the old worker comes back and asks: refused; its outcome is not the video's
    assert not a.grant("v", old.attempt_id) and not a.finish("v", old.attempt_id)
    assert a.grant("v", new.attempt_id) and a.finish("v", new.attempt_id)
    assert a.open_videos == 0


def test_a_dead_workers_open_videos_are_handed_out_again_until_the_attempts_run_out():
    a = Assignments(workers=3, open_per_worker=3, max_attempts=2)
    for v in "xyz":
        a.assign(v, 0)
    a.assign("w", 1)
    lost = a.worker_lost(0)
    assert sorted(x.video_id for x in lost) == ["x", "y", "z"] and a.load(0) == 3
    assert all(a.abandon(x.video_id, x.attempt_id) for x in lost) and a.load(0) == 0
    assert a.free_worker() == 2  # worker 0 takes nothing until it is back; 1 has one open
    for v in "xyz":
        a.assign(v, a.free_worker())
    assert sorted((a.load(1), a.load(2))) == [2, 2]
    again = [x for x in a.open.values() if x.video_id == "x"][0]
    assert not a.abandon("x", again.attempt_id)  # its second attempt: failed for good
    assert "x" not in a.open and "x" not in a.attempts
    a.worker_back(0)
    assert a.free_worker() == 0


@pytest.mark.parametrize("seed", range(20))
def test_random_deaths_never_leave_a_video_open_twice_or_granted_twice(seed):
    rng = np.random.default_rng(seed)
    a = Assignments(workers=3, open_per_worker=2, max_attempts=3)
    todo, done, failed, grants = [f"v{i}" for i in range(30)], [], [], {}
    while todo or a.open:
        worker = a.free_worker()
        if todo and worker is not None:
            a.assign(todo.pop(), worker)
            continue
        event = rng.integers(0, 3)
        if event == 0 and a.open:  # an attempt asks for its grant and finishes
            attempt = list(a.open.values())[rng.integers(len(a.open))]
            if a.grant(attempt.video_id, attempt.attempt_id):
                grants[attempt.video_id] = grants.get(attempt.video_id, 0) + 1
                assert a.finish(attempt.video_id, attempt.attempt_id)
                done.append(attempt.video_id)
        elif event == 1:  # a worker dies and comes back
            worker = int(rng.integers(3))
            for attempt in a.worker_lost(worker):
                if a.abandon(attempt.video_id, attempt.attempt_id):
                    todo.append(attempt.video_id)
                else:
                    failed.append(attempt.video_id)
            a.worker_back(worker)
        assert sum(a.load(w) for w in range(3)) == a.open_videos
        assert len({x.attempt_id for x in a.open.values()}) == a.open_videos
    assert sorted(done + failed) == sorted(f"v{i}" for i in range(30))
    assert all(n == 1 for n in grants.values())


@pytest.mark.parametrize("seed", range(5))
def test_the_least_loaded_worker_is_found_as_a_scan_of_all_would_find_it(seed):
    """``free_worker`` keeps the workers by load (a heap, not a scan per hand-out): over random
    hand-outs, ends, finishes, deaths and returns it names the worker a scan names."""
    rng = np.random.default_rng(seed)
    a = Assignments(workers=7, open_per_worker=3, max_attempts=100)
    for step in range(3000):
        room = int(rng.integers(1, 4))
        live = [w for w in range(a.workers) if a.live[w] and a.load(w) + room <= 3]
        scan = min(live, key=lambda w: (a.load(w), w)) if live else None
        assert a.free_worker(room) == scan, step
        move = rng.integers(0, 6)
        if move <= 1 and scan is not None:
            a.assign(f"v{step}", scan)
        elif move == 2 and a.open:
            attempt = a.open[rng.choice(list(a.open))]
            a.ended(attempt.video_id, attempt.attempt_id)
        elif move == 3 and a.open:
            attempt = a.open[rng.choice(list(a.open))]
            a.finish(attempt.video_id, attempt.attempt_id)
        elif move == 4 and rng.random() < 0.1:
            worker = int(rng.integers(0, a.workers))
            for attempt in a.worker_lost(worker):
                a.abandon(attempt.video_id, attempt.attempt_id)
        elif move == 5 and rng.random() < 0.3:
            a.worker_back(int(rng.integers(0, a.workers)))


def test_packing_fills_a_pass_from_several_videos_of_one_shape_oldest_first():
    packer: BatchPacker[str] = BatchPacker(batch_size=8)
    for name, shape, frames in [
        ("a", (96, 160), 4),
        ("b", (96, 160), 4),
        ("c", (96, 160), 4),
        ("d", (384, 640), 2),
        ("e", (96, 160), 3),
    ]:
        packer.add(shape, frames, name)
    assert packer.take() == ["a", "b"]  # 8 frames: full
    assert packer.take() == ["c", "e"]  # d has another shape; e fits beside c
    assert packer.take() == ["d"] and packer.take() == [] and len(packer) == 0


def test_a_packed_pass_splits_back_into_its_batches():
    counts = np.array([1, 0, 2, 3, 0], np.int32)
    boxes = Detections(np.arange(24).reshape(6, 4), np.arange(6) / 10, np.arange(6))
    (c1, d1), (c2, d2) = split_boxes(counts, boxes, [2, 3])
    assert c1.tolist() == [1, 0] and d1.class_id.tolist() == [0]
    assert c2.tolist() == [2, 3, 0] and d2.class_id.tolist() == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError):
        split_boxes(counts, boxes, [2, 2])


def test_grant_requests_that_wait_together_go_in_one_message():
    import asyncio

    from pipeline.runtime.coalesce import Coalescer

    asked: list[list] = []

    async def ask(requests):
        asked.append(list(requests))
        await asyncio.sleep(0.01)
        return [attempt % 2 == 0 for _, attempt in requests]

    async def main():
        batcher = Coalescer(ask)
        first = await batcher(("a", 2))  # alone: sent at once
        answers = await asyncio.gather(*(batcher((f"v{i}", i)) for i in range(5)))
        return first, answers, batcher.messages_sent

    first, answers, sent = asyncio.run(main())
    assert first is True and answers == [True, False, True, False, True]
    assert asked[0] == [("a", 2)] and sent == len(asked) <= 3  # 5 requests in at most 2 messages
    assert sorted(r for batch in asked[1:] for r in batch) == [(f"v{i}", i) for i in range(5)]


def test_an_output_a_worker_node_cannot_see_is_refused_naming_how_many(tmp_path, monkeypatch):
    from pipeline.runtime import shared_output

    probe = tmp_path / ".probe"
    asked = []

    def sees(path, nodes):
        asked.append((path, list(nodes)))
        return [node != "b" for node in nodes]

    assert shared_output.unseen_by(probe, ["c", "a", "b", "a"], sees) == ["b"]
    assert asked == [(str(probe), ["a", "b", "c"])]
    monkeypatch.setattr(shared_output, "_sees_on_nodes", sees)  # the Ray task, answered here
    with pytest.raises(shared_output.OutputNotShared, match="not visible from 1 of the 3 nodes"):
        shared_output.check_output_shared(tmp_path, ["a", "b", "c"])
    assert not list(tmp_path.iterdir())  # the probe is gone
    shared_output.check_output_shared(tmp_path, ["a", "a"])  # one node: nothing to check


def test_clips_go_out_in_chunks_spread_over_the_workers_and_none_waits_long():
    from pipeline.runtime.assignment import CLIP_WAIT_S, ClipChunks

    chunks = ClipChunks(chunk=4, workers=2)
    # a long backlog: full chunks
    assert [chunks.add(c, backlog_left=100, now=0.0) for c in "abc"] == [None] * 3
    assert chunks.add("d", backlog_left=100, now=0.1) == list("abcd")
    # a short one is spread: 4 clips left for 2 workers go out 2 at a time
    assert chunks.add("e", backlog_left=3, now=1.0) is None
    assert chunks.add("f", backlog_left=2, now=1.0) == ["e", "f"]
    # the end of the walk: whatever waits goes
    assert chunks.add("g", backlog_left=0, now=2.0) == ["g"]
    # a clip among thousands of missing files goes out once it has waited CLIP_WAIT_S
    assert chunks.add("h", backlog_left=2000, now=3.0) is None
    assert chunks.due(backlog_left=2000, now=3.0 + CLIP_WAIT_S / 2) is None
    assert chunks.due(backlog_left=2000, now=3.0 + CLIP_WAIT_S) == ["h"]
    assert chunks.due(backlog_left=2000, now=10.0) is None and chunks.clips == []
