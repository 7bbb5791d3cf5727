"""cluster.yaml: valid for Ray's cluster launcher, and it installs this project on every node."""

import copy
import re
import shlex

import pytest
import tomllib
import yaml
from conftest import REPO


@pytest.fixture(scope="module")
def config():
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def test_validates_against_rays_cluster_schema(config):
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(config)))


def test_a_broken_config_is_rejected_by_the_same_check(config):
    """The check above can fail: an unknown field is refused."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    broken = copy.deepcopy(config)
    broken["available_node_types"]["gpu_1x"]["min_wrokers"] = 1
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))


def test_setup_installs_this_checkout_on_every_node(config):
    mounts = config["file_mounts"]
    target = next(remote for remote, local in mounts.items() if local == ".")
    pip_lines = [shlex.split(c) for c in config["setup_commands"] if "pip" in c and "install" in c]
    installed = [arg for line in pip_lines for arg in line if arg.startswith(target)]
    assert installed == [target], "setup_commands must pip install the synced checkout"
    name = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["name"]
    assert name == "yolo-ray-pipeline"


def test_gpu_workers_autoscale_and_the_head_keeps_work_off_itself(config):
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("CPU") == 0  # decoders and actors go to the GPU nodes
    gpu_types = {k: v for k, v in types.items() if k != config["head_node_type"]}
    assert {v["node_config"]["InstanceType"] for v in gpu_types.values()} >= {
        "g5.2xlarge",
        "g5.12xlarge",
    }
    assert all(v["max_workers"] > v.get("min_workers", 0) for v in gpu_types.values())
    assert any(
        v["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot"
        for v in gpu_types.values()
    )


def test_metrics_are_exported_outside_rays_worker_ports(config):
    for command in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        if command.startswith("ray start"):
            port = int(re.search(r"--metrics-export-port=(\d+)", command).group(1))
            assert not 10002 <= port <= 19999
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
