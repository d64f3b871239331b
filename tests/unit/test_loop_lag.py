"""The event loop's lag: each sample is how much later than due a step ran, and a loop blocked by a
call that never yields is recorded at least as long as it was blocked, less one interval."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import CollectorRegistry, Histogram

from relay.health import Heartbeats
from relay.loop_lag import LoopLag
from relay.supervisor import supervise
from tests.support.relay import wait_until


def _histogram() -> tuple[Histogram, CollectorRegistry]:
    registry = CollectorRegistry()
    return Histogram("lag_seconds", "lag", buckets=(0.1, 0.25, 0.5, 1.0), registry=registry), registry


def _count(registry: CollectorRegistry, le: str | None = None) -> float:
    if le is None:
        return registry.get_sample_value("lag_seconds_count") or 0.0
    return registry.get_sample_value("lag_seconds_bucket", {"le": le}) or 0.0


async def test_each_sample_is_the_time_past_due() -> None:
    histogram, registry = _histogram()
    now = [100.0]
    lag = LoopLag(histogram, every_s=0.25, clock=lambda: now[0])
    assert await lag.step() == 0.25
    assert _count(registry) == 0  # the first step has nothing to be late for
    now[0] += 0.25 + 0.4  # ran 0.4 s after it was due
    await lag.step()
    now[0] += 0.25  # on time
    await lag.step()
    now[0] += 0.1  # early: never with a timer, and never a negative sample
    await lag.step()
    assert _count(registry) == 3
    assert registry.get_sample_value("lag_seconds_sum") == pytest.approx(0.4)
    assert _count(registry, "0.25") == 2 and _count(registry, "0.5") == 3


async def test_a_blocked_event_loop_is_recorded_under_the_supervisor() -> None:
    histogram, registry = _histogram()
    stopping = asyncio.Event()
    task = asyncio.create_task(supervise(LoopLag(histogram, every_s=0.05).loop(), stopping, Heartbeats()))
    try:
        await wait_until(lambda: _count(registry) >= 2)
        # The point: a call that blocks the loop, so nothing else runs on it meanwhile.
        time.sleep(0.8)  # noqa: ASYNC251
        # At least 0.8 - 0.05 s late, however slow the machine (slowness only adds lag).
        await wait_until(lambda: _count(registry) - _count(registry, "0.5") >= 1)
    finally:
        stopping.set()
        await asyncio.wait_for(task, 10)
