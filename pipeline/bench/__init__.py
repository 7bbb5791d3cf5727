"""The benchmark (``harness``: the per-frame loop, Ray Data and this pipeline on the same input)
and the service's load test (``loadtest``). Ray is used only through ``runtime``.
"""
