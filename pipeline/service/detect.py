"""Single images in, boxes out: the detector behind ``POST /detect``.

Images of a request batch are grouped by size, and each group is one letterboxed batch through
the pipeline's ``BatchDetector``, so the boxes are those of ``YOLO.predict`` on the same image.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from pipeline.errors import UsageError
from pipeline.service.settings import ServiceSettings

MAX_PIXELS = 50_000_000  # a decoded image above this is refused (a small file can inflate)


class BadImage(UsageError):
    """Bytes that are not an image this service can read."""


@dataclass(frozen=True)
class ImageBoxes:
    """The boxes of one image, in the output schema's field names."""

    width: int
    height: int
    detections: list[dict]

    def as_dict(self) -> dict:
        return {
            "width": self.width,
            "height": self.height,
            "num_detections": len(self.detections),
            "detections": self.detections,
        }


def decode_image(data: bytes) -> np.ndarray:
    """BGR uint8 (H, W, 3), as ``cv2.imread`` gives ``YOLO.predict``; ``BadImage`` otherwise."""
    if not data:
        raise BadImage("the request body is empty: send the image's bytes")
    # The size comes from the header before anything is decoded: a small file cannot ask for
    # gigabytes of pixels.
    try:
        with Image.open(io.BytesIO(data)) as header:
            width, height = header.size
    except Exception:
        raise BadImage(
            "the body is not an image that OpenCV can read (JPEG, PNG, BMP, WebP, TIFF)"
        ) from None
    if width * height > MAX_PIXELS:
        raise BadImage(
            f"the image is {width}x{height}, more than {MAX_PIXELS // 1_000_000} megapixels"
        )
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise BadImage("the body is not an image that OpenCV can read (JPEG, PNG, BMP, WebP, TIFF)")
    return image


class ImageDetector:
    """One warm ``BatchDetector``; thread-safe (calls are serialized: the model is the bottleneck)."""

    def __init__(self, settings: ServiceSettings):
        from pipeline.inference.torch_detector import BatchDetector

        self.detector = BatchDetector(
            settings.model,
            device=settings.device,
            imgsz=settings.imgsz,
            conf=settings.conf,
            iou=settings.iou,
            max_batch=settings.max_batch,
        )
        self.names = self.detector.names
        self._lock = threading.Lock()

    def detect(self, images: list[np.ndarray]) -> list[ImageBoxes]:
        """Boxes for each image, in order; same-size images share one forward pass."""
        results: list[ImageBoxes | None] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            groups.setdefault(image.shape[:2], []).append(i)
        with self._lock:
            for (h, w), members in groups.items():
                geometry = self.detector.geometry(h, w)
                for start in range(0, len(members), self.detector.max_batch):
                    chunk = members[start : start + self.detector.max_batch]
                    canvas = geometry.new_canvas(len(chunk))
                    for slot, i in enumerate(chunk):
                        geometry.draw(images[i], canvas[slot])
                    counts, dets = self.detector.detect(canvas, geometry)
                    offsets = np.concatenate([[0], np.cumsum(counts)])
                    for slot, i in enumerate(chunk):
                        results[i] = ImageBoxes(
                            w, h, self._boxes(dets[offsets[slot] : offsets[slot + 1]])
                        )
        return results  # type: ignore[return-value]

    def _boxes(self, dets) -> list[dict]:
        return [
            {
                "class_id": int(c),
                "class_name": self.names.get(int(c), str(int(c))),
                "confidence": float(conf),
                "x1": float(x1),
                "y1": float(y1),
                "x2": float(x2),
                "y2": float(y2),
            }
            for (x1, y1, x2, y2), conf, c in zip(
                dets.xyxy.tolist(), dets.confidence.tolist(), dets.class_id.tolist()
            )
        ]
