"""The daemon's maintenance loops: the schema check with the backlog gauges, and retention."""

from __future__ import annotations

from collections.abc import Callable, Collection

from relay.gateway import HousekeepingPort, RetentionPort
from relay.metrics import Metrics
from relay.settings import RetentionSettings
from relay.supervisor import Loop

_DAY_S = 86400.0


class Housekeeping:
    """Every poll interval: is the schema still current, and how deep is each subscriber's backlog."""

    def __init__(
        self,
        store: HousekeepingPort,
        served: Collection[str],
        metrics: Metrics,
        on_schema: Callable[[bool], None],
        every_s: float,
    ) -> None:
        self._store = store
        self._served = served
        self._metrics = metrics
        self._on_schema = on_schema
        self._every_s = every_s

    def loop(self) -> Loop:
        return Loop("housekeeping", self.step, self._every_s)

    async def step(self) -> float | None:
        self._on_schema(await self._store.schema_current())
        counts = await self._store.backlog()
        held = await self._store.entities_held()
        for name in set(counts) | set(held) | set(self._served):
            self._metrics.backlog.labels(name).set(counts.get(name, 0))
            h = held.get(name)
            self._metrics.entities_held.labels(name).set(h.entities if h else 0)
            self._metrics.entities_held_oldest.labels(name).set(h.oldest_s if h else 0)
        return None


class Retention:
    """Prune what retention allows, one bounded batch per step, every retention.interval_s."""

    def __init__(self, store: RetentionPort, settings: RetentionSettings, served: Collection[str]) -> None:
        self._store = store
        self._settings = settings
        self._served = served

    def loop(self) -> Loop:
        return Loop("retention", self.step, self._settings.interval_s)

    async def step(self) -> float | None:
        r = self._settings
        deleted = await self._store.prune(
            r.delivered_days * _DAY_S, r.dead_days * _DAY_S, r.rejected_days * _DAY_S, self._served
        )
        # Until a batch comes back empty, the next one at once (the supervisor checks for shutdown).
        return 0 if deleted else None
