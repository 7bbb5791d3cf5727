import pytest

from pipeline.config import RunConfig
from pipeline.plan.placement import PlacementError, plan


@pytest.mark.parametrize(
    "config, cpus, gpus, expected",
    [
        # (num_actors, gpus per actor, cpus per actor, torch threads, open videos)
        (RunConfig(), 2, 0, (2, 0.0, 0.5, 1, 2)),
        (RunConfig(num_actors=1), 2, 0, (1, 0.0, 1.5, 2, 1)),
        (RunConfig(), 16, 0, (8, 0.0, 1.5, 2, 8)),
        (RunConfig(num_actors=1, cpu_threads=3), 8, 0, (1, 0.0, 7.5, 3, 1)),
        (RunConfig(), 16, 1, (1, 1.0, 1.0, None, 4)),
        (RunConfig(), 64, 8, (8, 1.0, 1.0, None, 32)),
        (RunConfig(), 4, 2, (2, 1.0, 1.0, None, 4)),
        (RunConfig(device="cpu"), 8, 2, (4, 0.0, 1.5, 2, 4)),
        (RunConfig(max_open_videos=6), 16, 1, (1, 1.0, 1.0, None, 6)),
        (
            RunConfig(device="cuda", num_actors=4),
            0,
            0,
            (4, 1.0, 1.0, None, 4),
        ),  # autoscaler adds the GPUs
        # more workers than GPUs now, with or without --device cuda: a number to grow into
        (RunConfig(num_actors=3), 8, 2, (3, 1.0, 1.0, None, 10)),
        (RunConfig(model="m/yolo11n_int8_openvino_model/"), 2, 0, (1, 0.0, 1.5, 2, 1)),
        (RunConfig(model="yolo11n.onnx"), 16, 0, (1, 0.0, 15.5, 16, 1)),
    ],
)
def test_plan(config, cpus, gpus, expected):
    p = plan(config, cpus, gpus)
    assert (
        p.num_actors,
        p.actor_num_gpus,
        p.actor_num_cpus,
        p.cpu_threads,
        p.max_open_videos,
    ) == expected


@pytest.mark.parametrize(
    "config, cpus, gpus, message",
    [
        (RunConfig(device="cuda"), 8, 0, "no GPUs"),
        (RunConfig(num_actors=4), 2, 0, "cannot host"),
    ],
)
def test_impossible_plans_say_what_to_change(config, cpus, gpus, message):
    with pytest.raises(PlacementError, match=message):
        plan(config, cpus, gpus)


def test_a_worker_decodes_on_its_own_node_only_where_cpus_are_left_for_it():
    from pipeline.plan.placement import decodes_on_own_node

    nodes = ["gpu-a", "gpu-a", "gpu-b", "big"]
    cpus = {"gpu-a": 2.0, "gpu-b": 1.5, "big": 16.0}
    # gpu-a: two workers of 1 CPU fill it; gpu-b: half a CPU left, enough for one decoder
    assert decodes_on_own_node(nodes, cpus, 1.0) == [False, False, True, True]
    assert decodes_on_own_node(["gone"], {}, 1.0) == [False]
