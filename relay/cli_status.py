"""`it-relay status [--json] [--watch]`: each subscriber's state, backlog, dead, outcomes and
circuit; the events not routed yet; the instances alive; and what looks wrong."""

from __future__ import annotations

import sys
import time
from datetime import datetime
from typing import Annotated

import typer

from relay import operate
from relay.cli_common import AsJson, ConfigOption, cut, echo_json, load, with_db
from relay.display import duration, when
from relay.operate import StatusReport
from relay.subscriber_policy import policy_text

# Seconds between two redraws of --watch.
WATCH_EVERY_S = 2.0


def status(
    config: ConfigOption = None,
    as_json: AsJson = False,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help=f"Redraw every {WATCH_EVERY_S:g} s until Ctrl-C.")
    ] = False,
) -> None:
    """Per subscriber: state, backlog, oldest pending, next attempt, dead, outcomes in 5 and 60 min,
    latency, circuit, last success and error; events not routed; the instances alive."""
    settings = load(config)
    try:
        while True:
            report = with_db(settings, lambda conn: operate.status(conn, settings))
            if as_json:
                echo_json(report)
            else:
                if watch:
                    typer.echo("\x1b[2J\x1b[H", nl=False)
                    typer.echo(
                        f"it-relay status at {when(report.now)}, every {WATCH_EVERY_S:g} s (Ctrl-C ends)"
                    )
                for line in status_lines(report):
                    typer.echo(line)
            if not watch:
                return
            sys.stdout.flush()
            time.sleep(WATCH_EVERY_S)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def status_lines(report: StatusReport) -> list[str]:
    """The report as a table of subscribers, then the journal, the instances and the warnings."""
    lines = [
        f"{'subscriber':10} {'state':10} {'backlog':>7} {'oldest':>7} {'next':>7} {'dead':>6} "
        f"{'ok/fail 5m':>11} {'ok/fail 60m':>12} {'p50':>6} {'p99':>6} {'circuit':7} "
        f"{'last success':23} last error"
    ]
    for s in report.subscribers:
        lines.append(
            f"{s.subscriber:10} {s.state:10} {s.backlog:>7} {_age(s.oldest_pending_s):>7} "
            f"{_next(s.next_attempt, report.now):>7} {s.dead:>6} "
            f"{s.delivered_5m:>5}/{s.failed_5m:<5} {s.delivered_60m:>6}/{s.failed_60m:<5} "
            f"{_age(s.latency_p50_s):>6} {_age(s.latency_p99_s):>6} {s.circuit:7} "
            f"{when(s.last_success):23} {cut(s.last_error or '', 40)}".rstrip()
        )
    if report.policies:
        lines.append("policies (this configuration):")
        lines += [f"  {p.subscriber}: {policy_text(p)}" for p in report.policies]
    lines.append(f"events not routed yet: {report.unrouted_events}")
    lines.append(f"instances alive: {len(report.instances)} (this command's configuration: {report.config})")
    for i in report.instances:
        leader = ", scheduler leader" if i.scheduler_leader else ""
        lines.append(
            f"  {i.host} pid {i.pid} it-relay {i.version}, configuration {i.config}, "
            f"heartbeat {duration(i.heartbeat_age_s)} ago, since {when(i.started_at)}{leader}"
        )
    return lines + [f"warning: {w}" for w in report.warnings]


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else duration(seconds)


def _next(at: datetime | None, now: datetime) -> str:
    """The next attempt, from now: "due" once its time has come (a paused subscriber's stays due)."""
    if at is None:
        return "-"
    wait = (at - now).total_seconds()
    return "due" if wait <= 0 else duration(wait)
