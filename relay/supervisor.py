"""One runner for every long-running loop: wake, step, back off on database errors, restart after
a bug with an ERROR line, heartbeat. Written once; each loop supplies only its step.

A step does one round of work and returns how long it wants to wait before the next (None: its
interval; 0: at once). A set wake event cuts the wait short. A loop's heartbeat beats before each
step, so `/readyz` goes 503 only when a step itself hangs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from relay.aio import wait_any
from relay.database import DB_ERRORS
from relay.health import Heartbeats
from relay.logs import get_logger

log = get_logger("relay.supervisor")

Step = Callable[[], Awaitable[float | None]]
# After a bug, a loop waits this long before it runs again: never a hot loop of tracebacks.
RESTART_WAIT_S = 1.0


@dataclass(frozen=True, slots=True)
class Loop:
    """A named loop: its step, its interval (the longest wait between steps) and what wakes it."""

    name: str
    step: Step
    every_s: float
    wake: asyncio.Event | None = None
    db_error_wait_s: float = 1.0
    # Called once when the loop ends (shutdown): close what the step holds open.
    close: Callable[[], Awaitable[None]] | None = None
    # Heartbeat allowance when a step may take longer than the interval (a batch of pruning).
    beat_every_s: float | None = None
    tags: dict[str, str] = field(default_factory=dict)


async def supervise(loop: Loop, stopping: asyncio.Event, heartbeats: Heartbeats) -> None:
    """Run `loop` until `stopping`; it never ends early, and every failure is logged once."""
    beat = heartbeats.register(loop.name, loop.beat_every_s or loop.every_s)
    events = [e for e in (loop.wake, stopping) if e is not None]
    try:
        while not stopping.is_set():
            beat()
            if loop.wake is not None:
                loop.wake.clear()
            wait = await _step(loop)
            if wait is None:
                wait = loop.every_s
            if wait > 0:
                await wait_any(*events, within=wait)
            else:
                await asyncio.sleep(0)  # busy, but never starving the other loops
    finally:
        heartbeats.forget(loop.name)
        if loop.close is not None:
            try:
                await loop.close()
            except Exception:
                log.exception("closing a loop failed", loop=loop.name, **loop.tags)


async def _step(loop: Loop) -> float | None:
    try:
        return await loop.step()
    except DB_ERRORS as exc:
        log.warning("database error, will retry", loop=loop.name, error=type(exc).__name__, **loop.tags)
        return loop.db_error_wait_s
    except Exception:
        log.exception("loop failed unexpectedly, restarting it", loop=loop.name, **loop.tags)
        return RESTART_WAIT_S


async def keep_running(
    name: str, run: Callable[[asyncio.Event], Awaitable[None]], stopping: asyncio.Event
) -> None:
    """A component with its own life cycle (it returns only at shutdown): restarted, with an ERROR
    line, if it fails or returns early."""
    while not stopping.is_set():
        try:
            await run(stopping)
        except Exception:
            log.exception("loop failed unexpectedly, restarting it", loop=name)
        else:
            if not stopping.is_set():
                log.error("loop ended unexpectedly, restarting it", loop=name)
        await wait_any(stopping, within=RESTART_WAIT_S)


async def supervise_all(loops: Sequence[Loop], stopping: asyncio.Event, heartbeats: Heartbeats) -> None:
    """Every loop at once, until `stopping`."""
    await asyncio.gather(
        *(asyncio.create_task(supervise(loop, stopping, heartbeats), name=loop.name) for loop in loops)
    )
