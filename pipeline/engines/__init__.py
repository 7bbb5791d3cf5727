"""Inference engines: which one a run uses, building it from ``.pt`` weights, and running it.

- ``choice``: the pure decision (``--engine auto|torch|openvino|onnx|tensorrt``).
- ``cache``: exported engines cached per node, keyed by content and versions, built once under a
  file lock and published atomically.
- ``export``: the exporter, run in a child process so the actor never imports torch for it.
- ``nms``: ultralytics' non-maximum suppression in numpy.
- ``lean``: OpenVINO and ONNX Runtime detectors that import neither torch nor ultralytics.
"""
