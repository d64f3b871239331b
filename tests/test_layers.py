"""The layer rules of it-relay, in one place (the README points here):

- pure modules (records, contracts, classification, planning, redaction, retry, signing, ...)
  never import I/O;
- only the CLI and the demo import the composition root (relay.daemon);
- every query goes through the gateway (relay.journal, and relay.migrate for schema changes),
  written in relay/sql/*.sql, never as a string in Python.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

RELAY = Path(__file__).parent.parent / "relay"
PURE = [
    "model.py",
    "ingest.py",
    "planning.py",
    "health.py",
    "codec.py",
    "redaction.py",
    "retry.py",
    "circuit.py",
    "settle.py",
    "request.py",
    "signing.py",
    "schemas.py",
    "errors.py",
    *(f"contracts/{p.name}" for p in (RELAY / "contracts").glob("*.py")),
]
IO = {
    "asyncpg",
    "aiohttp",
    "httpx",
    "httpx_aiohttp",
    "socket",
    "subprocess",
    "relay.journal",
    "relay.database",
    "relay.listener",
    "relay.dispatch",
    "relay.router",
    "relay.scheduler",
    "relay.server",
    "relay.daemon",
    "relay.sender",
    "relay.cli",
}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_do_no_io(module: str) -> None:
    found = {n for n in imports(RELAY / module) if any(n == io or n.startswith(io + ".") for io in IO)}
    assert not found, f"{module} imports {found}"


def test_only_the_cli_and_demo_import_the_composition_root() -> None:
    importers = {p.name for p in RELAY.rglob("*.py") if "relay.daemon" in imports(p)}
    assert importers <= {"cli.py", "demo.py"}


GATEWAY = {"journal.py", "migrate.py"}
QUERY_CALLS = {"execute", "executemany", "fetch", "fetchval", "fetchrow", "copy_records_to_table"}


def test_only_the_gateway_talks_sql() -> None:
    # The demo's statements are sample data written the way a producer would; everything else
    # asks relay.journal, which runs the named queries of relay/sql/queries.sql.
    for path in RELAY.rglob("*.py"):
        if path.name in GATEWAY or path.name == "demo.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in QUERY_CALLS or (name == "query" and isinstance(func, ast.Name)):
                pytest.fail(f"{path.relative_to(RELAY)}:{node.lineno} runs SQL outside the gateway ({name})")


def test_sql_lives_in_sql_files() -> None:
    # A long SQL statement in Python is a smell here: queries belong in relay/sql/queries.sql.
    for path in RELAY.rglob("*.py"):
        if path.name == "demo.py":
            continue  # the demo's statements are sample data, shown as a producer would write them
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value.lstrip().upper()
                if text.startswith(("SELECT ", "INSERT ", "UPDATE ", "DELETE ", "WITH ")) and len(text) > 120:
                    pytest.fail(f"{path.relative_to(RELAY)}:{node.lineno} has a long SQL string")


def test_tests_count_only_their_own_database_backends() -> None:
    # pg_stat_activity lists every database of the server: a test that counts or terminates
    # backends there without `datname = current_database()` sees (or kills) other relays' ones.
    root = Path(__file__).parent.parent
    table = "pg_stat_" + "activity"  # spelled apart so this test does not find itself
    for path in [*root.joinpath("tests").rglob("*.py"), *root.joinpath("bench").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = " ".join(node.value.split())
                if f"FROM {table}" in text and "datname = current_database()" not in text:
                    pytest.fail(f"{path.relative_to(root)}:{node.lineno} reads pg_stat_activity server-wide")
