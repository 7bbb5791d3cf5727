"""The only package that runs Ray: the decoder tasks and the ``YoloActor`` (``workers``), the
coordinator, the driver, the project's Ray metrics, Ray Datasets of results (``datasets``), and
``launch`` (``pipeline.run``). Its policies are Ray-free and tested on their own:
``backpressure`` (the dispatch window), ``deadlines`` (when an actor counts as hung),
``monitoring`` (memory, NVML, the run timeline) and ``faults`` (fault injection for tests).

Imports: every package below it (``plan``, ``media``, ``inference``, ``output``, ``analysis``).
"""
