"""SQL access for the scheduler: its leadership lock, what its views hold due, and its emissions
(each marked once, in the transaction that publishes it)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from types import MappingProxyType
from uuid import UUID

import asyncpg

from relay import codec
from relay.database import Conn
from relay.journal import sole_record
from relay.planning import Emission, Row, StateUpdate
from relay.sql import query


@dataclass(frozen=True, slots=True, kw_only=True)
class DueWork:
    """What the scheduler's views hold at the start of a pass (one read-only snapshot). A view's
    rows keep its columns by name: a deployment may redefine the views (docs/database.md)."""

    contracts: tuple[Row, ...]
    licences: tuple[Row, ...]
    patches: tuple[Row, ...]
    tickets: tuple[Row, ...]
    compliance: tuple[Row, ...]
    states: dict[UUID, tuple[str, int]]


def _rows(records: Iterable[asyncpg.Record]) -> tuple[Row, ...]:
    return tuple(MappingProxyType(dict(r.items())) for r in records)


async def try_lead(conn: Conn, lock: int) -> bool:
    """Take the scheduler's session advisory lock if it is free."""
    return bool(await conn.fetchval(query("scheduler_try_lead"), lock))


async def due_work(
    conn: Conn, now: datetime, today: date, horizon_days: int, under_utilized_percent: float
) -> DueWork:
    """What is due at the pass's time `now` (`today` in the scheduler's time zone)."""
    async with conn.transaction(readonly=True):
        await conn.execute(query("compliance_threshold"), str(under_utilized_percent))
        return DueWork(
            contracts=_rows(await conn.fetch(query("contract_expirations"), today, horizon_days)),
            licences=_rows(await conn.fetch(query("license_expirations"), today, horizon_days)),
            patches=_rows(await conn.fetch(query("patch_backlog"), today)),
            tickets=_rows(await conn.fetch(query("ticket_clocks"), now)),
            compliance=_rows(await conn.fetch(query("license_compliance"))),
            states={
                r["license_id"]: (r["state"], r["episode"])
                for r in await conn.fetch(query("compliance_states"))
            },
        )


async def scheduler_marked(conn: Conn, entity_ids: Iterable[UUID]) -> set[tuple[str, UUID, str]]:
    """The (kind, entity, milestone) marks already written for these entities."""
    rows = await conn.fetch(query("scheduler_marked"), list(entity_ids))
    return {(r["kind"], r["entity_id"], r["milestone"]) for r in rows}


@sole_record("a scheduled event under a new id, and the mark that it was emitted")
async def emit_scheduled(
    conn: Conn,
    emission: Emission,
    event_id: UUID,
    states: Sequence[StateUpdate],
    traceparent: str | None = None,
) -> bool:
    """Mark, update compliance states and publish in one transaction (with `traceparent`, the
    journal keeps it as the event's trace context); False if already marked."""
    won = await conn.fetchval(
        query("scheduler_mark"), emission.kind, emission.entity_id, emission.milestone, event_id
    )
    await _set_states(conn, states)
    if won is None:
        return False
    if traceparent is not None:
        await conn.execute(query("set_traceparent"), traceparent)
    await conn.fetchval(query("publish"), codec.dumps(emission.payload | {"event_id": event_id}).decode())
    return True


@sole_record("the compliance episode an alert was emitted for (lost, it is alerted again)")
async def set_compliance_states(conn: Conn, states: Sequence[StateUpdate]) -> None:
    await _set_states(conn, states)


async def _set_states(conn: Conn, states: Sequence[StateUpdate]) -> None:
    for update in states:
        await conn.execute(query("compliance_set_state"), update.license_id, update.state, update.episode)
