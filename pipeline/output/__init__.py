"""The output contract: the Parquet schemas (``schema``), the per-video atomic writer (``writer``),
the manifest and its log (``manifest``), a finished video's record and the run's counters
(``outcomes``), publishing to object storage (``store``), the progress file (``progress``), and
the readers, with pruning (``readers``).

Imports: ``config``, ``errors``, ``locations``, ``media``, ``inference``; never Ray.
"""
