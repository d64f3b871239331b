"""CLI acceptance tests: the `it-relay` command, as a subprocess (one smoke test per command) and
in this process (tests/support/cli.py) where a test runs it many times."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import typer
from typer.core import TyperOption

from relay import codec
from relay.contracts import EVENT_TYPES
from relay.contracts.examples import all_examples, example
from tests.support.cli import invoke
from tests.support.relay import EXAMPLE, example_credentials

ROOT = Path(__file__).parent.parent


def run(
    *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("IT_RELAY_")}
    return subprocess.run(
        [sys.executable, "-m", "relay", *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        env={**clean, **(env or {})},
        timeout=60,
        check=False,
    )


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("it-relay ")


def test_validate_accepts_every_example_as_an_array(tmp_path: Path) -> None:
    path = tmp_path / "events.json"
    path.write_bytes(codec.dumps(all_examples()))
    result = run("validate", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(" ok ") == 31


def test_validate_reads_json_lines_from_stdin_and_names_bad_fields() -> None:
    bad = example("it_ticket_created") | {"priority": "urgent"}
    del bad["subject"]
    lines = b"\n".join([codec.dumps(example("it_asset_purchased")), codec.dumps(bad), b"{oops"])
    result = run("validate", "-", stdin=lines)
    assert result.returncode == 1
    out = result.stdout.splitlines()
    assert "[0] ok it_asset_purchased" in out
    assert "[1] subject: field required" in out
    assert any(line.startswith("[1] priority: Input should be") for line in out)
    assert any(line.startswith("[2] $: not valid JSON") for line in out)
    assert "urgent" not in result.stdout
    assert "Traceback" not in result.stderr


def test_validate_never_prints_a_licence_key() -> None:
    event = example("it_license_created") | {"license_key": "SECRET-KEY-42", "license_count": "many"}
    result = run("validate", "-", stdin=codec.dumps(event))
    assert result.returncode == 1
    assert "SECRET-KEY-42" not in result.stdout + result.stderr


def test_validate_missing_file_is_a_one_line_error() -> None:
    result = run("validate", "/nonexistent/events.json")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "cannot read /nonexistent/events.json" in result.stderr


def test_schemas_export_jsonschema_validates_the_examples(tmp_path: Path) -> None:
    result = run("schemas", "export", "--format", "jsonschema", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    files = sorted(tmp_path.glob("*.schema.json"))
    assert len(files) == 31
    for event_type in EVENT_TYPES:
        schema = json.loads((tmp_path / f"{event_type}.schema.json").read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        instance = json.loads(codec.dumps(example(event_type)))
        jsonschema.Draft202012Validator(schema).validate(instance)
        wrong = instance | {"event_type": "it_other"}
        assert not jsonschema.Draft202012Validator(schema).is_valid(wrong)


def test_schemas_export_asyncapi_names_all_31_messages(tmp_path: Path) -> None:
    result = run("schemas", "export", "--format", "asyncapi", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    document = json.loads((tmp_path / "asyncapi.json").read_text())
    assert document["asyncapi"] == "3.0.0"
    channel = document["channels"]["it_events"]
    assert set(channel["messages"]) == set(EVENT_TYPES)
    messages = document["components"]["messages"]
    assert messages["it_account_deactivated"]["x-subscribers"] == ["PF-10", "Audit", "GR"]
    assert "deliver_it_asset_purchased_to_FA" in document["operations"]
    # Every $ref in the document resolves inside it.
    text = json.dumps(document)
    for ref in {part.split('"')[0] for part in text.split('"$ref": "#/')[1:]}:
        node = document
        for step in ref.split("/"):
            node = node[step]
    assert "XXXXX-XXXXX" not in text


def test_check_config_accepts_the_example(tmp_path: Path) -> None:
    credentials = example_credentials(tmp_path / "credentials")
    result = run("check-config", "--config", str(EXAMPLE), env=credentials)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["subscribers"]["PF-10"]["secret_credential"] == "pf10-webhook-secret"
    assert "whsec_" not in result.stdout
    # The database's user is a role name, not a secret: shown.
    assert shown["database"]["url"] == "postgresql://it_relay@localhost:5432/encore"
    assert "not read" not in result.stderr
    # Outside systemd the credentials cannot be read: the rest is checked, they are named.
    bare = invoke("check-config", "--config", str(EXAMPLE))
    assert bare.returncode == 0, bare.stderr
    assert (
        "note: not read (no $CREDENTIALS_DIRECTORY, which systemd sets for the unit): "
        "database.password_credential, subscribers.PF-10.secret_credential;"
    ) in bare.stderr
    assert "not served here (no deliveries are created for them)" in result.stderr


def test_check_config_reports_every_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        "[delivery]\nconcurency = 3\ntimeout_s = -1\n[scheduler]\ninterval_s = 0\n"
        '[subscribers.FA]\nurl = "http://127.0.0.1:9/fa"\nsecret = "not-a-secret"\n'
    )
    result = invoke("check-config", "--config", str(path))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert (
        lines[0]
        == "it-relay: error: config error: delivery.concurency: unknown key (did you mean concurrency?)"
    )
    assert len(lines) == 3 and all(line.startswith("it-relay: error: config error: ") for line in lines)
    assert any("delivery.timeout_s" in line for line in lines)
    assert any("scheduler.interval_s" in line for line in lines)
    assert "more" not in result.stderr
    # The secret is checked once the structure is sound, and reported with the key that holds it.
    only_secret = tmp_path / "secret.toml"
    only_secret.write_text('[subscribers.FA]\nurl = "http://127.0.0.1:9/fa"\nsecret = "not-a-secret"\n')
    secret = invoke("check-config", "--config", str(only_secret))
    assert secret.returncode == 2
    assert secret.stderr.splitlines()[-1] == (
        "it-relay: error: config error: subscribers.FA: "
        "not a Standard Webhooks secret (whsec_ + base64 of at least 16 bytes)"
    )
    assert "not-a-secret" not in secret.stdout + secret.stderr
    # Another command names the first problem, in one line, and where to see them all.
    other = invoke("status", "--config", str(path))
    assert other.returncode == 2 and other.stderr.count("\n") == 1
    assert other.stderr.endswith(" (and 2 more: check-config lists them)\n")


def test_check_config_names_a_bad_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[delivery]\nconcurency = 3\n")
    result = run("check-config", "--config", str(path))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "it-relay: error: config error: delivery.concurency: unknown key (did you mean concurrency?)"
    )


def test_check_config_names_a_bad_environment_override() -> None:
    result = run("check-config", env={"IT_RELAY_SCHEDULER__INTERVAL_S": "-1"})
    assert result.returncode == 2
    assert "scheduler.interval_s" in result.stderr
    assert "Traceback" not in result.stderr


def _commands() -> list[tuple[list[str], Any]]:
    """Every leaf command of the CLI, with its path (from the real command tree)."""
    from relay.cli import app

    found: list[tuple[list[str], Any]] = []

    def walk(command: Any, path: list[str]) -> None:
        children = getattr(command, "commands", None)
        if children:
            for name, child in children.items():
                walk(child, [*path, name])
        else:
            found.append((path, command))

    walk(typer.main.get_command(app), [])
    return found


def _bad_arguments() -> list[list[str]]:
    """For every command: an unknown option, a missing option value, and a value of the wrong
    kind for every option that is not free text (numbers, times, choices, flags given a value)."""
    cases: list[list[str]] = [["bogus"], ["validate"]]
    for path, command in _commands():
        cases.append([*path, "--no-such-option"])
        for param in command.params:
            if not isinstance(param, TyperOption) or not param.opts[0].startswith("--"):
                continue
            name = param.opts[0]
            if name in ("--help", "--version"):
                continue
            if param.is_flag:
                cases.append([*path, f"{name}=yes"])
            elif param.bare_type() not in ("str", "Path"):
                cases.append([*path, name, "not-a-value-\u2603"])
                cases.append([*path, name])
    return cases


def _one_line_error(code: int, stderr: str) -> bool:
    return (
        code == 2
        and "Traceback" not in stderr
        and stderr.startswith("it-relay: error: ")
        and stderr.count("\n") == 1
    )


def test_every_command_refuses_bad_arguments_in_one_line() -> None:
    cases = _bad_arguments()
    assert len(cases) > 50  # the command tree was walked
    results = [(args, invoke(*args)) for args in cases]
    wrong = [
        f"{' '.join(args)}: exit {r.returncode}, stderr {r.stderr!r}"
        for args, r in results
        if not _one_line_error(r.returncode, r.stderr)
    ]
    assert not wrong, "\n".join(wrong)


def test_the_installed_command_refuses_bad_arguments_in_one_line() -> None:
    # The same errors through the entry point a user runs: a command, an option, a value.
    cases = [["bogus"], ["deliveries", "list", "--no-such-option"], ["status", "--json=yes"]]
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda args: (args, run(*args)), cases))
    for args, r in results:
        assert _one_line_error(r.returncode, r.stderr), (args, r.returncode, r.stderr)


HOSTILE_FILES = {
    "a 5,000-digit integer": b'{"event_type": "it_ticket_created", "n": ' + b"1" * 5000 + b"}",
    "a lone surrogate": b'{"event_type": "it_ticket_created", "n": "\\ud800"}',
    "300-deep nesting": b"[" * 300 + b"]" * 300,
    "10,000-deep nesting": b"[" * 10_000 + b"]" * 10_000,
    "invalid UTF-8": b'{"event_type": "\xff\xfe"}',
    "a NUL": b'{"event_type": "it_ticket_created", "subject": "a\\u0000b"}',
}


@pytest.mark.parametrize("command", ["validate", "emit"])
@pytest.mark.parametrize("what", sorted(HOSTILE_FILES))
def test_hostile_files_get_one_line_per_problem_never_a_traceback(
    tmp_path: Path, command: str, what: str
) -> None:
    path = tmp_path / "events.json"
    path.write_bytes(HOSTILE_FILES[what])
    # emit validates before it connects: the database in the example config is never reached.
    extra = ["--config", str(EXAMPLE)] if command == "emit" else []
    result = invoke(command, str(path), *extra, env=example_credentials(tmp_path / "credentials"))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("[0] $: "), lines
    assert result.stderr.strip() == "0 valid, 1 invalid"


def test_a_bad_log_level_is_a_usage_error_not_a_traceback() -> None:
    result = run("run", "--log-level", "verbose")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "'verbose' is not one of" in " ".join(result.stderr.split())


def test_check_config_names_a_directory_and_says_which_sources_it_read(tmp_path: Path) -> None:
    directory = run("check-config", "--config", str(tmp_path))
    assert directory.returncode == 2
    assert (
        directory.stderr
        == f"it-relay: error: config file {tmp_path}: is a directory; give the TOML file in it\n"
    )
    example = EXAMPLE
    env = {"IT_RELAY_DELIVERY__CONCURRENCY": "7"} | example_credentials(tmp_path / "credentials")
    both = run("check-config", "--config", str(example), env=env)
    assert both.returncode == 0, both.stderr
    assert both.stderr.splitlines()[0] == (
        f"sources: file {example}; environment IT_RELAY_DELIVERY__CONCURRENCY; defaults for the rest"
    )
    assert json.loads(both.stdout)["delivery"]["concurrency"] == 7
    nothing = run("check-config")
    assert nothing.stderr.splitlines()[0].startswith("sources: no file (--config FILE or IT_RELAY_CONFIG)")


def test_a_command_without_configuration_says_so_before_it_fails_to_connect() -> None:
    result = run("deliveries", "list")
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert lines[0].startswith(
        "note: no configuration (--config FILE or IT_RELAY_CONFIG): using the defaults"
    )
    assert "postgresql://it_relay@localhost:5432/encore" in lines[0]
    assert lines[-1].startswith("it-relay: error: database at localhost:5432: ") and len(lines) == 2


def test_an_unreachable_database_is_named_by_host_and_port() -> None:
    env = {"IT_RELAY_DATABASE__URL": "postgresql://it_relay@127.0.0.1:1/encore"}
    result = invoke("deliveries", "list", env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("it-relay: error: database at 127.0.0.1:1: cannot connect (")
    assert "is PostgreSQL running there, and is database.url right?" in result.stderr
    assert result.stderr.count("\n") == 1
