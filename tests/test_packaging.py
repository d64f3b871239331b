"""Packaging as documented: the wheel ships what the unit points to, the unit boots with the example
config's credentials, the container says where its config goes, the docs agree with the settings."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from standardwebhooks import Webhook

from relay import journal
from relay.contracts.examples import example
from relay.settings import load_settings, masked
from tests.support.notify import NotifySocket
from tests.support.sink import PATIENCE, Sink

ROOT = Path(__file__).parent.parent
UNIT = ROOT / "systemd" / "it-relay.service"
EXAMPLE = ROOT / "config" / "relay.example.toml"


def _unit(key: str) -> list[str]:
    return re.findall(rf"^{key}=(.+)$", UNIT.read_text(), re.MULTILINE)


def test_the_wheel_ships_the_docs_config_and_unit_where_the_unit_points(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300 * PATIENCE,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("it_relay-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shared = {n.split(".data/data/", 1)[1] for n in names if ".data/data/" in n}
    assert {
        "share/it-relay/config/relay.example.toml",
        "share/it-relay/config/prometheus-alerts.yml",
        "share/it-relay/config/grafana-dashboard.json",
        "share/it-relay/systemd/it-relay.service",
        "share/it-relay/docs/operations.md",
        "share/it-relay/docs/database.md",
    } <= shared
    # The unit's Documentation= and ExecStart= name the install prefix; the doc is under it.
    (documentation,) = _unit("Documentation")
    (exec_start,) = _unit("ExecStart")
    prefix = exec_start.split()[0].removesuffix("/bin/it-relay")
    assert documentation.startswith(f"file://{prefix}/")
    assert documentation.removeprefix(f"file://{prefix}/") in shared


async def test_the_units_exec_start_boots_with_the_example_configs_credentials(
    tmp_path: Path, relay_db: str, db: asyncpg.Connection, sink: Sink
) -> None:
    """ExecStart= as written (paths moved into the test), the example config unchanged, and every
    LoadCredential= of the unit as a file in $CREDENTIALS_DIRECTORY: READY=1, a signed delivery
    with the credential's secret, STOPPING=1, exit 0."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    secret = "whsec_Y3JlZGVudGlhbC1zZWNyZXQtZm9yLXBmMTA="
    ids = [line.split(":", 1)[0] for line in _unit("LoadCredential")]
    assert set(ids) == set(re.findall(r'_credential = "([^"]+)"', _active(EXAMPLE.read_text())))
    for name in ids:
        (credentials / name).write_text(secret if "secret" in name else "not-used-under-trust-auth")
    config = tmp_path / "relay.toml"
    shutil.copy(EXAMPLE, config)
    (exec_start,) = _unit("ExecStart")
    argv = exec_start.split()
    argv[0] = str(Path(sys.executable).with_name("it-relay"))
    argv[argv.index("--config") + 1] = str(config)

    notify = NotifySocket(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IT_RELAY_")} | {
        "NOTIFY_SOCKET": notify.address,
        "CREDENTIALS_DIRECTORY": str(credentials),
        # Only what differs on a test machine: where the database and PF-10 are.
        "IT_RELAY_DATABASE__URL": relay_db,
        "IT_RELAY_SUBSCRIBERS__PF_10__URL": sink.url("/pf-10"),
        "IT_RELAY_SERVER__LISTEN": "127.0.0.1:0",
        "IT_RELAY_SCHEDULER__ENABLED": "false",
    }
    log = (tmp_path / "relay.log").open("wb")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=log)  # noqa: ASYNC220 - waited on in a thread
    try:
        await asyncio.wait_for(notify.until("READY=1"), 30 * PATIENCE)
        await journal.publish(db, example("it_ticket_created"))
        await sink.wait_for(lambda r: len(r) == 1)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 30 * PATIENCE)
    await asyncio.wait_for(notify.until("STOPPING=1"), 10)
    notify.close()
    assert code == 0, (tmp_path / "relay.log").read_text()
    received = sink.requests[0]
    Webhook(secret).verify(received.body, received.headers)


def _active(toml_text: str) -> str:
    """The TOML without comment lines (the example documents alternatives in comments)."""
    return "\n".join(line for line in toml_text.splitlines() if not line.lstrip().startswith("#"))


def test_the_container_names_its_config_mount_and_refuses_to_start_without_it(tmp_path: Path) -> None:
    text = (ROOT / "Dockerfile").read_text()
    env = dict(re.findall(r"^ENV (\w+)=(\S+)", text, re.MULTILINE))
    assert env["IT_RELAY_CONFIG"] == "/etc/it-relay/relay.toml"
    assert "-v /etc/it-relay/relay.toml:/etc/it-relay/relay.toml:ro" in text
    for copied in ("config", "systemd", "docs"):
        assert f"COPY {copied} ./{copied}" in text
    # What the container does when nothing is mounted at IT_RELAY_CONFIG.
    missing = tmp_path / "etc" / "relay.toml"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("IT_RELAY_")}
    result = subprocess.run(
        [sys.executable, "-m", "relay", "run"],
        env=clean | {"IT_RELAY_CONFIG": str(missing)},
        capture_output=True,
        text=True,
        timeout=60 * PATIENCE,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"it-relay: error: config file {missing}: not found (named by IT_RELAY_CONFIG; mount the file "
        "there, or point IT_RELAY_CONFIG at it)\n"
    )


def _settings_keys() -> dict[str, dict[str, Any]]:
    data = masked(load_settings(None))
    return {section: values for section, values in data.items() if section != "subscribers"}


def test_the_example_config_gives_every_key_its_default() -> None:
    example_values = tomllib.loads(EXAMPLE.read_text())
    defaults = _settings_keys()
    for section, values in example_values.items():
        if section == "subscribers":
            continue
        assert section in defaults, f"[{section}] is not a section of the settings"
        for key, value in values.items():
            assert key in defaults[section], f"{section}.{key} is not a setting"
            if key in ("url", "password_credential") or isinstance(value, dict):
                continue  # where to connect is the operator's, not a default
            assert value == defaults[section][key], (
                f"{section}.{key}: example {value!r}, default {defaults[section][key]!r}"
            )


DOC_SETTING = re.compile(
    r"`((?:database|server|delivery|retention|validation|scheduler|logging|ingest|tracing)\.[a-z_]+)(?: = ([^`]+))?`"
)


@pytest.mark.parametrize(
    "doc", ["docs/operations.md", "README.md", "docs/reliability.md", "docs/scheduler.md"]
)
def test_docs_name_only_real_settings_with_values_they_accept(doc: str) -> None:
    defaults = _settings_keys()
    text = (ROOT / doc).read_text()
    named = DOC_SETTING.findall(text)
    assert named or doc != "docs/operations.md"
    for dotted, value in named:
        section, key = dotted.split(".")
        assert key in defaults.get(section, {}), f"{doc}: {dotted} is not a setting"
        if value:
            parsed = tomllib.loads(f"v = {value}")["v"]
            load_settings(None, **{section: {key: parsed}})  # raises naming the key if refused
