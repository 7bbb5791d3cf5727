"""The driver's Ray session: join or start Ray (a Ctrl-C while it starts kept from Ray's own
processes, its start-up chatter kept back), and a clean terminal at exit."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading

import ray

PASSED_ENV = ("YOLO_OFFLINE", "YOLO_CONFIG_DIR", "ULTRALYTICS_SAFE_LOAD")


def connect(address: str | None) -> bool:
    """Join or start Ray; returns whether this call started it (and so must shut it down)."""
    if ray.is_initialized():
        return False
    env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
    if address is None and os.environ.get("RAY_ADDRESS"):
        env = {}  # inside `ray job submit`: the job's runtime env already applies, and Ray refuses to merge
    # Ray 2.60 warns on every start that token authentication is on (it is, and stays on); the
    # run's own output is what a user needs to read.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
        logging.ERROR
    )
    # Ctrl-C in the middle of ray.init() leaves some of Ray's processes running for good, and a
    # terminal's Ctrl-C reaches Ray's own processes too: a dashboard interrupted while it starts
    # hangs, and ray.init() then waits a minute for it. So while Ray starts, SIGINT is ignored,
    # which Ray's processes inherit (the driver stops them cleanly later), and a watcher in the
    # driver's process group notices the terminal's Ctrl-C. Ray's failure messages caused by an
    # interruption are held, and dropped if so.
    in_main_thread = threading.current_thread() is threading.main_thread()
    watcher = _InterruptWatcher() if in_main_thread else None
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if in_main_thread else None
    with _held_ray_logs() as ray_logs:
        try:
            ray.init(
                address=address,
                runtime_env={"env_vars": env} if env else None,
                logging_level=logging.WARNING,
                log_to_driver=True,
            )
        finally:
            if in_main_thread:
                signal.signal(signal.SIGINT, previous)
            interrupted = watcher is not None and watcher.close()
        if interrupted:
            ray_logs.clear()
            ray.shutdown()
            raise KeyboardInterrupt
    return True


class _InterruptWatcher:
    """A child in the driver's process group that a terminal's Ctrl-C ends (it keeps Python's
    default SIGINT handling) while the driver ignores SIGINT; otherwise it waits for its stdin
    to close. A SIGINT sent to the driver's pid alone, while Ray starts, is not seen."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-S", "-c", "import sys; sys.stdin.read()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def close(self) -> bool:
        """Whether a Ctrl-C came; the watcher is gone after this."""
        interrupted = self.process.poll() is not None
        with contextlib.suppress(OSError):
            self.process.stdin.close()  # type: ignore[union-attr]
        self.process.wait()
        return interrupted


@contextlib.contextmanager
def _held_ray_logs():
    """Ray's log records are kept back while the block runs, then shown, unless the block
    cleared them or raised."""
    records: list[logging.LogRecord] = []
    handlers = logging.getLogger("ray").handlers

    def hold(record: logging.LogRecord) -> bool:
        records.append(record)
        return False

    for handler in handlers:
        handler.addFilter(hold)
    try:
        yield records
    finally:
        for handler in handlers:
            handler.removeFilter(hold)
    for record in records:
        logging.getLogger(record.name).handle(record)


def no_terminal_reset_at_exit() -> None:
    """Ray's CLI logger calls ``colorama.init()`` when imported, whose exit hook writes a stray
    ``ESC[0m`` after the run's summary on a terminal. The run prints no colours to reset."""
    try:
        import atexit

        import colorama.initialise

        atexit.unregister(colorama.initialise.reset_all)
    except Exception:  # another colorama, or none: nothing registered
        pass
