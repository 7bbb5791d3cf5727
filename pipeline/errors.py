"""Errors the command line turns into exit statuses."""

from __future__ import annotations

import signal
from dataclasses import dataclass


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


class StartupError(Exception):
    """The workers could not start (not a mistake in the command): exit status 1, one line."""


class RunStalled(Exception):
    """The coordinator stopped answering, or died: exit status 1, one line; complete videos are kept."""


@dataclass(frozen=True)
class ActorStartFailure:
    """What a ``YoloActor`` answers instead of its model facts when its model did not load: the
    driver reports it as one line, instead of Ray printing the actor's traceback."""

    message: str
    usage: bool  # a mistake in the command (a model that is not there or not a detector, unknown classes)
