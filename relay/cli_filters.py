"""`it-relay filters test`: which events of a file a subscriber's filter lets through."""

from __future__ import annotations

import json
from typing import Annotated, Any
from uuid import uuid4

import typer

from relay import codec, filter_check, filters
from relay.cli_common import ConfigOption, documents, load, read_input
from relay.contracts import REGISTRY
from relay.errors import InputError
from relay.ingest import route
from relay.model import RoutedEvent
from relay.operate import subscriber_named

filters_app = typer.Typer(help="Subscriber filters (subscribers.NAME.filter).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(filters_app, name="filters")


@filters_app.command("test")
def filters_test(
    subscriber: Annotated[str, typer.Option("--subscriber", help="The subscriber whose filter to test.")],
    source: Annotated[
        str, typer.Argument(metavar="FILE|-", help="Events as JSON, a JSON array or JSON lines.")
    ],
    condition: Annotated[
        str | None,
        typer.Option("--filter", help="A filter to try instead of the configured one, as JSON."),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Route each event as the relay would (validated, redacted) and say whether the subscriber's
    filter lets it through. Exit 0, or 1 if an event is invalid."""
    name = subscriber_named(subscriber)
    settings = load(config)
    chosen = _filter(name, condition, settings.subscribers.get(name))
    events = list(documents(read_input(source)))
    if not events:
        raise InputError("no events in the input")
    counts = {"pass": 0, "filtered": 0, "not routed": 0, "invalid": 0}
    for index, document in enumerate(events):
        raw = (
            document.decode("utf-8", "replace")
            if isinstance(document, bytes)
            else codec.dumps(document).decode()
        )
        outcome = route(uuid4(), raw, settings.validation.unknown_fields)
        if not isinstance(outcome, RoutedEvent):
            counts["invalid"] += 1
            typer.echo(f"[{index}] invalid ({outcome.reason}): {'; '.join(outcome.errors[:3])}")
            continue
        if name not in REGISTRY[outcome.event_type].subscribers:
            counts["not routed"] += 1
            typer.echo(f"[{index}] not routed to {name}: {outcome.event_type}")
            continue
        passes = chosen is None or filters.matches(chosen, codec.loads(outcome.body))
        counts["pass" if passes else "filtered"] += 1
        verdict = "passes" if passes else "filtered out"
        typer.echo(f"[{index}] {verdict}: {outcome.event_type}{_identity(document)}")
    summary = ", ".join(f"{n} {what}" for what, n in counts.items() if n or what in ("pass", "filtered"))
    typer.echo(f"{name}: {summary}", err=True)
    raise typer.Exit(1 if counts["invalid"] else 0)


def _filter(name: str, given: str | None, configured: Any) -> dict[str, Any] | None:
    """The filter to test: --filter (checked as check-config would), else the configured one."""
    if given is None:
        if configured is None:
            raise InputError(f"--subscriber {name}: not configured here (no [subscribers.{name}])")
        if configured.filter is None:
            typer.echo(f"note: {name} has no filter: every event routed to it passes", err=True)
        value: dict[str, Any] | None = configured.filter
        return value
    try:
        parsed = json.loads(given)
    except json.JSONDecodeError as exc:
        raise InputError(f"--filter: not JSON ({exc.msg} at character {exc.pos})") from None
    problem = filter_check.problem(parsed, name)
    if problem is not None:
        raise InputError(f"--filter{problem}" if problem.startswith(":") else f"--filter: {problem}")
    return dict(parsed)


def _identity(document: Any) -> str:
    event_id = document.get("event_id") if isinstance(document, dict) else None
    return f" {event_id}" if event_id else ""
