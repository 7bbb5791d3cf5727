"""The commands: ``run``, ``render``, ``report``, ``analyze``, ``export``, ``bench``, ``serve``
(``python -m pipeline``), and the entry point of service jobs. May import every other package; none imports it."""

from pipeline.cli.main import main

__all__ = ["main"]
