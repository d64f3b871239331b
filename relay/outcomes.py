"""The outcome writer: outcomes are buffered and written in batched round trips, then their slots freed."""

from __future__ import annotations

import asyncio
import time

from relay.database import DB_ERRORS
from relay.gateway import DeliveryPort
from relay.lanes import Slot
from relay.logs import get_logger
from relay.model import BATCH_LIMIT, DeliveryResult
from relay.supervisor import Loop

log = get_logger("relay.dispatch")


class OutcomeWriter:
    """Buffers outcomes and writes them in batched round trips; then releases their slots."""

    def __init__(self, store: DeliveryPort, owner: str) -> None:
        self._store = store
        self._owner = owner
        self._pending: list[tuple[DeliveryResult, Slot]] = []
        self._ready = asyncio.Event()

    def put(self, result: DeliveryResult, slot: Slot) -> None:
        slot.queued = True
        self._pending.append((result, slot))
        self._ready.set()

    def loop(self, idle_s: float) -> Loop:
        return Loop("outcome-writer", self.step, idle_s, wake=self._ready, db_error_wait_s=0.5)

    async def step(self) -> float | None:
        """Write what is queued (database errors go to the supervisor; the outcomes stay queued)."""
        if not self._pending:
            return None
        # A moment's linger turns a burst of outcomes into one round trip.
        await asyncio.sleep(0.002)
        self._ready.clear()
        await self._write_batch()
        return 0 if self._pending else None

    async def _write_batch(self) -> None:
        batch = self._pending[:BATCH_LIMIT]
        await self._store.write_results([r for r, _ in batch], self._owner)
        del self._pending[: len(batch)]
        for result, slot in batch:
            slot.release(result.status)

    async def flush(self, deadline: float) -> None:
        """At shutdown: write everything queued, retrying database errors until `deadline`."""
        while self._pending:
            try:
                await self._write_batch()
            except DB_ERRORS as exc:
                log.warning(
                    "writing delivery outcomes failed, will retry",
                    error=type(exc).__name__,
                    pending=len(self._pending),
                )
                if time.monotonic() > deadline:
                    # Unwritten outcomes are redelivered after their leases expire: at-least-once.
                    for _, slot in self._pending:
                        slot.release()
                    self._pending.clear()
                    return
                await asyncio.sleep(0.5)
