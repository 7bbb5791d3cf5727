import pytest

from pipeline.config import ConfigError, RunConfig


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"imgsz": 100}, "--imgsz"),
        ({"imgsz": 0}, "--imgsz"),
        ({"conf": 1.5}, "--conf"),
        ({"iou": -0.1}, "--iou"),
        ({"stride": 0}, "--stride"),
        ({"batch_size": 0}, "--batch-size"),
        ({"batch_size": 1000}, "--batch-size"),
        ({"num_actors": 0}, "--num-actors"),
        ({"device": "tpu"}, "auto, cpu, cuda"),
        ({"model": ""}, "--model"),
        ({"max_open_videos": 0}, "--max-open-videos"),
    ],
)
def test_bad_settings_name_the_option(changes, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig(**changes)


def test_classes_are_normalised():
    assert RunConfig(classes=[2, 0, 2]).classes == (0, 2)


@pytest.mark.parametrize(
    "changes, same",
    [
        ({"batch_size": 32}, True),
        ({"num_actors": 3}, True),
        ({"device": "cpu"}, True),  # what auto became here: the same boxes
        ({"resolved_device": "cuda"}, False),  # fp16 on a GPU: other boxes
        ({"device": "cuda", "resolved_device": None}, False),
        ({"model": "yolo11n_openvino_model/"}, False),  # another engine
        ({"conf": 0.3}, False),
        ({"iou": 0.5}, False),
        ({"stride": 2}, False),
        ({"imgsz": 320}, False),
        ({"classes": (0,)}, False),
        ({"model": "other.pt"}, False),
        ({"model_fingerprint": "x:1:2"}, False),
    ],
)
def test_settings_hash_follows_only_result_changing_settings(changes, same):
    base = RunConfig(resolved_device="cpu")
    assert (base.settings_hash() == base.replace(**changes).settings_hash()) is same


@pytest.mark.parametrize(
    "model, engine",
    [
        ("yolo11n.pt", "torch"),
        ("yolo11n", "torch"),
        ("/m/yolo11n_openvino_model/", "openvino"),
        ("/m/yolo11n_openvino_model/yolo11n.xml", "openvino"),
        ("m.onnx", "onnx"),
        ("m.engine", "tensorrt"),
    ],
)
def test_engine_for_model(model, engine):
    from pipeline.config import engine_for_model

    assert engine_for_model(model) == engine
    # Weights: which engine "auto" becomes is decided once the device is known (test_engines).
    assert RunConfig(model=model).result_settings()["engine"] == (
        engine if engine != "torch" else "auto"
    )
    if engine == "torch":
        assert RunConfig(model=model, engine="torch").result_settings()["engine"] == "torch"
