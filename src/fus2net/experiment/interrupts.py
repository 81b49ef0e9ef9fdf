"""SIGTERM and SIGINT as an exception, so that a stopped job marks its runs KILLED on the way out.

Python's default SIGTERM ends the process at once, and Lightning turns Ctrl+C (SIGINT) into
`sys.exit(1)`: either way the MLflow runs would be left RUNNING or FAILED. Inside
`stop_on_signals` both raise `JobInterrupted` in the main thread instead; every open run is
ended KILLED by the `except BaseException` blocks it passes through, and the process exits with
the shell's code for the signal (128 + its number). SIGKILL cannot be caught: the next job of the
same cell finds the run orphaned (fus2net.tracking.resume) and marks it KILLED.

A signal whose Python handler someone else installed is left to them: submitit, under SLURM, ignores
SIGTERM on purpose so that its USR2 handler can requeue the task (it then exits with
`sys.exit`, which the runs record as KILLED too).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class JobInterrupted(BaseException):
    """The job was told to stop by a signal (a BaseException, like KeyboardInterrupt)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextmanager
def stop_on_signals(signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> Iterator[None]:
    """Raise `JobInterrupted` on the first of `signals`; ignore repeats while runs are closed.

    Only the main thread can install handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopping = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if stopping:  # a second Ctrl+C must not cut the KILLED bookkeeping short
            log.warning("%s again: already stopping", signal.Signals(signum).name)
            return
        stopping = True
        log.warning(
            "%s received: marking the runs KILLED and stopping", signal.Signals(signum).name
        )
        raise JobInterrupted(signum)

    # SIG_DFL, SIG_IGN (a background job's SIGINT), None or Python's own Ctrl+C handler are ours
    # to replace; a Python function is someone else's (submitit's) and stays.
    ours = [
        s
        for s in signals
        if not callable(handler_now := signal.getsignal(s))
        or handler_now is signal.default_int_handler
    ]
    previous = {s: signal.signal(s, handler) for s in ours}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
