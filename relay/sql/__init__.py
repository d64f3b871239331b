"""SQL lives in .sql files: migrations under migrations/, named queries in queries.sql."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def _load_queries() -> dict[str, str]:
    text = resources.files(__package__).joinpath("queries.sql").read_text(encoding="utf-8")
    parts = _NAME.split(text)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


QUERIES = _load_queries()


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations(directory: str = "migrations") -> list[Migration]:
    """The migrations in a directory of this package, ordered by their number prefix.

    A migration is a file `NNNN_name.sql`, or a directory `NNNN_name/` whose .sql files are
    applied together, in name order (the reference schema's baseline is one such version).
    """
    out = []
    for entry in resources.files(__package__).joinpath(directory).iterdir():
        match = re.fullmatch(r"(\d{4})_(\w+?)(\.sql)?", entry.name)
        if match is None or (match.group(3) is None) == entry.is_file():
            continue
        if entry.is_file():
            sql = entry.read_text(encoding="utf-8")
        else:
            parts = sorted((f for f in entry.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
            sql = "\n".join(f.read_text(encoding="utf-8") for f in parts)
        out.append(Migration(int(match.group(1)), match.group(2), sql))
    return sorted(out, key=lambda m: m.version)


def query(name: str) -> str:
    return QUERIES[name]
