"""Multi-node scheduling and node loss with ``ray.cluster_utils.Cluster`` and fake GPUs.

The fake GPUs are only a scheduler count: the actors must see that CUDA is not there and run on
the CPU, never touching a device.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time

import pytest
from conftest import read_rows, read_status, write_people_clips

from pipeline.config import RunConfig
from pipeline.runtime.faults import FaultPlan

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def videos(tmp_path_factory, people_mp4):
    return write_people_clips(
        tmp_path_factory.mktemp("cluster"), people_mp4, count=4, length=20, step=1
    )


@contextlib.contextmanager
def cluster_of_gpu_nodes(*, head_cpus: int, worker_cpus: int, dashboard: bool = False):
    """A head and two worker nodes with one fake GPU each; the test process joins it. The
    dashboard serves Ray's state API (where tasks run)."""
    import ray
    from ray.cluster_utils import Cluster

    os.environ.pop("RAY_ADDRESS", None)
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": head_cpus, "include_dashboard": dashboard}
    )
    workers = [cluster.add_node(num_cpus=worker_cpus, num_gpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR")
    try:
        yield cluster, workers
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture
def two_gpu_nodes():
    """Actors fill the GPU nodes' CPUs, so the decoders run on the head."""
    with cluster_of_gpu_nodes(head_cpus=1, worker_cpus=1) as nodes:
        yield nodes


def test_one_actor_per_gpu_node_and_complete_output(two_gpu_nodes, tmp_path, videos, model_path):
    import pipeline

    cluster, workers = two_gpu_nodes
    record = pipeline.run(
        [str(v) for v in videos],
        output=str(tmp_path / "out"),
        config=RunConfig(model=model_path, batch_size=4),
        progress=False,
    )
    assert record["exit_code"] == 0
    assert record["placement"]["num_actors"] == 2 and record["placement"]["actor_num_gpus"] == 1.0
    actor_nodes = [a["node_id"] for a in record["actors"]]
    assert sorted(actor_nodes) == sorted(w.node_id for w in workers)  # exactly one per GPU node
    assert all(a["device"] == "cpu" for a in record["actors"])  # fake GPUs: CUDA untouched
    assert len(read_rows(tmp_path / "out")) == 80


def test_losing_a_node_mid_run_still_completes_without_duplicates(
    two_gpu_nodes, tmp_path, videos, model_path
):
    import pipeline

    cluster, workers = two_gpu_nodes
    plan = FaultPlan(marker_dir=str(tmp_path), actor_delay_s=0.3, trace=True)
    result = {}

    def go():
        result["record"] = pipeline.run(
            [str(v) for v in videos],
            output=str(tmp_path / "out"),
            # the coordinator's path (the workers': test_video_workers_cluster.py)
            config=RunConfig(model=model_path, batch_size=4, data_path="coordinator"),
            faults=plan,
            progress=False,
        )

    thread = threading.Thread(target=go)
    thread.start()
    deadline = time.time() + 300
    while sum(e == "inferred" for _, e in plan.read_trace()) < 4:  # the run is well under way
        assert time.time() < deadline and thread.is_alive()
        time.sleep(0.2)
    cluster.remove_node(workers[1], allow_graceful=False)
    thread.join(timeout=600)
    assert not thread.is_alive()
    record = result["record"]
    assert record["exit_code"] == 0
    assert record["totals"]["batches_retried"] >= 1  # the lost node's batches were redone elsewhere
    rows = read_rows(tmp_path / "out")
    assert len(rows) == 80 and not rows.duplicated(["video_id", "frame_index"]).any()
    assert all(s["status"] == "ok" for s in read_status(tmp_path / "out").values())


@pytest.fixture
def decoders_on_gpu_nodes():
    """As cluster.yaml lays it out: a head with no CPU to offer, so decoders and actors both run
    on the GPU nodes, and a lost node takes decoders, actors and frames in its store with it."""
    with cluster_of_gpu_nodes(head_cpus=0, worker_cpus=2, dashboard=True) as nodes:
        yield nodes


def test_losing_a_node_with_decoders_on_it_redecodes_its_videos(
    decoders_on_gpu_nodes, tmp_path, videos, model_path
):
    import pipeline

    cluster, workers = decoders_on_gpu_nodes
    plan = FaultPlan(marker_dir=str(tmp_path), actor_delay_s=0.3, trace=True)
    result = {}

    def go():
        result["record"] = pipeline.run(
            [str(v) for v in videos],
            output=str(tmp_path / "out"),
            config=RunConfig(
                model=model_path, batch_size=4, max_open_videos=4, data_path="coordinator"
            ),
            faults=plan,
            progress=False,
        )

    thread = threading.Thread(target=go)
    thread.start()
    doomed = workers[1].node_id
    deadline = time.time() + 300

    def decoders_on_doomed() -> int:
        from ray.util.state import list_tasks

        running = list_tasks(
            filters=[("state", "=", "RUNNING"), ("name", "=", "decode_video")], limit=100
        )
        return sum(t.node_id == doomed for t in running)

    while not (
        sum(e == "inferred" for _, e in plan.read_trace()) >= 4 and decoders_on_doomed() >= 1
    ):
        assert time.time() < deadline and thread.is_alive(), (
            "no decoder ever ran on the node to remove"
        )
        time.sleep(0.2)
    cluster.remove_node(workers[1], allow_graceful=False)
    thread.join(timeout=600)
    assert not thread.is_alive()
    record = result["record"]
    assert record["exit_code"] == 0, [
        (s["status"], s["error"]) for s in read_status(tmp_path / "out").values()
    ]
    # decoders died with the node and were started again
    assert record["totals"]["decoder_retries"] >= 1
    # Batches whose frames were in the lost node's object store: decoded again, not failed.
    assert record["totals"]["batches_redecoded"] >= 1
    rows = read_rows(tmp_path / "out")
    assert len(rows) == 80 and not rows.duplicated(["video_id", "frame_index"]).any()
    assert all(s["status"] == "ok" for s in read_status(tmp_path / "out").values())
