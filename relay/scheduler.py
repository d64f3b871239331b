"""The scheduler: the five time-based events, each emitted exactly once.

Time passes without any row changing, so contract and licence expiry, overdue patches, SLA
breaches and licence compliance cannot come from triggers. One instance at a time leads (a
session advisory lock on its own connection) and every emission is written with a unique mark in
the same transaction as `it_relay.publish()`. Planning is pure (`relay.planning`); the clock is
an argument.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import asyncpg

from relay import scheduler_queries
from relay.database import Conn
from relay.health import Heartbeats
from relay.logs import get_logger
from relay.metrics import Metrics
from relay.planning import Emission, Plan, plan_compliance, plan_expiring, plan_patches, plan_sla
from relay.settings import SchedulerSettings
from relay.supervisor import Loop, supervise
from relay.tracing import Tracing

log = get_logger("relay.scheduler")

# pg_try_advisory_lock key of the scheduler's leadership ("itsched" in ASCII).
LEADER_LOCK = 0x6974_7363_6865_64


class Scheduler:
    def __init__(
        self,
        settings: SchedulerSettings,
        *,
        metrics: Metrics,
        connect: Callable[[], Awaitable[asyncpg.Connection]],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        tracing: Tracing | None = None,
    ) -> None:
        self._settings = settings
        self._tracing = tracing
        self._metrics = metrics
        self._connect = connect
        self._clock = clock
        self._zone = ZoneInfo(settings.timezone)
        self.leading = asyncio.Event()
        self.passes = 0
        self._conn: asyncpg.Connection | None = None

    def loop(self) -> Loop:
        return Loop(
            "scheduler",
            self.step,
            self._settings.interval_s,
            db_error_wait_s=min(self._settings.interval_s, 5.0),
            close=self._lose,
        )

    async def run(self, stopping: asyncio.Event) -> None:
        """Alone (tests, one-off use): the scheduler's loop under its own heartbeats."""
        await supervise(self.loop(), stopping, Heartbeats())

    async def step(self) -> float | None:
        """Lead when the lock is free; one pass while leading."""
        try:
            if self._conn is None:
                self._conn = await self._connect()
            if not self.leading.is_set():
                if not await scheduler_queries.try_lead(self._conn, LEADER_LOCK):
                    return None
                self.leading.set()
                self._metrics.scheduler_leading.set(1)
                log.info("scheduler leading")
            try:
                await self.run_once(self._conn, self._clock())
            except asyncpg.UndefinedTableError as exc:
                # Still leading: the deployment lacks the views, which an operator can add.
                log.error(
                    "scheduler views missing: run `it-relay db upgrade --reference-schema`"
                    " or define them (docs/database.md)",
                    error=str(exc),
                )
        except Exception:
            # Losing the connection loses the lock: stop emitting until we hold it again.
            await self._lose()
            raise
        return None

    async def _lose(self) -> None:
        """Give up leadership and the connection that held it."""
        if self.leading.is_set():
            log.info("scheduler no longer leading")
        self.leading.clear()
        self._metrics.scheduler_leading.set(0)
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 5)

    async def plan(self, conn: Conn, now: datetime) -> Plan:
        """Everything due at `now` that has not been emitted yet (reads only)."""
        s = self._settings
        today = now.astimezone(self._zone).date()
        due = await scheduler_queries.due_work(
            conn, now, today, max(s.expiry_milestones_days), s.compliance.under_utilized_percent
        )
        plan = plan_compliance(
            due.compliance, due.states, now, s.compliance.warning_percent, s.compliance.critical_percent
        )
        plan.emissions[:0] = [
            *plan_expiring(due.contracts, due.licences, today, now, s.expiry_milestones_days),
            *plan_patches(due.patches, today, now, s.patch_overdue_days),
            *plan_sla(due.tickets, now, s.sla_hours),
        ]
        marked = await scheduler_queries.scheduler_marked(conn, {e.entity_id for e in plan.emissions})
        plan.emissions = [e for e in plan.emissions if (e.kind, e.entity_id, e.milestone) not in marked]
        return plan

    async def run_once(self, conn: Conn, now: datetime, *, dry_run: bool = False) -> list[Emission]:
        """One pass at `now`; returns what was emitted (or, with dry_run, what would be)."""
        if self._tracing is None or dry_run:
            return await self._pass(conn, now, dry_run=dry_run)
        # A trace of its own; each emission's span is the trace context the journal keeps.
        with self._tracing.scheduler_pass():
            return await self._pass(conn, now, dry_run=dry_run)

    async def _pass(self, conn: Conn, now: datetime, *, dry_run: bool) -> list[Emission]:
        plan = await self.plan(conn, now)
        self.passes += 1
        if dry_run:
            return plan.emissions
        emitted: list[Emission] = []
        for emission in plan.emissions:
            event_id = uuid.uuid4()
            states = [u for u in plan.states if u.license_id == emission.entity_id]
            with self._emitting(emission, event_id) as traceparent:
                if not await scheduler_queries.emit_scheduled(conn, emission, event_id, states, traceparent):
                    continue  # another scheduler emitted it first
                emitted.append(emission)
                self._metrics.scheduler_emitted.labels(emission.event_type).inc()
                log.info(
                    "scheduled event emitted",
                    event_id=str(event_id),
                    event_type=emission.event_type,
                    entity_id=str(emission.entity_id),
                    milestone=emission.milestone,
                )
        emitting = {e.entity_id for e in plan.emissions}
        await scheduler_queries.set_compliance_states(
            conn, [u for u in plan.states if u.license_id not in emitting]
        )
        return emitted

    def _emitting(self, emission: Emission, event_id: uuid.UUID) -> AbstractContextManager[str | None]:
        """An emission's publish span when tracing (its traceparent for the journal), else nothing."""
        if self._tracing is None:
            return contextlib.nullcontext()
        return self._tracing.emitting(emission.event_type, event_id)
