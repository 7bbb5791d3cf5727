"""The compiled 384x640 OpenVINO engine alone, in several settings: frames/s over 64 letterboxed
frames of people.mp4 (6 s each), and the largest class-score difference from THROUGHPUT f32.

    python docs/bench/openvino_settings.py   # from the repository root, with ../shared beside it
"""

import itertools
import time
from pathlib import Path

import numpy as np
import openvino as ov
from openvino.preprocess import ColorFormat, PrePostProcessor

from pipeline.inference.engine_cache import ensure_engine
from pipeline.media.decode import VideoDecoder, iter_batches
from pipeline.media.letterbox import LetterboxGeometry

W = Path("../shared/models/yolo11n-coco-int8dq.pt")
folder = ensure_engine(W, "openvino", (384, 640)).path
geo = LetterboxGeometry.for_source(1080, 1920, 640, stride=32)
frames = np.concatenate(
    [
        b.frames
        for b in itertools.islice(
            iter_batches(VideoDecoder("../shared/data/people.mp4"), geo, 16), 4
        )
    ]
)
core = ov.Core()
print(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def build(batch=1):
    g = core.read_model(next(folder.glob("*.xml")))
    if batch != 1:
        g.reshape([batch, 3, 384, 640])
    ppp = PrePostProcessor(g)
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(
        ov.Layout("NHWC")
    ).set_color_format(ColorFormat.BGR)
    ppp.input().preprocess().convert_element_type(ov.Type.f32).convert_color(ColorFormat.RGB).scale(
        255.0
    )
    ppp.input().model().set_layout(ov.Layout("NCHW"))
    return ppp.build()


ref = None
for name, opts, batch in [
    ("tput f32", {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": "f32"}, 1),
    (
        "tput f32 denorm+pin",
        {
            "PERFORMANCE_HINT": "THROUGHPUT",
            "INFERENCE_PRECISION_HINT": "f32",
            "CPU_DENORMALS_OPTIMIZATION": True,
            "ENABLE_CPU_PINNING": True,
        },
        1,
    ),
    (
        "tput f32 4 streams",
        {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": "f32", "NUM_STREAMS": 4},
        1,
    ),
    ("latency f32", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}, 1),
    ("tput f32 b8", {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": "f32"}, 8),
    ("tput f16", {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": "f16"}, 1),
    ("tput bf16", {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": "bf16"}, 1),
]:
    try:
        c = core.compile_model(build(batch), "CPU", opts)
    except Exception as e:
        print(name, "ERR", e)
        continue
    print(
        name,
        "exec precision",
        c.get_property("INFERENCE_PRECISION_HINT"),
        "nstreams",
        c.get_property("NUM_STREAMS"),
        "nreq",
        c.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"),
    )
    q = ov.AsyncInferQueue(c, max(2, c.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
    outs = {}
    q.set_callback(lambda r, i: outs.__setitem__(i, r.get_output_tensor(0).data.copy()))

    def run():
        for i in range(0, len(frames), batch):
            q.start_async({0: frames[i : i + batch]}, i)
        q.wait_all()

    run()
    t = time.perf_counter()
    n = 0
    while time.perf_counter() - t < 6:
        run()
        n += len(frames)
    fps = n / (time.perf_counter() - t)
    out = np.concatenate([outs[i] for i in sorted(outs)])
    if ref is None:
        ref = out
    conf_diff = np.abs(out[:, 4:] - ref[:, 4:]).max()
    print(f"{name}: {fps:.1f} fps, max |Δclass score| vs tput f32 {conf_diff:.3g}")
