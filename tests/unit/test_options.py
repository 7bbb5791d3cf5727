"""One table of run options: the command line's parser and the service's job requests are
built from it, so a setting given either way makes the same RunConfig."""

import dataclasses

from pipeline.cli.main import build_parser, config_from_args
from pipeline.config import RunConfig
from pipeline.options import REQUEST_OPTIONS, RUN_OPTIONS


def test_every_option_sets_a_run_config_field_once():
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    names = [o.field for o in RUN_OPTIONS]
    assert set(names) <= fields and len(names) == len(set(names))


def test_a_job_request_s_settings_give_the_config_the_command_line_gives():
    settings = {
        "batch_size": 8,
        "stride": 1,  # exclusive with fps
        "fps": 2.5,
        "keyframes": True,
        "imgsz": 320,
        "conf": 0.3,
        "iou": 0.5,
        "classes": ["person", 2],
        "max_det": 50,
        "device": "cpu",
        "num_actors": 2,
        "track": True,
    }
    assert set(settings) == set(REQUEST_OPTIONS)
    words = [w for name, value in settings.items() for w in REQUEST_OPTIONS[name].argv(value)]
    args = build_parser().parse_args(["run", "clip.mp4", "--output", "out", *words])
    assert config_from_args(args) == RunConfig(**settings)


def test_defaults_are_run_config_s():
    args = build_parser().parse_args(["run", "clip.mp4", "--output", "out"])
    assert config_from_args(args) == RunConfig()
