"""What PostgreSQL spends on a scenario: its processes' CPU, transactions, WAL and HOT updates.

The server's CPU is the postmaster's process tree: the live backends' own time plus what the
postmaster has reaped from exited ones (cutime), so a connection closed mid-run still counts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import asyncpg

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of one process."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / TICK


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of a process, its exited children it reaped, and its live children."""
    fields = _stat(root)
    total = sum(int(fields[i]) for i in (11, 12, 13, 14))
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            child = _stat(int(entry.name))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if int(child[1]) == root:
            total += int(child[11]) + int(child[12])
    return total / TICK


async def postmaster_pid(dsn: str) -> int | None:
    """The server's postmaster, when this machine runs it and the login may read its data directory."""
    conn = await asyncpg.connect(dsn)
    try:
        data = await conn.fetchval("SELECT current_setting('data_directory')")
    except asyncpg.PostgresError:
        return None
    finally:
        await conn.close()
    try:
        return int((Path(data) / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@dataclass(frozen=True)
class Snapshot:
    cpu_s: float | None
    transactions: int
    wal_bytes: int
    updates: int
    hot_updates: int


async def snapshot(dsn: str, postmaster: int | None, table: str | None) -> Snapshot:
    """The counters of one database (dsn's), read from a connection that is not the system's."""
    conn = await asyncpg.connect(dsn)
    try:
        # The statistics views are cached per transaction; a fresh snapshot each read.
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        xacts = await conn.fetchval(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
        )
        wal = await conn.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
        updates = hot = 0
        if table is not None:
            row = await conn.fetchrow(
                "SELECT coalesce(sum(n_tup_upd), 0) AS upd, coalesce(sum(n_tup_hot_upd), 0) AS hot "
                "FROM pg_stat_user_tables WHERE schemaname || '.' || relname = $1",
                table,
            )
            updates, hot = int(row["upd"]), int(row["hot"])
    finally:
        await conn.close()
    cpu = tree_cpu_seconds(postmaster) if postmaster is not None else None
    return Snapshot(cpu, int(xacts), int(wal), updates, hot)


def spent(before: Snapshot, after: Snapshot, deliveries: int) -> dict[str, float | None]:
    """Per delivery: server CPU µs, transactions, WAL bytes; the share of updates that were HOT.
    Read after the system stopped: a backend's counters reach the views by the time it exits."""
    updates = after.updates - before.updates
    return {
        "pg_cpu_us_per_delivery": (after.cpu_s - before.cpu_s) / deliveries * 1e6
        if after.cpu_s is not None and before.cpu_s is not None
        else None,
        "transactions_per_delivery": (after.transactions - before.transactions) / deliveries,
        "wal_bytes_per_delivery": (after.wal_bytes - before.wal_bytes) / deliveries,
        "hot_update_share": (after.hot_updates - before.hot_updates) / updates if updates else None,
    }
