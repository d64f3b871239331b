"""SQL access for what is on record of the relay as a whole: the operators' actions
(it_relay.audit: written by each action's gateway function in the action's own transaction, read
by `audit list` and `deliveries show`) and the instances running (it_relay.instances, `status`)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Final
from uuid import UUID

import asyncpg

from relay import codec
from relay.database import Conn
from relay.journal import sole_record
from relay.model import AuditAction, AuditEntry, LiveInstance
from relay.sql import query

# Event ids kept per action: a bulk replay of a million deliveries records this many of them.
SAMPLE: Final = 1000


@sole_record("an operator's action on record")
async def record(conn: Conn, action: AuditAction, *, count: int | None, event_ids: Iterable[UUID]) -> None:
    """Record `action` in the caller's transaction: what it touched (`count`, a sample of ids)."""
    sample = list(dict.fromkeys(event_ids))[:SAMPLE]
    await conn.execute(
        query("audit_record"),
        action.action,
        action.os_user,
        action.host,
        codec.dumps(dict(action.arguments)).decode(),
        count,
        sample,
        action.subscriber,
        action.reason,
    )


async def entries(conn: Conn, *, since: datetime | None, limit: int) -> list[AuditEntry]:
    """Newest first."""
    return [_entry(r) for r in await conn.fetch(query("audit_list"), since, limit)]


async def of_event(conn: Conn, event_id: UUID) -> list[AuditEntry]:
    """The actions that touched `event_id` (recorded in their sample), oldest first."""
    return [_entry(r) for r in await conn.fetch(query("audit_of_event"), event_id)]


def _entry(r: asyncpg.Record) -> AuditEntry:
    return AuditEntry(
        id=r["id"],
        at=r["at"],
        action=r["action"],
        db_role=r["db_role"],
        os_user=r["os_user"],
        host=r["host"],
        arguments=codec.loads(r["arguments"]),
        count=r["count"],
        event_ids=tuple(r["event_ids"]),
        subscriber=r["subscriber"],
        reason=r["reason"],
    )


async def live_instances(conn: Conn, alive_within_s: float) -> list[LiveInstance]:
    """The instances that recorded themselves within `alive_within_s`."""
    return [
        LiveInstance(
            host=r["host"],
            pid=r["pid"],
            version=r["version"],
            config=r["config"],
            subscribers=tuple(r["subscribers"]),
            scheduler_leader=r["scheduler_leader"],
            started_at=r["started_at"],
            heartbeat_age_s=r["heartbeat_age_s"],
        )
        for r in await conn.fetch(query("live_instances"), alive_within_s)
    ]
