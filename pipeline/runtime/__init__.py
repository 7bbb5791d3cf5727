"""The only package that runs Ray: the data path of a run, as a map.

    driver ─ joins Ray (``ray_session``), starts the video workers and the coordinator
    │        (``startup``), feeds the coordinator the backlog, shows progress, writes run.json
    │        (``launch`` is ``pipeline.run``)
    ├─ coordinator.Coordinator ─ the control plane: hands videos (or chunks of short clips)
    │     to workers (``assignment``), grants their commits and records their outcomes
    │     (``commit.VideoCommitter``: the manifest log), hands a dead or hung worker's videos to
    │     another; workers join when they are ready, however late, and leave idle at the tail
    │     (``coordinator_fleet``; its reports: ``worker_reports``). Nothing per batch reaches it.
    └─ video_worker.VideoWorker (a YoloActor, one per GPU) ─ owns its videos' whole data path:
          video_pass   its decoder tasks (``tasks.decode_video``, on its own node: frames stay
                       in the node's object store), each restarted after a death where it left
          local_engine its warmed detector, forward passes shared across open videos
                       (``packing``) behind a bounded window (``backpressure``)
          the writer   rows under hidden names; ``part_commits`` gathers short videos into
                       part files; put in place only once the coordinator granted the commit

What crosses Ray is typed (``messages``); Ray calls are made in one place (``ray_calls``), so the
logic runs without Ray in the tests (``tests/fakes.py``). Ray-free policies, tested on their own:
``assignment``, ``fleet`` (workers joining, lost and released), ``backpressure``, ``deadlines``,
``coalesce``, ``monitoring`` (memory, NVML, the
timeline), ``faults`` (fault injection for tests). Also ``metrics`` (Ray's metrics for
Prometheus), ``datasets`` (results as Ray Datasets), ``shared_output`` (the output seen by every
worker's node) and ``bench_contenders`` (the Ray side of the benchmark).

Imports: every package below it (``plan``, ``media``, ``inference``, ``output``, ``analysis``).
"""
