"""The driver's Ray session: join or start Ray (Ctrl-C held while it starts, Ray's start-up
chatter kept back), and a clean terminal at exit."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
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
    # Ctrl-C in the middle of ray.init() leaves some of Ray's processes running for good, so it
    # is held until Ray is up, then honoured (the caller shuts Ray down cleanly). A terminal's
    # Ctrl-C also reaches Ray's own processes, and Ray then logs the failures it causes (a
    # dashboard that did not start): those messages are held too, and dropped if so.
    held = []
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = (
        signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
        if in_main_thread
        else None
    )
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
        if held:
            ray_logs.clear()
            ray.shutdown()
            raise KeyboardInterrupt
    return True


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
