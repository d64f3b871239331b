"""Small asyncio helpers shared by the daemon's loops."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from relay.logs import get_logger

log = get_logger("relay.aio")


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


def said_task(coro: Coroutine[Any, Any, None], what: str) -> asyncio.Task[None]:
    """A task whose failure is logged at ERROR when it ends: a task nobody awaits never fails unseen."""
    task = asyncio.get_running_loop().create_task(coro, name=what)
    task.add_done_callback(_say_failure)
    return task


def _say_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("task failed", task=task.get_name(), exc_info=exc)
