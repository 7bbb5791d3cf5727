"""Errors the command line turns into exit statuses."""

from __future__ import annotations

import signal


class UsageError(Exception):
    """Bad usage: no inputs, an unwritable output, a model that cannot be found. Exit status 2."""


class Interrupted(Exception):
    """SIGINT or SIGTERM stopped the run after it cleaned up. Exit status 128 + signal number."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
