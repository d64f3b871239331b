"""Operator commands of per-entity ordered delivery: `it-relay release`."""

from __future__ import annotations

import re
from typing import Annotated

import typer

from relay import operator_queries
from relay.cli_common import ConfigOption, acting, load, with_db
from relay.contracts import SUBSCRIBERS
from relay.errors import InputError
from relay.settings import canonical_subscriber

# An entity key as the journal writes it: "<field>_id:<value>" (docs/reliability.md, Ordering).
_ENTITY = re.compile(r"[a-z][a-z0-9_]*_id:[^\s]{1,200}")


def register(app: typer.Typer) -> None:
    app.command()(release)


def release(
    subscriber: Annotated[str, typer.Option("--subscriber", help="The ordered subscriber.")],
    entity: Annotated[str, typer.Option("--entity", help="The entity key, e.g. asset_id:<uuid>.")],
    config: ConfigOption = None,
) -> None:
    """An entity held behind its dead head goes on: its held deliveries are sent, in order; the head
    stays dead (replay it to send it first instead)."""
    name = canonical_subscriber(subscriber)
    if name is None:
        raise InputError(
            f"--subscriber {subscriber!r}: not a subscriber of the contracts ({', '.join(SUBSCRIBERS)})"
        )
    if not _ENTITY.fullmatch(entity):
        raise InputError(f"--entity {entity!r}: not an entity key (<field>_id:<id>, e.g. asset_id:<uuid>)")
    settings = load(config)
    channel = settings.database.channel
    action = acting("release", {"subscriber": name, "entity": entity}, subscriber=name)
    done = with_db(
        settings, lambda conn: operator_queries.release_entity(conn, channel, name, entity, audit=action)
    )
    if done.heads == 0 and done.released == 0:
        typer.echo(f"{name} {entity}: nothing held")
        raise typer.Exit(1)
    typer.echo(f"{name} {entity}: released {done.released} held deliveries (the dead head stays dead)")
