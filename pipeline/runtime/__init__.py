"""The only package that runs Ray. The driver (``driver``, behind ``launch``: ``pipeline.run``)
starts the ``YoloActor``s and the decoder and tracking tasks (``workers``) and the coordinator
(``coordinator``), whose logic is in parts that reach Ray only through ``ray_calls`` and the
actor handles: ``actor_pool`` (the dispatch window, actor health, re-dispatch), ``video_pass``
(one video's decoders, batches and writer), ``commit`` (tracking, the files put in place, the
record) and ``context`` (what they share). What crosses Ray is typed (``messages``). Ray-free
policies, tested on their own: ``backpressure``, ``deadlines``, ``monitoring`` (memory, NVML,
the timeline), ``faults`` (fault injection for tests). Also ``metrics`` (Ray's metrics for
Prometheus), ``datasets`` (results as Ray Datasets) and ``bench_contenders`` (the Ray side of
the benchmark).

Imports: every package below it (``plan``, ``media``, ``inference``, ``output``, ``analysis``).
"""
