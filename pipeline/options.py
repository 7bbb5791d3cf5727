"""The run options: one table that the command line's parser (``python -m pipeline run``) and
the service's job requests (``POST /jobs`` settings) are both built from.

Each option is a ``RunConfig`` field; a new option is one row here (and its field and check in
``RunConfig``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.config import CPU_PRECISIONS, DEVICES, ENGINES, LAYOUTS, RunConfig


def names_or_ids(text: str) -> list:
    """``--classes``: class names or ids, comma-separated (``person,car`` or ``0,2``)."""
    return text.split(",")  # RunConfig and the readers turn these into ids and names


@dataclass(frozen=True)
class RunOption:
    field: str  # the RunConfig field it sets
    flag: str  # the command line's option
    help: str  # "%(default)s" is the field's default in RunConfig
    type: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    flag_only: bool = False  # a switch (--track): given or not
    default_none: bool = False  # the default is decided at run time, not RunConfig's
    in_requests: bool = False  # a service job request may set it (the model is the service's)

    def argparse_kwargs(self) -> dict[str, Any]:
        if self.flag_only:
            return {"dest": self.field, "action": "store_true", "help": self.help}
        kwargs: dict[str, Any] = {
            "dest": self.field,
            "help": self.help,
            "default": None if self.default_none else getattr(RunConfig, self.field),
        }
        for name in ("type", "choices", "metavar"):
            if getattr(self, name) is not None:
                kwargs[name] = getattr(self, name)
        if self.metavar is None and self.choices is None:  # as argparse names it from the flag
            kwargs["metavar"] = self.flag.lstrip("-").replace("-", "_").upper()
        return kwargs

    def argv(self, value: Any) -> list[str]:
        """The command-line words that give this option ``value`` (a job request's setting)."""
        if self.flag_only:
            return [self.flag] if value else []
        if self.field == "classes":
            return [self.flag, ",".join(str(c) for c in value)]
        return [self.flag, str(value)]


RUN_OPTIONS: tuple[RunOption, ...] = (
    RunOption(
        "model",
        "--model",
        "weights path, exported model (OpenVINO dir, .onnx, .engine) or ultralytics name (default %(default)s)",
    ),
    RunOption(
        "batch_size",
        "--batch-size",
        "frames per inference batch (default %(default)s)",
        int,
        in_requests=True,
    ),
    RunOption(
        "stride", "--stride", "process every Nth frame (default %(default)s)", int, in_requests=True
    ),
    RunOption(
        "fps",
        "--fps",
        "process N frames a second of video, by timestamp, the same rule for every input rate: "
        "for each k the first frame at or after k/N s (e.g. 1 or 0.2; exclusive with --stride)",
        float,
        metavar="N",
        default_none=True,
        in_requests=True,
    ),
    RunOption(
        "keyframes",
        "--keyframes",
        "decode and process keyframes only: the cheapest look at a large backlog (with --fps: at "
        "most N keyframes a second)",
        flag_only=True,
        in_requests=True,
    ),
    RunOption(
        "imgsz",
        "--imgsz",
        "model input size, multiple of 32 (default %(default)s)",
        int,
        in_requests=True,
    ),
    RunOption(
        "conf", "--conf", "confidence threshold (default %(default)s)", float, in_requests=True
    ),
    RunOption("iou", "--iou", "NMS IoU threshold (default %(default)s)", float, in_requests=True),
    RunOption(
        "classes",
        "--classes",
        "keep only these classes: names or ids, e.g. person,car or 0,2 (checked against the model's classes)",
        names_or_ids,
        default_none=True,
        in_requests=True,
    ),
    RunOption(
        "max_det", "--max-det", "most boxes per frame (default %(default)s)", int, in_requests=True
    ),
    RunOption(
        "device",
        "--device",
        "auto: CUDA when the cluster has GPUs (default %(default)s)",
        choices=DEVICES,
        in_requests=True,
    ),
    RunOption(
        "engine",
        "--engine",
        "inference engine. auto: OpenVINO FP32 on CPU nodes, TensorRT FP16 on GPU nodes when tensorrt "
        "is installed, else torch; built from .pt weights at the videos' letterbox shape and cached "
        "per node ($PIPELINE_ENGINE_CACHE, default ~/.cache/yolo-ray-pipeline/engines). An engine "
        "that cannot be built falls back to torch with a warning (default %(default)s)",
        choices=ENGINES,
    ),
    RunOption(
        "cpu_precision",
        "--cpu-precision",
        "OpenVINO's arithmetic on the CPU. bf16 runs about 2x faster on CPUs with bf16 units "
        "(AVX512-BF16, AMX) but moves boxes and confidences; fp32 gives YOLO.predict's boxes "
        "(default %(default)s)",
        choices=CPU_PRECISIONS,
    ),
    RunOption(
        "num_actors",
        "--num-actors",
        "YoloActors (video workers): the most the run asks for (default: one per GPU; on CPU one "
        "per core up to 4 cores, one per 2 cores above; 1 for OpenVINO/ONNX). With GPUs, more than "
        "the cluster has now is a number to grow into: work starts on the first worker ready and "
        "each other joins when Ray (an autoscaler) can place it",
        int,
        default_none=True,
        in_requests=True,
    ),
    RunOption(
        "window_per_actor",
        "--window",
        "batches in flight per actor: the backpressure bound (default %(default)s)",
        int,
    ),
    RunOption(
        "max_open_videos",
        "--max-open-videos",
        "videos decoded at once (default: planned from the cluster's CPUs)",
        int,
        default_none=True,
    ),
    RunOption(
        "segments",
        "--segments",
        "decode each video in N parallel segments of at least 1,800 frames, with the rows of "
        "one decoder (default: split long files only when decoding is the bottleneck and "
        "decoders are free; 1: never)",
        int,
        metavar="N",
        default_none=True,
    ),
    RunOption(
        "cpu_threads",
        "--cpu-threads",
        "torch threads per CPU actor (default: its CPU share)",
        int,
        default_none=True,
    ),
    RunOption(
        "stall_timeout_s",
        "--stall-timeout",
        "seconds a decoder may yield nothing before it is started again, and a video worker's "
        "commit step (a rename, an upload) may take before the worker is restarted "
        "(default %(default)s)",
        float,
    ),
    RunOption(
        "batch_timeout_s",
        "--batch-timeout",
        "seconds a video worker's forward pass may take before the worker is called hung: it is "
        "restarted and its videos go to the others (default: 10x the slowest pass so far, at "
        "least 30; 600 for the first)",
        float,
        default_none=True,
    ),
    RunOption(
        "idle_release_s",
        "--release-idle-after",
        "seconds a video worker may sit idle once nothing is left to hand out (the tail of a "
        "backlog) before it leaves the run and releases its GPU, so that an autoscaler can "
        "remove its node; 0: keep every worker to the end (default %(default)s)",
        float,
        metavar="SECONDS",
    ),
    RunOption(
        "layout",
        "--layout",
        "how rows are stored. per-video: detections/<video_id>.parquet each. packed: videos share "
        "part files (detections/part-*.parquet; videos.parquet says which file and row groups "
        "hold each video). auto: a video of fewer frames than a row group (512) is packed, a "
        "longer one has its own file: a backlog of short clips makes a few hundred files, not "
        "millions (default %(default)s)",
        choices=LAYOUTS,
    ),
    RunOption(
        "part_rows",
        "--part-rows",
        "rows (frames) a worker gathers before it writes a part file: larger parts make fewer "
        "files; smaller ones commit short videos sooner (a kill redoes less). A part is also "
        "written once its first video waited 30 s, or when its worker is idle (default %(default)s)",
        int,
    ),
    RunOption(
        "track",
        "--track",
        "follow objects across frames (ByteTrack): a track_id per box and a tracks/ summary per video",
        flag_only=True,
        in_requests=True,
    ),
)

# The settings a service job request may name, by RunConfig field.
REQUEST_OPTIONS: dict[str, RunOption] = {o.field: o for o in RUN_OPTIONS if o.in_requests}


# The run options the benchmark gives every contender (python -m pipeline bench).
BENCH_FIELDS = (
    *("model", "imgsz", "conf", "iou", "stride", "fps", "keyframes"),
    *("batch_size", "engine", "cpu_precision"),
)


def config_from_options(values: dict[str, Any], fields: tuple[str, ...] | None = None) -> RunConfig:
    """The RunConfig of parsed options (``vars(args)`` of the run command's parser); with
    ``fields``, of those only (the others keep RunConfig's defaults)."""
    names = fields if fields is not None else tuple(o.field for o in RUN_OPTIONS)
    return RunConfig(**{name: values[name] for name in names})
