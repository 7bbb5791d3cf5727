"""Everything decided before Ray starts: the inputs walked lazily (``inputs``), one run per
output folder (``lease``), actors and CPUs from the cluster's resources (``placement``), and the
plan itself (``planning``: the model and classes checked, the output prepared, which videos need
work).

Imports: ``config``, ``errors``, ``locations``, ``media``, ``inference``, ``output``; never Ray.
"""
