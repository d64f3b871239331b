"""Small asyncio helpers shared by the daemon's loops."""

from __future__ import annotations

import asyncio


async def wait_any(*events: asyncio.Event, within: float | None) -> bool:
    """Wait until any event is set or `within` seconds pass; True if an event was set."""
    if any(e.is_set() for e in events):
        return True
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        done, _ = await asyncio.wait(waiters, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
    return bool(done)


async def sleep_unless(stopping: asyncio.Event, seconds: float) -> None:
    """Sleep, but return early when `stopping` is set."""
    await wait_any(stopping, within=seconds)
