"""The commands: ``run``, ``render``, ``report``, ``bench``, ``serve`` (``python -m pipeline``), and
the entry point of service jobs. May import every other package; none imports it."""

from pipeline.cli.main import main

__all__ = ["main"]
