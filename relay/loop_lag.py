"""How late the event loop runs what is due: the relay waiting for a core, seen from inside.

A step asks to run again after a fixed interval and records how much later than that it ran. On a
host whose cores other work keeps busy, every delivery waits that long at each of its steps; the
relay's own latency histograms cannot tell that wait from slow subscribers or a slow database.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import Histogram

from relay.supervisor import Loop

# Four samples a second: cheap, and a stall of a quarter second or more is never missed.
SAMPLE_EVERY_S = 0.25


class LoopLag:
    """The `event-loop-lag` loop: each step records its tardiness and asks for the next one."""

    def __init__(
        self,
        histogram: Histogram,
        every_s: float = SAMPLE_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._histogram = histogram
        self._every_s = every_s
        self._clock = clock
        self._due: float | None = None

    def loop(self) -> Loop:
        return Loop("event-loop-lag", self.step, self._every_s)

    async def step(self) -> float:
        now = self._clock()
        if self._due is not None:
            # Early never happens with a monotonic clock and a timer; clamped all the same.
            self._histogram.observe(max(0.0, now - self._due))
        self._due = now + self._every_s
        return self._every_s
