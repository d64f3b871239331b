"""Stop and reload signals that arrive while the process is still starting.

Python's default for SIGTERM and SIGHUP is an abrupt death, and the imports alone take seconds on a
loaded machine: a stop sent then killed the daemon by signal, a reload killed it for good (systemd
counts death by SIGHUP as a clean exit and does not restart it). The entry point holds them until
the command knows what it is: the daemon adopts them, any other command gets them back.
"""

from __future__ import annotations

import signal
from types import FrameType

HELD = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

_held: list[signal.Signals] = []
_holding = False


def _hold(signum: int, _frame: FrameType | None) -> None:
    _held.append(signal.Signals(signum))


def hold() -> None:
    """From now on a stop or reload signal is kept for later, not acted on (the entry point's first step)."""
    global _holding
    for sig in HELD:
        signal.signal(sig, _hold)
    _holding = True


def release() -> None:
    """A command that is not the daemon: the usual handling again, and a held signal acts now."""
    global _holding
    if not _holding:
        return
    _holding = False
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    for sig in _take():
        signal.raise_signal(sig)


def adopt() -> list[signal.Signals]:
    """The daemon, its own handlers installed: the signals held until then, oldest first."""
    global _holding
    _holding = False
    return _take()


def _take() -> list[signal.Signals]:
    taken = list(_held)
    _held.clear()
    return taken
