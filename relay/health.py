"""Heartbeats of the long-running loops: a loop that stops coming round is named, not hidden."""

from __future__ import annotations

import time
from collections.abc import Callable


class Heartbeats:
    """When each loop last came round, and how long it may be silent before it counts as stalled."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last: dict[str, float] = {}
        self._allowed: dict[str, float] = {}

    def register(self, name: str, every_s: float) -> Callable[[], None]:
        """A loop that comes round at least every `every_s` seconds; returns its beat function."""
        # Three missed rounds and a margin: a busy machine delays a loop, it does not stop it.
        self._allowed[name] = 3 * every_s + 10
        self._last[name] = self._clock()
        return lambda: self.beat(name)

    def beat(self, name: str) -> None:
        self._last[name] = self._clock()

    def forget(self, name: str) -> None:
        """The loop ended on purpose (shutdown)."""
        self._last.pop(name, None)
        self._allowed.pop(name, None)

    def stalled(self) -> list[str]:
        """The loops silent for longer than they may be, in name order."""
        now = self._clock()
        return sorted(n for n, last in self._last.items() if now - last > self._allowed[n])
