"""Video workers on a ``ray.cluster_utils.Cluster`` of three nodes with two fake GPUs
each (six video workers; the synthetic engine lets them fit on two cores): every batch decoded on
its worker's node, every frame once, the same rows after a node is lost mid-run."""

from __future__ import annotations

import threading
import time

import pytest
from conftest import ray_cluster, tiny_videos
from conftest import rows_by_name as rows
from conftest import synthetic_run as run

from pipeline.runtime.faults import FaultPlan

pytestmark = pytest.mark.slow


def three_nodes_two_fake_gpus_each():
    return ray_cluster({"num_cpus": 3, "num_gpus": 2}, [{"num_cpus": 3, "num_gpus": 2}] * 2)


def test_on_three_nodes_every_batch_is_decoded_on_its_workers_node_also_after_a_node_is_lost(
    tmp_path, model_path
):
    videos = tiny_videos(tmp_path, [30] * 18)
    with three_nodes_two_fake_gpus_each() as (cluster, nodes):
        record = run(videos, tmp_path / "one", model_path, batch_size=4)
        assert record["placement"]["num_actors"] == 6
        assert len({a["node_id"] for a in record["actors"]}) == 3
        assert record["totals"]["batches_decoded_elsewhere"] == 0
        assert (
            record["totals"]["batches_decoded_on_worker_node"] == record["coordinator"]["batches"]
        )
        # again, slowed down, and a node goes away while it runs
        plan = FaultPlan(marker_dir=str(tmp_path), actor_delay_s=0.2, trace=True)
        result = {}
        thread = threading.Thread(
            target=lambda: result.update(
                record=run(
                    videos, tmp_path / "lost", model_path, batch_size=4,
                    faults=plan,
                )
            )
        )  # fmt: skip
        thread.start()
        deadline = time.time() + 300
        while sum(e == "inferred" for _, e in plan.read_trace()) < 12:
            assert time.time() < deadline and thread.is_alive()
            time.sleep(0.2)
        cluster.remove_node(nodes[1], allow_graceful=False)
        thread.join(timeout=600)
    assert not thread.is_alive()
    lost = result["record"]
    assert lost["exit_code"] == 0 and lost["totals"]["videos_ok"] == 18
    assert lost["totals"]["videos_reassigned"] >= 1
    assert lost["totals"]["batches_decoded_elsewhere"] == 0
    assert rows(tmp_path / "lost") == rows(tmp_path / "one")
    assert len(rows(tmp_path / "one")) == 18 * 30
