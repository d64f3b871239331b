"""config/grafana-dashboard.json: importable as it is (the Prometheus data source a variable, every
panel on it) and charting only what exists: every metric a query names is exported by a running
relay."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.support.relay import relay_settings, running
from tests.support.sink import Sink

DASHBOARD = Path(__file__).parent.parent / "config" / "grafana-dashboard.json"
METRIC = re.compile(r"\bit_relay_[a-z0-9_]+")
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL text of the dashboard: panel targets and variable queries."""
    texts = [t["expr"] for p in _panels(dashboard["panels"]) for t in p.get("targets", [])]
    return texts + [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]


def test_the_dashboard_imports_with_its_data_source_as_a_variable() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "it-relay" and dashboard["title"] == "it-relay"
    assert "__inputs" not in dashboard  # nothing to map at import: the variable picks the source
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["subscriber"]["datasource"] == DATASOURCE
    panels = [p for p in _panels(dashboard["panels"]) if p["type"] != "row"]
    assert len({p["id"] for p in _panels(dashboard["panels"])}) == len(list(_panels(dashboard["panels"])))
    for panel in panels:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"] and all(t["datasource"] == DATASOURCE for t in panel["targets"])
    titles = {p["title"] for p in panels}
    for wanted in (
        "Delivered per second",
        "Failed per second",
        "Backlog",
        "Oldest pending",
        "Dead now",
        "Circuit",
        "Request duration (p50, p95, p99)",
        "Rejections by reason",
        "Scheduler emissions",
        "Entities held",
        "Instances alive",
        "Event loop lag (p50, p99)",
    ):
        assert wanted in titles


async def test_every_metric_the_dashboard_queries_exists_on_a_running_relay(
    relay_db: str, sink: Sink
) -> None:
    async with running(relay_settings(relay_db, sink, ["PF-10"])) as daemon:
        assert daemon.server is not None
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{daemon.server.port}/metrics") as response,
        ):
            exposition = await response.text()
    exported = {s.name for family in text_string_to_metric_families(exposition) for s in family.samples}
    queried = {name for text in _queries(_dashboard()) for name in METRIC.findall(text)}
    assert queried, "the dashboard queries no it-relay metric"
    assert queried <= exported, f"charted but not exported: {sorted(queried - exported)}"
