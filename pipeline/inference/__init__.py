"""Frames to boxes: the detectors (torch in ``torch_detector``; OpenVINO and ONNX without torch in
``lean_detector``; ``synthetic`` for the coordination benchmark), opened by ``open``; the
``--engine`` choice (``engines``), the per-node engine cache and exporter (``engine_cache``,
``export``), numpy NMS (``nms``), the model's file and class names read without torch
(``model_ref``), and the result types (``detections``).

Imports: ``config``, ``errors``, ``media``; never Ray.
"""
