"""The daemon's maintenance loops: housekeeping (schema check, instance record, gauges) and retention."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection

from relay.database import DB_ERRORS
from relay.gateway import HousekeepingPort, RetentionPort
from relay.logs import get_logger
from relay.metrics import Metrics
from relay.model import Instance, SubscriberGauges
from relay.settings import RetentionSettings
from relay.supervisor import Loop

_DAY_S = 86400.0

log = get_logger("relay.maintenance")


class Housekeeping:
    """Every poll interval: the schema current, this instance on record, stragglers held (rows routed
    behind a head that went dead meanwhile), and the gauges operators alert on."""

    def __init__(
        self,
        store: HousekeepingPort,
        served: Collection[str],
        metrics: Metrics,
        on_schema: Callable[[bool], None],
        every_s: float,
        me: Callable[[], Instance],
    ) -> None:
        self._store = store
        self._served = served
        self._metrics = metrics
        self._on_schema = on_schema
        self._every_s = every_s
        self._me = me
        # What the last step saw, for systemd's STATUS line.
        self.gauges: dict[str, SubscriberGauges] = {}

    def loop(self) -> Loop:
        return Loop("housekeeping", self.step, self._every_s, close=self._leave)

    async def step(self) -> float | None:
        self._on_schema(await self._store.schema_current())
        # Alive: seen within three poll intervals (and a margin, as the loops' heartbeats).
        alive = await self._store.instance_heartbeat(self._me(), 3 * self._every_s + 10)
        self._metrics.instances.set(alive)
        self._metrics.unrouted.set(await self._store.unrouted_events())
        if stragglers := await self._store.hold_stragglers():
            log.info(
                "deliveries routed while their entity's head went dead are held now", deliveries=stragglers
            )
        gauges = self.gauges = await self._store.subscriber_gauges()
        held = await self._store.entities_held()
        none = SubscriberGauges(pending=0, dead=0, oldest_pending_s=0.0)
        for name in set(gauges) | set(held) | set(self._served):
            g = gauges.get(name, none)
            self._metrics.backlog.labels(name).set(g.pending)
            self._metrics.dead.labels(name).set(g.dead)
            self._metrics.oldest_pending.labels(name).set(g.oldest_pending_s)
            h = held.get(name)
            self._metrics.entities_held.labels(name).set(h.entities if h else 0)
            self._metrics.entities_held_oldest.labels(name).set(h.oldest_s if h else 0)
        return None

    async def _leave(self) -> None:
        """A clean stop takes this instance off the list at once (a crash ages out)."""
        with contextlib.suppress(*DB_ERRORS):
            await self._store.instance_gone(self._me().owner)


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
