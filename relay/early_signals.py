"""Stop and reload signals that arrive while the process is still starting.

Python's default for SIGTERM and SIGHUP is an abrupt death, and the imports alone take seconds on a
loaded machine: a stop sent then killed the daemon by signal, a reload killed it for good (systemd
counts death by SIGHUP as a clean exit and does not restart it). The entry point holds them until
the command knows what it is: the daemon adopts them, any other command gets them back.
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any

HELD = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

_held: list[signal.Signals] = []
# The handlers found at hold(), put back by release(); a signal the caller ignores (nohup, a
# background job's SIGINT) is left ignored, never held.
_previous: dict[signal.Signals, Any] = {}


def _hold(signum: int, _frame: FrameType | None) -> None:
    _held.append(signal.Signals(signum))


def hold() -> None:
    """From now on a stop or reload signal is kept for later, not acted on (the entry point's first step)."""
    for sig in HELD:
        previous = signal.getsignal(sig)
        if previous is not signal.SIG_IGN and sig not in _previous:
            _previous[sig] = previous
            signal.signal(sig, _hold)


def release() -> None:
    """A command that is not the daemon: the handlers it started with again, and a held signal acts now."""
    if not _previous:
        return
    # Blocked while the handlers change hands: one arriving in between waits for the restored handler
    # (Python would otherwise drop it as a race).
    signal.pthread_sigmask(signal.SIG_BLOCK, HELD)
    try:
        for sig, previous in _previous.items():
            signal.signal(sig, previous)
        _previous.clear()
        for sig in _take():
            signal.raise_signal(sig)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD)


def adopt() -> list[signal.Signals]:
    """The daemon, its own handlers installed: the signals held until then, oldest first."""
    _previous.clear()
    return _take()


def _take() -> list[signal.Signals]:
    taken = list(_held)
    _held.clear()
    return taken
