"""Stop and reload signals sent while a process is still starting (its imports take seconds on a
loaded machine): the daemon handles them as it would later; any other command acts on them."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg

from relay import journal
from relay.contracts.examples import example
from tests.support.relay import (
    ENTRY_POINT,
    relay_settings,
    start_relay_process,
    stop_process,
    wait_ready,
    wait_until,
    write_config,
)
from tests.support.sink import PATIENCE, Sink

# The process signals itself after the entry point's first step and before the slow imports.
HELD = (
    "import os, signal\n"
    "from relay import early_signals\n"
    "early_signals.hold()\n"
    "os.kill(os.getpid(), signal.{sig})\n"
    "print('still running', flush=True)\n"
)

# A daemon starts with the signal's default action, as a service manager starts it: a test run
# under nohup would otherwise hand it an ignored SIGHUP, which the daemon rightly leaves ignored.
DAEMON_HELD = "import signal\nsignal.signal(signal.{sig}, signal.SIG_DFL)\n" + HELD


def _events(log: Path) -> list[str]:
    # The log file also holds the prelude's own line.
    return [json.loads(line)["event"] for line in log.read_text().splitlines() if line.startswith("{")]


async def test_a_stop_during_start_up_ends_the_daemon_with_exit_0(
    tmp_path: Path, relay_db: str, sink: Sink
) -> None:
    config = write_config(tmp_path / "relay.toml", relay_settings(relay_db, sink, ["FA"]))
    log = tmp_path / "relay.log"
    proc = start_relay_process(config, log, prelude=DAEMON_HELD.format(sig="SIGTERM"))
    try:
        code = await asyncio.to_thread(proc.wait, 60 * PATIENCE)
    finally:
        proc.kill()
    assert code == 0
    events = _events(log)
    assert events.index("stopping: no new claims; in-flight deliveries get the grace period") < events.index(
        "it-relay stopped"
    )
    # Stopped before it opened anything: no pool, no server, no loops.
    assert "it-relay started" not in events


async def test_a_reload_during_start_up_is_applied_once_started(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    config = write_config(tmp_path / "relay.toml", relay_settings(relay_db, sink, ["FA"]))
    log = tmp_path / "relay.log"
    proc = start_relay_process(config, log, prelude=DAEMON_HELD.format(sig="SIGHUP"))
    try:
        await wait_ready(log, procs=[proc])
        try:
            await wait_until(lambda: "configuration reloaded" in log.read_text(), within=30)
        except AssertionError:
            # What the daemon said is the evidence (no "SIGHUP during start-up": it never saw one).
            raise AssertionError(f"no reload in the daemon's log:\n{log.read_text()[-6000:]}") from None
        await journal.publish(db, example("it_asset_purchased"))
        await sink.wait_for(lambda r: len(r) == 1, within=20)
        assert proc.poll() is None
    finally:
        code = await stop_process(proc)
    assert code == 0
    events = _events(log)
    assert "SIGHUP during start-up: the configuration is read again once started" in events
    assert events.index("it-relay started") < events.index("configuration reloaded")


def _one_shot(sig: str, *args: str, ignored: str = "") -> subprocess.CompletedProcess[str]:
    # `ignored`: a signal the process inherits as ignored (as under nohup).
    first = f"import signal\nsignal.signal(signal.{ignored}, signal.SIG_IGN)\n" if ignored else ""
    code = first + HELD.format(sig=sig) + ENTRY_POINT
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        input="[]",
        capture_output=True,
        text=True,
        timeout=60 * PATIENCE,
        check=False,
    )


def test_a_one_shot_command_acts_on_a_stop_held_during_start_up() -> None:
    result = _one_shot("SIGTERM", "validate", "-")
    # Held until the command was known, then the usual effect: death by the signal.
    assert result.stdout == "still running\n"
    assert result.returncode == -signal.SIGTERM


def test_an_interrupt_held_during_start_up_is_exit_130_not_a_traceback() -> None:
    result = _one_shot("SIGINT", "validate", "-")
    assert result.stdout == "still running\n"
    assert result.returncode == 130
    # As a Ctrl-C anywhere in a command: exit 130, nothing but a newline on stderr.
    assert result.stderr.strip() == ""


def test_a_stop_held_while_a_command_ends_early_still_acts() -> None:
    # --version ends before any command takes the signals: the held stop acts once it is done.
    result = _one_shot("SIGTERM", "--version")
    assert result.returncode == -signal.SIGTERM


def test_a_signal_the_caller_ignores_stays_ignored() -> None:
    # Under nohup a hangup changes nothing: never held, never raised again.
    result = _one_shot("SIGHUP", "validate", "-", ignored="SIGHUP")
    # The command ran to its own end: validate's answer to an empty list.
    assert result.stdout == "still running\n"
    assert (result.returncode, result.stderr) == (2, "it-relay: error: no events in the input\n")
