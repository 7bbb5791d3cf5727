"""The run's workers over time (``pipeline.runtime.fleet``): spells, idle release, the pending
line and when it is printed; and the assignments' side of workers joining and leaving."""

from __future__ import annotations

from pipeline.runtime.assignment import Assignments
from pipeline.runtime.fleet import Fleet, PendingNotice, pending_line


def test_spells_count_joins_late_joins_losses_and_releases_and_the_gpu_seconds():
    fleet = Fleet(3, gpus_each=1.0, idle_release_s=60.0, started=100.0, at_start=frozenset({0, 1}))
    fleet.joined(0, "node-a", 11, now=100.5)
    fleet.joined(1, "node-a", 12, now=101.0)
    assert (fleet.ready, fleet.pending) == (2, 1)
    fleet.lost(1, now=110.0)  # its node went
    assert (fleet.ready, fleet.pending) == (1, 2)  # it is waited for again
    fleet.joined(1, "node-b", 13, now=130.0)  # Ray started it on a new node
    fleet.joined(2, "node-c", 14, now=106.0)  # placed later, on the autoscaler's node
    fleet.video_done(1)
    fleet.release(0, now=150.0)
    assert (fleet.ready, fleet.pending) == (2, 0)  # a released worker is not waited for
    record = fleet.record(now=200.0, by_process={(1, 13): (40.0, 900), (0, 11): (10.0, 300)})
    assert record["joined"] == 4 and record["lost"] == 1 and record["released"] == 1
    # worker 2 came after the start, worker 1's second spell after a loss
    assert record["joined_late"] == 2
    spells = {(s["worker"], s["pid"]): s for s in record["spells"]}
    assert spells[(0, 11)]["end"] == "released" and spells[(0, 11)]["ended_s"] == 50.0
    assert spells[(1, 12)]["end"] == "lost" and spells[(1, 12)]["ended_s"] == 10.0
    assert spells[(1, 13)]["end"] == "run ended" and spells[(1, 13)]["ended_s"] == 100.0
    assert spells[(1, 13)]["videos"] == 1 and spells[(1, 13)]["frames"] == 900
    assert spells[(1, 13)]["busy_share"] == round(40 / 70, 4)  # held from 130 s to 200 s
    held = 49.5 + 9.0 + 70.0 + (200.0 - 106.0)
    assert record["gpu_s_held"] == round(held, 3) and record["gpu_s_busy"] == 50.0
    assert record["ready_over_time"][-1] == [50.0, 2] and record["peak_ready"] == 3


def test_a_worker_is_released_only_after_the_idle_time_with_nothing_left_to_hand_out():
    fleet = Fleet(wanted=2, gpus_each=1.0, idle_release_s=60.0, started=0.0)
    fleet.joined(0, "a", 1, now=0.0)
    fleet.joined(1, "a", 2, now=0.0)
    # nothing open, but the backlog is not handed out yet: no clock runs
    assert fleet.to_release(100.0, {}, nothing_left=False) == []
    assert fleet.to_release(101.0, {1: 1}, nothing_left=True) == []  # worker 0's clock starts
    assert fleet.to_release(160.0, {1: 1}, nothing_left=True) == []  # 59 s
    assert fleet.to_release(161.0, {1: 1}, nothing_left=True) == [0]
    # a worker that got a video again starts over
    fleet.to_release(170.0, {}, nothing_left=True)  # worker 1's clock starts
    fleet.to_release(200.0, {1: 1}, nothing_left=True)  # a reassigned video: reset
    assert fleet.to_release(259.0, {}, nothing_left=True) == [0]
    assert fleet.to_release(290.0, {}, nothing_left=True) == [0]  # worker 1: 31 s since 259
    never = Fleet(wanted=1, gpus_each=1.0, idle_release_s=0.0, started=0.0)
    never.joined(0, "a", 1, now=0.0)
    assert never.to_release(10_000.0, {}, nothing_left=True) == []  # 0: kept to the end


def test_the_pending_line_names_what_each_worker_needs_and_what_is_free():
    line = pending_line(1, 6, 5, {"GPU": 1.0, "CPU": 1.0}, {"CPU": 3.0})
    assert line == (
        "waiting for 1 of 6 video workers: {GPU: 1, CPU: 1} each fits no node now "
        "(the cluster has {GPU: 0, CPU: 3} free); running with 5"
    )
    loading = pending_line(2, 2, 0, {"GPU": 0.0, "CPU": 1.5}, {"CPU": 4.0})
    assert "{CPU: 1.5} each is free: being placed, loading the model" in loading
    assert loading.endswith("no video starts until one is ready")


def test_the_pending_line_is_due_after_a_while_and_again_only_when_the_numbers_change():
    notice = PendingNotice(after_s=20.0)
    assert not notice.due(0.0, pending=1, ready=5)
    assert not notice.due(19.0, pending=1, ready=5)
    assert notice.due(21.0, pending=1, ready=5)
    assert not notice.due(40.0, pending=1, ready=5)  # told already
    assert notice.due(41.0, pending=2, ready=4)  # a worker lost meanwhile
    assert not notice.due(42.0, pending=0, ready=6)  # all in: the clock stops
    assert not notice.due(50.0, pending=1, ready=5)  # a new wait starts its own 20 s
    assert notice.due(71.0, pending=1, ready=5)


def test_workers_that_join_later_take_videos_from_then_and_open_counts_follow_each_worker():
    jobs = Assignments(3, open_per_worker=2, start_live=False)
    assert jobs.free_worker() is None  # nobody has joined
    jobs.worker_back(2)
    first = jobs.assign("a", jobs.free_worker())
    assert first.worker == 2
    jobs.worker_back(0)
    assert jobs.free_worker() == 0  # the newcomer is the least loaded
    second = jobs.assign("b", 0)
    jobs.ended("b", second.attempt_id)  # its pass is over; its commit waits for a part
    assert jobs.load(0) == 0 and jobs.open_on(0) == 1  # not idle: a video is still open
    jobs.finish("b", second.attempt_id)
    assert jobs.open_on(0) == 0 and jobs.open_on(2) == 1
    jobs.worker_lost(2)  # released, or its node went
    assert jobs.abandon("a", first.attempt_id) and jobs.open_on(2) == 0


def test_a_worker_presumed_lost_that_comes_back_as_the_same_process_is_counted_once():
    fleet = Fleet(1, gpus_each=1.0, idle_release_s=0.0, started=0.0, at_start=frozenset({0}))
    fleet.joined(0, "a", 7, now=0.0)
    fleet.lost(0, now=10.0)  # unreachable for a while (a partition), not dead
    fleet.joined(0, "a", 7, now=20.0)
    record = fleet.record(now=30.0, by_process={(0, 7): (15.0, 450)})
    assert record["worker_s_busy"] == 15.0 and record["worker_s_held"] == 20.0
    assert [s["frames"] for s in record["spells"]] == [0, 450]
