"""The layer rules of it-relay, in one place (the README points here):

- an import only ever goes down the layers of docs/architecture.md, and the pure rules and records
  never import I/O: import-linter's contracts in pyproject.toml, checked by `make lint`; here,
  that every module has a layer;
- only the CLI and the demo import the composition root (relay.daemon);
- every query goes through the gateway (relay.journal, and relay.migrate for schema changes),
  written in relay/sql/*.sql, never as a string in Python.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

RELAY = Path(__file__).parent.parent / "relay"
PYPROJECT = RELAY.parent / "pyproject.toml"


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_every_module_has_a_layer() -> None:
    # import-linter (make lint) checks the layers' imports, but only of the modules it names: a new
    # module or package must be given its layer, or it would be checked by nothing.
    config = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c for c in config if c["type"] == "layers")["layers"]
    named = {m.strip() for layer in layers for m in layer.split(":")}
    modules = {f"relay.{p.stem}" for p in RELAY.glob("*.py") if p.stem != "__init__"}
    packages = {f"relay.{p.parent.name}" for p in RELAY.glob("*/__init__.py")}
    assert modules | packages <= named, f"not in any layer: {sorted((modules | packages) - named)}"


def test_only_the_cli_and_demo_import_the_composition_root() -> None:
    importers = {p.name for p in RELAY.rglob("*.py") if "relay.daemon" in imports(p)}
    assert importers <= {"cli.py", "demo.py"}


GATEWAY = {
    "journal.py",
    "routing_queries.py",
    "operator_queries.py",
    "audit_queries.py",
    "scheduler_queries.py",
    "migrate.py",
}
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


# Beside ruff's complexity cap: a module past this many lines is split along its concerns (a new
# capability gets its own module), so features do not regrow the big ones.
MODULE_BUDGET_LINES = 420


def test_every_module_keeps_to_its_size_budget() -> None:
    over = {
        str(p.relative_to(RELAY)): n
        for p in RELAY.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MODULE_BUDGET_LINES
    }
    assert not over, f"split these along their concerns: {over}"
