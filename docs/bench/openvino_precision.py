"""Why the OpenVINO engine is compiled with INFERENCE_PRECISION_HINT=f32: the boxes of the first
64 frames of people.mp4 against ``YOLO.predict`` with the .pt, in fp32 and in bf16 (OpenVINO's
default on CPUs with bf16 units), and the engine's frames/s in each.

    python docs/bench/openvino_precision.py ../shared/models/yolo11n-coco-int8dq.pt ../shared/data/people.mp4
"""

import sys
import time
from pathlib import Path


def main(weights: str, video: str, frames: int = 64) -> None:
    import openvino as ov
    from ultralytics import YOLO

    from pipeline.bench.harness import match_boxes
    from pipeline.inference.lean_detector import ExportedOnDemand, LeanDetector
    from pipeline.media.decode import VideoDecoder, iter_batches
    from pipeline.media.samples import read_frames

    model = YOLO(weights)
    reference = []
    for frame in read_frames(video, limit=frames):
        b = model.predict(frame, imgsz=640, conf=0.25, iou=0.7, verbose=False)[0].boxes
        reference.append((b.xyxy.numpy(), b.conf.numpy(), b.cls.numpy().astype(int)))
    print(
        f"CPU bf16 units: {'avx512_bf16' in Path('/proc/cpuinfo').read_text()}, openvino {ov.__version__}"
    )
    # bf16: what OpenVINO picks by default on CPUs with bf16 units
    for precision in (
        "fp32",
        "bf16",
    ):
        detector = LeanDetector(
            ExportedOnDemand(Path(weights), "openvino"),
            "openvino",
            warm_shapes=((384, 640),),
            precision=precision,
        )
        geometry = detector.geometry(1080, 1920)
        batches = [b.frames for b in iter_batches(VideoDecoder(video), geometry, 16)][
            : frames // 16
        ]
        ours, started = [], time.perf_counter()
        for batch in batches:
            counts, d = detector.detect(batch, geometry)
            start = 0
            for c in counts:
                ours.append(
                    (
                        d.xyxy[start : start + c],
                        d.confidence[start : start + c],
                        d.class_id[start : start + c],
                    )
                )
                start += c
        fps = frames / (time.perf_counter() - started)
        matched, total, worst = match_boxes(reference, ours, 0.9)
        print(
            f"precision {precision}: {matched}/{total} predict boxes matched at IoU >= 0.9 "
            f"({100 * matched / total:.1f}%), max |dconf| {worst:.2g}; engine alone {fps:.1f} frames/s"
        )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
