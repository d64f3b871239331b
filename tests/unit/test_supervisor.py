"""The one loop runner: no loop dies, every failure is said once, waits are cut short by a wake."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator

import pytest

from relay import logs
from relay.aio import said_task
from relay.health import Heartbeats
from relay.supervisor import Loop, keep_running, supervise
from tests.support.relay import wait_until


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    logs.configure("INFO", "json", stream)
    yield stream
    logs.configure("WARNING", "json")


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


async def test_a_step_that_raises_is_logged_at_error_and_runs_again(log_lines: io.StringIO) -> None:
    calls = 0

    async def step() -> float | None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise KeyError("a bug")
        return 0.01

    stopping = asyncio.Event()
    task = asyncio.create_task(supervise(Loop("router", step, 0.01), stopping, Heartbeats()))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("relay.supervisor.RESTART_WAIT_S", 0.01)
        await wait_until(lambda: calls >= 3)
    stopping.set()
    await task
    errors = [line for line in lines(log_lines) if line["level"] == "error"]
    assert len(errors) == 1 and errors[0]["loop"] == "router" and "KeyError" in str(errors[0]["exception"])


async def test_a_database_error_is_a_warning_and_waits_its_own_back_off(log_lines: io.StringIO) -> None:
    calls = 0

    async def step() -> float | None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionRefusedError("database down")
        return None

    stopping = asyncio.Event()
    loop = Loop("lane FA", step, 60.0, db_error_wait_s=0.01, tags={"subscriber": "FA"})
    task = asyncio.create_task(supervise(loop, stopping, Heartbeats()))
    await wait_until(lambda: calls == 2)
    stopping.set()
    await task
    warning = [line for line in lines(log_lines) if line["level"] == "warning"]
    assert warning == [
        {
            "loop": "lane FA",
            "error": "ConnectionRefusedError",
            "subscriber": "FA",
            "event": "database error, will retry",
            "level": "warning",
            "timestamp": warning[0]["timestamp"],
        }
    ]


async def test_a_wake_cuts_the_wait_short_and_a_step_that_asks_for_zero_runs_at_once() -> None:
    wake = asyncio.Event()
    calls = 0

    async def step() -> float | None:
        nonlocal calls
        calls += 1
        return 0 if calls < 5 else None  # then its interval: an hour

    stopping = asyncio.Event()
    task = asyncio.create_task(supervise(Loop("router", step, 3600.0, wake=wake), stopping, Heartbeats()))
    await wait_until(lambda: calls == 5)
    wake.set()
    await wait_until(lambda: calls == 6)
    stopping.set()
    await asyncio.wait_for(task, 5)


async def test_the_heartbeat_goes_stale_only_while_a_step_hangs_and_close_runs_at_shutdown() -> None:
    clock = [0.0]
    beats = Heartbeats(clock=lambda: clock[0])
    release = asyncio.Event()
    closed = asyncio.Event()
    calls = 0

    async def step() -> float | None:
        nonlocal calls
        calls += 1
        if calls == 2:
            await release.wait()  # a step that hangs
        return 0.001

    async def close() -> None:
        closed.set()

    stopping = asyncio.Event()
    task = asyncio.create_task(supervise(Loop("scheduler", step, 1.0, close=close), stopping, beats))
    await wait_until(lambda: calls == 2)
    clock[0] += 100
    assert beats.stalled() == ["scheduler"]
    release.set()
    await wait_until(lambda: calls >= 3)
    assert beats.stalled() == []
    stopping.set()
    await task
    assert closed.is_set() and beats.stalled() == []


async def test_a_service_that_returns_early_or_fails_is_started_again(log_lines: io.StringIO) -> None:
    runs = 0

    async def service(stopping: asyncio.Event) -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("bug")
        if runs == 2:
            return  # ended without being asked to
        await stopping.wait()

    stopping = asyncio.Event()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("relay.supervisor.RESTART_WAIT_S", 0.01)
        task = asyncio.create_task(keep_running("listener", service, stopping))
        await wait_until(lambda: runs == 3)
    stopping.set()
    await task
    events = [(line["level"], line["event"]) for line in lines(log_lines)]
    assert events == [
        ("error", "loop failed unexpectedly, restarting it"),
        ("error", "loop ended unexpectedly, restarting it"),
    ]


async def test_a_task_nobody_awaits_says_its_failure(log_lines: io.StringIO) -> None:
    async def breaks() -> None:
        raise KeyError("a bug")

    async def waits() -> None:
        await asyncio.Event().wait()

    failed, cancelled = said_task(breaks(), "reload"), said_task(waits(), "other")
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.wait([failed, cancelled])
    await asyncio.sleep(0)  # done callbacks run on the loop's next turn
    said = [line for line in lines(log_lines) if line["event"] == "task failed"]
    assert [(line["level"], line["task"]) for line in said] == [("error", "reload")]
    assert "KeyError: 'a bug'" in str(said[0].get("exception"))
