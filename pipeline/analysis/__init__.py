"""What is computed from stored results: ByteTrack over a video's stored boxes (``tracking``),
and lines and zones counted over the stored tracks (``spec``: what to count, ``counting``: the
pure computation, ``analyze``: reading a run and writing ``OUT/analysis/<name>/``).

Imports: ``errors``, ``config``, ``inference`` (result types, class names), ``output``
(schemas, readers); never Ray.
"""
