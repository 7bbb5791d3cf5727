"""Run settings: one frozen dataclass, validated once, shared by every role."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Literal, get_args

from pipeline.errors import UsageError
from pipeline.media.sampling import Sampling

Device = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[str, ...] = get_args(Device)
Engine = Literal["auto", "torch", "openvino", "onnx", "tensorrt"]
ENGINES: tuple[str, ...] = get_args(Engine)
# No model at all: fixed boxes per frame (pipeline.inference.synthetic). Not a choice of the
# command line: the control-plane benchmark uses it to measure the pipeline's own costs.
SYNTHETIC_ENGINE = "synthetic"
LAYOUTS = ("auto", "per-video", "packed")  # pipeline.output.parts


@dataclass(frozen=True)
class EngineTraits:
    """What sets an inference engine apart, for the code that must know (which detector opens
    it, what an actor imports, how many actors a node gets, what is exported per shape)."""

    name: str
    needs_torch: bool = True  # its actor imports torch (threads, CUDA); the lean ones do not
    lean: bool = False  # runs on the torch-free detector (pipeline.inference.lean_detector)
    sizes_own_threads: bool = False  # sizes its thread pool to the machine: one actor per node
    export_format: str | None = None  # ultralytics' export format, built per letterbox shape
    fp16_on_cuda: bool = False  # runs in half precision on a GPU (part of the settings hash)
    modules: tuple[str, ...] = ()  # what must be importable on the node that builds and runs it


_ENGINE_TRAITS = {
    e.name: e
    for e in (
        EngineTraits("torch", fp16_on_cuda=True),
        EngineTraits(
            "openvino",
            needs_torch=False,
            lean=True,
            sizes_own_threads=True,
            export_format="openvino",
            modules=("openvino",),
        ),
        EngineTraits(
            "onnx",
            needs_torch=False,
            lean=True,
            sizes_own_threads=True,
            export_format="onnx",
            modules=("onnxruntime", "onnx"),
        ),
        EngineTraits("tensorrt", export_format="engine", fp16_on_cuda=True, modules=("tensorrt",)),
        EngineTraits(SYNTHETIC_ENGINE, needs_torch=False),
    )
}


def engine_traits(engine: str) -> EngineTraits:
    """The traits of ``engine``; another format of a given export (TorchScript, TFLite, …) or
    ``auto`` before it is resolved are loaded through ultralytics, with torch."""
    return _ENGINE_TRAITS.get(engine) or EngineTraits(engine)


CpuPrecision = Literal["fp32", "bf16"]
CPU_PRECISIONS: tuple[str, ...] = get_args(CpuPrecision)


class ConfigError(UsageError, ValueError):
    """A setting is out of range; the message names the option and the allowed values."""


# The range of every numeric setting, checked in RunConfig for the command line, pipeline.run and
# the service's job requests alike: (field, option, lowest, highest); None in a setting means
# "decide at run time". The upper bounds are far above any real run, low enough that a typo
# (an extra zero or three) is refused at once instead of failing deep in a run.
SETTING_RANGES: tuple[tuple[str, str, float, float | None], ...] = (
    ("imgsz", "--imgsz", 32, 4096),
    ("conf", "--conf", 0.0, 1.0),
    ("iou", "--iou", 0.0, 1.0),
    ("stride", "--stride", 1, 1_000_000),
    ("fps", "--fps", 0.0, 1000.0),  # above 0: see _check_range
    ("batch_size", "--batch-size", 1, 256),
    ("max_det", "--max-det", 1, 10_000),
    ("num_actors", "--num-actors", 1, 1024),
    ("window_per_actor", "--window", 1, 64),
    ("decoder_buffer", "decoder_buffer", 1, 64),
    ("max_open_videos", "--max-open-videos", 1, 10_000),
    ("segments", "--segments", 1, 64),
    ("segment_min_frames", "segment_min_frames", 1, None),
    ("decode_retries", "decode_retries", 0, 100),
    ("worker_retries", "worker_retries", 0, 100),
    ("stall_timeout_s", "--stall-timeout", 0.0, 86_400.0),  # above 0: see _check_range
    ("batch_timeout_s", "--batch-timeout", 0.0, 86_400.0),
    ("idle_release_s", "--release-idle-after", 0.0, 86_400.0),
    ("cpu_threads", "--cpu-threads", 1, 1024),
    ("part_rows", "--part-rows", 1, 10_000_000),
)
_FLOATS = {"conf", "iou", "fps", "stall_timeout_s", "batch_timeout_s", "idle_release_s"}
# a timeout of 0 would fail every wait; a rate of 0 would keep nothing
_POSITIVE = {"--fps", "--stall-timeout", "--batch-timeout"}
# The wording the command line has always used for these two ranges.
_BETWEEN = {"--conf", "--iou", "--batch-size"}


def _plain(number: float | None) -> str:
    """A bound as a user types it: 1000000, 0.5."""
    return str(int(number)) if number is not None and number == int(number) else str(number)


def _check_range(value, flag: str, lowest: float, highest: float | None, real: bool) -> None:
    if value is None:
        return
    kind = (int, float) if real else int
    if isinstance(value, bool) or not isinstance(value, kind):
        # A wrong type is a TypeError, as Python's own calls raise (argparse types the CLI's).
        raise TypeError(f"{flag} must be a {'number' if real else 'whole number'}; got {value!r}")
    if real and not math.isfinite(value):
        raise ConfigError(f"{flag} must be a finite number; got {value!r}")
    if flag in _BETWEEN and highest is not None and not lowest <= value <= highest:
        raise ConfigError(f"{flag} must be between {_plain(lowest)} and {_plain(highest)}")
    if flag in _POSITIVE and value <= 0:
        raise ConfigError(f"{flag} must be positive")
    if flag == "--imgsz" and value < lowest:
        raise ConfigError("--imgsz must be a multiple of 32, at least 32")
    if value < lowest:
        raise ConfigError(f"{flag} must be at least {_plain(lowest)}")
    if highest is not None and value > highest:
        raise ConfigError(f"{flag} must be at most {_plain(highest)}")


@dataclass(frozen=True)
class RunConfig:
    """Everything that shapes a run.

    Fields listed in ``RESULT_FIELDS`` change the detections themselves; a video done under
    different values of those is reprocessed on resume. The others only change how fast it goes.
    """

    model: str = "yolo11n.pt"
    imgsz: int = 640
    conf: float = 0.25
    iou: float = 0.7
    stride: int = 1
    # frames kept by time: for each k the first frame at or after k/fps seconds
    # (pipeline.media.sampling); exclusive with stride
    fps: float | None = None
    keyframes: bool = False  # keyframes only (with fps: at most fps of them a second)
    # ids or names; names become ids once the model's are known
    classes: tuple[int | str, ...] | None = None
    max_det: int = 300
    batch_size: int = 16
    device: Device = "auto"
    engine: Engine | Literal["synthetic"] = (
        "auto"  # auto: OpenVINO on CPU nodes, TensorRT (else torch fp16) on GPU nodes
    )
    # OpenVINO's arithmetic; bf16 is faster on CPUs with bf16 units, boxes move
    cpu_precision: CpuPrecision = "fp32"
    num_actors: int | None = None  # None: one per GPU, or one on a CPU-only cluster
    window_per_actor: int = 2  # batches in flight per actor: one computing, one queued
    decoder_buffer: int = 2  # batches a decoder may run ahead of the coordinator
    max_open_videos: int | None = None  # videos decoded at once; None: planned from the cluster
    # Long videos decoded in parallel segments (pipeline.media.segments): None decides by itself (when
    # decoding is the bottleneck and decoders are free), 1 never, N splits videos long enough in N.
    segments: int | None = None
    segment_min_frames: int = 1800  # no segment shorter than this
    decode_retries: int = 2  # decoders started again after deaths in a row that delivered no batch
    worker_retries: int = 3  # hand-outs again of a video whose video worker died or hung
    # no frame from a decoder for this long: it is started again; a commit step stuck this long:
    # its worker is restarted
    stall_timeout_s: float = 300.0
    # a video worker's forward pass longer than this: the worker is hung; None: derived
    batch_timeout_s: float | None = None
    # a video worker with nothing open while nothing is left to hand out leaves the run after this
    # long, its GPU released (an autoscaler can then remove its node); 0: every worker to the end
    idle_release_s: float = 60.0
    cpu_threads: int | None = None  # torch threads of a CPU actor; None: the node's cores
    # ByteTrack over each video's detections: a track_id per box, tracks/ summary
    track: bool = False
    # Where rows go: "per-video" (detections/<video_id>.parquet each), "packed" (every video in
    # shared part files), "auto" (a video shorter than a row group is packed). Not a result
    # setting: the rows are the same.
    layout: str = "auto"
    part_rows: int = 8192  # rows (frames) a worker gathers for one part file: 16 row groups
    # The synthetic engine's simulated GPU: each batch of n frames takes a + b·n milliseconds
    # (GIL released), e.g. (2.0, 0.35); None: as fast as it can (pipeline.inference.synthetic).
    synthetic_latency_ms: tuple[float, float] | None = None
    model_fingerprint: str = field(default="", compare=False)  # size+mtime of a local model file
    # what "auto" became: cpu or cuda
    resolved_device: str | None = field(default=None, compare=False)
    # what --engine became (pipeline.inference.engines)
    resolved_engine: str | None = field(default=None, compare=False)

    RESULT_FIELDS = (
        "model",
        "model_fingerprint",
        "imgsz",
        "conf",
        "iou",
        "stride",
        "classes",
        "max_det",
        "track",
    )

    def __post_init__(self) -> None:
        for field_name, flag, lowest, highest in SETTING_RANGES:
            _check_range(getattr(self, field_name), flag, lowest, highest, field_name in _FLOATS)
        if self.imgsz % 32:
            raise ConfigError("--imgsz must be a multiple of 32, at least 32")
        if not self.model:
            raise ConfigError("--model must not be empty")
        if self.device not in DEVICES:
            raise ConfigError(f"--device must be one of {', '.join(DEVICES)}; got {self.device!r}")
        if self.engine not in (*ENGINES, SYNTHETIC_ENGINE):
            raise ConfigError(f"--engine must be one of {', '.join(ENGINES)}; got {self.engine!r}")
        if self.cpu_precision not in CPU_PRECISIONS:
            raise ConfigError(
                f"--cpu-precision must be one of {', '.join(CPU_PRECISIONS)}; got {self.cpu_precision!r}"
            )
        if self.fps is not None:  # 2 and 2.0 are one setting (the settings hash)
            object.__setattr__(self, "fps", float(self.fps))
        if self.fps is not None and self.stride > 1:
            raise ConfigError(
                "--fps and --stride are exclusive: --fps keeps frames by time, --stride by count"
            )
        if self.classes is not None:
            object.__setattr__(self, "classes", class_keys(self.classes))
        if self.layout not in LAYOUTS:
            raise ConfigError(f"--layout must be one of {', '.join(LAYOUTS)}; got {self.layout!r}")
        if self.synthetic_latency_ms is not None:
            latency = tuple(float(v) for v in self.synthetic_latency_ms)
            if len(latency) != 2 or min(latency) < 0:
                raise ConfigError("synthetic_latency_ms is (a, b) milliseconds, both >= 0")
            object.__setattr__(self, "synthetic_latency_ms", latency)

    @property
    def classes_resolved(self) -> bool:
        """Whether ``classes`` are all ids (names are resolved against the model before a run)."""
        return self.classes is None or all(isinstance(c, int) for c in self.classes)

    @property
    def sampling(self) -> Sampling:
        return Sampling(stride=self.stride, fps=self.fps, keyframes=self.keyframes)

    def replace(self, **changes) -> RunConfig:
        return dataclasses.replace(self, **changes)

    def result_settings(self) -> dict:
        """The settings that change what is detected (used for resume decisions and run.json):
        the fields in ``RESULT_FIELDS``, and the device, precision and engine the boxes come from
        (CUDA runs in fp16, and an exported engine rounds differently from torch)."""
        settings = {name: getattr(self, name) for name in self.RESULT_FIELDS}
        # absent when not set: earlier hashes stay valid
        for name in ("fps", "keyframes"):
            if getattr(self, name):
                settings[name] = getattr(self, name)
        device = self.resolved_device or self.device
        engine = self.effective_engine
        settings.update(
            device=device,
            half=device == "cuda" and engine_traits(engine).fp16_on_cuda,
            engine=engine,
        )
        # absent at fp32: earlier hashes stay valid
        if engine == "openvino" and self.cpu_precision != "fp32":
            settings["cpu_precision"] = self.cpu_precision
        return settings

    @property
    def effective_engine(self) -> str:
        """The engine the boxes come from: the resolved one, else what the model or ``--engine``
        names (``auto`` until the driver knows the device)."""
        if self.resolved_engine:
            return self.resolved_engine
        given = engine_for_model(self.model)
        return given if given != "torch" else self.engine

    def settings_hash(self) -> str:
        blob = json.dumps(self.result_settings(), sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def engine_for_model(model: str) -> str:
    """The inference engine a model file or name implies (what ``BatchDetector.engine`` reports)."""
    name = model.rstrip("/").lower()
    if name.endswith(("_openvino_model", ".xml")):
        return "openvino"
    for suffix, engine in (
        (".onnx", "onnx"),
        (".engine", "tensorrt"),
        (".torchscript", "torchscript"),
        (".tflite", "tflite"),
        (".mlpackage", "coreml"),
    ):
        if name.endswith(suffix):
            return engine
    return "torch"  # .pt weights, or an ultralytics name such as yolo11n


def class_keys(classes) -> tuple[int | str, ...]:
    """A class filter as given by a user (``--classes``, a reader's ``classes=``): ids, digit
    strings and numpy integers as ints, names as stripped strings; no repeats, ids first."""
    if isinstance(classes, (str, int)):
        classes = [classes]
    keys = set()
    for c in classes:
        if isinstance(c, str):
            c = c.strip()
            if not c:
                continue
            if c.lstrip("-").isdigit():
                c = int(c)
        keys.add(int(c) if not isinstance(c, str) else c)
    if not keys:
        raise ConfigError("--classes is empty: give class ids or names, e.g. 0,2 or person,car")
    if any(isinstance(c, int) and c < 0 for c in keys):
        raise ConfigError("--classes: class ids are 0 or more")
    return tuple(sorted(keys, key=lambda c: (isinstance(c, str), c)))
