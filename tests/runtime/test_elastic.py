"""Elastic runs on a ``ray.cluster_utils.Cluster`` with fake GPUs (the synthetic engine lets the
workers fit on two cores): work starts on the first worker ready and the others join when they
can be placed; nodes lost and added at random moments; idle workers give their GPUs back at the
backlog's tail."""

from __future__ import annotations

import json
import logging
import random
import threading
import time

import pytest
from conftest import frames_by_reader, ray_cluster, synthetic_rows, tiny_videos
from conftest import rows_by_name as rows
from conftest import synthetic_run as run

from pipeline.runtime.faults import FaultPlan

pytestmark = pytest.mark.slow


def in_background(target) -> tuple[threading.Thread, dict]:
    result: dict = {}

    def body():
        try:
            result["record"] = target()
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            result["error"] = exc

    thread = threading.Thread(target=body)
    thread.start()
    return thread, result


def wait_until(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"waited {seconds} s for {what}"
        time.sleep(0.2)


def free_gpus() -> float:
    import ray

    return ray.available_resources().get("GPU", 0.0)


def test_a_run_starts_on_the_workers_it_can_place_grows_onto_a_new_node_and_lets_idle_ones_go(
    tmp_path, model_path, caplog, monkeypatch
):
    """Four workers wanted, two GPUs in the cluster: the run starts on two and says what it
    waits for; a first run completes on them. In a second, a node of two GPUs added mid-run
    gets the other two, which do work; at the tail (one long video last), the three workers
    with nothing left leave within the idle time and their GPUs are free while it still runs."""
    import pipeline.runtime.driver as driver

    monkeypatch.setattr(driver, "PENDING_NOTICE_S", 2.0)  # the default, 20 s: test_fleet.py
    caplog.set_level(logging.WARNING, logger="pipeline.runtime.driver")
    lengths = [20] * 16 + [240]  # the long video last
    videos = tiny_videos(tmp_path, lengths)
    clips = videos[:16]
    # one video open per worker, so that the backlog waits for the workers that join later;
    # a simulated GPU of 150 ms a forward pass (the long video alone: 60 passes, 9 s)
    settings = dict(
        num_actors=4, max_open_videos=4, batch_size=4, idle_release_s=3.0,
        synthetic_latency_ms=(150, 0),
    )  # fmt: skip
    with ray_cluster({"num_cpus": 4, "num_gpus": 2}, []) as (cluster, _):
        first = run(clips, tmp_path / "two", model_path, **settings)
        assert first["exit_code"] == 0 and first["totals"]["videos_ok"] == 16
        workers = first["workers"]
        assert workers["wanted"] == 4 and workers["peak_ready"] == 2
        assert len({s["worker"] for s in workers["spells"]}) == 2
        startup = first["startup"]
        assert startup["actors_ready_to_first_batch_s"] < 10  # no wait for the other two
        pending = [r.getMessage() for r in caplog.records if "waiting for 2 of 4" in r.getMessage()]
        assert pending and "{GPU: 1, CPU: 1} each fits no node now" in pending[0], pending
        assert pending[0].endswith("running with 2")

        plan = FaultPlan(marker_dir=str(tmp_path), trace=True)
        thread, result = in_background(
            lambda: run(videos, tmp_path / "grown", model_path, faults=plan, **settings)
        )
        wait_until(lambda: any(e == "inferred" for _, e in plan.read_trace()), 120, "work")
        added = cluster.add_node(num_cpus=3, num_gpus=2)
        wait_until(lambda: free_gpus() >= 3 or not thread.is_alive(), 180, "the tail's release")
        assert thread.is_alive(), "the long video must still be running"
        thread.join(timeout=300)
    assert not thread.is_alive() and "error" not in result, result
    record = result["record"]
    assert record["exit_code"] == 0 and record["totals"]["videos_ok"] == 17
    assert rows(tmp_path / "grown") == synthetic_rows(videos, lengths)
    workers = record["workers"]
    new = [s for s in workers["spells"] if s["node_id"] == added.node_id]
    assert new and all(s["joined_late"] for s in new), workers
    assert sum(s["videos"] for s in new) >= 1 and sum(s["frames"] for s in new) >= 1
    assert workers["released"] == 3 and workers["peak_ready"] == 4
    released = [s for s in workers["spells"] if s["end"] == "released"]
    assert len(released) == 3 and all(s["busy_share"] is not None for s in released)
    assert 0 < workers["gpu_s_busy"] < workers["gpu_s_held"]
    assert json.loads((tmp_path / "grown" / "run.json").read_text())["workers"] == workers


@pytest.mark.parametrize("seed", [1])  # (seeds 1 to 3 pass: checked when it was written)
def test_nodes_lost_and_added_at_random_moments_lose_no_frame_and_new_nodes_do_work(
    tmp_path, model_path, seed
):
    """Spot churn: ten times at a random moment, a GPU node is removed without warning and a new
    one added. The run completes, every frame is written once for every reader, and the workers
    Ray started on the new nodes did work."""
    rng = random.Random(seed)
    lengths = [12] * 160
    videos = tiny_videos(tmp_path, lengths)
    plan = FaultPlan(marker_dir=str(tmp_path), trace=True)
    gpu_node = {"num_cpus": 2, "num_gpus": 1}
    with ray_cluster({"num_cpus": 2, "num_gpus": 0}, [gpu_node] * 2) as (cluster, nodes):
        thread, result = in_background(
            lambda: run(
                videos, tmp_path / "out", model_path, faults=plan, num_actors=2, batch_size=4,
                device="cuda", synthetic_latency_ms=(20, 0),
            )
        )  # fmt: skip
        wait_until(lambda: any(e == "inferred" for _, e in plan.read_trace()), 120, "work")
        gpu_nodes, added, churns = list(nodes), [], 0
        while churns < 10 and thread.is_alive():
            time.sleep(rng.uniform(0.3, 1.5))
            gone = gpu_nodes.pop(rng.randrange(len(gpu_nodes)))
            cluster.remove_node(gone, allow_graceful=False)
            node = cluster.add_node(**gpu_node)
            gpu_nodes.append(node)
            added.append(node.node_id)
            churns += 1
        thread.join(timeout=600)
    assert churns == 10, "the run ended before ten nodes were replaced: make it longer"
    assert not thread.is_alive() and "error" not in result, result
    record = result["record"]
    assert record["exit_code"] == 0 and record["totals"]["videos_ok"] == len(videos)
    assert rows(tmp_path / "out") == synthetic_rows(videos, lengths)
    for name, frame in frames_by_reader(tmp_path / "out", ray_data=False).items():
        assert not frame.duplicated(["video_id", "frame_index"]).any(), name
        assert len(frame) == sum(lengths), name
    workers = record["workers"]
    # (a node removed while its worker was still starting there ends no spell: churn faster
    # than a restart is part of the test; nor does every loss get its replacement joined before
    # the run ends: lost 2, joined 3 once on a fresh clone)
    assert workers["lost"] >= 1 and workers["joined"] > 2  # workers joined after the first two
    on_new = [s for s in workers["spells"] if s["node_id"] in added]
    assert sum(s["videos"] for s in on_new) >= 1, workers
