"""What is computed from stored results: ByteTrack over a video's stored boxes (``tracking``).

Imports: ``inference`` (result types), ``output`` (schemas); never Ray.
"""
