"""What operators alert on, from a running relay: instances alive, dead now, the oldest pending, a
circuit open — on /metrics and in systemd's STATUS line."""

from __future__ import annotations

import socket

import asyncpg

from relay import journal
from relay.contracts.examples import example
from tests.support.relay import relay_settings, running, wait_for_rows, wait_until
from tests.support.sink import Reply, Sink


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_gauges_show_dead_deliveries_a_down_subscriber_and_every_instance(
    relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    sink.script("/fa", Reply(410))
    down = {"HR": {"url": f"http://127.0.0.1:{closed_port()}/hr"}}
    settings = relay_settings(
        relay_db,
        sink,
        ["FA", "HR", "PF-10"],
        subscriber_overrides=down,
        delivery={"circuit_failure_threshold": 1, "circuit_cooldown_s": 60, "retry_schedule_s": [60]},
    )
    async with running(settings) as first, running(settings) as second:
        await journal.publish(db, example("it_asset_purchased"))  # FA: 410, dead at once
        await journal.publish(db, example("it_asset_assigned"))  # HR (down) and PF-10
        await wait_for_rows(
            db, "SELECT count(*) FROM it_relay.deliveries WHERE status <> 'pending'", lambda v: v >= 2
        )

        def sample(daemon: object, name: str, **labels: str) -> float | None:
            return daemon.metrics.registry.get_sample_value(name, labels)  # type: ignore[attr-defined, no-any-return]

        await wait_until(
            lambda: sample(first, "it_relay_instances") == 2 and sample(second, "it_relay_instances") == 2
        )
        await wait_until(lambda: sample(first, "it_relay_dead", subscriber="FA") == 1)
        await wait_until(lambda: (sample(first, "it_relay_oldest_pending_seconds", subscriber="HR") or 0) > 0)
        assert sample(first, "it_relay_dead", subscriber="PF-10") == 0
        assert sample(first, "it_relay_unrouted_events") == 0
        lanes = [d.components.dispatcher.lanes["HR"] for d in (first, second) if d.components]
        await wait_until(lambda: any(lane.circuit_reported_open for lane in lanes))
        opened = first if lanes[0].circuit_reported_open else second
        # Its housekeeping reads the gauges every poll interval: wait for a pass that saw them.
        expected = ("circuit open: HR", "backlog 1 (oldest HR ", "1 dead")
        await wait_until(lambda: all(part in opened._relaying_status() for part in expected))
    # Stopped cleanly, both took themselves off the list.
    assert await db.fetchval("SELECT count(*) FROM it_relay.instances") == 0
