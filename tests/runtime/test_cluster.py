"""Multi-node scheduling and node loss with ``ray.cluster_utils.Cluster`` and fake GPUs.

The fake GPUs are only a scheduler count: the actors must see that CUDA is not there and run on
the CPU, never touching a device.
"""

from __future__ import annotations

import threading
import time

import pytest
from conftest import (
    ray_cluster,
    read_rows,
    read_status,
    rows_by_name,
    synthetic_rows,
    synthetic_run,
    tiny_videos,
    write_people_clips,
)

from pipeline.config import RunConfig
from pipeline.runtime.faults import FaultPlan

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def videos(tmp_path_factory, people_mp4):
    return write_people_clips(
        tmp_path_factory.mktemp("cluster"), people_mp4, count=4, length=20, step=1
    )


@pytest.fixture
def two_gpu_nodes():
    """Actors fill the GPU nodes' CPUs, so the decoders run on the head."""
    with ray_cluster({"num_cpus": 1}, [{"num_cpus": 1, "num_gpus": 1}] * 2) as nodes:
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


def a_gpu_node_and_a_decoding_node():
    """A head with no CPU, a GPU node whose one CPU its video worker takes (so its decoders run
    elsewhere: ``decodes_on_own_node``), and a CPU node where they run."""
    return ray_cluster({"num_cpus": 0}, [{"num_cpus": 1, "num_gpus": 1}, {"num_cpus": 1}])


def test_losing_the_node_of_a_videos_decoder_resumes_it_elsewhere(tmp_path, model_path):
    """The decoders' node goes while a long video is decoded there: the frames it held and had
    not handed over are decoded again by a decoder on a new node, after the last batch that
    arrived. The video is ok, every frame once, its worker never lost."""
    frames = 1200
    video = tiny_videos(tmp_path, [frames])
    plan = FaultPlan(marker_dir=str(tmp_path), trace=True)
    result = {}
    with a_gpu_node_and_a_decoding_node() as (cluster, (_, decoding)):

        def go():
            result["record"] = synthetic_run(
                video,
                tmp_path / "out",
                model_path,
                faults=plan,
                batch_size=8,
                synthetic_latency_ms=(30, 1),  # about 6 s of simulated GPU
            )

        thread = threading.Thread(target=go)
        thread.start()
        deadline = time.time() + 300
        while sum(e == "produced" for _, e in plan.read_trace()) < 20:
            assert time.time() < deadline and thread.is_alive()
            time.sleep(0.1)
        cluster.add_node(num_cpus=1)  # where the next decoder can run
        cluster.remove_node(decoding, allow_graceful=False)
        thread.join(timeout=600)
    assert not thread.is_alive()
    record = result["record"]
    assert record["exit_code"] == 0, read_status(tmp_path / "out")
    totals = record["totals"]
    assert totals["videos_ok"] == 1 and totals["frames"] == frames
    assert totals["decoder_retries"] >= 1 and totals["videos_reassigned"] == 0
    assert totals["batches_decoded_on_worker_node"] == 0 < totals["batches_decoded_elsewhere"]
    assert rows_by_name(tmp_path / "out") == synthetic_rows(video, [frames])
