"""Videos in: a video's identity (``source``), PyAV decoding with exact frame indices and
timestamps into letterboxed batches (``decode``), which frames a run keeps and which packets it
need not decode (``sampling``), segment decoding of long videos (``segments``), ultralytics'
letterbox geometry (``letterbox``), and generated sample videos (``samples``).

Imports: ``locations`` (videos on object storage); never Ray.
"""
