"""The Grafana dashboard (``deploy/grafana/pipeline-dashboard.json``) reads only metrics the
pipeline exports, and each of them is recorded on the run's one data path (a panel over a
metric nothing sets is flat: the batches-in-flight panel was, while only the earlier data
path's actor pool set it). Read from the source: no Ray."""

from __future__ import annotations

import json
import re

from conftest import REPO

PIPELINE = REPO / "pipeline"
DASHBOARD = REPO / "deploy" / "grafana" / "pipeline-dashboard.json"


def dashboard_metrics() -> set[str]:
    """The project's metrics the dashboard's queries name, as the pipeline names them."""
    exprs = re.findall(r'"expr":\s*"([^"]*)"', DASHBOARD.read_text())
    assert exprs, "no query found in the dashboard"
    names = {n for e in exprs for n in re.findall(r"\bray_(pipeline_\w+)", e)}
    return {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in names}


def declared_metrics() -> dict[str, str]:
    """Metric name -> the ``PipelineMetrics`` attribute that holds it."""
    source = (PIPELINE / "runtime" / "metrics.py").read_text()
    return dict(
        (name, attr)
        for attr, name in re.findall(r"self\.(\w+) = metrics\.\w+\(\s*\"(pipeline_\w+)\"", source)
    )


def test_the_dashboard_reads_only_metrics_the_pipeline_exports():
    json.loads(DASHBOARD.read_text())  # a dashboard Grafana can import
    declared = declared_metrics()
    assert declared, "no metric found in pipeline/runtime/metrics.py"
    unknown = dashboard_metrics() - set(declared)
    assert not unknown, f"the dashboard reads metrics the pipeline does not export: {unknown}"


def test_each_metric_the_dashboard_reads_is_recorded_somewhere():
    declared = declared_metrics()
    sources = {
        path: path.read_text() for path in PIPELINE.rglob("*.py") if path.name != "metrics.py"
    }
    never = []
    for name in sorted(dashboard_metrics()):
        attr = declared[name]
        pattern = re.compile(rf"\.{attr}\.(set|inc|observe)\(")
        if not any(pattern.search(text) for text in sources.values()):
            # recorded through a helper of PipelineMetrics itself (record_gpu)
            own = (PIPELINE / "runtime" / "metrics.py").read_text()
            if not re.search(rf"self\.{attr}\.(set|inc|observe)\(", own):
                never.append(name)
    assert not never, f"metrics the dashboard reads but nothing records: {never}"
