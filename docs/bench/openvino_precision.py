"""Why the OpenVINO engine is compiled with INFERENCE_PRECISION_HINT=f32: the boxes of the first
64 frames of people.mp4 against ``YOLO.predict`` with the .pt, in fp32 and in bf16 (OpenVINO's
default on CPUs with bf16 units), and the engine's frames/s in each.

    python docs/bench/openvino_precision.py ../shared/models/yolo11n-coco-int8dq.pt ../shared/data/people.mp4
"""

import sys
import time
from pathlib import Path

import numpy as np


def main(weights: str, video: str, frames: int = 64) -> None:
    import openvino as ov
    from ultralytics import YOLO

    from pipeline.decode import VideoDecoder, iter_batches
    from pipeline.engines.lean import ExportedOnDemand, LeanDetector
    from pipeline.samples import read_frames

    model = YOLO(weights)
    reference = []
    for frame in read_frames(video, limit=frames):
        b = model.predict(frame, imgsz=640, conf=0.25, iou=0.7, verbose=False)[0].boxes
        reference.append((b.xyxy.numpy(), b.conf.numpy(), b.cls.numpy().astype(int)))
    print(f"CPU bf16 units: {'avx512_bf16' in Path('/proc/cpuinfo').read_text()}, openvino {ov.__version__}")
    for precision in ("fp32", "bf16"):  # bf16: what OpenVINO picks by default on CPUs with bf16 units
        detector = LeanDetector(ExportedOnDemand(Path(weights), "openvino"), "openvino", warm_shapes=((384, 640),),
                                precision=precision)
        geometry = detector.geometry(1080, 1920)
        batches = [b.frames for b in iter_batches(VideoDecoder(video), geometry, 16)][: frames // 16]
        ours, started = [], time.perf_counter()
        for batch in batches:
            counts, d = detector.detect(batch, geometry)
            start = 0
            for c in counts:
                ours.append((d.xyxy[start:start + c], d.confidence[start:start + c], d.class_id[start:start + c]))
                start += c
        fps = frames / (time.perf_counter() - started)
        matched = total = 0
        worst = 0.0
        for (rx, rc, rk), (ox, oc, ok) in zip(reference, ours):
            total += len(rx)
            for j in range(len(rx)):
                a = rx[j]
                iw = np.clip(np.minimum(a[2], ox[:, 2]) - np.maximum(a[0], ox[:, 0]), 0, None)
                ih = np.clip(np.minimum(a[3], ox[:, 3]) - np.maximum(a[1], ox[:, 1]), 0, None)
                inter = iw * ih
                iou = inter / ((a[2] - a[0]) * (a[3] - a[1]) + (ox[:, 2] - ox[:, 0]) * (ox[:, 3] - ox[:, 1]) - inter)
                iou[ok != rk[j]] = 0
                if len(iou) and iou.max() >= 0.9:
                    matched += 1
                    worst = max(worst, abs(float(oc[iou.argmax()]) - float(rc[j])))
        print(f"precision {precision}: {matched}/{total} predict boxes matched at IoU >= 0.9 "
              f"({100 * matched / total:.1f}%), max |dconf| {worst:.2g}; engine alone {fps:.1f} frames/s")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
