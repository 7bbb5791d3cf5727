"""The errors a user can meet, each with the exit status it ends a command with.

Every error the command line, ``pipeline.run``, the job entry point and the service turn into an
exit status (or an HTTP status) derives from ``PipelineError`` and carries ``exit_code``: the
statuses are decided here, once, not by tuples of classes at each caller.
"""

from __future__ import annotations

import signal

EXIT_OK = 0
EXIT_UNEXPECTED = 1  # anything unexpected: a bug, a dead coordinator
EXIT_USAGE = 2  # a mistake in the command: nothing was started or changed
# some videos failed or were only partly readable; all the others are complete
EXIT_VIDEOS_FAILED = 3


class PipelineError(Exception):
    """An error with a clear one-line message and the exit status it ends the command with."""

    EXIT_CODE = EXIT_UNEXPECTED

    @property
    def exit_code(self) -> int:
        return self.EXIT_CODE


class UsageError(PipelineError):
    """Bad usage: no inputs, an unwritable output, a model that cannot be found. Exit status 2."""

    EXIT_CODE = EXIT_USAGE


class Interrupted(PipelineError):
    """SIGINT or SIGTERM stopped the run after it cleaned up. Exit status 128 + signal number."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StartupError(PipelineError):
    """The workers could not start (not a mistake in the command): exit status 1, one line."""


class RunStalled(PipelineError):
    """The coordinator stopped answering, or died: exit status 1, one line; complete videos are kept."""
