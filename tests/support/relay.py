"""Helpers to run the relay in tests: settings for local sinks, an in-process daemon, a subprocess."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import asyncpg

from relay import logs
from relay.contracts import SUBSCRIBERS
from relay.daemon import Daemon
from relay.health import Heartbeats
from relay.listener import Listener
from relay.settings import Settings, load_settings
from relay.supervisor import supervise
from tests.support.sink import PATIENCE, Sink

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OLD_SECRET = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"


EXAMPLE = Path(__file__).parent.parent.parent / "config" / "relay.example.toml"


def example_credentials(directory: Path) -> dict[str, str]:
    """The systemd credentials config/relay.example.toml names, as files; the environment to find them."""
    directory.mkdir(exist_ok=True)
    for name in re.findall(r'^\s*\w+_credential = "([^"]+)"', EXAMPLE.read_text(), re.MULTILINE):
        (directory / name).write_text(SECRET if "secret" in name else "example-password")
    return {"CREDENTIALS_DIRECTORY": str(directory)}


def path_of(subscriber: str) -> str:
    return f"/{subscriber.lower()}"


def relay_settings(
    database_url: str,
    sink: Sink,
    subscribers: Iterable[str] = SUBSCRIBERS,
    *,
    subscriber_overrides: dict[str, dict[str, Any]] | None = None,
    **sections: dict[str, Any],
) -> Settings:
    """Fast timings for tests: short polls, short retries, no jitter; every subscriber on the sink."""
    subs = {
        name: {"url": sink.url(path_of(name)), "secret": SECRET, **(subscriber_overrides or {}).get(name, {})}
        for name in subscribers
    }
    delivery = {
        "retry_schedule_s": [0.3, 0.3, 0.3],
        "jitter": 0.0,
        "inprocess_retries": 0,
        "timeout_s": 2.0,
        "lease_s": 30.0,
        "shutdown_grace_s": 5.0,
        **sections.pop("delivery", {}),
    }
    database = {
        "url": database_url,
        "poll_interval_s": 0.5,
        "probe_interval_s": 0.5,
        "probe_timeout_s": 2.0,
        **sections.pop("database", {}),
    }
    # Port 0: every daemon in a test gets its own free port for /metrics.
    server = {"listen": "127.0.0.1:0", **sections.pop("server", {})}
    # The scheduler needs the reference schema's views; tests that want it turn it on.
    sections["scheduler"] = {"enabled": "scheduler" in sections, **sections.get("scheduler", {})}
    return load_settings(
        None, database=database, delivery=delivery, subscribers=subs, server=server, **sections
    )


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Daemon]:
    """A daemon running in this event loop for the duration of the block."""
    logs.configure("WARNING", "json")
    daemon = Daemon(settings)
    task = asyncio.create_task(daemon.run(install_signal_handlers=False))
    try:
        await wait_until(
            lambda: daemon.listener is not None and daemon.listener.connected.is_set(), task=task
        )
        yield daemon
    finally:
        daemon.stop()
        await asyncio.wait_for(task, 30)


async def wait_until(
    predicate: Callable[[], bool], within: float = 15.0, task: asyncio.Task[Any] | None = None
) -> None:
    """Poll a condition (cheap, in-process) until it holds; fail after `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within * PATIENCE
    while not predicate():
        if task is not None and task.done():
            task.result()
            raise AssertionError("daemon exited")
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def wait_for_rows(
    conn: asyncpg.Connection,
    sql: str,
    expected: Callable[[Any], bool],
    within: float = 20.0,
    *,
    args: Sequence[Any] = (),
    fetch: Literal["val", "row"] = "val",
) -> Any:
    """Poll a query until its value (or row) satisfies `expected`; returns it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within * PATIENCE
    while True:
        value = await (conn.fetchval(sql, *args) if fetch == "val" else conn.fetchrow(sql, *args))
        if expected(value):
            return value
        if loop.time() > deadline:
            raise AssertionError(f"query never satisfied the condition; last value {value!r}")
        await asyncio.sleep(0.05)


def write_config(path: Path, settings: Settings) -> Path:
    """A TOML config equivalent to `settings` (for relay subprocesses)."""
    lines: list[str] = []
    data = settings.model_dump(mode="json", exclude={"subscribers"})
    for section, values in data.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if isinstance(value, dict):
                continue
            if value is not None:
                lines.append(f"{key} = {_toml(value)}")
    secret_keys = {"secret", "secrets", "secret_file", "secret_credential"}
    for name, conf in settings.subscribers.items():
        lines.append(f'[subscribers."{name}"]')
        # Every key the test set (the url as given), the signing secrets resolved.
        for key, value in conf.model_dump(mode="json", exclude_none=True, exclude=secret_keys).items():
            lines.append(f"{key} = {_toml(value)}")
        lines.append(f"secrets = {_toml(conf.signing_secrets())}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml(str(k))} = {_toml(v)}" for k, v in value.items()) + " }"
    return str(value)


async def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m relay ARGS` in a thread, so the test's loop (sinks, daemons) keeps running."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IT_RELAY_")}
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "relay", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60 * PATIENCE,
        check=False,
    )


# What `python -m relay` runs, as Python source: after a test's own prelude (`python -c`).
ENTRY_POINT = "from relay.__main__ import main\nmain()\n"


def start_relay_process(
    config: Path, log_path: Path, log_level: str = "INFO", prelude: str | None = None
) -> subprocess.Popen[bytes]:
    """`python -m relay run` as a real process (for SIGKILL and several-instance tests); `prelude`:
    Python run first, then the entry point as `python -m relay` runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IT_RELAY_")}
    log = log_path.open("ab")
    entry = ["-m", "relay"] if prelude is None else ["-c", f"{prelude}\n{ENTRY_POINT}"]
    return subprocess.Popen(
        [
            sys.executable,
            *entry,
            "run",
            "--config",
            str(config),
            "--log-format",
            "json",
            "--log-level",
            log_level,
        ],
        stdout=log,
        stderr=log,
        env=env,
    )


# What a relay process logs once its listener is connected (the JSON log format).
READY = '"event": "listener connected"'


async def wait_ready(*logs: Path, procs: Sequence[subprocess.Popen[bytes]] = (), within: float = 30) -> None:
    """Every one of these relay processes has connected its listener (said so in its log); fails at
    once if one of `procs` exited."""

    def ready() -> bool:
        exited = [p.returncode for p in procs if p.poll() is not None]
        assert not exited, f"a relay process exited while starting: {exited}"
        return all(p.exists() and READY in p.read_text() for p in logs)

    await wait_until(ready, within)


async def stop_process(
    proc: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM, within: float = 30
) -> int:
    """Signal a relay process and wait for it without blocking the loop (the sinks live in it)."""
    if proc.poll() is None:
        proc.send_signal(sig)
    return await asyncio.to_thread(proc.wait, within * PATIENCE)


async def listening(listener: Listener, stopping: asyncio.Event) -> None:
    """A listener on its own, as the daemon runs it: its connection, and its supervised ingest."""
    await asyncio.gather(listener.run(stopping), supervise(listener.ingest_loop(), stopping, Heartbeats()))
