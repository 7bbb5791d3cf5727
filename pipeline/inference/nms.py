"""Non-maximum suppression in numpy, the same steps and arithmetic as ultralytics'
``non_max_suppression`` (best class per box, class-aware, torchvision's greedy NMS), so that a
lean actor gives ``YOLO.predict``'s boxes without importing torch."""

from __future__ import annotations

import numpy as np

MAX_NMS = 30000  # boxes kept by confidence before NMS (ultralytics' max_nms)
MAX_WH = 7680  # per-class offset that keeps boxes of different classes apart (ultralytics' max_wh)


def greedy_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes kept, highest score first; a box is dropped when its IoU with a kept
    one is above ``iou_threshold`` (``torchvision.ops.nms``)."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, np.int64)


def non_max_suppression(
    predictions: np.ndarray,
    conf: float,
    iou: float,
    classes: list[int] | None = None,
    max_det: int = 300,
) -> list[np.ndarray]:
    """``predictions`` (B, 4 + classes, anchors) of xywh boxes and class scores -> per image, rows
    (n, 6) of x1, y1, x2, y2, confidence, class (float32), highest confidence first."""
    nc = predictions.shape[1] - 4
    out = []
    for pred in predictions:
        scores_all = pred[4:]  # (nc, anchors)
        best = scores_all.max(0)
        candidates = np.flatnonzero(best > conf)
        if not candidates.size:
            out.append(np.zeros((0, 6), np.float32))
            continue
        x = pred[:, candidates].T  # (n, 4 + nc)
        xy, half_wh = x[:, :2], x[:, 2:4] / 2
        box = np.concatenate([xy - half_wh, xy + half_wh], axis=1)
        cls = x[:, 4 : 4 + nc].argmax(1)
        score = best[candidates]
        if classes is not None:
            keep = np.isin(cls, classes)
            box, cls, score = box[keep], cls[keep], score[keep]
        if len(score) > MAX_NMS:
            top = np.argsort(-score, kind="stable")[:MAX_NMS]
            box, cls, score = box[top], cls[top], score[top]
        if not len(score):
            out.append(np.zeros((0, 6), np.float32))
            continue
        kept = greedy_nms(box + (cls * MAX_WH)[:, None].astype(np.float32), score, iou)[:max_det]
        rows = np.empty((len(kept), 6), np.float32)
        rows[:, :4], rows[:, 4], rows[:, 5] = box[kept], score[kept], cls[kept]
        out.append(rows)
    return out
